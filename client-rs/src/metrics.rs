//! Worker metrics (PROTOCOL §10) as typed ops: [`Client::send_metrics`](crate::Client::send_metrics).

use std::collections::BTreeMap;

use serde_pickle::{HashableValue, Value};

/// A metric family's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    /// Summed over every worker; only goes up.
    Counter,
    /// Kept per connection and combined by a [`GaugeMode`].
    Gauge,
    /// Buckets, sum and count, summed over every worker.
    Histogram,
    /// Sum and count, summed over every worker.
    Summary,
}

/// How the broker combines one gauge's values from several connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GaugeMode {
    /// One series per live connection, labelled `conn` (the default).
    LiveAll,
    /// The sum over live connections.
    LiveSum,
    /// The largest value of a live connection.
    LiveMax,
    /// The smallest value of a live connection.
    LiveMin,
    /// The sum over every connection, closed ones included.
    Sum,
    /// The largest value ever set by any connection still known.
    Max,
    /// The smallest value, closed connections included.
    Min,
    /// The value set last, by whichever connection.
    MostRecent,
    /// One series per connection, closed ones included.
    All,
}

impl GaugeMode {
    fn name(self) -> &'static str {
        match self {
            GaugeMode::LiveAll => "liveall",
            GaugeMode::LiveSum => "livesum",
            GaugeMode::LiveMax => "livemax",
            GaugeMode::LiveMin => "livemin",
            GaugeMode::Sum => "sum",
            GaugeMode::Max => "max",
            GaugeMode::Min => "min",
            GaugeMode::MostRecent => "mostrecent",
            GaugeMode::All => "all",
        }
    }
}

/// One op of a `$metrics` batch.
#[derive(Debug, Clone, PartialEq)]
pub enum MetricOp {
    /// Declares a family (again with the same shape: a no-op).
    Declare {
        /// The metric name (Prometheus rules; not `mphub_...`).
        name: String,
        /// Its type.
        kind: MetricKind,
        /// The HELP text.
        help: String,
        /// Label names (not `le`, `quantile`, `conn`).
        labels: Vec<String>,
        /// Histogram bucket bounds (default: prometheus_client's).
        buckets: Option<Vec<f64>>,
        /// Gauge mode (default `LiveAll`).
        mode: Option<GaugeMode>,
    },
    /// Adds to a counter (amount >= 0) or a gauge.
    Inc {
        /// The family.
        name: String,
        /// Label values by name.
        labels: Vec<(String, String)>,
        /// How much.
        amount: f64,
    },
    /// Subtracts from a gauge.
    Dec {
        /// The family.
        name: String,
        /// Label values by name.
        labels: Vec<(String, String)>,
        /// How much.
        amount: f64,
    },
    /// Sets a gauge.
    Set {
        /// The family.
        name: String,
        /// Label values by name.
        labels: Vec<(String, String)>,
        /// The value.
        value: f64,
    },
    /// Records one observation in a histogram or summary.
    Observe {
        /// The family.
        name: String,
        /// Label values by name.
        labels: Vec<(String, String)>,
        /// The observation.
        value: f64,
    },
}

fn s(x: &str) -> Value {
    Value::String(x.to_owned())
}

fn labels(l: &[(String, String)]) -> Value {
    Value::Dict(
        l.iter()
            .map(|(k, v)| (HashableValue::String(k.clone()), s(v)))
            .collect::<BTreeMap<_, _>>(),
    )
}

impl MetricOp {
    fn value(&self) -> Value {
        let update = |verb: &str, name: &str, l: &[(String, String)], x: f64| {
            Value::Tuple(vec![s(verb), s(name), labels(l), Value::F64(x)])
        };
        match self {
            MetricOp::Declare {
                name,
                kind,
                help,
                labels,
                buckets,
                mode,
            } => {
                let kind = match kind {
                    MetricKind::Counter => "counter",
                    MetricKind::Gauge => "gauge",
                    MetricKind::Histogram => "histogram",
                    MetricKind::Summary => "summary",
                };
                let mut opts = BTreeMap::new();
                if let Some(b) = buckets {
                    opts.insert(
                        HashableValue::String("buckets".into()),
                        Value::List(b.iter().map(|x| Value::F64(*x)).collect()),
                    );
                }
                if let Some(m) = mode {
                    opts.insert(HashableValue::String("mode".into()), s(m.name()));
                }
                Value::Tuple(vec![
                    s("declare"),
                    s(name),
                    s(kind),
                    s(help),
                    Value::Tuple(labels.iter().map(|l| s(l)).collect()),
                    Value::Dict(opts),
                ])
            }
            MetricOp::Inc {
                name,
                labels,
                amount,
            } => update("inc", name, labels, *amount),
            MetricOp::Dec {
                name,
                labels,
                amount,
            } => update("dec", name, labels, *amount),
            MetricOp::Set {
                name,
                labels,
                value,
            } => update("set", name, labels, *value),
            MetricOp::Observe {
                name,
                labels,
                value,
            } => update("observe", name, labels, *value),
        }
    }
}

/// The pickle of `("$metrics", [ops])`.
pub(crate) fn body(ops: &[MetricOp]) -> Result<Vec<u8>, serde_pickle::Error> {
    let v = Value::Tuple(vec![
        s("$metrics"),
        Value::List(ops.iter().map(MetricOp::value).collect()),
    ]);
    serde_pickle::value_to_vec(&v, serde_pickle::SerOptions::new())
}
