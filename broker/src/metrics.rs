//! The broker's own metrics (see docs/metrics.md), in one Prometheus registry.
//!
//! Hot-path counts (messages and bytes in and out) are folded in once per read batch by each
//! connection's reader, not once per message, so routing pays a few atomic adds per batch.

use prometheus::core::Collector;
use prometheus::{
    Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Registry,
};

use crate::index::Index;
use crate::prom::{counter, counter_labelled, counter_vec, gauge, gauge_vec, histogram};
use crate::route::DeliveryCounters;

/// Every metric the broker keeps.
#[derive(Debug, Clone)]
pub struct Metrics {
    pub registry: Registry,
    pub connections: IntGauge,
    pub connections_total: IntCounter,
    pub connections_rejected: IntCounter,
    pub auth_failures: IntCounterVec,
    /// Connections the peer closed before sending a byte (port probes, health checks). Apart
    /// from `auth_failures`, so that summing every kind of those still means "handshakes that
    /// failed".
    pub connections_probed: IntCounter,
    /// Connections accepted and still in the authentication handshake.
    pub handshakes_in_progress: IntGauge,
    pub messages_received: IntCounter,
    pub messages_delivered: IntCounter,
    pub bytes_received: IntCounter,
    pub bytes_delivered: IntCounter,
    pub messages_dropped: IntCounterVec,
    pub slow_consumers: IntCounter,
    pub subscriptions: IntGauge,
    pub protocol_errors: IntCounterVec,
    pub outbound_queued: IntGauge,
    pub fanout: Histogram,
    pub queue_wait: Histogram,
    pub cache_hits: IntCounter,
    pub cache_misses: IntCounter,
    pub cache_entries: IntGauge,
    /// `$metrics` ops refused, by reason.
    pub metrics_rejected: IntCounterVec,
    /// `$metrics` ops applied.
    pub metrics_ops: IntCounter,
    /// Worker-metric series held (set per scrape).
    pub metrics_series: IntGauge,
    /// The largest single outbound queue at scrape time.
    pub outbound_max: IntGauge,
    /// The configured `max_connections` (for alerts on the ratio).
    pub max_connections: IntGauge,
    /// The configured `outbound_limit` (for alerts on the ratio).
    pub outbound_limit: IntGauge,
    /// Open connections by user.
    pub connections_by_user: IntGaugeVec,
    /// Frames refused for want of a permission, by user and action.
    pub permission_denied: IntCounterVec,
    /// Publishes refused by the payload policy, by reason and user.
    pub messages_refused: IntCounterVec,
    /// Config reloads (SIGHUP), by result.
    pub config_reloads: IntCounterVec,
    /// TLS handshakes on `tls://` listeners that failed, by kind (`tls::Failure::kind`).
    pub tls_failures: IntCounterVec,
}

