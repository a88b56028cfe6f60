//! The two wires the load generator speaks, with the same design on both: whole messages
//! pre-encoded once and written in 64 KiB batches, and subscribers that count messages by
//! their headers without decoding them.
//!
//! - mphub: CPython's frames (a 4-byte big-endian length, then the body) around protocol-4
//!   pickles of `(topic, bytes)`, byte for byte as `Connection.send` writes them up to CPython
//!   3.13 (3.14 writes protocol 5: one byte differs); `$sub` is answered `$ok`.
//! - NATS: the text protocol (`PUB subject len`, `MSG subject sid len`, `SUB`, `UNSUB`,
//!   `PING`/`PONG`), as the NATS documentation's "Client Protocol" page gives it. A subscriber
//!   finds each `MSG` line's end and reads the length at its end, nothing more.

use bytes::{Buf, BytesMut};
use mphub_protocol::handshake::Handshake;
use mphub_protocol::{frame, io as hsio};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Which wire a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    Mphub,
    Nats,
}

/// Bytes CPython's pickle of `(topic, bytes)` puts after the payload: MEMOIZE, TUPLE2,
/// MEMOIZE, STOP.
const PICKLE_TAIL: usize = 4;

impl Proto {
    /// One publish of `payload` to `topic`, encoded whole.
    pub fn publish(self, topic: &str, payload: &[u8]) -> Vec<u8> {
        match self {
            Proto::Mphub => pickled_pair(topic, Second::Bytes(payload)),
            Proto::Nats => {
                let mut out = format!("PUB {topic} {}\r\n", payload.len()).into_bytes();
                out.extend_from_slice(payload);
                out.extend_from_slice(b"\r\n");
                out
            }
        }
    }

    /// A subscription to `pattern` (`sid` names it on NATS).
    pub fn subscribe(self, pattern: &str, sid: u64) -> Vec<u8> {
        match self {
            Proto::Mphub => control("$sub", pattern),
            Proto::Nats => format!("SUB {pattern} {sid}\r\n").into_bytes(),
        }
    }

    /// Ending the subscription [`Proto::subscribe`] made.
    pub fn unsubscribe(self, pattern: &str, sid: u64) -> Vec<u8> {
        match self {
            Proto::Mphub => control("$unsub", pattern),
            Proto::Nats => format!("UNSUB {sid}\r\n").into_bytes(),
        }
    }

    /// The last 8 bytes of a message's payload (where the latency run puts its send time),
    /// given what [`Conn::read`] hands over: a frame body on mphub, the payload on NATS.
    pub fn tail8(self, msg: &[u8]) -> u64 {
        let end = match self {
            Proto::Mphub => msg.len() - PICKLE_TAIL,
            Proto::Nats => msg.len(),
        };
        u64::from_le_bytes(msg[end - 8..end].try_into().unwrap())
    }
}

/// `(op, arg)` as `Connection.send` writes it, framed.
fn control(op: &str, arg: &str) -> Vec<u8> {
    pickled_pair(op, Second::Str(arg))
}

