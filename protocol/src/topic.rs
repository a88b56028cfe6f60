//! Topics, patterns and queue-group names, by the NATS subject rules.
//!
//! A topic is `.`-separated tokens: non-empty, case-sensitive, without whitespace, at most
//! [`MAX_LEN`] bytes and [`MAX_TOKENS`] tokens. In a pattern, `*` matches exactly one token and
//! `>` one or more trailing tokens (only as the last token). Published topics hold no wildcard.
//! Topics starting with `$` are the broker's.

use std::fmt;

/// Longest topic or pattern, in bytes.
pub const MAX_LEN: usize = 255;
/// Most tokens in a topic or pattern.
pub const MAX_TOKENS: usize = 16;

/// Why a topic, pattern or group name is not valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicError {
    /// Empty string.
    Empty,
    /// Longer than [`MAX_LEN`] bytes.
    TooLong(usize),
    /// More than [`MAX_TOKENS`] tokens.
    TooManyTokens(usize),
    /// `a..b`, `.a` or `a.`.
    EmptyToken,
    /// A space, tab, newline or other whitespace.
    Whitespace,
    /// `*` or `>` in a published topic.
    WildcardInTopic,
    /// `>` that is not the last token, or a wildcard inside a token (`a*`).
    MisplacedWildcard,
    /// Starts with `$`: reserved for the broker.
    Reserved,
    /// A queue group name holding a `.` or a wildcard.
    BadGroup,
}

impl fmt::Display for TopicError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TopicError::Empty => write!(f, "is empty"),
            TopicError::TooLong(n) => write!(f, "is {n} bytes long; the limit is {MAX_LEN}"),
            TopicError::TooManyTokens(n) => {
                write!(f, "has {n} tokens; the limit is {MAX_TOKENS}")
            }
            TopicError::EmptyToken => {
                write!(f, "has an empty token (leading, trailing or double '.')")
            }
            TopicError::Whitespace => write!(f, "contains whitespace"),
            TopicError::WildcardInTopic => {
                write!(
                    f,
                    "contains a wildcard ('*' or '>'), which only subscriptions may use"
                )
            }
            TopicError::MisplacedWildcard => write!(
                f,
                "misuses a wildcard: '*' and '>' must be whole tokens, and '>' only the last"
            ),
            TopicError::Reserved => write!(f, "starts with '$', which is reserved for the broker"),
            TopicError::BadGroup => {
                write!(
                    f,
                    "is not a valid queue group name (one token, no wildcard)"
                )
            }
        }
    }
}

impl std::error::Error for TopicError {}

fn check_common(s: &str) -> Result<(), TopicError> {
    if s.is_empty() {
        return Err(TopicError::Empty);
    }
    if s.len() > MAX_LEN {
        return Err(TopicError::TooLong(s.len()));
    }
    let whitespace = if s.is_ascii() {
        s.bytes().any(|b| b.is_ascii_whitespace() || b == b'\x0b')
    } else {
        s.chars().any(char::is_whitespace)
    };
    if whitespace {
        return Err(TopicError::Whitespace);
    }
    Ok(())
}

/// Checks a topic someone publishes to (no wildcards; `$` topics are not for publishing).
/// One pass over the bytes: this runs for every publish.
pub fn validate_topic(topic: &str) -> Result<(), TopicError> {
    check_common(topic)?;
    let bytes = topic.as_bytes();
    if bytes[0] == b'$' {
        return Err(TopicError::Reserved);
    }
    let mut tokens = 1;
    let mut token_len = 0;
    for &b in bytes {
        match b {
            b'.' => {
                if token_len == 0 {
                    return Err(TopicError::EmptyToken);
                }
                tokens += 1;
                token_len = 0;
            }
            b'*' | b'>' => return Err(TopicError::WildcardInTopic),
            _ => token_len += 1,
        }
    }
    if token_len == 0 {
        return Err(TopicError::EmptyToken);
    }
    if tokens > MAX_TOKENS {
        return Err(TopicError::TooManyTokens(tokens));
    }
    Ok(())
}

