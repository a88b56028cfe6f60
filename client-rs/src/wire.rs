//! Building the frames a client sends, and reading the broker's replies.

use bytes::Bytes;
use mphub_protocol::{frame, topic};
use serde::Serialize;
use serde_pickle::{SerOptions, Value};

use crate::error::{Error, Result};

const PROTO: u8 = 0x80;
const FRAME: u8 = 0x95;
const BINUNICODE: u8 = b'X';
const TUPLE2: u8 = 0x86;
const STOP: u8 = b'.';

pub(crate) fn check_topic(t: &str) -> Result<()> {
    topic::validate_topic(t).map_err(|source| Error::Topic {
        what: "topic",
        name: t.into(),
        source,
    })
}

pub(crate) fn check_pattern(p: &str, group: Option<&str>) -> Result<()> {
    topic::validate_pattern(p).map_err(|source| Error::Topic {
        what: "pattern",
        name: p.into(),
        source,
    })?;
    if let Some(g) = group {
        topic::validate_group(g).map_err(|source| Error::Topic {
            what: "group",
            name: g.into(),
            source,
        })?;
    }
    Ok(())
}

/// A whole frame (header included) holding the pickle of `value`.
pub(crate) fn pickled_frame<T: Serialize + ?Sized>(value: &T) -> Result<Bytes> {
    let body = serde_pickle::to_vec(&value, SerOptions::new())?;
    Ok(frame::encode(&body))
}

/// A publish frame: `(topic, payload)` pickled by serde-pickle.
pub(crate) fn publish<T: Serialize + ?Sized>(topic: &str, payload: &T) -> Result<Bytes> {
    check_topic(topic)?;
    pickled_frame(&(topic, payload))
}

/// A publish frame around a payload that is already a pickle, without decoding it.
///
/// The payload's opcodes are spliced between the topic and `TUPLE2`: its leading `PROTO` and
/// `FRAME` (both optional in a stream) are dropped and its `STOP` moved to the end. The topic
/// uses no memo slot, so the payload's memo indices mean what they meant.
pub(crate) fn publish_pickled(topic: &str, payload: &[u8]) -> Result<Bytes> {
    check_topic(topic)?;
    let mut ops = payload;
    let mut proto = 3u8;
    if let [PROTO, p, rest @ ..] = ops {
        proto = (*p).max(2);
        ops = rest;
    }
    if ops.first() == Some(&FRAME) {
        ops = ops
            .get(9..)
            .ok_or(Error::InvalidPickle("truncated FRAME"))?;
    }
    let ops = match ops.split_last() {
        Some((&STOP, body)) if !body.is_empty() => body,
        _ => return Err(Error::InvalidPickle("it does not end with STOP")),
    };
    let mut body = Vec::with_capacity(ops.len() + topic.len() + 10);
    body.extend_from_slice(&[PROTO, proto, BINUNICODE]);
    body.extend_from_slice(&(topic.len() as u32).to_le_bytes());
    body.extend_from_slice(topic.as_bytes());
    body.extend_from_slice(ops);
    body.extend_from_slice(&[TUPLE2, STOP]);
    Ok(frame::encode(&body))
}

/// `("$sub", pattern)` or `("$sub", (pattern, group))`, and the same for `$unsub`.
pub(crate) fn interest(op: &str, pattern: &str, group: Option<&str>) -> Result<Bytes> {
    match group {
        None => pickled_frame(&(op, pattern)),
        Some(g) => pickled_frame(&(op, (pattern, g))),
    }
}

/// `("$hello", {"name": name})`: names the connection.
pub(crate) fn hello(name: &str) -> Result<Bytes> {
    let mut dict = std::collections::BTreeMap::new();
    dict.insert("name", name);
    pickled_frame(&("$hello", dict))
}

