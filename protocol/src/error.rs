//! The errors of each layer: one enum each, saying what went wrong in words a person can act on.

use thiserror::Error;

/// The byte stream is not a sequence of frames within the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum FrameError {
    /// The header announces more than the configured limit.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// What the header announced.
        len: u64,
        /// The configured limit.
        max: u64,
    },
    /// A negative length other than `-1` (the extended-header marker).
    #[error("not a frame: negative length {0} in header")]
    NegativeLength(i32),
}

/// Authentication failed, or its messages were not what the protocol allows.
#[derive(Debug, Error)]
pub enum HandshakeError {
    /// The peer's MAC does not match ours: it holds another authkey.
    #[error("wrong authkey: the peer's digest does not match")]
    WrongKey,
    /// The peer answered our challenge with `#FAILURE#` (or anything but `#WELCOME#`).
    #[error("the peer rejected our digest: the authkeys differ")]
    Rejected,
    /// A `{digest}` prefix names a digest CPython does not allow.
    #[error("unsupported digest {0:?} (allowed: md5, sha256, sha384, sha3_256, sha3_384)")]
    UnknownDigest(String),
    /// The peer's challenge is not `#CHALLENGE#` followed by at least 20 bytes.
    #[error("malformed challenge: {0}")]
    MalformedChallenge(&'static str),
    /// The peer's response is neither a 16-byte legacy HMAC-MD5 nor `{digest}` + MAC; a client
    /// without an authkey sends its first pickle here.
    #[error("malformed response: {0} (is the client configured without an authkey?)")]
    MalformedResponse(String),
    /// A handshake frame longer than CPython allows (256 bytes).
    #[error("handshake message of {0} bytes exceeds 256 bytes")]
    TooLarge(u64),
    /// The bytes were not frames at all.
    #[error("handshake: {0}")]
    Frame(#[from] FrameError),
    /// A message arrived after the handshake had finished or failed.
    #[error("handshake already over")]
    Over,
    /// The peer closed the connection mid-handshake.
    #[error("the peer closed the connection during the handshake")]
    Closed,
    /// The handshake did not finish in time.
    #[error("the handshake did not finish within the deadline")]
    Timeout,
    /// Reading or writing the stream failed.
    #[error("handshake i/o: {0}")]
    Io(#[from] std::io::Error),
}

impl HandshakeError {
    /// A short stable label for metrics (`mphub_auth_failures_total{kind}`).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::WrongKey | Self::Rejected => "wrong_key",
            Self::UnknownDigest(_) => "unknown_digest",
            Self::MalformedChallenge(_) | Self::MalformedResponse(_) | Self::Over => "malformed",
            Self::TooLarge(_) | Self::Frame(_) => "bad_frame",
            Self::Closed => "closed",
            Self::Timeout => "timeout",
            Self::Io(_) => "io",
        }
    }
}

/// Two keys of a [`KeyRing`](crate::handshake::KeyRing) make the same HMAC, so an answer could
/// not name one user: a configuration error. Holds the keys' indexes, never the keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("keys {first} and {second} are the same key to HMAC: each user needs a key of its own")]
pub struct DuplicateKey {
    /// Index of the earlier key.
    pub first: usize,
    /// Index of the later key, equal to the earlier one for HMAC.
    pub second: usize,
}

/// A `$metrics` frame body that yields no ops at all.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum BatchError {
    /// The pickle holds an opcode that imports or calls: it was never decoded past it.
    #[error(
        "the $metrics payload holds an opcode that imports or calls; only plain data is accepted"
    )]
    Code,
    /// Not a pickle CPython would load, not `("$metrics", ops)`, or over the decoder's limit.
    #[error("the $metrics payload could not be decoded: {0}")]
    Decode(String),
    /// The ops are not a list (or tuple): the type found.
    #[error("the $metrics payload must be a list of op tuples, not a {0}")]
    NotAList(&'static str),
}

/// One op of a `$metrics` batch that does not follow the format; the others still apply.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum OpError {
    /// Not an op of the format: not a tuple, an unknown op, type or mode, the wrong number of
    /// fields, or a field of the wrong type where a name, labels or options belong.
    #[error("{0}")]
    Shape(String),
    /// A number that is not one (a `str` for a value), NaN, or more labels or buckets than
    /// the format allows.
    #[error("{0}")]
    Value(String),
}
