//! The latency floor: a process that copies bytes from one connection to another and does
//! nothing else, so the latency run's clients measure what this machine's loopback and
//! wake-ups cost before any broker work.
//!
//! It speaks just enough of the mphub wire for [`crate::workloads::latency`]: the first
//! connection is the subscriber, whose one `$sub` frame is answered with a copy of itself (the
//! client counts any frame as the reply); the second is the publisher, whose bytes (whole
//! frames, as mphub would forward them) go to the subscriber unchanged. Same path as through
//! a broker: publisher → server process → subscriber, two wake-ups.

use std::io::{Read, Write};
use std::net::TcpListener;

use bytes::BytesMut;
use mphub_protocol::frame;

/// Printed on stderr once listening, followed by the address (as the servers print theirs).
pub const LISTENING: &str = "relay listening on ";

/// Serves one subscriber and one publisher, then exits when the publisher closes.
pub fn main() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    eprintln!("{LISTENING}{}", listener.local_addr().unwrap());
    let (mut sub, _) = listener.accept().unwrap();
    sub.set_nodelay(true).unwrap();
    // The subscriber's one `$sub` frame, answered with a copy of itself.
    let mut buf = BytesMut::with_capacity(1 << 10);
    let sub_frame = loop {
        if let Some(f) = frame::decode(&mut buf, 1 << 20).unwrap() {
            break f;
        }
        let mut chunk = [0u8; 1 << 10];
        match sub.read(&mut chunk).unwrap() {
            0 => return,
            n => buf.extend_from_slice(&chunk[..n]),
        }
    };
    sub.write_all(sub_frame.wire()).unwrap();
    let (mut publ, _) = listener.accept().unwrap();
    publ.set_nodelay(true).unwrap();
    // Ends at the publisher's EOF or the first error; `io::copy` retries interrupted calls.
    let _ = std::io::copy(&mut publ, &mut sub);
}
