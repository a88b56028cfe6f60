//! The broker's replies: `("$ok", request)`, `("$pong", token)` and `("$error", reason)`, each
//! pickled with serde-pickle and framed, ready to queue.

use bytes::Bytes;
use serde_pickle::{SerOptions, Value};

use crate::envelope::opcodes as op;
use crate::envelope::plain::Layout;
use crate::envelope::{BigIntText, Interest, Token};
use crate::frame;
use crate::name::Hello;

fn framed(value: &Value) -> Bytes {
    // Serializing a Value built here cannot fail: it holds only str, bytes, ints and tuples.
    let body = serde_pickle::value_to_vec(value, SerOptions::new())
        .unwrap_or_else(|e| unreachable!("pickling a plain reply failed: {e}"));
    frame::encode(&body)
}

fn text(s: &str) -> Value {
    Value::String(s.to_owned())
}

fn interest(i: &Interest<'_>) -> Value {
    match &i.group {
        None => text(&i.pattern),
        Some(g) => Value::Tuple(vec![text(&i.pattern), text(g)]),
    }
}

/// `("$ok", (op, args))` for a `$sub` or `$unsub` (`op` is `"$sub"` or `"$unsub"`).
pub fn ok(op: &str, args: &Interest<'_>) -> Bytes {
    framed(&Value::Tuple(vec![
        text("$ok"),
        Value::Tuple(vec![text(op), interest(args)]),
    ]))
}

/// `("$ok", request)` for a `$hello`: the request's own pickle (`body`, the frame body that
/// [`crate::name::hello`] read as `hello`) spliced in unchanged, so the client reads back exactly
/// what it sent, other keys included. A node in a cluster passes `max_payload`, the NATS server's
/// limit in bytes, which is added to the echoed dict as `"max_payload"` (as NATS clients learn it
/// from the server's `INFO`): publishes larger than that stay on their node.
///
/// Splicing needs the pickle as CPython writes it at any protocol: STOP as its last byte and at
/// most one FRAME, right after PROTO, running to the end. Adding `max_payload` also needs the
/// request's tuple built by TUPLE2 (protocol 2 and later, as `Connection.send` writes it);
/// from protocols 0 and 1 the request comes back without it. A pickle of another shape (bytes
/// after STOP, frames elsewhere: valid, but not CPython's) is answered
/// `("$ok", ("$hello", {"name": name}))`, with `max_payload` where given.
pub fn hello(body: &[u8], hello: &Hello, max_payload: Option<u64>) -> Bytes {
    let max_payload = max_payload.and_then(|m| i32::try_from(m).ok());
    splice_hello(body, &hello.layout, max_payload)
        .or_else(|| splice_hello(body, &hello.layout, None))
        .unwrap_or_else(|| hello_rebuilt(&hello.name, max_payload))
}

/// `("$ok", ("$hello", {"name": name}))`, plus `"max_payload"` when given.
fn hello_rebuilt(name: &str, max_payload: Option<i32>) -> Bytes {
    let mut dict = std::collections::BTreeMap::new();
    dict.insert(
        serde_pickle::HashableValue::String("name".into()),
        text(name),
    );
    if let Some(max) = max_payload {
        dict.insert(
            serde_pickle::HashableValue::String("max_payload".into()),
            Value::I64(max.into()),
        );
    }
    framed(&Value::Tuple(vec![
        text("$ok"),
        Value::Tuple(vec![text("$hello"), Value::Dict(dict)]),
    ]))
}

