//! What a listener pays to find whose key made a handshake answer, with 1, 100 and 5,000 keys:
//! the stock answers (raw HMAC-MD5 from CPython <= 3.11, `{sha256}` from 3.12+) and the most
//! expensive digest a client may pick (`{sha3_384}`), each made with the last key of the ring
//! (a right answer's worst case) and with a key outside it (a wrong answer, always a full scan).
//! A whole one-key handshake (both sides, in memory) is the baseline.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use mphub_protocol::handshake::{respond, Challenge, Digest, Handshake, KeyRing, CHALLENGE};

const SIZES: [usize; 3] = [1, 100, 5_000];

fn key(i: usize) -> Vec<u8> {
    format!("user key {i:06} with some length to it").into_bytes()
}

fn answer(digest: Option<Digest>, key: &[u8], message: &[u8]) -> Vec<u8> {
    match digest {
        None => Digest::Md5.mac(key, message),
        Some(d) => {
            let mut out = format!("{{{}}}", d.name()).into_bytes();
            out.extend(d.mac(key, message));
            out
        }
    }
}

fn identify(c: &mut Criterion) {
    let message = Challenge::Modern(Digest::Sha256, [5; 40]).message();
    let mut group = c.benchmark_group("identify");
    for n in SIZES {
        let ring = KeyRing::new((0..n).map(key)).expect("distinct keys");
        for (name, digest) in [
            ("legacy_md5", None),
            ("sha256", Some(Digest::Sha256)),
            ("sha3_384", Some(Digest::Sha3_384)),
        ] {
            let last = answer(digest, &key(n - 1), &message);
            assert_eq!(ring.identify(&message, &last).ok(), Some(n - 1));
            group.bench_with_input(
                BenchmarkId::new(format!("{name}/last_key"), n),
                &n,
                |b, _| b.iter(|| ring.identify(black_box(&message), black_box(&last))),
            );
            let wrong = answer(digest, b"not in the ring", &message);
            assert!(ring.identify(&message, &wrong).is_err());
            group.bench_with_input(
                BenchmarkId::new(format!("{name}/wrong_key"), n),
                &n,
                |b, _| b.iter(|| ring.identify(black_box(&message), black_box(&wrong))),
            );
        }
    }
    group.finish();
}

fn whole_handshake(c: &mut Criterion) {
    let challenge = Challenge::Modern(Digest::Sha256, [5; 40]);
    c.bench_function("handshake/one_key_both_sides", |b| {
        b.iter(|| {
            let mut listener = Handshake::listener(b"key", challenge.clone());
            let mut client = Handshake::client(b"key", Challenge::Modern(Digest::Sha256, [6; 40]));
            while !(listener.is_done() && client.is_done()) {
                while let Some(f) = listener.transmit() {
                    client.receive(&f).expect("client");
                }
                while let Some(f) = client.transmit() {
                    listener.receive(&f).expect("listener");
                }
            }
            black_box(listener.key_index())
        })
    });
    // What one stock 3.12+ client costs the listener with 5,000 keys: the answer check (its key
    // last) plus answering the client's challenge.
    let ring = std::sync::Arc::new(KeyRing::new((0..5_000).map(key)).expect("distinct keys"));
    let mine = key(4_999);
    c.bench_function("handshake/ring_5000_last_key_listener_side", |b| {
        b.iter(|| {
            let mut listener = Handshake::listener_ring(ring.clone(), challenge.clone());
            let frame = listener.transmit().expect("challenge");
            let reply = respond(&mine, &frame[CHALLENGE.len()..]).expect("respond");
            listener.receive(&reply).expect("verified");
            black_box(listener.key_index())
        })
    });
}

fn build(c: &mut Criterion) {
    c.bench_function("keyring/build_5000", |b| {
        b.iter(|| KeyRing::new((0..5_000).map(key)).expect("distinct keys"))
    });
}

criterion_group!(benches, identify, whole_handshake, build);
criterion_main!(benches);
