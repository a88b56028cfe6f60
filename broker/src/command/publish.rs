//! `(topic, payload)`: route the frame to local subscribers as it is, then beyond this node.

use mphub_protocol::Frame;

use super::{Action, Session};
use crate::route::Audience;

/// Routes one publish: every local plain subscriber and one member of each queue group get the
/// publisher's exact bytes; then the [`Forward`](crate::route::Forward) hook, if any.
pub(super) fn publish(s: &mut Session<'_>, topic: &str, frame: &Frame) {
    if !s.may_publish(topic) {
        s.deny(Action::Publish, topic);
        return;
    }
    if s.sampler.pick() {
        s.services.topics.record(topic);
    }
    let services = s.services;
    let at = s.routing_stamp();
    let matches = services.router.lookup_recent(topic, &mut s.recent);
    let routed = services.router.route(
        matches,
        Audience::Everyone,
        topic,
        frame.wire(),
        at,
        &mut s.tally,
    );
    s.unstamped += routed.delivered.max(1);
    if s.timing {
        s.fanout.observe(routed.delivered as f64);
    }
    if let Some(forward) = &services.forward {
        let body = frame.wire().slice(frame.header_len()..);
        forward.forward(topic, body, &routed.served);
    }
}
