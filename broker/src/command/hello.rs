//! `("$hello", {"name": ...})`: the connection introduces itself, answered `("$ok", request)`
//! with the request's own pickle, other keys included; a node in a cluster adds `"max_payload"`
//! to the echoed dict (the NATS server's, once known: larger publishes stay on this node). The
//! name shows in every later log line of the connection (its span's `name` field) and in
//! introspection (`/connections`, the status page). A connection may say hello again to change
//! its name; keys other than `name` are ignored, so that a later client can send more without an
//! older broker refusing it. Reading the request is `mphub_protocol::name::hello` (plain data
//! only, at most 4 KiB); the answer is `mphub_protocol::reply::hello`.

use mphub_protocol::{name, reply};

use super::Session;

/// Names the connection, or answers `("$error", reason)`; the connection stays either way.
pub(super) fn hello(s: &mut Session<'_>, body: &[u8]) {
    match name::hello(body) {
        Ok(hello) => {
            s.conn().set_name(&hello.name);
            tracing::Span::current().record("name", tracing::field::display(&hello.name));
            tracing::debug!("connection named");
            let max_payload = s.services.forward.as_ref().and_then(|f| f.max_payload());
            s.outbox().reply(reply::hello(body, &hello, max_payload));
        }
        Err(e) => s.refuse("invalid_message", &format!("$hello refused: {e}")),
    }
}
