//! The broker run in-process on port 0, spoken to in raw bytes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::BytesMut;
use mphub_broker::{Config, ListenAddr};
use mphub_protocol::handshake::{Challenge, Digest, Handshake};
use mphub_protocol::{frame, io};
use serde_pickle::{SerOptions, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const KEY: &[u8] = b"in-process key";

async fn broker() -> mphub_broker::Broker {
    let config = Config::with_listeners(vec![ListenAddr::parse("127.0.0.1:0").unwrap()], Some(KEY));
    mphub_broker::start(config).await.unwrap()
}

struct Peer {
    stream: TcpStream,
    buf: BytesMut,
}

impl Peer {
    async fn connect(b: &mphub_broker::Broker) -> Peer {
        let ListenAddr::Tcp(addr) = b.addrs()[0] else {
            panic!()
        };
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let mut buf = BytesMut::new();
        let hs = Handshake::client(KEY, Challenge::Modern(Digest::Sha256, [7; 40]));
        io::drive(&mut stream, &mut buf, hs).await.unwrap();
        Peer { stream, buf }
    }

    async fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    async fn send(&mut self, v: &Value) -> Vec<u8> {
        let body = serde_pickle::value_to_vec(v, SerOptions::new()).unwrap();
        let wire = frame::encode(&body);
        self.send_raw(&wire).await;
        wire.to_vec()
    }

    /// The next frame, header included.
    async fn recv_wire(&mut self) -> Option<Vec<u8>> {
        loop {
            if let Some(f) = frame::decode(&mut self.buf, 1 << 30).unwrap() {
                return Some(f.wire().to_vec());
            }
            if self.stream.read_buf(&mut self.buf).await.unwrap() == 0 {
                return None;
            }
        }
    }

    async fn recv(&mut self) -> Value {
        let wire = self.recv_wire().await.expect("a frame");
        serde_pickle::value_from_slice(&wire[4..], Default::default()).unwrap()
    }
}

fn s(x: &str) -> Value {
    Value::String(x.into())
}

fn t(items: Vec<Value>) -> Value {
    Value::Tuple(items)
}

#[tokio::test]
async fn a_publish_arrives_as_the_publishers_exact_bytes() {
    let b = broker().await;
    let mut sub = Peer::connect(&b).await;
    let mut publisher = Peer::connect(&b).await;
    sub.send(&t(vec![s("$sub"), s("a.>")])).await;
    assert_eq!(
        sub.recv().await,
        t(vec![s("$ok"), t(vec![s("$sub"), s("a.>")])])
    );
    // A protocol-4 pickle as CPython writes it, with FRAME and MEMOIZE opcodes.
    let body = b"\x80\x04\x95\x12\x00\x00\x00\x00\x00\x00\x00\x8c\x03a.b\x94}\x94\x8c\x01k\x94K\x01s\x86\x94.";
    let wire = frame::encode(body);
    publisher.send_raw(&wire).await;
    assert_eq!(sub.recv_wire().await.unwrap(), wire.to_vec());
    b.shutdown().await;
}

#[tokio::test]
async fn ping_is_a_barrier_and_errors_keep_the_connection() {
    let b = broker().await;
    let mut c = Peer::connect(&b).await;
    c.send(&t(vec![s("a.*"), Value::I64(1)])).await;
    match c.recv().await {
        Value::Tuple(v) => {
            assert_eq!(v[0], s("$error"));
            assert!(
                matches!(&v[1], Value::String(r) if r.contains("wildcard")),
                "{v:?}"
            );
        }
        other => panic!("{other:?}"),
    }
    c.send(&t(vec![s("$ping"), Value::I64(42)])).await;
    assert_eq!(c.recv().await, t(vec![s("$pong"), Value::I64(42)]));
    b.shutdown().await;
}

#[tokio::test]
async fn a_huge_header_gets_an_error_then_a_close() {
    let b = broker().await;
    let mut c = Peer::connect(&b).await;
    let mut raw = vec![0xff, 0xff, 0xff, 0xff];
    raw.extend_from_slice(&(1u64 << 40).to_be_bytes());
    c.send_raw(&raw).await;
    match c.recv().await {
        Value::Tuple(v) => assert_eq!(v[0], s("$error")),
        other => panic!("{other:?}"),
    }
    assert_eq!(c.recv_wire().await, None);
    // The broker still serves others.
    let mut d = Peer::connect(&b).await;
    d.send(&t(vec![s("$ping"), Value::None])).await;
    assert_eq!(d.recv().await, t(vec![s("$pong"), Value::None]));
    b.shutdown().await;
}

#[tokio::test]
async fn a_wrong_key_is_answered_with_failure() {
    let b = broker().await;
    let ListenAddr::Tcp(addr) = b.addrs()[0] else {
        panic!()
    };
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut buf = BytesMut::new();
    let hs = Handshake::client(b"wrong", Challenge::Modern(Digest::Sha256, [1; 40]));
    let err = io::drive(&mut stream, &mut buf, hs).await.unwrap_err();
    assert!(
        matches!(err, mphub_protocol::HandshakeError::Rejected),
        "{err}"
    );
    let text = b.render_metrics();
    assert!(
        text.contains("mphub_auth_failures_total{kind=\"wrong_key\"} 1"),
        "{text}"
    );
    b.shutdown().await;
}
