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
/// than `name` are ignored, so they are not echoed).
pub fn hello(name: &str) -> Bytes {
    let mut dict = std::collections::BTreeMap::new();
    dict.insert(
        serde_pickle::HashableValue::String("name".into()),
        text(name),
    );
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
    fn a_hello_is_echoed_with_its_name() {
        let v: Value = serde_pickle::value_from_slice(body(&hello("w-1")), Default::default())
            .expect("a pickle");
        assert_eq!(
            format!("{v}"),
            "(\"$ok\", (\"$hello\", {\"name\": \"w-1\"}))"
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
