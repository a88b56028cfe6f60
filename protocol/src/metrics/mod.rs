//! Worker metrics (`$metrics`, PROTOCOL §10): the op format, defined once for the broker that
//! reads it and the clients that write it.
//!
//! A worker sends `("$metrics", [op, …])`, each op a tuple of plain data:
//!
//! | op | fields |
//! |---|---|
//! | `declare` | `(name, type, help, label_names[, options])`; options `{"buckets": [...]}` (histogram), `{"mode": ...}` (gauge) |
//! | `inc`, `dec` | `(name, labels, amount)` |
//! | `set` | `(name, labels, value)` |
//! | `observe` | `(name, labels, value)` |
//!
//! `labels` is a dict of label name to value (a `str`; an `int` or `bool` is taken as its
//! Python `str()`). Numbers are `int`, `float` or `bool`.
//!
//! Where things are:
//! - this file: op names ([`Verb`]), metric types ([`MetricKind`]), gauge modes
//!   ([`GaugeMode`]), typed ops ([`MetricOp`]) and the format's limits;
//! - `decode.rs`: [`Batch`], a frame body read into typed ops that borrow from it;
//! - `encode.rs`: [`encode`], typed ops into the pickle a client sends.

mod decode;
mod encode;

use std::borrow::Cow;

pub use decode::{Batch, Ops};
pub use encode::encode;

/// Label names a family may declare, and label pairs an op may carry.
pub const MAX_LABELS: usize = 16;
/// Histogram bucket bounds a declaration may give, not counting a trailing `+Inf`.
pub const MAX_BUCKETS: usize = 64;

/// An op's name: the first item of its tuple.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verb {
    /// `declare`: a family's name, type, help, label names and options.
    Declare,
    /// `inc`: add to a counter (by an amount >= 0) or a gauge.
    Inc,
    /// `dec`: subtract from a gauge.
    Dec,
    /// `set`: set a gauge.
    Set,
    /// `observe`: one observation for a histogram or a summary.
    Observe,
}

impl Verb {
    /// Every op, in the order the protocol lists them.
    pub const ALL: [Verb; 5] = [
        Verb::Declare,
        Verb::Inc,
        Verb::Dec,
        Verb::Set,
        Verb::Observe,
    ];

    /// The name on the wire.
    pub fn name(self) -> &'static str {
        match self {
            Verb::Declare => "declare",
            Verb::Inc => "inc",
            Verb::Dec => "dec",
            Verb::Set => "set",
            Verb::Observe => "observe",
        }
    }

    /// The op named `s`, if any.
    pub fn parse(s: &str) -> Option<Verb> {
        Verb::ALL.into_iter().find(|v| v.name() == s)
    }

    /// Whether this op may be applied to a family of type `kind` (`declare` applies to all).
    pub fn applies_to(self, kind: MetricKind) -> bool {
        match self {
            Verb::Declare => true,
            Verb::Inc => matches!(kind, MetricKind::Counter | MetricKind::Gauge),
            Verb::Dec | Verb::Set => kind == MetricKind::Gauge,
            Verb::Observe => matches!(kind, MetricKind::Histogram | MetricKind::Summary),
        }
    }
}

/// A metric family's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MetricKind {
    /// Summed over every worker; only goes up.
    Counter,
    /// Kept per connection and combined by a [`GaugeMode`].
    Gauge,
    /// Buckets, sum and count, summed over every worker.
    Histogram,
    /// Sum and count, summed over every worker (no quantiles, as prometheus_client's
    /// multiprocess mode).
    Summary,
}

impl MetricKind {
    /// Every type.
    pub const ALL: [MetricKind; 4] = [
        MetricKind::Counter,
        MetricKind::Gauge,
        MetricKind::Histogram,
        MetricKind::Summary,
    ];

    /// The name on the wire, and in the text format's `# TYPE` line.
    pub fn name(self) -> &'static str {
        match self {
            MetricKind::Counter => "counter",
            MetricKind::Gauge => "gauge",
            MetricKind::Histogram => "histogram",
            MetricKind::Summary => "summary",
        }
    }

    /// The type named `s`, if any.
    pub fn parse(s: &str) -> Option<MetricKind> {
        MetricKind::ALL.into_iter().find(|k| k.name() == s)
    }
}

/// How the broker combines one gauge's values from several connections: prometheus_client's
/// ten `multiprocess_mode`s (`prometheus_client/metrics.py`, `Gauge._MULTIPROC_MODES`), with a
/// connection in the place of a process. "Closes" means the connection ends, however the
/// worker went (prometheus_client's `mark_process_dead`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum GaugeMode {
    /// One series per live connection, labelled `conn` (the default): its series vanishes
    /// when it closes.
    #[default]
    LiveAll,
    /// The sum over live connections.
    LiveSum,
    /// The largest value of a live connection.
    LiveMax,
    /// The smallest value of a live connection.
    LiveMin,
    /// The value written last by a connection still live: when that connection closes, the
    /// last write of the others that are still live (none left: no sample).
    LiveMostRecent,
    /// One series per connection, labelled `conn`, closed ones kept as last set.
    All,
    /// The sum over every connection, closed ones included.
    Sum,
    /// The largest value of any connection, closed ones included.
    Max,
    /// The smallest value of any connection, closed ones included.
    Min,
    /// The value written last, by whichever connection, closed or not.
    MostRecent,
}

