//! Length-prefixed frames, exactly as CPython's `Connection.send_bytes` writes them.
//!
//! A frame is a 4-byte big-endian *signed* length and the body. Bodies longer than `i32::MAX`
//! bytes are sent as length `-1` followed by an 8-byte big-endian unsigned length (CPython 3.8+).
//!
//! Decoding is *check, then parse*: [`check`] looks only at the header and says whether a whole
//! frame is buffered, and if not how many bytes are still missing; [`decode`] then splits the
//! frame off the buffer as one [`Bytes`] that still holds its header, so a broker can forward it
//! to many peers without copying. The size limit is enforced on the header, before anything is
//! allocated: a peer that claims a 1 TiB body costs nothing.

use bytes::{Bytes, BytesMut};

use crate::error::FrameError;

/// Bytes in the short header.
pub const SHORT_HEADER: usize = 4;
/// Bytes in the extended header: `-1` then an 8-byte length.
pub const LONG_HEADER: usize = 12;
/// Bodies longer than this use the extended header (CPython: `n > 0x7fffffff`).
pub const SHORT_MAX: u64 = i32::MAX as u64;

/// What [`check`] found at the front of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// A whole frame is buffered: its header and body lengths.
    Complete { header: usize, body: u64 },
    /// Not yet: at least this many more bytes are needed before the frame can be complete.
    Incomplete { missing: u64 },
}

/// Looks at the header at the front of `buf` without consuming anything.
///
/// Fails when the header is not a frame header at all (a negative length other than `-1`) or
/// announces a body longer than `max_body`.
pub fn check(buf: &[u8], max_body: u64) -> Result<Check, FrameError> {
    let Some(short) = buf.first_chunk::<SHORT_HEADER>() else {
        return Ok(Check::Incomplete {
            missing: (SHORT_HEADER - buf.len()) as u64,
        });
    };
    let declared = i32::from_be_bytes(*short);
    let (header, body) = match declared {
        0.. => (SHORT_HEADER, declared as u64),
        -1 => match buf.get(SHORT_HEADER..LONG_HEADER) {
            Some(long) => {
                let mut len = [0u8; 8];
                len.copy_from_slice(long);
                (LONG_HEADER, u64::from_be_bytes(len))
            }
            None => {
                return Ok(Check::Incomplete {
                    missing: (LONG_HEADER - buf.len()) as u64,
                })
            }
        },
        negative => return Err(FrameError::NegativeLength(negative)),
    };
    if body > max_body {
        return Err(FrameError::TooLarge {
            len: body,
            max: max_body,
        });
    }
    let have = (buf.len() - header) as u64;
    Ok(if have >= body {
        Check::Complete { header, body }
    } else {
        Check::Incomplete {
            missing: body - have,
        }
    })
}

/// The whole length (header and body) of the frame at the front of `buf`, once its header is
/// buffered; `Ok(None)` while the header itself is still incomplete. Fails as [`check`] does.
///
/// A reader uses it to plan for a frame still arriving: how much room it needs, and whether it
/// is large enough to count against a memory budget.
pub fn announced(buf: &[u8], max_body: u64) -> Result<Option<u64>, FrameError> {
    Ok(match check(buf, max_body)? {
        Check::Complete { header, body } => Some(header as u64 + body),
        Check::Incomplete { missing } => {
            let short_done = buf.len() >= SHORT_HEADER && buf[..SHORT_HEADER] != [0xff; 4];
            (short_done || buf.len() >= LONG_HEADER).then(|| buf.len() as u64 + missing)
        }
    })
}

/// One frame, header included, sharing the buffer it was read into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    wire: Bytes,
    header: u8,
}

impl Frame {
    /// The whole frame as it was on the wire, header included: forward this.
    pub fn wire(&self) -> &Bytes {
        &self.wire
    }

    /// Consumes the frame, giving its wire bytes.
    pub fn into_wire(self) -> Bytes {
        self.wire
    }

    /// The body (the pickle, or a handshake message).
    pub fn body(&self) -> &[u8] {
        &self.wire[self.header as usize..]
    }

    /// Length of the header: 4, or 12 for the extended form.
    pub fn header_len(&self) -> usize {
        self.header as usize
    }
}

/// Splits the next whole frame off the front of `buf`; `Ok(None)` means more bytes are needed.
pub fn decode(buf: &mut BytesMut, max_body: u64) -> Result<Option<Frame>, FrameError> {
    decode_copying(buf, max_body, 0)
}

/// As [`decode`], but a frame shorter than `copy_below` bytes (header included) is copied into
/// an allocation of its own instead of sharing `buf`'s: whoever holds a small frame for long (a
/// slow subscriber's queue) then never pins a whole read buffer. Larger frames are split off
/// without copying.
pub fn decode_copying(
    buf: &mut BytesMut,
    max_body: u64,
    copy_below: usize,
) -> Result<Option<Frame>, FrameError> {
    match check(buf, max_body)? {
        Check::Incomplete { .. } => Ok(None),
        Check::Complete { header, body } => {
            // `body <= buf.len()` here, so it fits in usize.
            let total = header + body as usize;
            let wire = if total < copy_below {
                let wire = Bytes::copy_from_slice(&buf[..total]);
                bytes::Buf::advance(buf, total);
                wire
            } else {
                buf.split_to(total).freeze()
            };
            Ok(Some(Frame {
                wire,
                header: header as u8,
            }))
        }
    }
}