/// The second item of a pickled pair.
enum Second<'a> {
    Str(&'a str),
    Bytes(&'a [u8]),
}

/// `(first, second)` pickled byte for byte as `Connection.send` does at protocol 4, its default
/// up to CPython 3.13 (`_pickle.c`; `pickletools.dis` of `pickle.dumps(("t", b"x"), 4)` shows
/// it, and [`check_against_cpython`] holds this to CPython's bytes), then framed:
/// PROTO 4, FRAME <u64 length of the rest>, SHORT_BINUNICODE first, MEMOIZE, the second item
/// (SHORT_BINUNICODE, or SHORT_BINBYTES / BINBYTES), MEMOIZE, TUPLE2, MEMOIZE, STOP. Strings
/// under 256 bytes and bytes under 64 KiB only (longer ones take other opcodes, or stand
/// outside the FRAME).
fn pickled_pair(first: &str, second: Second<'_>) -> Vec<u8> {
    assert!(first.len() < 256);
    let mut framed = vec![0x8c, first.len() as u8];
    framed.extend_from_slice(first.as_bytes());
    framed.push(0x94);
    match second {
        Second::Str(s) => {
            assert!(s.len() < 256);
            framed.extend_from_slice(&[0x8c, s.len() as u8]);
            framed.extend_from_slice(s.as_bytes());
        }
        Second::Bytes(b) if b.len() < 256 => {
            framed.extend_from_slice(&[b'C', b.len() as u8]);
            framed.extend_from_slice(b);
        }
        Second::Bytes(b) => {
            assert!(b.len() < 1 << 16);
            framed.push(b'B');
            framed.extend_from_slice(&(b.len() as u32).to_le_bytes());
            framed.extend_from_slice(b);
        }
    }
    framed.extend_from_slice(&[0x94, 0x86, 0x94, b'.']);
    let mut body = vec![0x80, 4, 0x95];
    body.extend_from_slice(&(framed.len() as u64).to_le_bytes());
    body.extend_from_slice(&framed);
    frame::encode(&body).to_vec()
}

/// What CPython 3.11's `pickle.dumps(obj, 4)` (which is what `ForkingPickler.dumps`, and so
/// `Connection.send`, writes up to CPython 3.13) gives for `("lat.t", bytes(range(64)))`,
/// `("$sub", "lat.t")`, and the head and tail around the payload of `("t", b"\x07" * 300)`.
const CPYTHON: [&[u8]; 4] = [
    b"\x80\x04\x95N\x00\x00\x00\x00\x00\x00\x00\x8c\x05lat.t\x94C@\x00\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c\x0d\x0e\x0f\x10\x11\x12\x13\x14\x15\x16\x17\x18\x19\x1a\x1b\x1c\x1d\x1e\x1f !\x22#$%&'()*+,-./0123456789:;<=>?\x94\x86\x94.",
    b"\x80\x04\x95\x12\x00\x00\x00\x00\x00\x00\x00\x8c\x04$sub\x94\x8c\x05lat.t\x94\x86\x94.",
    b"\x80\x04\x959\x01\x00\x00\x00\x00\x00\x00\x8c\x01t\x94B,\x01\x00\x00",
    b"\x94\x86\x94.",
];

/// Panics unless [`pickled_pair`] writes [`CPYTHON`]'s bytes exactly (run at start-up, so that
/// no benchmark runs on frames a stock client would not send).
pub fn check_against_cpython() {
    let body = |framed: Vec<u8>| framed[4..].to_vec();
    let payload: Vec<u8> = (0..64).collect();
    assert_eq!(
        body(pickled_pair("lat.t", Second::Bytes(&payload))),
        CPYTHON[0]
    );
    assert_eq!(body(control("$sub", "lat.t")), CPYTHON[1]);
    let long = [CPYTHON[2], &[7u8; 300], CPYTHON[3]].concat();
    assert_eq!(body(pickled_pair("t", Second::Bytes(&[7u8; 300]))), long);
}

/// What one unit read off the wire was.
enum Item {
    /// A message (or an mphub reply: replies are frames like any other).
    Msg,
    /// NATS `PONG` (the end of a barrier).
    Pong,
    /// NATS `PING`: answer it.
    Ping,
    /// NATS `INFO`, `+OK`: nothing to do.
    Skip,
}

/// One client connection and what it has read and not yet consumed.
#[derive(Debug)]
pub struct Conn {
    pub s: TcpStream,
    buf: BytesMut,
    proto: Proto,
}

impl Conn {
    /// Connects; on mphub with `key`, runs the authkey handshake as a stock client would; on
    /// NATS, reads `INFO` and sends `CONNECT` (no echo of its own messages needed either way).
    pub async fn open(addr: &str, proto: Proto, key: Option<&[u8]>) -> Conn {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.set_nodelay(true).unwrap();
        let mut buf = BytesMut::with_capacity(1 << 16);
        match (proto, key) {
            (Proto::Mphub, Some(key)) => {
                let challenge = hsio::random_challenge().unwrap();
                hsio::drive(&mut s, &mut buf, Handshake::client(key, challenge))
                    .await
                    .unwrap();
            }
            (Proto::Mphub, None) => {}
            (Proto::Nats, _) => {
                s.write_all(b"CONNECT {\"verbose\":false,\"pedantic\":false}\r\n")
                    .await
                    .unwrap();
            }
        }
        Conn { s, buf, proto }
    }

    /// Subscribes to every pattern (sids from `first_sid`) and waits until the server has
    /// them all: mphub answers each `$sub` with `$ok`; NATS answers a `PING` after them.
    pub async fn subscribe_all(&mut self, patterns: &[String], first_sid: u64) {
        let mut out = Vec::new();
        for (i, p) in patterns.iter().enumerate() {
            out.extend_from_slice(&self.proto.subscribe(p, first_sid + i as u64));
        }
        self.s.write_all(&out).await.unwrap();
        match self.proto {
            Proto::Mphub => self.read(patterns.len() as u64, |_| {}).await,
            Proto::Nats => self.barrier().await,
        }
    }

    /// NATS: `PING` and wait for its `PONG` (everything sent before it has been handled).
    pub async fn barrier(&mut self) {
        assert_eq!(self.proto, Proto::Nats);
        self.s.write_all(b"PING\r\n").await.unwrap();
        loop {
            while let Some(item) = self.next(&mut |_| {}) {
                match item {
                    Item::Pong => return,
                    Item::Ping => self.s.write_all(b"PONG\r\n").await.unwrap(),
                    Item::Msg | Item::Skip => {}
                }
            }
            self.fill().await;
        }
    }

    /// Reads until `n` messages have arrived; hands each to `each` (a frame body on mphub, the
    /// payload on NATS).
    pub async fn read(&mut self, n: u64, mut each: impl FnMut(&[u8])) {
        let mut got = 0;
        while got < n {
            while let Some(item) = self.next(&mut each) {
                match item {
                    Item::Msg => {
                        got += 1;
                        if got == n {
                            return;
                        }
                    }
                    Item::Ping => self.s.write_all(b"PONG\r\n").await.unwrap(),
                    Item::Pong | Item::Skip => {}
                }
            }
            if !self.fill().await {
                panic!("server closed after {got} of {n}");
            }
        }
    }

    /// Reads whatever arrives until the server closes, counting messages.
    pub async fn drain(&mut self) -> u64 {
        let mut got = 0;
        loop {
            while let Some(item) = self.next(&mut |_| {}) {
                if let Item::Msg = item {
                    got += 1;
                }
            }
            if !self.fill().await {
                return got;
            }
        }
    }

    async fn fill(&mut self) -> bool {
        self.buf.reserve(1 << 16);
        self.s.read_buf(&mut self.buf).await.unwrap() > 0
    }

    /// The next whole item at the front of the buffer, consumed.
    fn next(&mut self, each: &mut impl FnMut(&[u8])) -> Option<Item> {
        match self.proto {
            Proto::Mphub => {
                let f = frame::decode(&mut self.buf, 1 << 30).unwrap()?;
                each(f.body());
                Some(Item::Msg)
            }
            Proto::Nats => {
                let eol = self.buf.windows(2).position(|w| w == b"\r\n")?;
                let line = &self.buf[..eol];
                if line.starts_with(b"MSG ") {
                    // `MSG subject sid [reply] len`: the length is the last field.
                    let sp = line.iter().rposition(|&b| b == b' ').unwrap();
                    let len: usize = std::str::from_utf8(&line[sp + 1..])
                        .unwrap()
                        .parse()
                        .unwrap();
                    let start = eol + 2;
                    if self.buf.len() < start + len + 2 {
                        return None;
                    }
                    each(&self.buf[start..start + len]);
                    self.buf.advance(start + len + 2);
                    return Some(Item::Msg);
                }
                let item = if line == b"PONG" {
                    Item::Pong
                } else if line == b"PING" {
                    Item::Ping
                } else if line.starts_with(b"-ERR") {
                    panic!("nats-server: {}", String::from_utf8_lossy(line));
                } else {
                    Item::Skip
                };
                self.buf.advance(eol + 2);
                Some(item)
            }
        }
    }
}
