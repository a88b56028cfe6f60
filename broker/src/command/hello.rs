//! `("$hello", {"name": ...})`: the connection introduces itself, answered
//! `("$ok", ("$hello", {"name": name}))`, with `"max_payload"` added on a node in a cluster (the
//! NATS server's, once known: larger publishes stay on this node). The name shows in every later log line of the
//! connection (its span's `name` field) and in introspection (`/connections`, the status page).
//! A connection may say hello again to change its name; keys other than `name` are ignored, so
//! that a later client can send more without an older broker refusing it. Reading the name is
//! `mphub_protocol::name::hello_name` (plain data only, at most 4 KiB).

use mphub_protocol::{name, reply};

use super::Session;

/// Names the connection, or answers `("$error", reason)`; the connection stays either way.
pub(super) fn hello(s: &mut Session<'_>, body: &[u8]) {
    match name::hello_name(body) {
        Ok(name) => {
            s.conn().set_name(&name);
            tracing::Span::current().record("name", tracing::field::display(&name));
            tracing::debug!("connection named");
            let max_payload = s.services.forward.as_ref().and_then(|f| f.max_payload());
            s.outbox().reply(reply::hello(&name, max_payload));
        }
        Err(e) => s.refuse("invalid_message", &format!("$hello refused: {e}")),
    }
}
