//! `("$metrics", ops)`: worker metrics, applied to the store; silent on success, answered
//! `("$error", reason)` when any op is refused.

use mphub_protocol::reply;

use super::{Action, Session};

/// Applies one batch of worker-metric ops from this connection.
pub(super) fn metrics(s: &mut Session<'_>, body: &[u8], has_code: bool) {
    if !s.user.permissions.metrics {
        s.deny(Action::Metrics, "$metrics");
        return;
    }
    let out = s.services.workers.apply_frame(s.outbox.id, body, has_code);
    let m = &s.services.metrics;
    m.metrics_ops.inc_by(out.applied);
    for r in &out.rejected {
        m.metrics_rejected.with_label_values(&[r.label()]).inc();
    }
    if let Some(reason) = out.reason() {
        s.outbox.reply(reply::error(&reason));
    }
}
