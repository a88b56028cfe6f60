//! The common publish, recognised by its bytes before the walk.
//!
//! `multiprocessing.connection.Connection.send` pickles `(topic, payload)` with
//! `ForkingPickler.dumps` at the default protocol (4 up to CPython 3.13, 5 from 3.14), and the
//! pickler (`Lib/pickle.py` `save_tuple`, `save_str`; `Modules/_pickle.c` likewise) writes a
//! short topic as
//!
//! ```text
//! PROTO p   FRAME <u64 len>   SHORT_BINUNICODE <n> <topic utf-8>   MEMOIZE
//! <payload opcodes>   TUPLE2   MEMOIZE   STOP
//! ```
//!
//! (`pickletools.dis` shows it). [`recognise`] checks that frame and a valid plain topic; the
//! scanner then starts its walk after the topic's MEMOIZE, with the stack and memo those four
//! opcodes leave (`Scanner::walk_publish`), and walks the payload with every opcode's usual
//! semantics. The shortcut never decides anything the walk would not: a pickle whose walk ends
//! in a pair holding this very topic string is that publish; any other outcome is judged by the
//! general envelope code, exactly as without the shortcut.

use super::opcodes::{FRAME, MEMOIZE, PROTO, SHORT_BINUNICODE, STOP, TUPLE2};
use super::value::{Enc, Span, Val};
use crate::topic;

/// Bytes before the topic: PROTO, its argument, FRAME, its u64, SHORT_BINUNICODE, the length.
const HEAD: usize = 13;

/// The last three opcodes: the `(topic, payload)` tuple, memoized, and STOP.
pub(super) const TAIL: [u8; 3] = [TUPLE2, MEMOIZE, STOP];

/// A body with the common publish's head and tail, and a valid plain topic.
#[derive(Debug, Clone, Copy)]
pub(super) struct Shape<'a> {
    /// The pickle's protocol (PROTO's argument: 4 or 5).
    pub(super) proto: u8,
    /// The topic, already checked by [`plain_ascii_topic`] (stricter than
    /// [`topic::validate_topic`]), so not a `$` topic.
    pub(super) topic: &'a str,
    /// Where the topic's bytes lie in the body.
    pub(super) span: Span,
    /// Offset of the first payload opcode (after the topic's MEMOIZE).
    pub(super) payload: usize,
    /// Offset of the final [`TAIL`].
    pub(super) tail: usize,
}

impl Shape<'_> {
    /// The value SHORT_BINUNICODE pushed for the topic: what the walk holds for it, on the stack
    /// and in memo entry 0.
    pub(super) fn topic_val(&self) -> Val {
        Val::Str(self.span, Enc::Utf8)
    }
}

/// Whether `bytes` is a topic [`topic::validate_topic`] certainly accepts, in one pass: 1 to 255
/// bytes of printable ASCII other than space, `*` and `>`, in 1 to [`topic::MAX_TOKENS`]
/// non-empty `.`-separated tokens, not starting with `$`. Stricter than `validate_topic` (no
/// control characters, no non-ASCII text): what this refuses, the general way judges.
#[inline]
fn plain_ascii_topic(bytes: &[u8]) -> bool {
    let (Some(&first), 1..=topic::MAX_LEN) = (bytes.first(), bytes.len()) else {
        return false;
    };
    // Branch-free per byte (a topic is usually a dozen bytes; branches cost more than the work).
    // `prev` starts as a dot so that a leading `.` counts as an empty token.
    let (mut bad, mut prev, mut dots) = (0u8, 1u8, 0usize);
    for &b in bytes {
        let class = CLASS[usize::from(b)];
        bad |= (class & OTHER) | (class & prev);
        prev = class & DOT;
        dots += usize::from(prev);
    }
    bad == 0 && prev == 0 && first != b'$' && dots < topic::MAX_TOKENS
}

/// [`CLASS`] of `.`.
const DOT: u8 = 1;
/// [`CLASS`] of a byte no plain ASCII topic holds: controls, space, `*`, `>`, DEL, non-ASCII.
const OTHER: u8 = 2;
/// Each byte's class for [`plain_ascii_topic`]: 0 for a token's byte, else [`DOT`] or [`OTHER`].
const CLASS: [u8; 256] = {
    let mut class = [OTHER; 256];
    let mut b = b'!';
    while b <= b'~' {
        class[b as usize] = match b {
            b'.' => DOT,
            b'*' | b'>' => OTHER,
            _ => 0,
        };
        b += 1;
    }
    class
};

/// The common publish's [`Shape`], or `None` for anything else (then the general walk decides).
///
/// Checks only what the walk of the head would check, so that starting after it is the same
/// walk: a protocol CPython knows that has FRAME (4 or 5), a FRAME length within the body, and
/// the topic's bytes within the body. The topic must also pass [`plain_ascii_topic`], so that a
/// pair holding it is certainly a publish to it.
// Inlined (with `plain_ascii_topic`) into its caller, `classify_judged`: as two calls, the
// criterion bench read 126 ns against 102 ns (medians of 8 interleaved runs, 2026-12-01).
#[inline]
pub(super) fn recognise(body: &[u8]) -> Option<Shape<'_>> {
    let (head, rest) = body.split_first_chunk::<HEAD>()?;
    let [PROTO, proto @ (4 | 5), FRAME, f0, f1, f2, f3, f4, f5, f6, f7, SHORT_BINUNICODE, n] =
        *head
    else {
        return None;
    };
    let frame = u64::from_le_bytes([f0, f1, f2, f3, f4, f5, f6, f7]);
    if frame > (body.len() - (HEAD - 2)) as u64 {
        return None;
    }
    let n = usize::from(n);
    let (bytes, after) = rest.split_at_checked(n)?;
    let (&MEMOIZE, payload) = after.split_first()? else {
        return None;
    };
    if !payload.ends_with(&TAIL) {
        return None;
    }
    if !plain_ascii_topic(bytes) {
        return None;
    }
    let topic = std::str::from_utf8(bytes).ok()?;
    Some(Shape {
        proto,
        topic,
        span: Span {
            start: HEAD,
            len: n as u32,
        },
        payload: HEAD + n + 1,
        tail: body.len() - TAIL.len(),
    })
}

#[cfg(test)]
mod tests;