/// The header CPython writes for a body of `len` bytes: the bytes and how many of them to use.
pub fn header(len: u64) -> ([u8; LONG_HEADER], usize) {
    let mut out = [0u8; LONG_HEADER];
    if len > SHORT_MAX {
        out[..4].copy_from_slice(&(-1i32).to_be_bytes());
        out[4..].copy_from_slice(&len.to_be_bytes());
        (out, LONG_HEADER)
    } else {
        out[..4].copy_from_slice(&(len as u32).to_be_bytes());
        (out, SHORT_HEADER)
    }
}

/// Encodes one frame: header then body, in one buffer.
pub fn encode(body: &[u8]) -> Bytes {
    let (head, n) = header(body.len() as u64);
    let mut out = BytesMut::with_capacity(n + body.len());
    out.extend_from_slice(&head[..n]);
    out.extend_from_slice(body);
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_frame_round_trips_with_its_header() {
        let wire = encode(b"hello");
        assert_eq!(&wire[..], b"\x00\x00\x00\x05hello");
        let mut buf = BytesMut::from(&wire[..]);
        let frame = decode(&mut buf, 100).unwrap().unwrap();
        assert_eq!(frame.body(), b"hello");
        assert_eq!(frame.wire(), &wire);
        assert!(buf.is_empty());
    }

    #[test]
    fn a_small_frame_is_copied_out_and_a_large_one_shares_the_buffer() {
        let mut buf = BytesMut::from(&b"\x00\x00\x00\x01a\x00\x00\x00\x03bcd"[..]);
        let small = decode_copying(&mut buf, 100, 6).unwrap().unwrap();
        assert_eq!(small.body(), b"a");
        let large = decode_copying(&mut buf, 100, 6).unwrap().unwrap();
        assert_eq!(large.body(), b"bcd");
        assert!(buf.is_empty());
    }

    #[test]
    fn the_announced_length_is_known_once_the_header_is() {
        assert_eq!(announced(b"", 10), Ok(None));
        assert_eq!(announced(b"\x00\x00\x00", 10), Ok(None));
        assert_eq!(announced(b"\x00\x00\x00\x05", 10), Ok(Some(9)));
        assert_eq!(announced(b"\x00\x00\x00\x05abcdefg", 10), Ok(Some(9)));
        assert_eq!(announced(b"\xff\xff\xff\xff\x00\x00", 10), Ok(None));
        let long = b"\xff\xff\xff\xff\x00\x00\x00\x00\x00\x00\x00\x03ab";
        assert_eq!(announced(long, 10), Ok(Some(15)));
        assert!(announced(b"\x00\x00\x00\x0b", 10).is_err());
    }

    #[test]
    fn an_empty_body_is_a_frame() {
        let mut buf = BytesMut::from(&b"\x00\x00\x00\x00rest"[..]);
        let frame = decode(&mut buf, 0).unwrap().unwrap();
        assert_eq!(frame.body(), b"");
        assert_eq!(&buf[..], b"rest");
    }

    #[test]
    fn missing_bytes_are_reported_exactly() {
        assert_eq!(check(b"", 10), Ok(Check::Incomplete { missing: 4 }));
        assert_eq!(check(b"\x00\x00", 10), Ok(Check::Incomplete { missing: 2 }));
        assert_eq!(
            check(b"\x00\x00\x00\x05ab", 10),
            Ok(Check::Incomplete { missing: 3 })
        );
        assert_eq!(
            check(b"\xff\xff\xff\xff\x00", 10),
            Ok(Check::Incomplete { missing: 7 })
        );
    }

    #[test]
    fn the_extended_header_is_read_and_written() {
        let mut wire = vec![0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 3];
        wire.extend_from_slice(b"abc");
        let mut buf = BytesMut::from(&wire[..]);
        let frame = decode(&mut buf, 10).unwrap().unwrap();
        assert_eq!(frame.body(), b"abc");
        assert_eq!(frame.header_len(), LONG_HEADER);

        let (head, n) = header(SHORT_MAX + 1);
        assert_eq!(n, LONG_HEADER);
        assert_eq!(&head[..4], b"\xff\xff\xff\xff");
        assert_eq!(
            u64::from_be_bytes(head[4..].try_into().unwrap()),
            SHORT_MAX + 1
        );
        assert_eq!(header(SHORT_MAX).1, SHORT_HEADER);
    }

    #[test]
    fn a_huge_claim_is_refused_from_the_header_alone() {
        let tib = 1u64 << 40;
        let mut wire = vec![0xff, 0xff, 0xff, 0xff];
        wire.extend_from_slice(&tib.to_be_bytes());
        assert_eq!(
            check(&wire, 64 << 20),
            Err(FrameError::TooLarge {
                len: tib,
                max: 64 << 20
            })
        );
        assert_eq!(
            check(b"\x7f\xff\xff\xff", 10),
            Err(FrameError::TooLarge {
                len: SHORT_MAX,
                max: 10
            })
        );
    }

    #[test]
    fn a_negative_length_other_than_minus_one_is_not_a_frame() {
        assert_eq!(
            check(b"\xff\xff\xff\xfe", 10),
            Err(FrameError::NegativeLength(-2))
        );
    }
}
