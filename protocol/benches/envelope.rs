//! How long classifying a frame takes: a typical small publish, and a 1 MiB payload that the
//! scanner must jump over, not read; then the same small publish and a `datetime` publish
//! judged under a `payloads = "data"` policy (`classify_with`).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use mphub_protocol::{Envelope, Policy, Scanner};

// ("sensors.temp", {"i": 1, "v": 21.5}) as Connection.send writes it (protocol 4).
const SMALL: &[u8] = b"\x80\x04\x95)\x00\x00\x00\x00\x00\x00\x00\x8c\x0csensors.temp\x94}\x94(\x8c\x01i\x94K\x01\x8c\x01v\x94G@5\x80\x00\x00\x00\x00\x00u\x86\x94.";

// ("t", datetime.date(2020, 1, 1)) as Connection.send writes it (protocol 4).
const DATE: &[u8] = b"\x80\x04\x95&\x00\x00\x00\x00\x00\x00\x00\x8c\x01t\x94\x8c\x08datetime\x94\x8c\x04date\x94\x93\x94C\x04\x07\xe4\x01\x01\x94\x85\x94R\x94\x86\x94.";

fn pickles() -> Vec<(&'static str, Vec<u8>)> {
    // ("blob.raw", b"\0" * 1 MiB), protocol 4: the bytes stand outside any FRAME.
    let mut big = b"\x80\x04\x95\x0b\x00\x00\x00\x00\x00\x00\x00\x8c\x08blob.raw\x94B".to_vec();
    big.extend_from_slice(&(1u32 << 20).to_le_bytes());
    big.extend(std::iter::repeat_n(0u8, 1 << 20));
    big.extend_from_slice(b"\x94\x86\x94.");
    vec![
        ("small_publish_p4", SMALL.to_vec()),
        ("one_mib_bytes_p4", big),
    ]
}

fn classify(c: &mut Criterion) {
    let mut scanner = Scanner::default();
    for (name, body) in pickles() {
        assert!(
            matches!(scanner.classify(&body), Envelope::Publish { .. }),
            "{name}"
        );
        c.bench_function(name, |b| {
            b.iter(|| {
                let e = scanner.classify(black_box(&body));
                black_box(&e);
            })
        });
    }
}

fn classify_with_policy(c: &mut Criterion) {
    let mut scanner = Scanner::default();
    let data_only = Policy::data_only(["datetime.date", "datetime.datetime", "decimal.Decimal"])
        .expect("valid names");
    for (name, body) in [
        ("small_publish_p4_data_policy", SMALL),
        ("date_publish_p4_data_policy", DATE),
    ] {
        assert!(
            matches!(
                scanner.classify_with(body, &data_only),
                Ok(Envelope::Publish { .. })
            ),
            "{name}"
        );
        c.bench_function(name, |b| {
            b.iter(|| {
                let e = scanner.classify_with(black_box(body), &data_only);
                black_box(&e);
            })
        });
    }
}

criterion_group!(benches, classify, classify_with_policy);
criterion_main!(benches);
