//! Worker metrics (PROTOCOL §10): Python processes send `("$metrics", [ops])`; the broker
//! aggregates them and serves them after its own metrics on `/metrics`.
//!
//! - the op format and its decoder are `mphub_protocol::metrics` (the one payload the broker
//!   decodes, and only after the envelope scanner has found no opcode that imports or calls);
//! - `ops.rs`: the broker's rules for decoded ops (names, reserved labels, buckets) and the
//!   [`Shape`] a family keeps;
//! - this file: the store — families, series, per-connection gauge values — and applying ops;
//! - `render.rs`: the Prometheus text format, and the sample names each type writes.
//!
//! The store has its own lock; routing never takes it, so a scrape of many series cannot stall
//! a publish.

mod ops;
mod render;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};

use mphub_protocol::metrics::{Batch, MetricKind, MetricOp, Verb};

pub use ops::Shape;

/// Series one family may hold (label combinations; for `liveall`/`all` gauges, also per
/// connection).
pub const MAX_SERIES: usize = 10_000;
/// Families the store may hold.
pub const MAX_FAMILIES: usize = 1_000;
/// Rejections kept in one `$error` reply (all are counted).
const MAX_REASONS: usize = 5;

/// Why an op (or a whole batch) was refused; `label()` is the metric label.
#[derive(Debug, Clone, PartialEq)]
pub enum Reject {
    /// The payload holds an opcode that imports or calls: never decoded.
    Code,
    /// The payload is not a pickle of plain data.
    Decode(String),
    /// An op of the wrong shape.
    BadOp(String),
    /// A name breaking Prometheus's rules, or the reserved `mphub_` prefix.
    BadName(String),
    /// A reserved label (`le`, `quantile`, `conn`).
    Reserved(String),
    /// A value of the wrong type, NaN, or out of range.
    BadValue(String),
    /// A family declared again with another shape, or used as another type.
    Conflict(String),
    /// A counter given a negative increment.
    Negative(String),
    /// An op on a family never declared.
    Undeclared(String),
    /// Labels that do not match the declaration.
    Labels(String),
    /// Over the series or family cap.
    Limit(String),
}

impl Reject {
    /// The `reason` label of `mphub_metrics_rejected_total`.
    pub fn label(&self) -> &'static str {
        match self {
            Reject::Code => "code",
            Reject::Decode(_) => "decode",
            Reject::BadOp(_) => "bad_op",
            Reject::BadName(_) => "bad_name",
            Reject::Reserved(_) => "reserved_label",
            Reject::BadValue(_) => "bad_value",
            Reject::Conflict(_) => "conflict",
            Reject::Negative(_) => "negative_counter",
            Reject::Undeclared(_) => "undeclared",
            Reject::Labels(_) => "labels",
            Reject::Limit(_) => "limit",
        }
    }

    /// Every label, to show the counters at zero from the start.
    pub const LABELS: [&'static str; 11] = [
        "code",
        "decode",
        "bad_op",
        "bad_name",
        "reserved_label",
        "bad_value",
        "conflict",
        "negative_counter",
        "undeclared",
        "labels",
        "limit",
    ];
}

impl std::fmt::Display for Reject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reject::Code => f.write_str(
                "the $metrics payload holds an opcode that imports or calls; only plain data is accepted",
            ),
            Reject::Decode(m) => write!(f, "the $metrics payload could not be decoded: {m}"),
            Reject::BadOp(m)
            | Reject::BadName(m)
            | Reject::Reserved(m)
            | Reject::BadValue(m)
            | Reject::Conflict(m)
            | Reject::Negative(m)
            | Reject::Undeclared(m)
            | Reject::Labels(m)
            | Reject::Limit(m) => f.write_str(m),
        }
    }
}

/// A series' data.
#[derive(Debug, Clone)]
enum Data {
    Counter(f64),
    /// Per bucket (not cumulative; the last is +Inf), sum, count.
    Histogram(Vec<u64>, f64, u64),
    /// Sum, count.
    Summary(f64, u64),
    /// Per connection: value, the order of the last write, and whether it is still open.
    Gauge(HashMap<u64, (f64, u64, bool)>),
}

/// The series an unlabelled family shows from its declaration on, as prometheus_client's
/// unlabelled metrics do (`x_total 0`, a histogram's buckets, `_count 0`, `_sum 0`), so the
/// first increment is a change a `rate()` sees. Not for gauges: their value is per writer and
/// mode (a zero from a new worker would win `mostrecent`), so a gauge shows once written.
/// Labelled families have no series until a label set is written, as there.
fn zero_series(shape: &Shape) -> Option<Data> {
    if !shape.labels.is_empty() {
        return None;
    }
    match shape.kind {
        MetricKind::Counter => Some(Data::Counter(0.0)),
        MetricKind::Histogram => Some(Data::Histogram(vec![0; shape.buckets.len() + 1], 0.0, 0)),
        MetricKind::Summary => Some(Data::Summary(0.0, 0)),
        MetricKind::Gauge => None,
    }
}

