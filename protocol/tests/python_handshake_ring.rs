//! Stock `multiprocessing.connection.Client`s of CPython 3.11 (raw HMAC-MD5 answer) and 3.13
//! (`{sha256}` answer) against a listener holding many keys: each is named by its own key's
//! index, the mutual handshake completes (the client checks our answer, made with its key), and
//! a key outside the ring is refused with `#FAILURE#`. Uses `python3` (3.11) and the CPython
//! 3.13 from `tests/python/fetch-cpython313.sh` when cached.

#![cfg(feature = "tokio")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::pin::Pin;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::BytesMut;
use mphub_protocol::handshake::KeyRing;
use mphub_protocol::{frame, io, reply, HandshakeError, Token};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpListener;

const CLIENT: &str = "import sys\n\
from multiprocessing.connection import Client\n\
port, key = int(sys.argv[1]), bytes.fromhex(sys.argv[2])\n\
try:\n\
\x20   c = Client(('127.0.0.1', port), authkey=key)\n\
except Exception as e:\n\
\x20   print('refused', type(e).__name__)\n\
\x20   sys.exit(0)\n\
c.send(('hello.world', 1))\n\
print('got', c.recv())\n";

fn pythons() -> Vec<(&'static str, PathBuf)> {
    let mut out = vec![("3.11", PathBuf::from("python3"))];
    let py313 = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.cache/cpython313/python3.13");
    if py313.exists() {
        out.push(("3.13", py313));
    }
    out
}

fn key(i: usize) -> Vec<u8> {
    format!("the key of user {i}").into_bytes()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A stream that keeps a copy of every byte it reads: the client's handshake frames.
struct Recording<S> {
    inner: S,
    read: Vec<u8>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Recording<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        let new = buf.filled()[before..].to_vec();
        self.read.extend(new);
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Recording<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

struct Outcome {
    accepted: Result<usize, HandshakeError>,
    /// The client's first handshake frame: its answer to our challenge.
    answer: Vec<u8>,
    /// What the Python client printed.
    printed: String,
}

/// One stock client with `client_key` against a listener holding `ring`.
async fn connect(python: &PathBuf, ring: &Arc<KeyRing>, client_key: &[u8]) -> Outcome {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let child = Command::new(python)
        .args(["-c", CLIENT, &port.to_string(), &hex(client_key)])
        .stdout(Stdio::piped())
        .spawn()
        .expect("run python");
    let (tcp, _) = listener.accept().await.unwrap();
    let mut stream = Recording {
        inner: tcp,
        read: Vec::new(),
    };
    let mut buf = BytesMut::new();
    let challenge = io::random_challenge().unwrap();
    let accepted = io::accept(&mut stream, &mut buf, ring.clone(), challenge).await;
    if accepted.is_ok() {
        // The client's first message arrives after the handshake: answer it.
        let body = loop {
            if let Some(f) = frame::decode(&mut buf, 1 << 20).unwrap() {
                break f;
            }
            use tokio::io::AsyncReadExt;
            assert!(stream.inner.read_buf(&mut buf).await.unwrap() > 0);
        };
        assert!(matches!(
            mphub_protocol::classify(body.body()),
            mphub_protocol::Envelope::Publish { .. }
        ));
        let pong = reply::pong(&Token::Str("welcome".into()));
        stream.inner.write_all(&pong).await.unwrap();
    }
    drop(stream.inner);
    let out = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(out.status.success());
    let mut recorded = BytesMut::from(&stream.read[..]);
    let answer = frame::decode(&mut recorded, 256)
        .unwrap()
        .map(|f| f.body().to_vec())
        .unwrap_or_default();
    Outcome {
        accepted,
        answer,
        printed: String::from_utf8(out.stdout).unwrap().trim().to_owned(),
    }
}

fn assert_answer_form(version: &str, answer: &[u8]) {
    match version {
        // CPython <= 3.11 answers every challenge with a raw 16-byte HMAC-MD5.
        "3.11" => assert_eq!(answer.len(), 16, "{answer:?}"),
        // 3.12+ answers in the digest the challenge names: ours says {sha256}.
        _ => assert!(answer.starts_with(b"{sha256}") && answer.len() == 8 + 32),
    }
}

#[tokio::test]
async fn stock_clients_of_both_generations_are_named_by_their_own_key_among_several() {
    let ring = Arc::new(KeyRing::new((0..6).map(key)).unwrap());
    for (version, python) in pythons() {
        for user in [0, 3, 5] {
            let got = connect(&python, &ring, &key(user)).await;
            assert_eq!(got.accepted.unwrap(), user, "{version}");
            assert_answer_form(version, &got.answer);
            assert_eq!(got.printed, "got ('$pong', 'welcome')", "{version}");
        }
    }
}

#[tokio::test]
async fn a_stock_client_whose_key_is_not_in_the_ring_is_refused() {
    let ring = Arc::new(KeyRing::new((0..6).map(key)).unwrap());
    for (version, python) in pythons() {
        let got = connect(&python, &ring, b"a key nobody configured").await;
        assert!(
            matches!(got.accepted, Err(HandshakeError::WrongKey)),
            "{version}: {:?}",
            got.accepted.map_err(|e| e.to_string())
        );
        assert_answer_form(version, &got.answer);
        assert_eq!(got.printed, "refused AuthenticationError", "{version}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ring_large_enough_to_be_checked_on_the_blocking_pool_still_names_the_user() {
    let n = io::BLOCKING_RING_KEYS * 4;
    let ring = Arc::new(KeyRing::new((0..n).map(key)).unwrap());
    for (version, python) in pythons() {
        let got = connect(&python, &ring, &key(n - 1)).await;
        assert_eq!(got.accepted.unwrap(), n - 1, "{version}");
        assert_eq!(got.printed, "got ('$pong', 'welcome')", "{version}");
        let refused = connect(&python, &ring, b"not one of them").await;
        assert!(matches!(refused.accepted, Err(HandshakeError::WrongKey)));
        assert_eq!(refused.printed, "refused AuthenticationError");
    }
}
