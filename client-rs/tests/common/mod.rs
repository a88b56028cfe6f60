//! Shared by the integration tests: an in-process broker on port 0, the CPythons, and the
//! values every interop test exchanges.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::PathBuf;

use mphub_broker::{Config, ListenAddr};
use mphub_client::serde_pickle::{HashableValue, Value};
use num_bigint::BigInt;

pub const KEY: &[u8] = b"client-rs test key";

pub async fn broker_with(config: Config) -> mphub_broker::Broker {
    mphub_broker::start(config).await.unwrap()
}

pub fn config(listen: &str) -> Config {
    Config::with_listeners(vec![ListenAddr::parse(listen).unwrap()], Some(KEY))
}

pub async fn broker() -> mphub_broker::Broker {
    broker_with(config("127.0.0.1:0")).await
}

pub fn addr(b: &mphub_broker::Broker) -> String {
    match &b.addrs()[0] {
        ListenAddr::Tcp(a) => a.to_string(),
        other => panic!("not tcp: {other:?}"),
    }
}

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `python3` (CPython 3.11 here) and the fetched CPython 3.13 (`make py313`).
pub fn pythons() -> Vec<(String, PathBuf)> {
    let p313 = root().join(".cache/cpython313/python3.13");
    assert!(
        p313.exists(),
        "CPython 3.13 missing: run tests/python/fetch-cpython313.sh (make test does)"
    );
    vec![
        ("3.11".into(), PathBuf::from("python3")),
        ("3.13".into(), p313),
    ]
}

pub fn peer_script() -> PathBuf {
    root().join("client-rs/tests/py/peer.py")
}

fn s(x: &str) -> Value {
    Value::String(x.into())
}

/// The objects of `peer.py`'s EXPECTED, as Rust builds them. Keep the two lists in step.
pub fn expected() -> Vec<Value> {
    let mut dict = BTreeMap::new();
    dict.insert(HashableValue::String("name".into()), s("sensor-7"));
    dict.insert(HashableValue::String("v".into()), Value::F64(21.5));
    dict.insert(
        HashableValue::String("tags".into()),
        Value::List(vec![s("a"), s("b")]),
    );
    dict.insert(HashableValue::String("ok".into()), Value::Bool(true));
    dict.insert(HashableValue::String("none".into()), Value::None);
    vec![
        Value::Dict(dict),
        Value::List(vec![Value::I64(1), Value::I64(2), Value::I64(3)]),
        Value::Tuple(vec![Value::I64(1), s("two"), Value::F64(3.0)]),
        s("ü text ✓"),
        Value::Bytes(b"\x00\x01bytes".to_vec()),
        Value::F64(-0.125),
        Value::None,
        Value::Bool(true),
        Value::Bool(false),
        Value::Int(BigInt::from(2).pow(100)),
        Value::Int(-BigInt::from(2).pow(70)),
        Value::I64(-5),
    ]
}

/// The next message, or a test failure after 30 s (never a hang).
pub async fn recv(sub: &mut mphub_client::Subscription) -> mphub_client::Message {
    tokio::time::timeout(std::time::Duration::from_secs(30), sub.next())
        .await
        .expect("no message within 30 s")
        .expect("the subscription ended")
}
