//! `("$ping", token)`: the barrier. Frames are handled in order, so when this one is, every
//! earlier frame of the connection has been routed; `("$pong", token)` says so.

use mphub_protocol::{reply, Token};

use super::Session;

/// Answers the barrier.
pub(super) fn ping(s: &mut Session<'_>, token: &Token<'_>) {
    // Make the metrics agree with the barrier: whoever sees the pong can scrape.
    s.fold();
    s.outbox.reply(reply::pong(token));
}
