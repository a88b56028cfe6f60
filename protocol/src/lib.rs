//! `mphub-protocol`: the wire of CPython's `multiprocessing.connection`, as mphub speaks it.
//!
//! Where things are:
//! - [`frame`]: length-prefixed frames (4-byte signed length, or `-1` and an 8-byte length),
//!   decoded *check, then parse*, each frame one zero-copy [`bytes::Bytes`] with its header.
//! - [`handshake`]: the mutual HMAC challenge in both roles, legacy MD5 and `{digest}` forms,
//!   as a sans-I/O state machine, with one key or a [`handshake::KeyRing`] of many (named
//!   users); [`io`] (feature `tokio`) drives it over a stream.
//! - [`envelope`]: classifies a pickle as a publish, a control request, `"close"` or invalid,
//!   by walking its opcodes without decoding the payload; with a payload [`Policy`]
//!   (`payloads = "data"`) it also refuses a publish that imports a global outside the list.
//! - [`metrics`]: the `$metrics` op format (ops, metric types, gauge modes), a decoder of a
//!   batch into typed ops that borrows from the body, and the encoder clients use.
//! - [`topic`]: topic, pattern and queue-group rules and wildcard matching.
//! - [`reply`]: the broker's `$ok`, `$pong` and `$error` replies.
//! - [`name`]: connection names (`$hello`).
//! - [`error`]: one error enum per layer.
//!
//! Nothing here depends on an async runtime except [`io`].

pub mod envelope;
pub mod error;
pub mod frame;
pub mod handshake;
#[cfg(feature = "tokio")]
pub mod io;
pub mod metrics;
pub mod name;
pub mod reply;
pub mod topic;

pub use envelope::{classify, Envelope, Interest, Policy, Refusal, Refused, Scanner, Token};
pub use error::{BatchError, DuplicateKey, FrameError, HandshakeError, OpError};
pub use frame::Frame;