#[derive(Debug)]
struct Family {
    shape: Shape,
    series: BTreeMap<Vec<String>, Data>,
}

#[derive(Debug, Default)]
struct Inner {
    families: BTreeMap<String, Family>,
    /// Increases on every gauge write, for `mostrecent`.
    clock: u64,
}

/// All worker metrics of one broker.
#[derive(Debug, Default)]
pub struct Store {
    inner: Mutex<Inner>,
}

/// The result of one `$metrics` frame.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Ops applied.
    pub applied: u64,
    /// Every rejection, in op order.
    pub rejected: Vec<Reject>,
}

impl Outcome {
    /// The `$error` text: how many were rejected, and the first reasons.
    pub fn reason(&self) -> Option<String> {
        if self.rejected.is_empty() {
            return None;
        }
        let total = self.applied as usize + self.rejected.len();
        let shown: Vec<String> = self
            .rejected
            .iter()
            .take(MAX_REASONS)
            .map(ToString::to_string)
            .collect();
        Some(format!(
            "$metrics: {} of {total} ops rejected: {}",
            self.rejected.len(),
            shown.join("; ")
        ))
    }
}

impl Store {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Decodes and applies one `$metrics` frame body from connection `conn`; `has_code` is
    /// the envelope scanner's verdict (such a body is never decoded).
    pub fn apply_frame(&self, conn: u64, body: &[u8], has_code: bool) -> Outcome {
        let batch = match has_code {
            true => Err(Reject::Code),
            false => Batch::decode(body).map_err(Reject::from),
        };
        let batch = match batch {
            Ok(b) => b,
            Err(e) => {
                return Outcome {
                    applied: 0,
                    rejected: vec![e],
                }
            }
        };
        let mut out = Outcome::default();
        // Each op is read as it is applied and dropped after: one op held at a time, however
        // many times a batch refers to the same one. Reading one is a few borrows, so doing it
        // under the lock costs a scrape nothing it would notice.
        let mut inner = self.lock();
        for op in batch.ops() {
            match op
                .map_err(Reject::from)
                .and_then(|op| inner.apply(conn, op))
            {
                Ok(()) => out.applied += 1,
                Err(e) => out.rejected.push(e),
            }
        }
        out
    }

    /// A connection closed: its `live*` gauge values vanish; others are kept as last set.
    pub fn connection_closed(&self, conn: u64) {
        let mut inner = self.lock();
        for fam in inner.families.values_mut() {
            if fam.shape.kind != MetricKind::Gauge {
                continue;
            }
            let live = fam.shape.mode.is_live();
            fam.series.retain(|_, data| {
                if let Data::Gauge(per) = data {
                    if live {
                        per.remove(&conn);
                    } else if let Some(v) = per.get_mut(&conn) {
                        v.2 = false;
                    }
                    !per.is_empty()
                } else {
                    true
                }
            });
        }
    }

    /// Series held now, over all families.
    pub fn series(&self) -> usize {
        self.lock().families.values().map(|f| f.series.len()).sum()
    }

    /// Appends every family in the text format (0.0.4).
    pub fn render(&self, out: &mut String) {
        let inner = self.lock();
        for (name, fam) in &inner.families {
            render::family(out, name, &fam.shape, fam.series.iter());
        }
    }
}