/// Checks a subscription pattern.
pub fn validate_pattern(pattern: &str) -> Result<(), TopicError> {
    check_common(pattern)?;
    if pattern.starts_with('$') {
        return Err(TopicError::Reserved);
    }
    let count = pattern.split('.').count();
    if count > MAX_TOKENS {
        return Err(TopicError::TooManyTokens(count));
    }
    for (i, token) in pattern.split('.').enumerate() {
        match token {
            "" => return Err(TopicError::EmptyToken),
            "*" => {}
            ">" if i + 1 == count => {}
            t if t.contains(['*', '>']) => return Err(TopicError::MisplacedWildcard),
            _ => {}
        }
    }
    Ok(())
}

/// Checks a queue group name: one token, no wildcard.
pub fn validate_group(group: &str) -> Result<(), TopicError> {
    check_common(group)?;
    if group.contains(['.', '*', '>']) {
        return Err(TopicError::BadGroup);
    }
    Ok(())
}

/// True when `pattern` has a `*` or `>` token.
pub fn has_wildcard(pattern: &str) -> bool {
    pattern.split('.').any(|t| t == "*" || t == ">")
}

/// Whether a valid `pattern` matches a valid published `topic`.
pub fn matches(pattern: &str, topic: &str) -> bool {
    let mut topic_tokens = topic.split('.');
    for p in pattern.split('.') {
        match p {
            ">" => return topic_tokens.next().is_some(),
            "*" => {
                if topic_tokens.next().is_none() {
                    return false;
                }
            }
            literal => {
                if topic_tokens.next() != Some(literal) {
                    return false;
                }
            }
        }
    }
    topic_tokens.next().is_none()
}

/// Whether valid pattern `general` *covers* valid pattern `specific`: every topic `specific` can
/// match, `general` matches too. `a.>` covers `a.*.c` and `a.>`; `a.*` does not cover `a.>`;
/// a literal topic is a pattern that matches only itself. This is how permissions judge a
/// wildcard subscription (a subscription is allowed only when an allow pattern covers it).
pub fn covers(general: &str, specific: &str) -> bool {
    let mut s = specific.split('.');
    for g in general.split('.') {
        let Some(t) = s.next() else {
            // `general` needs more tokens than `specific` ever has.
            return false;
        };
        match (g, t) {
            // `>` takes one or more tokens, and `specific` has at least this one left.
            (">", _) => return true,
            // Only `>` covers `>`: it matches any number of tokens.
            (_, ">") => return false,
            ("*", _) => {}
            (lit, tok) if lit == tok => {}
            _ => return false,
        }
    }
    s.next().is_none()
}

