//! Worker metrics (PROTOCOL §10) as typed ops: [`Client::send_metrics`](crate::Client::send_metrics).
//!
//! The op format (op names, metric types, the ten gauge modes) is `mphub_protocol::metrics`,
//! the same definition the broker decodes with: these are its types.

pub use mphub_protocol::metrics::{GaugeMode, MetricKind, MetricOp};

/// The pickle of `("$metrics", [ops])`.
pub(crate) fn body(ops: &[MetricOp<'_>]) -> Vec<u8> {
    mphub_protocol::metrics::encode(ops)
}
