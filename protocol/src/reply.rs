//! The broker's replies: `("$ok", request)`, `("$pong", token)` and `("$error", reason)`, each
//! pickled with serde-pickle and framed, ready to queue.

use bytes::Bytes;
use serde_pickle::{SerOptions, Value};

use crate::envelope::{BigIntText, Interest, Token};
use crate::frame;

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

/// `("$ok", ("$hello", {"name": name}))`: the `$hello` request as the broker took it (keys other
/// than `name` are ignored, so they are not echoed). A node in a cluster adds
/// `"max_payload": bytes`, the NATS server's `max_payload` once it is known: publishes larger than
/// that stay on their node, and a client can warn about them before sending (as NATS clients
/// learn it from the server's `INFO`).
pub fn hello(name: &str, max_payload: Option<u64>) -> Bytes {
    let mut dict = std::collections::BTreeMap::new();
    dict.insert(
        serde_pickle::HashableValue::String("name".into()),
        text(name),
    );
    if let Some(max) = max_payload.and_then(|m| i64::try_from(m).ok()) {
        dict.insert(
            serde_pickle::HashableValue::String("max_payload".into()),
            Value::I64(max),
        );
    }
    framed(&Value::Tuple(vec![
        text("$ok"),
        Value::Tuple(vec![text("$hello"), Value::Dict(dict)]),
    ]))
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
    fn a_hello_is_echoed_with_its_name_and_a_clustered_node_adds_max_payload() {
        let echo = |max| {
            let v: Value =
                serde_pickle::value_from_slice(body(&hello("w-1", max)), Default::default())
                    .expect("a pickle");
            format!("{v}")
        };
        assert_eq!(echo(None), "(\"$ok\", (\"$hello\", {\"name\": \"w-1\"}))");
        assert_eq!(
            echo(Some(1 << 20)),
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
