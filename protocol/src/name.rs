//! Connection names: what a client calls itself with `("$hello", {"name": ...})`, shown in the
//! broker's logs and introspection. [`hello_name`] reads one from a `$hello` frame body (with
//! the plain-data decoder of `$metrics`: nothing that imports or calls is decoded); the broker
//! and the Rust client check names with [`check`], the Python client with `str.isprintable()`,
//! which this follows.

use thiserror::Error;

use crate::envelope::plain::{Layout, Plain, PlainError, Shape};

/// Longest name, in characters.
pub const MAX_NAME: usize = 64;

/// Largest `$hello` body read: a name and a few other keys fit many times over, and a peer
/// cannot make the broker decode megabytes for a greeting.
pub const MAX_HELLO: usize = 4096;

/// Why a `$hello` names nothing.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum HelloError {
    /// Over [`MAX_HELLO`] bytes.
    #[error("it is {0} bytes; at most {MAX_HELLO}")]
    TooLarge(usize),
    /// The pickle imports or calls something.
    #[error("it must hold plain data (str, int, dict, ...), not objects")]
    Code,
    /// Not a pickle of plain data CPython would load.
    #[error("cannot read it: {0}")]
    Invalid(String),
    /// Not a `("$hello", dict)` tuple.
    #[error("not a (\"$hello\", dict) tuple")]
    Shape,
    /// The dict has no `"name"` key.
    #[error("the dict has no \"name\"")]
    NoName,
    /// The name is not a `str` (its Python type).
    #[error("the name must be a str, not a {0}")]
    NotStr(&'static str),
    /// The name breaks the rules of [`check`].
    #[error(transparent)]
    Name(#[from] NameError),
}

/// A `$hello` request as the broker read it: the name, and where its pickle's opcodes stand, so
/// that [`crate::reply::hello`] can answer with the request itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// The name, checked with [`check`].
    pub name: String,
    pub(crate) layout: Layout,
}

/// The name in a `$hello` frame body, `("$hello", {"name": name, ...})`; other keys are
/// ignored. The name is checked with [`check`].
pub fn hello_name(body: &[u8]) -> Result<String, HelloError> {
    hello(body).map(|h| h.name)
}

/// Reads a `$hello` frame body, `("$hello", {"name": name, ...})`: the name (checked with
/// [`check`]; other keys are ignored) and what answering with the request needs.
pub fn hello(body: &[u8]) -> Result<Hello, HelloError> {
    if body.len() > MAX_HELLO {
        return Err(HelloError::TooLarge(body.len()));
    }
    let plain = Plain::decode(body, MAX_HELLO).map_err(|e| match e {
        PlainError::Code => HelloError::Code,
        PlainError::Invalid(m) => HelloError::Invalid(m),
    })?;
    let top = plain.top();
    if plain.container(top) != Some((Shape::Tuple, 2)) {
        return Err(HelloError::Shape);
    }
    let mut pair = plain.items(top);
    let (topic, dict) = (pair.next(), pair.next());
    let (Some(topic), Some(dict)) = (topic, dict) else {
        return Err(HelloError::Shape);
    };
    if plain.str(topic) != Some("$hello")
        || !matches!(plain.container(dict), Some((Shape::Dict, _)))
    {
        return Err(HelloError::Shape);
    }
    let mut items = plain.items(dict);
    let mut name = None;
    // Key, value, key, value, …; the last "name" wins, as in the dict Python builds.
    while let (Some(k), Some(v)) = (items.next(), items.next()) {
        if plain.str(k) == Some("name") {
            name = Some(v);
        }
    }
    let v = name.ok_or(HelloError::NoName)?;
    let name = plain.str(v).ok_or(HelloError::NotStr(plain.type_name(v)))?;
    check(name)?;
    Ok(Hello {
        name: name.to_owned(),
        layout: plain.layout(),
    })
}

/// Why a name is refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum NameError {
    /// No characters at all.
    #[error("the name is empty")]
    Empty,
    /// More than [`MAX_NAME`] characters.
    #[error("the name has {0} characters; at most {MAX_NAME}")]
    TooLong(usize),
    /// A character that is not printable.
    #[error("the name holds {0:?}, which is not a printable character")]
    NotPrintable(char),
}

/// Whether `name` is 1 to [`MAX_NAME`] printable characters.
///
/// Printable as Python's `str.isprintable()` means it, as near as Rust's standard library
/// allows: no control characters, no separators other than the space, and none of Unicode's
/// invisible format characters (category Cf: bidirectional overrides, zero-width spaces), which
/// could make a log line or the status page read other than it is. (Python also refuses
/// unassigned and private-use code points; this accepts them.)
pub fn check(name: &str) -> Result<(), NameError> {
    let n = name.chars().count();
    if n == 0 {
        return Err(NameError::Empty);
    }
    if n > MAX_NAME {
        return Err(NameError::TooLong(n));
    }
    match name.chars().find(|c| !printable(*c)) {
        Some(c) => Err(NameError::NotPrintable(c)),
        None => Ok(()),
    }
}

