//! The bridge's metrics, in the broker's registry.

use prometheus::{IntCounter, IntCounterVec, IntGauge, Registry};

use crate::prom::{counter, counter_vec, gauge};

/// Why a local publish did not reach NATS (`mphub_cluster_not_forwarded_total{reason}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotForwarded {
    /// NATS is not connected and the reconnect buffer (`cluster_reconnect_buffer`) is full.
    Disconnected,
    /// NATS is connected but not keeping up: the backlog is over `cluster_outbound_limit` (or
    /// the node stopped before NATS took it).
    Backlog,
    /// The payload is over the NATS server's `max_payload`.
    TooLarge,
    /// The NATS client failed, or the bridge has stopped.
    Error,
}

impl NotForwarded {
    /// Every reason, in label order.
    pub const ALL: [NotForwarded; 4] = [
        NotForwarded::Disconnected,
        NotForwarded::Backlog,
        NotForwarded::TooLarge,
        NotForwarded::Error,
    ];

    /// The `reason` label.
    pub fn label(self) -> &'static str {
        match self {
            NotForwarded::Disconnected => "disconnected",
            NotForwarded::Backlog => "backlog",
            NotForwarded::TooLarge => "too_large",
            NotForwarded::Error => "error",
        }
    }
}

/// Why a message from NATS reached no local subscriber (`mphub_cluster_inbound_dropped_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InboundDropped {
    /// Not a pickled `(topic, payload)` naming its subject's topic, or over `max_frame`.
    Invalid,
    /// A queue group's message that no member here could take, and that could not be handed
    /// back to NATS for another node's member either.
    NoMember,
    /// The NATS client dropped it: the bridge did not keep up.
    BridgeSlow,
    /// Its pickle imports something the top-level payload policy (`payloads = "data"`) does
    /// not allow.
    Refused,
}

impl InboundDropped {
    /// Every reason, in label order.
    pub const ALL: [InboundDropped; 4] = [
        InboundDropped::Invalid,
        InboundDropped::NoMember,
        InboundDropped::BridgeSlow,
        InboundDropped::Refused,
    ];

    /// The `reason` label.
    pub fn label(self) -> &'static str {
        match self {
            InboundDropped::Invalid => "invalid",
            InboundDropped::NoMember => "no_member",
            InboundDropped::BridgeSlow => "bridge_slow",
            InboundDropped::Refused => "refused",
        }
    }
}

/// Counters and gauges for the NATS bridge.
#[derive(Debug, Clone)]
pub struct ClusterMetrics {
    pub connected: IntGauge,
    pub disconnects: IntCounter,
    pub sent: IntCounter,
    pub sent_bytes: IntCounter,
    pub received: IntCounter,
    pub received_bytes: IntCounter,
    pub not_forwarded: IntCounterVec,
    pub inbound_dropped: IntCounterVec,
    pub group_skips: IntCounter,
    pub requeued: IntCounter,
    pub copies: IntCounter,
    pub interest: IntGauge,
    pub retiring: IntGauge,
    pub retired_early: IntCounter,
    pub outbound_queued: IntGauge,
    pub max_payload: IntGauge,
    pub nats_in: IntCounter,
}

impl ClusterMetrics {
    /// Registers every bridge metric in `r`.
    pub fn new(r: &Registry) -> Self {
        let m = ClusterMetrics {
            connected: gauge(
                r,
                "mphub_cluster_connected",
                "1 while connected to NATS, else 0.",
            ),
            disconnects: counter(
                r,
                "mphub_cluster_disconnects_total",
                "NATS connections lost.",
            ),
            sent: counter(
                r,
                "mphub_cluster_messages_sent_total",
                "Local publishes handed to NATS.",
            ),
            sent_bytes: counter(
                r,
                "mphub_cluster_bytes_sent_total",
                "Payload bytes (the publishers' pickles) handed to NATS.",
            ),
            received: counter(
                r,
                "mphub_cluster_messages_received_total",
                "Messages received from NATS (other nodes' publishes; copies included).",
            ),
            received_bytes: counter(
                r,
                "mphub_cluster_bytes_received_total",
                "Payload bytes received from NATS.",
            ),
            not_forwarded: counter_vec(
                r,
                "mphub_cluster_not_forwarded_total",
                "Local publishes that could not be handed to NATS, by reason \
                 (disconnected, backlog, too_large, error).",
                "reason",
            ),
            inbound_dropped: counter_vec(
                r,
                "mphub_cluster_inbound_dropped_total",
                "Messages from NATS delivered to no local subscriber, by reason \
                 (invalid, no_member, bridge_slow).",
                "reason",
            ),
            group_skips: counter(
                r,
                "mphub_cluster_group_skips_total",
                "Queue-group messages from NATS not delivered because the publishing node had \
                 already served that group (or another node handed it back for another group).",
            ),
            requeued: counter(
                r,
                "mphub_cluster_requeued_total",
                "Queue-group messages NATS brought for a group no member here could take any \
                 more, handed back to NATS for a member on another node.",
            ),
            copies: counter(
                r,
                "mphub_cluster_copies_total",
                "Messages from NATS skipped because they were copies: NATS sends one per matching \
                 plain subscription, and this node had delivered the message already.",
            ),
            interest: gauge(
                r,
                "mphub_cluster_interest",
                "NATS subscriptions this node holds for its local interest (one per wanted \
                 pattern; one per group member and pattern).",
            ),
            retiring: gauge(
                r,
                "mphub_cluster_interest_retiring",
                "Queue-group NATS subscriptions no longer wanted, still taking what NATS had \
                 already sent them before they go.",
            ),
            retired_early: counter(
                r,
                "mphub_cluster_interest_retired_early_total",
                "Retiring queue-group subscriptions let go before NATS was quiet, because more \
                 than 4096 were retiring: what was on its way to them was lost (it shows as \
                 mphub_cluster_nats_messages_in_total minus mphub_cluster_messages_received_total).",
            ),
            outbound_queued: gauge(
                r,
                "mphub_cluster_outbound_queued_bytes",
                "Payload bytes of local publishes waiting for NATS (the NATS client's own queue \
                 included).",
            ),
            max_payload: gauge(
                r,
                "mphub_cluster_nats_max_payload_bytes",
                "The largest message the NATS server takes (its max_payload; 0 before the first \
                 connection). Larger publishes stay on their node.",
            ),
            nats_in: counter(
                r,
                "mphub_cluster_nats_messages_in_total",
                "Messages the NATS client read off its connection. Once traffic is quiet, this \
                 minus mphub_cluster_messages_received_total is what was lost inside the node.",
            ),
        };
        for reason in NotForwarded::ALL {
            m.not_forwarded.with_label_values(&[reason.label()]);
        }
        for reason in InboundDropped::ALL {
            m.inbound_dropped.with_label_values(&[reason.label()]);
        }
        m
    }

    /// Counts a message from NATS that reached no local subscriber.
    pub fn inbound_dropped(&self, why: InboundDropped) {
        self.inbound_dropped.with_label_values(&[why.label()]).inc();
    }
}
