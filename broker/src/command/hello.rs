//! `("$hello", {"name": ...})`: the connection introduces itself, answered
//! `("$ok", ("$hello", {"name": name}))`. The name shows in every later log line of the
//! connection (its span's `name` field) and in introspection (`/connections`, the status page).
//! A connection may say hello again to change its name; keys other than `name` are ignored, so
//! that a later client can send more without an older broker refusing it.

use mphub_protocol::{name, reply};
use serde_pickle::{DeOptions, HashableValue, Value};

use super::Session;

/// Largest `$hello` frame body decoded: a name and a few other keys fit many times over, and a
/// peer cannot make the broker decode megabytes for a greeting.
const MAX_BODY: usize = 4096;

/// Names the connection, or answers `("$error", reason)`; the connection stays either way.
pub(super) fn hello(s: &mut Session<'_>, body: &[u8], has_code: bool) {
    match name_of(body, has_code) {
        Ok(name) => {
            s.conn().set_name(&name);
            tracing::Span::current().record("name", tracing::field::display(&name));
            tracing::debug!("connection named");
            s.outbox().reply(reply::hello(&name));
        }
        Err(reason) => s.refuse("invalid_message", &format!("$hello refused: {reason}")),
    }
}

/// The name in a `$hello` body, or why there is none.
fn name_of(body: &[u8], has_code: bool) -> Result<String, String> {
    if has_code {
        return Err("it must hold plain data (str, int, dict, ...), not objects".into());
    }
    if body.len() > MAX_BODY {
        return Err(format!("it is {} bytes; at most {MAX_BODY}", body.len()));
    }
    let value = serde_pickle::value_from_slice(body, DeOptions::new())
        .map_err(|e| format!("cannot read it: {e}"))?;
    let Value::Tuple(items) = value else {
        return Err("not a (\"$hello\", dict) tuple".into());
    };
    let Some(Value::Dict(dict)) = items.into_iter().nth(1) else {
        return Err("not a (\"$hello\", dict) tuple".into());
    };
    match dict.get(&HashableValue::String("name".into())) {
        Some(Value::String(n)) => match name::check(n) {
            Ok(()) => Ok(n.clone()),
            Err(e) => Err(e.to_string()),
        },
        Some(_) => Err("the name must be a str".into()),
        None => Err("the dict has no \"name\"".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(v: Value) -> Vec<u8> {
        serde_pickle::value_to_vec(
            &Value::Tuple(vec![Value::String("$hello".into()), v]),
            Default::default(),
        )
        .unwrap()
    }

    fn dict(pairs: &[(&str, Value)]) -> Value {
        Value::Dict(
            pairs
                .iter()
                .map(|(k, v)| (HashableValue::String((*k).into()), v.clone()))
                .collect(),
        )
    }

    #[test]
    fn a_name_is_read_and_other_keys_are_ignored() {
        let b = body(dict(&[
            ("name", Value::String("worker-3 (eu)".into())),
            ("lang", Value::String("python".into())),
            ("pid", Value::I64(42)),
        ]));
        assert_eq!(name_of(&b, false).unwrap(), "worker-3 (eu)");
    }

    #[test]
    fn bad_names_are_refused_with_the_reason() {
        let too_long = "x".repeat(65);
        for (v, why) in [
            (dict(&[]), "no \"name\""),
            (dict(&[("name", Value::I64(3))]), "must be a str"),
            (dict(&[("name", Value::String(String::new()))]), "empty"),
            (dict(&[("name", Value::String(too_long))]), "65 characters"),
            (dict(&[("name", Value::String("a\nb".into()))]), "printable"),
            (
                dict(&[("name", Value::String("evil\u{202E}txt".into()))]),
                "printable",
            ),
        ] {
            let err = name_of(&body(v), false).unwrap_err();
            assert!(err.contains(why), "{err}");
        }
        assert!(name_of(&body(dict(&[])), true)
            .unwrap_err()
            .contains("plain data"));
        assert!(name_of(&vec![b'x'; MAX_BODY + 1], false)
            .unwrap_err()
            .contains("at most"));
    }
}