impl GaugeMode {
    /// Every mode.
    pub const ALL: [GaugeMode; 10] = [
        GaugeMode::LiveAll,
        GaugeMode::LiveSum,
        GaugeMode::LiveMax,
        GaugeMode::LiveMin,
        GaugeMode::LiveMostRecent,
        GaugeMode::All,
        GaugeMode::Sum,
        GaugeMode::Max,
        GaugeMode::Min,
        GaugeMode::MostRecent,
    ];

    /// The name on the wire (prometheus_client's).
    pub fn name(self) -> &'static str {
        match self {
            GaugeMode::LiveAll => "liveall",
            GaugeMode::LiveSum => "livesum",
            GaugeMode::LiveMax => "livemax",
            GaugeMode::LiveMin => "livemin",
            GaugeMode::LiveMostRecent => "livemostrecent",
            GaugeMode::All => "all",
            GaugeMode::Sum => "sum",
            GaugeMode::Max => "max",
            GaugeMode::Min => "min",
            GaugeMode::MostRecent => "mostrecent",
        }
    }

    /// The mode named `s`, if any.
    pub fn parse(s: &str) -> Option<GaugeMode> {
        GaugeMode::ALL.into_iter().find(|m| m.name() == s)
    }

    /// A connection's values vanish when it closes (the `live*` modes).
    pub fn is_live(self) -> bool {
        matches!(
            self,
            GaugeMode::LiveAll
                | GaugeMode::LiveSum
                | GaugeMode::LiveMax
                | GaugeMode::LiveMin
                | GaugeMode::LiveMostRecent
        )
    }

    /// Served as one series per connection, labelled `conn` (`liveall`, `all`).
    pub fn per_connection(self) -> bool {
        matches!(self, GaugeMode::LiveAll | GaugeMode::All)
    }
}

/// Label name and value pairs of one update, in the order sent.
pub type Labels<'a> = Vec<(Cow<'a, str>, Cow<'a, str>)>;

/// One op of a `$metrics` batch. Decoded ops borrow their text from the frame body
/// ([`Batch::ops`]); ops to send can own theirs (`"name".into()` or `String::into()`).
///
/// The decoder checks the format (types, arity, known names, the limits above); the broker
/// checks the rest (Prometheus name rules, reserved labels, bucket order, text lengths).
#[derive(Debug, Clone, PartialEq)]
pub enum MetricOp<'a> {
    /// Declares a family; declaring it again with the same shape is a no-op.
    Declare {
        /// The metric name (Prometheus rules; not `mphub_...`).
        name: Cow<'a, str>,
        /// Its type.
        kind: MetricKind,
        /// The HELP text.
        help: Cow<'a, str>,
        /// Label names (not `le`, `quantile`, `conn`), at most [`MAX_LABELS`].
        labels: Vec<Cow<'a, str>>,
        /// Histogram bucket bounds, ascending, a trailing `+Inf` optional; `None`:
        /// prometheus_client's defaults. At most [`MAX_BUCKETS`] besides `+Inf`.
        buckets: Option<Vec<f64>>,
        /// Gauge mode; `None`: [`GaugeMode::LiveAll`].
        mode: Option<GaugeMode>,
    },
    /// Adds to a counter (amount >= 0) or a gauge.
    Inc {
        /// The family.
        name: Cow<'a, str>,
        /// Label values by name.
        labels: Labels<'a>,
        /// How much.
        amount: f64,
    },
    /// Subtracts from a gauge.
    Dec {
        /// The family.
        name: Cow<'a, str>,
        /// Label values by name.
        labels: Labels<'a>,
        /// How much.
        amount: f64,
    },
    /// Sets a gauge.
    Set {
        /// The family.
        name: Cow<'a, str>,
        /// Label values by name.
        labels: Labels<'a>,
        /// The value.
        value: f64,
    },
    /// Records one observation in a histogram or summary.
    Observe {
        /// The family.
        name: Cow<'a, str>,
        /// Label values by name.
        labels: Labels<'a>,
        /// The observation.
        value: f64,
    },
}

impl MetricOp<'_> {
    /// The op's name.
    pub fn verb(&self) -> Verb {
        match self {
            MetricOp::Declare { .. } => Verb::Declare,
            MetricOp::Inc { .. } => Verb::Inc,
            MetricOp::Dec { .. } => Verb::Dec,
            MetricOp::Set { .. } => Verb::Set,
            MetricOp::Observe { .. } => Verb::Observe,
        }
    }

    /// The family it names.
    pub fn name(&self) -> &str {
        match self {
            MetricOp::Declare { name, .. }
            | MetricOp::Inc { name, .. }
            | MetricOp::Dec { name, .. }
            | MetricOp::Set { name, .. }
            | MetricOp::Observe { name, .. } => name,
        }
    }
}

#[cfg(test)]
mod tests;