fn printable(c: char) -> bool {
    if c == ' ' {
        return true;
    }
    if c.is_control() || c.is_whitespace() {
        return false;
    }
    // Unicode 15's format characters (Cf), which CPython calls unprintable.
    !matches!(c,
        '\u{00AD}'
        | '\u{0600}'..='\u{0605}'
        | '\u{061C}'
        | '\u{06DD}'
        | '\u{070F}'
        | '\u{0890}'..='\u{0891}'
        | '\u{08E2}'
        | '\u{180E}'
        | '\u{200B}'..='\u{200F}'
        | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{2064}'
        | '\u{2066}'..='\u{206F}'
        | '\u{FEFF}'
        | '\u{FFF9}'..='\u{FFFB}'
        | '\u{110BD}'
        | '\u{110CD}'
        | '\u{13430}'..='\u{1343F}'
        | '\u{1BCA0}'..='\u{1BCA3}'
        | '\u{1D173}'..='\u{1D17A}'
        | '\u{E0001}'
        | '\u{E0020}'..='\u{E007F}'
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_of_any_script_up_to_the_limit_pass() {
        assert_eq!(check("worker-3 (eu)"), Ok(()));
        assert_eq!(check("ワーカー 7"), Ok(()));
        assert_eq!(check(&"é".repeat(MAX_NAME)), Ok(()));
    }

    #[test]
    fn empty_long_and_invisible_names_are_refused() {
        assert_eq!(check(""), Err(NameError::Empty));
        assert_eq!(check(&"x".repeat(65)), Err(NameError::TooLong(65)));
        for bad in [
            '\n', '\t', '\u{7f}', '\u{85}', '\u{a0}', '\u{2028}', '\u{202e}', '\u{200b}',
        ] {
            assert_eq!(
                check(&format!("a{bad}b")),
                Err(NameError::NotPrintable(bad))
            );
        }
    }

    use serde_pickle::{HashableValue, Value as V};

    /// The body of `("$hello", v)`, pickled by serde-pickle (protocol 3).
    fn hello(v: V) -> Vec<u8> {
        let pair = V::Tuple(vec![V::String("$hello".into()), v]);
        serde_pickle::value_to_vec(&pair, Default::default()).unwrap_or_default()
    }

    fn with(pairs: &[(&str, V)]) -> Vec<u8> {
        let dict = pairs
            .iter()
            .map(|(k, v)| (HashableValue::String((*k).into()), v.clone()))
            .collect();
        hello(V::Dict(dict))
    }

    #[test]
    fn a_hello_gives_its_name_and_other_keys_are_ignored() {
        let body = with(&[
            ("lang", V::String("python".into())),
            ("name", V::String("worker-3 (eu)".into())),
            ("pid", V::I64(42)),
        ]);
        assert_eq!(hello_name(&body), Ok("worker-3 (eu)".into()));
        // pickle.dumps(("$hello", {"name": "w-1"}), 0), as CPython 3.11 writes it.
        let p0 = b"(V$hello\np0\n(dp1\nVname\np2\nVw-1\np3\nstp4\n.";
        assert_eq!(hello_name(p0), Ok("w-1".into()));
    }

    #[test]
    fn a_hello_without_a_good_name_says_why() {
        assert_eq!(hello_name(&with(&[])), Err(HelloError::NoName));
        assert_eq!(
            hello_name(&hello(V::String("x".into()))),
            Err(HelloError::Shape)
        );
        assert_eq!(
            hello_name(&with(&[("name", V::I64(3))])),
            Err(HelloError::NotStr("int"))
        );
        assert_eq!(
            hello_name(&with(&[("name", V::String("a\u{202e}b".into()))])),
            Err(HelloError::Name(NameError::NotPrintable('\u{202e}')))
        );
        assert_eq!(
            hello_name(&vec![b'x'; MAX_HELLO + 1]),
            Err(HelloError::TooLarge(MAX_HELLO + 1))
        );
        // pickle.dumps(("$hello", {"name": os.system}), 4): a global, never decoded.
        let code = b"\x80\x04\x95\x29\x00\x00\x00\x00\x00\x00\x00\x8c\x06$hello\x94}\x94\x8c\x04name\x94\x8c\x05posix\x94\x8c\x06system\x94\x93\x94s\x86\x94.";
        assert_eq!(hello_name(code), Err(HelloError::Code));
    }

    #[test]
    fn python_agrees_on_every_character_checked_here() {
        // str.isprintable() of each, from CPython 3.11 (Unicode 14).
        let python = [
            (' ', true),
            ('~', true),
            ('\u{a0}', false),
            ('\u{ad}', false),
            ('\u{3000}', false),
            ('\u{feff}', false),
            ('\u{1f600}', true),
        ];
        for (c, printable_in_python) in python {
            assert_eq!(printable(c), printable_in_python, "{c:?}");
        }
    }
}
