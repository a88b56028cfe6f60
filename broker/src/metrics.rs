//! The broker's own metrics (PROTOCOL §8), in one Prometheus registry.
//!
//! Hot-path counts (messages and bytes in and out) are folded in once per read batch by each
//! connection's reader, not once per message, so routing pays a few atomic adds per batch.

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};

/// Every metric the broker keeps.
#[derive(Debug, Clone)]
pub struct Metrics {
    pub registry: Registry,
    pub connections: IntGauge,
    pub connections_total: IntCounter,
    pub connections_rejected: IntCounter,
    pub auth_failures: IntCounterVec,
    pub messages_received: IntCounter,
    pub messages_delivered: IntCounter,
    pub bytes_received: IntCounter,
    pub bytes_delivered: IntCounter,
    pub messages_dropped: IntCounterVec,
    pub slow_consumers: IntCounter,
    pub subscriptions: IntGauge,
    pub protocol_errors: IntCounterVec,
}

fn counter(reg: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).unwrap_or_else(|e| unreachable!("metric {name}: {e}"));
    reg.register(Box::new(c.clone()))
        .unwrap_or_else(|e| unreachable!("metric {name}: {e}"));
    c
}

fn gauge(reg: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).unwrap_or_else(|e| unreachable!("metric {name}: {e}"));
    reg.register(Box::new(g.clone()))
        .unwrap_or_else(|e| unreachable!("metric {name}: {e}"));
    g
}

fn counter_vec(reg: &Registry, name: &str, help: &str, label: &str) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), &[label])
        .unwrap_or_else(|e| unreachable!("metric {name}: {e}"));
    reg.register(Box::new(c.clone()))
        .unwrap_or_else(|e| unreachable!("metric {name}: {e}"));
    c
}

impl Metrics {
    /// A fresh registry holding every broker metric. Names are fixed and valid, so registering
    /// cannot fail.
    pub fn new() -> Self {
        let r = Registry::new();
        let m = Metrics {
            connections: gauge(&r, "mphub_connections", "Client connections open now."),
            connections_total: counter(
                &r,
                "mphub_connections_total",
                "Client connections accepted.",
            ),
            connections_rejected: counter(
                &r,
                "mphub_connections_rejected_total",
                "Connections closed at once because max_connections was reached.",
            ),
            auth_failures: counter_vec(
                &r,
                "mphub_auth_failures_total",
                "Handshakes that failed, by kind (wrong_key, malformed, timeout, ...).",
                "kind",
            ),
            messages_received: counter(
                &r,
                "mphub_messages_received_total",
                "Frames received after the handshake.",
            ),
            messages_delivered: counter(
                &r,
                "mphub_messages_delivered_total",
                "Publishes queued to subscribers (one per subscriber).",
            ),
            bytes_received: counter(
                &r,
                "mphub_bytes_received_total",
                "Frame bytes received, headers included.",
            ),
            bytes_delivered: counter(
                &r,
                "mphub_bytes_delivered_total",
                "Frame bytes queued to subscribers, headers included.",
            ),
            messages_dropped: counter_vec(
                &r,
                "mphub_messages_dropped_total",
                "Messages not delivered to a subscriber, by reason.",
                "reason",
            ),
            slow_consumers: counter(
                &r,
                "mphub_slow_consumers_total",
                "Connections closed because their outbound queue passed the limit.",
            ),
            subscriptions: gauge(
                &r,
                "mphub_subscriptions",
                "Subscriptions and queue-group memberships held now.",
            ),
            protocol_errors: counter_vec(
                &r,
                "mphub_protocol_errors_total",
                "Frames refused, by kind (invalid_message, bad_frame, too_large).",
                "kind",
            ),
            registry: r,
        };
        // Make the labelled series visible from the start, at zero.
        for kind in [
            "wrong_key",
            "malformed",
            "unknown_digest",
            "timeout",
            "closed",
            "bad_frame",
            "io",
        ] {
            m.auth_failures.with_label_values(&[kind]);
        }
        for reason in ["slow_consumer", "closed"] {
            m.messages_dropped.with_label_values(&[reason]);
        }
        for kind in ["invalid_message", "bad_frame", "too_large"] {
            m.protocol_errors.with_label_values(&[kind]);
        }
        m
    }
}

impl Metrics {
    /// Brings the gauges derived from live state up to date, then encodes every family in the
    /// Prometheus text format.
    pub fn render(&self, index: &crate::index::Index) -> String {
        self.subscriptions.set(index.len() as i64);
        let mut out = String::new();
        let encoder = prometheus::TextEncoder::new();
        if let Err(e) = encoder.encode_utf8(&self.registry.gather(), &mut out) {
            out = format!("# encoding failed: {e}\n");
        }
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