impl Inner {
    fn apply(&mut self, conn: u64, op: MetricOp<'_>) -> Result<(), Reject> {
        let verb = op.verb();
        let (name, labels, x) = match op {
            MetricOp::Declare {
                name,
                kind,
                help,
                labels,
                buckets,
                mode,
            } => {
                let shape = ops::shape(&name, kind, &help, &labels, buckets, mode)?;
                return self.declare(&name, shape);
            }
            MetricOp::Inc {
                name,
                labels,
                amount: x,
            }
            | MetricOp::Dec {
                name,
                labels,
                amount: x,
            }
            | MetricOp::Set {
                name,
                labels,
                value: x,
            }
            | MetricOp::Observe {
                name,
                labels,
                value: x,
            } => (name, labels, x),
        };
        let verb_name = verb.name();
        self.clock += 1;
        let clock = self.clock;
        let fam = self
            .families
            .get_mut(&*name)
            .ok_or_else(|| Reject::Undeclared(format!("{verb_name} {name:?}: declare it first")))?;
        let kind = fam.shape.kind;
        if !verb.applies_to(kind) {
            return Err(Reject::Conflict(format!(
                "{verb_name} does not apply to {name:?}, a {}",
                kind.name()
            )));
        }
        if kind == MetricKind::Counter && x < 0.0 {
            return Err(Reject::Negative(format!(
                "inc {name:?} by {x}: a counter only goes up"
            )));
        }
        if !x.is_finite() && kind != MetricKind::Gauge {
            return Err(Reject::BadValue(format!(
                "{verb_name} {name:?}: {x} is not finite"
            )));
        }
        let key = ops::series_key(verb_name, &name, &fam.shape.labels, &labels)?;
        let per_conn = kind == MetricKind::Gauge && fam.shape.mode.per_connection();
        let cost = |fam: &Family| -> usize {
            if per_conn {
                fam.series
                    .values()
                    .map(|d| match d {
                        Data::Gauge(p) => p.len(),
                        _ => 1,
                    })
                    .sum()
            } else {
                fam.series.len()
            }
        };
        let grows = match fam.series.get(&key) {
            None => true,
            Some(Data::Gauge(p)) => per_conn && !p.contains_key(&conn),
            Some(_) => false,
        };
        if grows && cost(fam) >= MAX_SERIES {
            return Err(Reject::Limit(format!(
                "{name:?} already holds {MAX_SERIES} series (the cap per family)"
            )));
        }
        let buckets = fam.shape.buckets.len();
        let data = fam.series.entry(key).or_insert_with(|| match kind {
            MetricKind::Counter => Data::Counter(0.0),
            MetricKind::Histogram => Data::Histogram(vec![0; buckets + 1], 0.0, 0),
            MetricKind::Summary => Data::Summary(0.0, 0),
            MetricKind::Gauge => Data::Gauge(HashMap::new()),
        });
        match data {
            Data::Counter(total) => *total += x,
            Data::Histogram(counts, sum, count) => {
                let at = fam.shape.buckets.partition_point(|b| *b < x);
                if let Some(c) = counts.get_mut(at) {
                    *c += 1;
                }
                *sum += x;
                *count += 1;
            }
            Data::Summary(sum, count) => {
                *sum += x;
                *count += 1;
            }
            Data::Gauge(per) => {
                let slot = per.entry(conn).or_insert((0.0, clock, true));
                slot.0 = match verb {
                    Verb::Inc => slot.0 + x,
                    Verb::Dec => slot.0 - x,
                    _ => x,
                };
                slot.1 = clock;
                slot.2 = true;
            }
        }
        Ok(())
    }

    fn declare(&mut self, name: &str, shape: Shape) -> Result<(), Reject> {
        if let Some(fam) = self.families.get(name) {
            if fam.shape == shape {
                return Ok(());
            }
            return Err(Reject::Conflict(format!(
                "{name:?} is already declared as a {} with labels {:?}{}; this declaration differs",
                fam.shape.kind.name(),
                fam.shape.labels,
                if fam.shape.kind == MetricKind::Gauge {
                    format!(" and mode {}", fam.shape.mode.name())
                } else {
                    String::new()
                }
            )));
        }
        if self.families.len() >= MAX_FAMILIES {
            return Err(Reject::Limit(format!(
                "{MAX_FAMILIES} families already declared (the cap)"
            )));
        }
        if let Some(clash) = self.clash(name, shape.kind) {
            return Err(Reject::Conflict(clash));
        }
        let mut series = BTreeMap::new();
        if let Some(zero) = zero_series(&shape) {
            series.insert(Vec::new(), zero);
        }
        self.families
            .insert(name.to_owned(), Family { shape, series });
        Ok(())
    }

    /// Whether a new family `name` of type `kind` would write a name another family writes
    /// (its `# TYPE` name or a sample name), whichever was declared first: histogram `q`
    /// writes `q_count`, so gauge `q_count` clashes with it, before or after.
    fn clash(&self, name: &str, kind: MetricKind) -> Option<String> {
        for ours in render::names(name, kind) {
            if BROKER_FAMILIES.contains(&ours.as_str()) {
                return Some(format!(
                    "{name:?} (a {}) would write {ours:?}, which the broker itself serves",
                    kind.name()
                ));
            }
            for theirs in render::SUFFIXES {
                let Some(base) = ours.strip_suffix(theirs) else {
                    continue;
                };
                let Some(fam) = self.families.get(base) else {
                    continue;
                };
                if theirs.is_empty() || render::suffixes(fam.shape.kind).contains(&theirs) {
                    return Some(format!(
                        "{name:?} (a {}) would write {ours:?}, which {base:?} (a {}) writes",
                        kind.name(),
                        fam.shape.kind.name()
                    ));
                }
            }
        }
        None
    }
}

/// The families the broker serves on /metrics besides its own `mphub_` ones: the process
/// collector's (prometheus' `process` feature, the names prometheus_client's own process
/// collector uses too). A worker family that would write one of these names is refused, or
/// `/metrics` would carry two HELP lines for it (which `promtool check metrics` rejects).
const BROKER_FAMILIES: [&str; 7] = [
    "process_cpu_seconds_total",
    "process_open_fds",
    "process_max_fds",
    "process_virtual_memory_bytes",
    "process_resident_memory_bytes",
    "process_start_time_seconds",
    "process_threads",
];

#[cfg(test)]
mod tests;