/// Bucket bounds for the per-connection outbound depth, in bytes.
const DEPTH_BUCKETS: [f64; 9] = [
    0.0,
    1024.0,
    16384.0,
    131072.0,
    1048576.0,
    4194304.0,
    16777216.0,
    33554432.0,
    134217728.0,
];

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
            connections_probed: counter(
                &r,
                "mphub_connections_probed_total",
                "Connections closed by the peer before sending a byte (port probes, health checks); not authentication failures.",
            ),
            handshakes_in_progress: gauge(
                &r,
                "mphub_handshakes_in_progress",
                "Connections accepted and still in the authentication handshake.",
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
                "Frames refused, by kind (invalid_message, bad_frame, too_large, frame_timeout).",
                "kind",
            ),
            outbound_queued: gauge(
                &r,
                "mphub_outbound_queued_bytes",
                "Bytes queued for all connections and not yet written.",
            ),
            fanout: histogram(
                &r,
                "mphub_publish_fanout",
                "Subscribers each publish was queued to.",
                vec![0.0, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 5000.0],
            ),
            queue_wait: histogram(
                &r,
                "mphub_outbound_wait_seconds",
                "Time the oldest frame of each write waited in its outbound queue (one sample per write).",
                prometheus::exponential_buckets(1e-6, 4.0, 11)
                    .unwrap_or_else(|e| unreachable!("buckets: {e}")),
            ),
            cache_hits: counter(&r, "mphub_index_cache_hits_total", "Publishes whose subscribers came from the match cache."),
            cache_misses: counter(&r, "mphub_index_cache_misses_total", "Publishes that walked the subscription trie."),
            cache_entries: gauge(&r, "mphub_index_cache_entries", "Topics held in the match cache."),
            metrics_rejected: counter_vec(
                &r,
                "mphub_metrics_rejected_total",
                "Worker-metric ops ($metrics) refused, by reason.",
                "reason",
            ),
            metrics_ops: counter(
                &r,
                "mphub_metrics_ops_total",
                "Worker-metric ops ($metrics) applied.",
            ),
            metrics_series: gauge(
                &r,
                "mphub_metrics_series",
                "Worker-metric series held.",
            ),
            outbound_max: gauge(
                &r,
                "mphub_outbound_queue_max_bytes",
                "Bytes queued for the most backed-up connection at scrape time.",
            ),
            max_connections: gauge(
                &r,
                "mphub_max_connections",
                "The configured max_connections.",
            ),
            outbound_limit: gauge(
                &r,
                "mphub_outbound_limit_bytes",
                "The configured per-connection outbound_limit.",
            ),
            connections_by_user: gauge_vec(
                &r,
                "mphub_connections_by_user",
                "Client connections open now, by user (default: the shared key, or no key).",
                "user",
            ),
            permission_denied: counter_labelled(
                &r,
                "mphub_permission_denied_total",
                "Frames refused because the user may not do that, by user and action \
                 (publish, subscribe, metrics, connect).",
                &["user", "action"],
            ),
            messages_refused: counter_labelled(
                &r,
                "mphub_messages_refused_total",
                "Publishes refused by the payload policy (reason code: the pickle imports a \
                 global not allowed), by reason and user.",
                &["reason", "user"],
            ),
            config_reloads: counter_vec(
                &r,
                "mphub_config_reloads_total",
                "Config reloads (SIGHUP), by result (ok, error).",
                "result",
            ),
            tls_failures: counter_vec(
                &r,
                "mphub_tls_failures_total",
                "TLS handshakes on tls:// listeners that failed, by kind (not_tls, timeout, \
                 handshake, no_client_cert, bad_client_cert, server_cert_rejected).",
                "kind",
            ),
            registry: r,
        };
        #[cfg(target_os = "linux")]
        {
            let pc = prometheus::process_collector::ProcessCollector::for_self();
            // Registering a fresh collector with fixed names cannot collide.
            let _ = m.registry.register(Box::new(pc));
        }
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
        for reason in crate::worker_metrics::Reject::LABELS {
            m.metrics_rejected.with_label_values(&[reason]);
        }
        for reason in ["slow_consumer", "closed"] {
            m.messages_dropped.with_label_values(&[reason]);
        }
        for kind in ["invalid_message", "bad_frame", "too_large", "frame_timeout"] {
            m.protocol_errors.with_label_values(&[kind]);
        }
        for result in ["ok", "error"] {
            m.config_reloads.with_label_values(&[result]);
        }
        for kind in crate::tls::Failure::KINDS {
            m.tls_failures.with_label_values(&[kind]);
        }
        m
    }
}

impl Metrics {
    /// The counters routing folds its tallies into.
    pub fn delivery(&self) -> DeliveryCounters {
        DeliveryCounters {
            delivered: self.messages_delivered.clone(),
            delivered_bytes: self.bytes_delivered.clone(),
            dropped: self.messages_dropped.clone(),
            slow_consumers: self.slow_consumers.clone(),
        }
    }

    /// Brings the gauges derived from live state up to date, then encodes every family in the
    /// Prometheus text format.
    pub fn render(&self, index: &Index, queued: impl Iterator<Item = u64>) -> String {
        self.subscriptions.set(index.len() as i64);
        let (hits, misses) = index.cache_stats();
        self.cache_hits
            .inc_by(hits.saturating_sub(self.cache_hits.get()));
        self.cache_misses
            .inc_by(misses.saturating_sub(self.cache_misses.get()));
        self.cache_entries.set(index.cache_len() as i64);
        // The depth histogram describes this moment, so it is built afresh for each scrape.
        let depth = Histogram::with_opts(
            HistogramOpts::new(
                "mphub_outbound_queue_depth_bytes",
                "Bytes queued per connection at scrape time.",
            )
            .buckets(DEPTH_BUCKETS.to_vec()),
        )
        .unwrap_or_else(|e| unreachable!("depth histogram: {e}"));
        let (mut total, mut most) = (0u64, 0u64);
        for q in queued {
            total += q;
            most = most.max(q);
            depth.observe(q as f64);
        }
        self.outbound_queued.set(total as i64);
        self.outbound_max.set(most as i64);
        let mut families = self.registry.gather();
        families.extend(depth.collect());
        families.sort_by(|a, b| a.name().cmp(b.name()));
        let mut out = String::new();
        let encoder = prometheus::TextEncoder::new();
        if let Err(e) = encoder.encode_utf8(&families, &mut out) {
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
