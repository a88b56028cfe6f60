//! Worker metrics (PROTOCOL §10): Python processes send `("$metrics", [ops])`; the broker
//! aggregates them and serves them after its own metrics on `/metrics`.
//!
//! - `ops.rs`: decoding the payload (the one payload the broker decodes, and only after the
//!   envelope scanner has found no opcode that imports or calls) into typed ops.
//! - this file: the store — families, series, per-connection gauge values — and applying ops.
//! - `render.rs`: the Prometheus text format.
//!
//! The store has its own lock; routing never takes it, so a scrape of many series cannot stall
//! a publish.

mod ops;
mod render;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};

pub use ops::{Kind, Mode, Op, Shape};

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

    /// Decodes and applies one `$metrics` frame body from connection `conn`.
    pub fn apply_frame(&self, conn: u64, body: &[u8], has_code: bool) -> Outcome {
        if has_code {
            return Outcome {
                applied: 0,
                rejected: vec![Reject::Code],
            };
        }
        let raw = match ops::decode(body) {
            Ok(r) => r,
            Err(e) => {
                return Outcome {
                    applied: 0,
                    rejected: vec![e],
                }
            }
        };
        let parsed: Vec<Result<Op, Reject>> = raw.iter().map(ops::parse).collect();
        let mut out = Outcome::default();
        let mut inner = self.lock();
        for op in parsed {
            match op.and_then(|op| inner.apply(conn, op)) {
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
            if fam.shape.kind != Kind::Gauge {
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
    fn apply(&mut self, conn: u64, op: Op) -> Result<(), Reject> {
        let (name, labels, verb, x) = match op {
            Op::Declare { name, shape } => return self.declare(name, shape),
            Op::Inc {
                name,
                labels,
                amount,
            } => (name, labels, "inc", amount),
            Op::Dec {
                name,
                labels,
                amount,
            } => (name, labels, "dec", amount),
            Op::Set {
                name,
                labels,
                value,
            } => (name, labels, "set", value),
            Op::Observe {
                name,
                labels,
                value,
            } => (name, labels, "observe", value),
        };
        self.clock += 1;
        let clock = self.clock;
        let fam = self
            .families
            .get_mut(&name)
            .ok_or_else(|| Reject::Undeclared(format!("{verb} {name:?}: declare it first")))?;
        let kind = fam.shape.kind;
        let allowed = match verb {
            "inc" => matches!(kind, Kind::Counter | Kind::Gauge),
            "dec" | "set" => kind == Kind::Gauge,
            _ => matches!(kind, Kind::Histogram | Kind::Summary),
        };
        if !allowed {
            return Err(Reject::Conflict(format!(
                "{verb} does not apply to {name:?}, a {}",
                kind.name()
            )));
        }
        if kind == Kind::Counter && x < 0.0 {
            return Err(Reject::Negative(format!(
                "inc {name:?} by {x}: a counter only goes up"
            )));
        }
        if !x.is_finite() && kind != Kind::Gauge {
            return Err(Reject::BadValue(format!(
                "{verb} {name:?}: {x} is not finite"
            )));
        }
        if labels.len() != fam.shape.labels.len()
            || fam.shape.labels.iter().any(|l| !labels.contains_key(l))
        {
            return Err(Reject::Labels(format!(
                "{verb} {name:?}: labels must be exactly {:?}",
                fam.shape.labels
            )));
        }
        let key: Vec<String> = fam
            .shape
            .labels
            .iter()
            .map(|l| labels.get(l).cloned().unwrap_or_default())
            .collect();
        let per_conn = kind == Kind::Gauge && matches!(fam.shape.mode, Mode::LiveAll | Mode::All);
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
            Kind::Counter => Data::Counter(0.0),
            Kind::Histogram => Data::Histogram(vec![0; buckets + 1], 0.0, 0),
            Kind::Summary => Data::Summary(0.0, 0),
            Kind::Gauge => Data::Gauge(HashMap::new()),
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
                    "inc" => slot.0 + x,
                    "dec" => slot.0 - x,
                    _ => x,
                };
                slot.1 = clock;
                slot.2 = true;
            }
        }
        Ok(())
    }

    fn declare(&mut self, name: String, shape: Shape) -> Result<(), Reject> {
        if let Some(fam) = self.families.get(&name) {
            if fam.shape == shape {
                return Ok(());
            }
            return Err(Reject::Conflict(format!(
                "{name:?} is already declared as a {} with labels {:?}{}; this declaration differs",
                fam.shape.kind.name(),
                fam.shape.labels,
                if fam.shape.kind == Kind::Gauge {
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
        // Suffixes the text format derives must not collide with another family.
        let clash = ["_bucket", "_sum", "_count", "_total"].iter().any(|s| {
            name.strip_suffix(s).is_some_and(|base| {
                self.families.get(base).is_some_and(|f| {
                    f.shape.kind == Kind::Histogram || f.shape.kind == Kind::Summary
                })
            })
        });
        if clash {
            return Err(Reject::Conflict(format!(
                "{name:?} collides with the samples of a histogram or summary"
            )));
        }
        self.families.insert(
            name,
            Family {
                shape,
                series: BTreeMap::new(),
            },
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_pickle::{HashableValue, Value};

    fn s(x: &str) -> Value {
        Value::String(x.into())
    }

    fn frame(ops: Vec<Value>) -> Vec<u8> {
        serde_pickle::value_to_vec(
            &Value::Tuple(vec![s("$metrics"), Value::List(ops)]),
            Default::default(),
        )
        .expect("pickle")
    }

    fn op(items: Vec<Value>) -> Value {
        Value::Tuple(items)
    }

    fn no_labels() -> Value {
        Value::Dict(Default::default())
    }

    fn render(store: &Store) -> String {
        let mut out = String::new();
        store.render(&mut out);
        out
    }

    #[test]
    fn counters_sum_over_connections_and_survive_a_close() {
        let st = Store::default();
        let declare = op(vec![
            s("declare"),
            s("n_total"),
            s("counter"),
            s("N"),
            Value::Tuple(vec![]),
            no_labels(),
        ]);
        let inc = op(vec![s("inc"), s("n_total"), no_labels(), Value::I64(2)]);
        assert!(st
            .apply_frame(1, &frame(vec![declare.clone(), inc.clone()]), false)
            .rejected
            .is_empty());
        assert!(st
            .apply_frame(2, &frame(vec![declare, inc]), false)
            .rejected
            .is_empty());
        st.connection_closed(1);
        assert!(render(&st).contains("\nn_total 4\n"));
    }

    #[test]
    fn a_livesum_gauge_forgets_a_closed_connection_and_a_max_gauge_does_not() {
        let st = Store::default();
        let mut mode = std::collections::BTreeMap::new();
        mode.insert(HashableValue::String("mode".into()), s("livesum"));
        let mut max = std::collections::BTreeMap::new();
        max.insert(HashableValue::String("mode".into()), s("max"));
        let decl = vec![
            op(vec![
                s("declare"),
                s("g"),
                s("gauge"),
                s("G"),
                Value::Tuple(vec![]),
                Value::Dict(mode),
            ]),
            op(vec![
                s("declare"),
                s("m"),
                s("gauge"),
                s("M"),
                Value::Tuple(vec![]),
                Value::Dict(max),
            ]),
        ];
        for (conn, v) in [(1, 5), (2, 7)] {
            let mut ops = decl.clone();
            ops.push(op(vec![s("set"), s("g"), no_labels(), Value::I64(v)]));
            ops.push(op(vec![s("set"), s("m"), no_labels(), Value::I64(v)]));
            assert!(st.apply_frame(conn, &frame(ops), false).rejected.is_empty());
        }
        assert!(render(&st).contains("\ng 12\n"));
        st.connection_closed(2);
        let text = render(&st);
        assert!(
            text.contains("\ng 5\n") && text.contains("\nm 7\n"),
            "{text}"
        );
    }

    #[test]
    fn rejections_are_reported_and_the_rest_applies() {
        let st = Store::default();
        let ops = vec![
            op(vec![
                s("declare"),
                s("c_total"),
                s("counter"),
                s("C"),
                Value::Tuple(vec![]),
                no_labels(),
            ]),
            op(vec![s("inc"), s("c_total"), no_labels(), Value::I64(-1)]),
            op(vec![s("inc"), s("nope"), no_labels(), Value::I64(1)]),
            op(vec![
                s("declare"),
                s("mphub_x"),
                s("counter"),
                s("X"),
                Value::Tuple(vec![]),
                no_labels(),
            ]),
            op(vec![s("inc"), s("c_total"), no_labels(), Value::F64(0.5)]),
        ];
        let out = st.apply_frame(1, &frame(ops), false);
        let labels: Vec<&str> = out.rejected.iter().map(Reject::label).collect();
        assert_eq!(labels, ["negative_counter", "undeclared", "bad_name"]);
        assert_eq!(out.applied, 2);
        assert!(out
            .reason()
            .is_some_and(|r| r.starts_with("$metrics: 3 of 5 ops rejected")));
        assert!(render(&st).contains("\nc_total 0.5\n"));
        assert_eq!(st.apply_frame(1, b"", true).rejected, vec![Reject::Code]);
    }
}
