//! How long reading a `$metrics` batch takes: 100 ops as client-py sends them (labels dicts
//! shared between observations) and as stock senders write them (a dict per op), pickled by
//! CPython 3.13's `Connection.send` (the vectors in tests/vectors). Beside it, serde-pickle's
//! `value_from_slice` on the stock batch: the first half of what the broker did before (it then
//! copied every string into owned maps), and all it could do, since it refuses the shared one.

use std::hint::black_box;
use std::path::PathBuf;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use mphub_protocol::metrics::Batch;

fn vector(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/cpython-3.13.json");
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("vectors")).expect("json");
    let hex = doc["metrics"]
        .as_array()
        .expect("metrics vectors")
        .iter()
        .find(|v| v["name"] == name)
        .and_then(|v| v["hex"].as_str())
        .expect("the vector");
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
        .collect()
}

fn decode(c: &mut Criterion) {
    let mut g = c.benchmark_group("metrics_batch_100_ops");
    g.throughput(Throughput::Elements(100));
    for name in ["client-py-100/send", "stock-100/send"] {
        let body = vector(name);
        let batch = Batch::decode(&body).expect("decodes");
        assert_eq!(batch.ops().filter(Result::is_ok).count(), 100, "{name}");
        g.bench_function(format!("decode_{}", name.trim_end_matches("/send")), |b| {
            b.iter(|| {
                let batch = Batch::decode(black_box(&body)).expect("decodes");
                for op in batch.ops() {
                    black_box(&op);
                }
            })
        });
    }
    let body = vector("stock-100/send");
    g.bench_function("serde_pickle_value_stock-100", |b| {
        b.iter(|| {
            let v = serde_pickle::value_from_slice(black_box(&body), Default::default());
            black_box(&v.expect("decodes"));
        })
    });
    g.finish();
}

criterion_group!(benches, decode);
criterion_main!(benches);
