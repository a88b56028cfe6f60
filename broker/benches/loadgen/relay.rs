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
use std::net::{TcpListener, TcpStream};

/// Printed on stderr once listening, followed by the address (as the servers print theirs).
pub const LISTENING: &str = "relay listening on ";

/// Serves one subscriber and one publisher, then exits when the publisher closes.
pub fn main() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    eprintln!("{LISTENING}{}", listener.local_addr().unwrap());
    let (mut sub, _) = listener.accept().unwrap();
    sub.set_nodelay(true).unwrap();
    let mut len = [0u8; 4];
    sub.read_exact(&mut len).unwrap();
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    sub.read_exact(&mut body).unwrap();
    sub.write_all(&len).unwrap();
    sub.write_all(&body).unwrap();
    let (mut publ, _) = listener.accept().unwrap();
    publ.set_nodelay(true).unwrap();
    copy(&mut publ, &mut sub);
}

fn copy(from: &mut TcpStream, to: &mut TcpStream) {
    let mut buf = vec![0u8; 64 << 10];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
        }
    }
}