/// Whether valid patterns `a` and `b` can both match some topic.
pub fn overlaps(a: &str, b: &str) -> bool {
    let (mut x, mut y) = (a.split('.'), b.split('.'));
    loop {
        match (x.next(), y.next()) {
            (None, None) => return true,
            (Some(">"), Some(_)) | (Some(_), Some(">")) => return true,
            (Some(p), Some(q)) if p == "*" || q == "*" || p == q => {}
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pattern_covers_what_it_matches_more_of() {
        assert!(covers("a.>", "a.*.c"));
        assert!(covers("a.>", "a.>"));
        assert!(covers("a.>", "a.b"));
        assert!(covers(">", "x.*.>"));
        assert!(covers("a.*", "a.b"));
        assert!(covers("a.*", "a.*"));
        assert!(covers("a.b", "a.b"));
        assert!(!covers("a.*", "a.>"));
        assert!(!covers("a.b", "a.*"));
        assert!(!covers("a.>", "a"));
        assert!(!covers("a.*.c", "a.>"));
        assert!(!covers("*", "a.b"));
        assert!(!covers("a.b.c", "a.b"));
    }

    #[test]
    fn patterns_overlap_when_one_topic_matches_both() {
        assert!(overlaps("a.*", "a.b"));
        assert!(overlaps("a.>", "*.b.c"));
        assert!(overlaps(">", "x"));
        assert!(overlaps("a.*.c", "a.b.*"));
        assert!(!overlaps("a.*", "a.b.c"));
        assert!(!overlaps("a.b", "a.c"));
        assert!(!overlaps("a.>", "a"));
    }

    #[test]
    fn plain_topics_are_valid() {
        for t in [
            "a",
            "a.b.c",
            "sensors.temp",
            "ÄÖ.ü",
            "_INBOX.x.1",
            "a-b_c.D9",
        ] {
            assert_eq!(validate_topic(t), Ok(()), "{t}");
        }
    }

    #[test]
    fn bad_topics_say_why() {
        assert_eq!(validate_topic(""), Err(TopicError::Empty));
        assert_eq!(validate_topic("a..b"), Err(TopicError::EmptyToken));
        assert_eq!(validate_topic(".a"), Err(TopicError::EmptyToken));
        assert_eq!(validate_topic("a."), Err(TopicError::EmptyToken));
        assert_eq!(validate_topic("a b"), Err(TopicError::Whitespace));
        assert_eq!(validate_topic("a\tb"), Err(TopicError::Whitespace));
        assert_eq!(validate_topic("a.*"), Err(TopicError::WildcardInTopic));
        assert_eq!(validate_topic("a.>"), Err(TopicError::WildcardInTopic));
        assert_eq!(validate_topic("a*b"), Err(TopicError::WildcardInTopic));
        assert_eq!(validate_topic("$sub"), Err(TopicError::Reserved));
        assert_eq!(
            validate_topic(&"a".repeat(256)),
            Err(TopicError::TooLong(256))
        );
        assert_eq!(validate_topic(&"a".repeat(255)), Ok(()));
        let sixteen = vec!["t"; 16].join(".");
        assert_eq!(validate_topic(&sixteen), Ok(()));
        let seventeen = vec!["t"; 17].join(".");
        assert_eq!(
            validate_topic(&seventeen),
            Err(TopicError::TooManyTokens(17))
        );
    }

    #[test]
    fn patterns_allow_whole_token_wildcards_only() {
        for p in ["a", "*", ">", "a.*", "a.>", "*.b.>", "*.*"] {
            assert_eq!(validate_pattern(p), Ok(()), "{p}");
        }
        assert_eq!(
            validate_pattern("a.>.b"),
            Err(TopicError::MisplacedWildcard)
        );
        assert_eq!(validate_pattern("a*"), Err(TopicError::MisplacedWildcard));
        assert_eq!(validate_pattern("a.b>"), Err(TopicError::MisplacedWildcard));
        assert_eq!(validate_pattern("$SYS.>"), Err(TopicError::Reserved));
        assert_eq!(validate_pattern("a..*"), Err(TopicError::EmptyToken));
    }

    #[test]
    fn groups_are_single_tokens() {
        assert_eq!(validate_group("workers"), Ok(()));
        assert_eq!(validate_group("w.x"), Err(TopicError::BadGroup));
        assert_eq!(validate_group("*"), Err(TopicError::BadGroup));
        assert_eq!(validate_group(""), Err(TopicError::Empty));
    }

    #[test]
    fn star_matches_exactly_one_token() {
        assert!(matches("a.*", "a.b"));
        assert!(!matches("a.*", "a"));
        assert!(!matches("a.*", "a.b.c"));
        assert!(matches("*.b", "a.b"));
        assert!(matches("*", "a"));
        assert!(!matches("*", "a.b"));
    }

    #[test]
    fn gt_matches_one_or_more_trailing_tokens() {
        assert!(matches("a.>", "a.b"));
        assert!(matches("a.>", "a.b.c"));
        assert!(!matches("a.>", "a"));
        assert!(matches(">", "a"));
        assert!(matches(">", "a.b.c"));
        assert!(matches("*.>", "a.b"));
        assert!(!matches("*.>", "a"));
    }

    #[test]
    fn literals_match_exactly_and_case_sensitively() {
        assert!(matches("a.b", "a.b"));
        assert!(!matches("a.b", "a.B"));
        assert!(!matches("a.b", "a.b.c"));
        assert!(!matches("a.b.c", "a.b"));
        assert!(has_wildcard("a.*"));
        assert!(!has_wildcard("a.b*"));
    }
}