/// A broker reply, decoded.
#[derive(Debug, PartialEq)]
pub(crate) enum Reply {
    /// `("$ok", request)`: the request as (op, pattern, group); for `$hello`, the name as the
    /// pattern.
    Ok(String, String, Option<String>),
    /// `("$pong", token)` with an integer token.
    Pong(i64),
    /// `("$error", reason)`.
    Error(String),
}

pub(crate) fn reply(body: &[u8]) -> Result<Reply> {
    let v = serde_pickle::value_from_slice(body, serde_pickle::DeOptions::new())?;
    let unexpected = || Error::Unexpected(format!("{v:.200}"));
    let Value::Tuple(items) = &v else {
        return Err(unexpected());
    };
    match items.as_slice() {
        [Value::String(t), Value::Tuple(req)] if t == "$ok" => match req.as_slice() {
            [Value::String(op), Value::String(p)] => Ok(Reply::Ok(op.clone(), p.clone(), None)),
            [Value::String(op), Value::Dict(d)] if op == "$hello" => {
                match d.get(&serde_pickle::HashableValue::String("name".into())) {
                    Some(Value::String(name)) => Ok(Reply::Ok(op.clone(), name.clone(), None)),
                    _ => Err(unexpected()),
                }
            }
            [Value::String(op), Value::Tuple(pg)] => match pg.as_slice() {
                [Value::String(p), Value::String(g)] => {
                    Ok(Reply::Ok(op.clone(), p.clone(), Some(g.clone())))
                }
                _ => Err(unexpected()),
            },
            _ => Err(unexpected()),
        },
        [Value::String(t), Value::I64(n)] if t == "$pong" => Ok(Reply::Pong(*n)),
        [Value::String(t), Value::String(reason)] if t == "$error" => {
            Ok(Reply::Error(reason.clone()))
        }
        _ => Err(unexpected()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(frame: &Bytes) -> &[u8] {
        &frame[4..]
    }

    #[test]
    fn a_spliced_publish_decodes_as_the_tuple() {
        let payload = serde_pickle::to_vec(&vec![1i64, 2, 3], SerOptions::new()).expect("pickle");
        let f = publish_pickled("a.b", &payload).expect("splice");
        let v = serde_pickle::value_from_slice(body(&f), Default::default()).expect("decode");
        assert_eq!(
            v,
            Value::Tuple(vec![
                Value::String("a.b".into()),
                Value::List(vec![Value::I64(1), Value::I64(2), Value::I64(3)])
            ])
        );
    }

    #[test]
    fn bytes_that_are_not_a_pickle_are_refused() {
        assert!(publish_pickled("a", b"").is_err());
        assert!(publish_pickled("a", b"\x80\x04\x95").is_err());
        assert!(publish_pickled("a", b"abc").is_err());
        assert!(publish("a.*", &1).is_err());
    }

    #[test]
    fn replies_decode() {
        let ok = pickled_frame(&("$ok", ("$sub", ("p.*", "g")))).expect("pickle");
        assert_eq!(
            reply(body(&ok)).expect("reply"),
            Reply::Ok("$sub".into(), "p.*".into(), Some("g".into()))
        );
        let pong = pickled_frame(&("$pong", 7)).expect("pickle");
        assert_eq!(reply(body(&pong)).expect("reply"), Reply::Pong(7));
        let hello = hello("w").expect("pickle");
        assert_eq!(
            mphub_protocol::classify(body(&hello)),
            mphub_protocol::Envelope::Hello { has_code: false }
        );
        let h = mphub_protocol::name::hello(body(&hello)).expect("a hello");
        let ok = mphub_protocol::reply::hello(body(&hello), &h, Some(1 << 20));
        assert_eq!(
            reply(body(&ok)).expect("reply"),
            Reply::Ok("$hello".into(), "w".into(), None)
        );
        let err = pickled_frame(&("$error", "no")).expect("pickle");
        assert_eq!(reply(body(&err)).expect("reply"), Reply::Error("no".into()));
    }
}
