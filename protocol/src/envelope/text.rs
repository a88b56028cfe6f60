//! Decoding the few argument forms the scanner must read: protocol-0 text strings and integers.

use std::borrow::Cow;

/// Decodes `raw-unicode-escape` (the `UNICODE` opcode's argument): bytes are Latin-1, except
/// `\uXXXX` and `\UXXXXXXXX`. `None` when an escape is broken or names no scalar value (a lone
/// surrogate is a Python `str`, but not one a topic can be).
pub fn raw_unicode_escape(raw: &[u8]) -> Option<Cow<'_, str>> {
    if raw.is_ascii() && !raw.contains(&b'\\') {
        // ASCII is valid UTF-8.
        return std::str::from_utf8(raw).ok().map(Cow::Borrowed);
    }
    let mut out = String::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let c = raw[i];
        i += 1;
        if c != b'\\' || i >= raw.len() {
            out.push(char::from(c));
            continue;
        }
        let digits = match raw[i] {
            b'u' => 4,
            b'U' => 8,
            other => {
                out.push('\\');
                out.push(char::from(other));
                i += 1;
                continue;
            }
        };
        // Hex digits only: `from_str_radix` would also take a sign, which Python refuses.
        let hex = raw
            .get(i + 1..i + 1 + digits)
            .filter(|h| h.iter().all(u8::is_ascii_hexdigit))?;
        let code = u32::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?;
        out.push(char::from_u32(code)?);
        i += 1 + digits;
    }
    Some(Cow::Owned(out))
}

/// An integer written in decimal (the `INT` and `LONG` opcodes): `Some(Ok(n))` when it fits an
/// `i64`, `Some(Err(()))` when it is a valid but larger integer, `None` when it is not one.
pub fn decimal(text: &[u8]) -> Option<Result<i64, ()>> {
    let digits = text
        .strip_prefix(b"-")
        .or_else(|| text.strip_prefix(b"+"))
        .unwrap_or(text);
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let s = std::str::from_utf8(text).ok()?;
    Some(s.parse::<i64>().map_err(|_| ()))
}

/// A little-endian two's-complement integer (`LONG1`, `LONG4`) if it fits an `i64`.
pub fn le_signed(bytes: &[u8]) -> Option<i64> {
    if bytes.is_empty() {
        return Some(0);
    }
    if bytes.len() > 8 {
        return None;
    }
    let fill = if bytes[bytes.len() - 1] & 0x80 != 0 {
        0xff
    } else {
        0
    };
    let mut buf = [fill; 8];
    buf[..bytes.len()].copy_from_slice(bytes);
    Some(i64::from_le_bytes(buf))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_unicode_escape_decodes_as_python_does() {
        assert_eq!(raw_unicode_escape(b"abc").unwrap(), "abc");
        assert_eq!(raw_unicode_escape(b"a\\u005cb").unwrap(), "a\\b");
        assert_eq!(raw_unicode_escape(b"\\u00e4\\U0001f600").unwrap(), "ä😀");
        assert_eq!(raw_unicode_escape(b"\xe4").unwrap(), "ä");
        assert_eq!(raw_unicode_escape(b"a\\xb").unwrap(), "a\\xb");
        assert_eq!(raw_unicode_escape(b"a\\").unwrap(), "a\\");
        assert!(raw_unicode_escape(b"\\u12").is_none());
        assert!(raw_unicode_escape(b"\\ud800").is_none());
        // Python takes hex digits only (a sign is not one), and an even run of backslashes
        // before `u` is no escape.
        assert!(raw_unicode_escape(b"\\u+041").is_none());
        assert_eq!(raw_unicode_escape(b"\\\\u0041").unwrap(), "\\\\u0041");
        assert_eq!(raw_unicode_escape(b"\\\\\\u0041").unwrap(), "\\\\A");
    }

    #[test]
    fn decimal_integers_parse_or_say_they_are_big() {
        assert_eq!(decimal(b"42"), Some(Ok(42)));
        assert_eq!(decimal(b"-7"), Some(Ok(-7)));
        assert_eq!(decimal(b"99999999999999999999"), Some(Err(())));
        assert_eq!(decimal(b"4x"), None);
        assert_eq!(decimal(b""), None);
    }

    #[test]
    fn little_endian_longs_sign_extend() {
        assert_eq!(le_signed(b""), Some(0));
        assert_eq!(le_signed(b"\xff"), Some(-1));
        assert_eq!(le_signed(b"\x00\x01"), Some(256));
        assert_eq!(le_signed(b"\xff\x00"), Some(255));
        assert_eq!(le_signed(&[1; 9]), None);
    }
}
