//! Connection names: what a client calls itself with `("$hello", {"name": ...})`, shown in the
//! broker's logs and introspection. The broker and the Rust client check names with [`check`];
//! the Python client with `str.isprintable()`, which this follows.

use thiserror::Error;

/// Longest name, in characters.
pub const MAX_NAME: usize = 64;

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