/// `BINUNICODE` of `s` (any protocol from 1 reads it).
fn push_str(out: &mut Vec<u8>, s: &str) {
    out.push(op::BINUNICODE);
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// The request's opcodes between `("$ok",` and `)`, in a pickle of its own protocol. `None` when
/// the pickle is not of the shape this needs (see [`hello`]).
fn splice_hello(body: &[u8], layout: &Layout, max_payload: Option<i32>) -> Option<Bytes> {
    if layout.stop + 1 != body.len() {
        return None; // bytes after STOP (pickle.loads ignores them)
    }
    let (proto, start) = match body {
        [op::PROTO, v, ..] => (*v, 2),
        _ => (2, 0),
    };
    // A FRAME must be the first opcode after PROTO and run exactly to the end: then it is
    // lengthened by what is added inside it.
    let frame = match (layout.frame, layout.frames) {
        (None, 0) => None,
        (Some(at), 1) if at == start => {
            let len = body.get(at + 1..at + 9)?;
            let len = u64::from_le_bytes(len.try_into().ok()?);
            if at as u64 + 9 + len != body.len() as u64 {
                return None;
            }
            Some(len)
        }
        _ => return None,
    };
    // With max_payload: before the request's own TUPLE2 (and the memo put after it, if any),
    // the dict is on top of the stack: `"max_payload" n SETITEM` adds the key to it.
    let mut extra = Vec::new();
    let mut insert_at = layout.stop;
    if let Some(max) = max_payload {
        let [(op2, at2), (op1, at1)] = layout.before_stop;
        let memo_put = matches!(op1, op::MEMOIZE | op::BINPUT | op::LONG_BINPUT | op::PUT);
        insert_at = match (op2, op1) {
            (_, op::TUPLE2) => at1,
            (op::TUPLE2, _) if memo_put => at2,
            _ => return None,
        };
        push_str(&mut extra, "max_payload");
        extra.push(op::BININT);
        extra.extend_from_slice(&max.to_le_bytes());
        extra.push(op::SETITEM);
    }
    let mut out = Vec::with_capacity(body.len() + extra.len() + 16);
    out.extend_from_slice(&[op::PROTO, proto]);
    push_str(&mut out, "$ok");
    let frame_at = out.len();
    out.extend_from_slice(body.get(start..insert_at)?);
    out.extend_from_slice(&extra);
    out.extend_from_slice(body.get(insert_at..layout.stop)?);
    out.extend_from_slice(&[op::TUPLE2, op::STOP]);
    if let Some(len) = frame {
        // The frame held the request's STOP; it now holds the extra opcodes and TUPLE2, STOP.
        let len = len + extra.len() as u64 + 1;
        out.get_mut(frame_at + 1..frame_at + 9)?
            .copy_from_slice(&len.to_le_bytes());
    }
    Some(frame::encode(&out))
}

/// `("$pong", token)`.
pub fn pong(token: &Token<'_>) -> Bytes {
    let token = match token {
        Token::None => Value::None,
        Token::Bool(b) => Value::Bool(*b),
        Token::Int(n) => Value::I64(*n),
        Token::BigInt(BigIntText::LeBytes(b)) => {
            Value::Int(num_bigint::BigInt::from_signed_bytes_le(b))
        }
        Token::BigInt(BigIntText::Decimal(d)) => {
            match num_bigint::BigInt::parse_bytes(d.trim_start_matches('+').as_bytes(), 10) {
                Some(n) => Value::Int(n),
                None => Value::None,
            }
        }
        Token::Str(s) => text(s),
        Token::Bytes(b) => Value::Bytes(b.to_vec()),
    };
    framed(&Value::Tuple(vec![text("$pong"), token]))
}

/// `("$error", reason)`.
pub fn error(reason: &str) -> Bytes {
    framed(&Value::Tuple(vec![text("$error"), text(reason)]))
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use super::*;
    use crate::envelope::{classify, Envelope};

    fn body(frame: &Bytes) -> &[u8] {
        &frame[4..]
    }

    #[test]
    fn replies_classify_back_to_what_they_say() {
        // A reply is itself a (topic, payload) tuple whose topic is the broker's.
        let e = error("bad topic");
        match classify(body(&e)) {
            Envelope::Invalid(reason) => assert!(reason.contains("$error"), "{reason}"),
            other => panic!("{other:?}"),
        }
        let p = pong(&Token::Str(Cow::Borrowed("t")));
        assert!(matches!(classify(body(&p)), Envelope::Invalid(r) if r.contains("$pong")));
    }

    #[test]
    fn a_hello_is_echoed_whole_and_rebuilt_only_when_it_cannot_be_spliced() {
        // serde-pickle writes protocol 3 without a memo put after TUPLE2: splice it, and
        // rebuild where the layout does not allow it (bytes after STOP).
        let request = serde_pickle::value_to_vec(
            &Value::Tuple(vec![text("$hello"), {
                let mut d = std::collections::BTreeMap::new();
                d.insert(
                    serde_pickle::HashableValue::String("name".into()),
                    text("w-1"),
                );
                d.insert(
                    serde_pickle::HashableValue::String("x".into()),
                    Value::I64(7),
                );
                Value::Dict(d)
            }]),
            SerOptions::new(),
        )
        .expect("pickle");
        let h = crate::name::hello(&request).expect("a hello");
        let echo = |body: &[u8], max| {
            let v: Value = serde_pickle::value_from_slice(
                self::body(&hello(body, &h, max)),
                Default::default(),
            )
            .expect("a pickle");
            format!("{v}")
        };
        assert_eq!(
            echo(&request, None),
            "(\"$ok\", (\"$hello\", {\"name\": \"w-1\", \"x\": 7}))"
        );
        assert_eq!(
            echo(&request, Some(1 << 20)),
            "(\"$ok\", (\"$hello\", {\"max_payload\": 1048576, \"name\": \"w-1\", \"x\": 7}))"
        );
        let mut trailing = request.clone();
        trailing.push(b'.');
        assert_eq!(
            echo(&trailing, Some(1 << 20)),
            "(\"$ok\", (\"$hello\", {\"max_payload\": 1048576, \"name\": \"w-1\"}))"
        );
    }

    #[test]
    fn big_int_tokens_survive() {
        let p = pong(&Token::BigInt(BigIntText::Decimal(
            "123456789012345678901234567890",
        )));
        let v: Value = serde_pickle::value_from_slice(body(&p), Default::default()).unwrap();
        assert_eq!(
            format!("{v}"),
            "(\"$pong\", 123456789012345678901234567890)"
        );
    }
}
