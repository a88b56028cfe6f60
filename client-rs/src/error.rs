//! The one error type of this crate.

use std::time::Duration;

use mphub_protocol::{topic::TopicError, FrameError, HandshakeError};

/// Everything that can go wrong talking to a broker or a Listener.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The address is not `host:port`, `unix:/path`, `unix:@name` or `tls://host:port`.
    #[error("invalid address {0:?}: {1}")]
    Address(String, &'static str),
    /// Nothing accepted the connection.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// The address dialled.
        addr: String,
        /// Why the connect failed.
        source: std::io::Error,
    },
    /// The handshake failed: wrong authkey, or the peer is not a multiprocessing Listener.
    #[error("authentication with {addr} failed: {source}")]
    Auth {
        /// The address dialled.
        addr: String,
        /// What the handshake saw.
        source: HandshakeError,
    },
    /// The TLS handshake was refused: the broker's certificate is not trusted or does not name
    /// the host, or the broker refused this client (say, without a client certificate it
    /// requires). Reconnecting does not try again.
    #[error("TLS with {addr} failed: {source}")]
    Tls {
        /// The address dialled.
        addr: String,
        /// What rustls said.
        source: std::io::Error,
    },
    /// Reading or writing the socket failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The peer sent something that is not a frame, or one over the size limit.
    #[error("framing: {0}")]
    Frame(#[from] FrameError),
    /// A value could not be pickled or unpickled (into the type asked for).
    #[error("pickle: {0}")]
    Pickle(#[from] serde_pickle::Error),
    /// `publish_pickled` was given bytes that do not end like a pickle.
    #[error("not a pickle: {0}")]
    InvalidPickle(&'static str),
    /// A topic, pattern or group name breaks the topic rules (checked before sending).
    #[error("invalid {what} {name:?}: {source}")]
    Topic {
        /// "topic", "pattern" or "group".
        what: &'static str,
        /// The offending name.
        name: String,
        /// The rule it breaks.
        source: TopicError,
    },
    /// The broker answered `("$error", reason)`.
    #[error("the broker refused: {0}")]
    Broker(String),
    /// No answer in time.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The connection is lost and reconnecting is off or gave up, or the client is closed.
    #[error("connection closed")]
    Closed,
    /// The connection dropped while this request waited; the client is reconnecting.
    #[error("disconnected while waiting; reconnecting")]
    Disconnected,
    /// The connection name is not 1 to 64 printable characters.
    #[error("invalid connection name {0:?}: {1}")]
    Name(String, mphub_protocol::name::NameError),
    /// Keepalive: the broker sent nothing for this long, pings included; the connection is
    /// treated as lost.
    #[error("no answer from the broker for {0:?} (keepalive pings unanswered)")]
    Unresponsive(Duration),
    /// The broker sent a frame this client does not understand.
    #[error("unexpected frame: {0}")]
    Unexpected(String),
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
