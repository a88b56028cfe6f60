//! Reading a `("$metrics", [ops])` frame body into typed ops.
//!
//! The pickle is walked once into plain data (`envelope/plain.rs`: memo references, shared
//! dicts and containers filled after they were memoized all read as Python reads them), then
//! each op is read from it on demand, its text borrowed from the body. Reading one op costs
//! a bounded amount whatever the batch shares: label dicts, label-name lists, bucket lists and
//! options are checked against the format's limits before they are walked.

use std::borrow::Cow;

use super::{GaugeMode, Labels, MetricKind, MetricOp, Verb, MAX_BUCKETS, MAX_LABELS};
use crate::envelope::plain::{Items, Plain, PlainError, Shape, Value};
use crate::error::{BatchError, OpError};

/// A decoded `$metrics` frame body: walk its ops with [`Batch::ops`].
///
/// ```
/// use mphub_protocol::metrics::{encode, Batch, MetricOp};
///
/// let body = encode(&[MetricOp::Inc { name: "jobs_total".into(), labels: vec![], amount: 1.0 }]);
/// let batch = Batch::decode(&body).unwrap();
/// let ops: Vec<_> = batch.ops().collect();
/// assert_eq!(ops[0].as_ref().unwrap().name(), "jobs_total");
/// ```
#[derive(Debug)]
pub struct Batch<'a> {
    plain: Plain<'a>,
    ops: Value<'a>,
    len: usize,
}

impl<'a> Batch<'a> {
    /// Entries the decoder may hold at once (stack items, memo entries, containers, container
    /// items): about 24 bytes each, so at most ~48 MiB for one hostile frame, whatever
    /// `--max-frame` allows. A batch of 10,000 ops written by CPython needs about 100,000.
    pub const DEFAULT_LIMIT: usize = 1 << 21;

    /// Decodes a whole frame body, `("$metrics", ops)` pickled at any protocol (0-5).
    ///
    /// Errors: [`BatchError::Code`] for a pickle that imports or calls (never decoded past
    /// that opcode), [`BatchError::Decode`] for anything CPython would not load as plain data
    /// or that is not a `("$metrics", ops)` tuple, [`BatchError::NotAList`] when `ops` is not
    /// a list or tuple.
    pub fn decode(body: &'a [u8]) -> Result<Batch<'a>, BatchError> {
        Batch::decode_with_limit(body, Batch::DEFAULT_LIMIT)
    }

    /// [`Batch::decode`] with another cap on the decoder's entries.
    pub fn decode_with_limit(body: &'a [u8], limit: usize) -> Result<Batch<'a>, BatchError> {
        let plain = Plain::decode(body, limit).map_err(|e| match e {
            PlainError::Code => BatchError::Code,
            PlainError::Invalid(m) => BatchError::Decode(m),
        })?;
        let top = plain.top();
        if plain.container(top) != Some((Shape::Tuple, 2)) {
            return Err(BatchError::Decode(format!(
                "expected a (\"$metrics\", ops) tuple, got a {}",
                plain.type_name(top)
            )));
        }
        let mut pair = plain.items(top);
        let (topic, ops) = (
            pair.next().unwrap_or(Value::None),
            pair.next().unwrap_or(Value::None),
        );
        if plain.str(topic) != Some("$metrics") {
            return Err(BatchError::Decode("the topic is not \"$metrics\"".into()));
        }
        let len = match plain.container(ops) {
            Some((Shape::List | Shape::Tuple, n)) => n,
            _ => return Err(BatchError::NotAList(plain.type_name(ops))),
        };
        Ok(Batch { plain, ops, len })
    }

    /// How many ops the batch holds.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the batch holds no op.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The ops in order, each read when reached: an op that breaks the format is an
    /// [`OpError`] in its place, and the others still read.
    pub fn ops(&self) -> Ops<'_, 'a> {
        Ops {
            plain: &self.plain,
            items: self.plain.items(self.ops),
        }
    }
}

/// The ops of a [`Batch`], in order.
#[derive(Debug)]
pub struct Ops<'b, 'a> {
    plain: &'b Plain<'a>,
    items: Items<'b, 'a>,
}

impl<'b> Iterator for Ops<'b, '_> {
    type Item = Result<MetricOp<'b>, OpError>;

    fn next(&mut self) -> Option<Self::Item> {
        let v = self.items.next()?;
        Some(op(self.plain, v))
    }
}

fn shape(m: impl Into<String>) -> OpError {
    OpError::Shape(m.into())
}

/// The items of a tuple or list of at most `max` items, or `None` if `v` is neither.
fn sequence<'b, 'a>(p: &'b Plain<'a>, v: Value<'a>) -> Option<(usize, Items<'b, 'a>)> {
    match p.container(v) {
        Some((Shape::Tuple | Shape::List, n)) => Some((n, p.items(v))),
        _ => None,
    }
}

fn text<'b, 'a>(p: &'b Plain<'a>, v: Value<'a>, what: &str) -> Result<&'b str, OpError> {
    p.str(v).ok_or_else(|| not_text(p, v, what))
}

fn not_text<'a>(p: &Plain<'a>, v: Value<'a>, what: &str) -> OpError {
    match v {
        Value::BadStr => OpError::Value(format!("{what} is not valid Unicode text")),
        other => shape(format!(
            "{what} must be a str, not a {}",
            p.type_name(other)
        )),
    }
}

fn number<'a>(p: &Plain<'a>, v: Value<'a>, what: &str) -> Result<f64, OpError> {
    let x = match v {
        Value::Int(i) => i as f64,
        Value::BigInt(x) | Value::Float(x) => x,
        Value::Bool(b) => f64::from(u8::from(b)),
        other => {
            return Err(OpError::Value(format!(
                "{what} must be a number, not a {}",
                p.type_name(other)
            )))
        }
    };
    if x.is_nan() {
        return Err(OpError::Value(format!("{what} is NaN")));
    }
    Ok(x)
}

fn op<'b, 'a>(p: &'b Plain<'a>, v: Value<'a>) -> Result<MetricOp<'b>, OpError> {
    let Some((n, items)) = sequence(p, v) else {
        return Err(shape(format!(
            "an op must be a tuple, not a {}",
            p.type_name(v)
        )));
    };
    let mut fields = [Value::None; 6];
    if n > fields.len() {
        return Err(shape(format!("an op of {n} items: at most 6")));
    }
    for (slot, x) in fields.iter_mut().zip(items) {
        *slot = x;
    }
    let Some((&verb, args)) = fields[..n].split_first() else {
        return Err(shape("an empty op"));
    };
    let verb = text(p, verb, "the op")?;
    let verb = Verb::parse(verb).ok_or_else(|| {
        shape(format!(
            "unknown op {verb:?}: declare, inc, dec, set or observe"
        ))
    })?;
    let update = || -> Result<(Cow<'b, str>, Labels<'b>, f64), OpError> {
        let [name, labels, x] = *args else {
            return Err(shape(format!(
                "{} takes (name, labels, value)",
                verb.name()
            )));
        };
        let name = Cow::Borrowed(text(p, name, "the metric name")?);
        let labels = label_pairs(p, labels)?;
        Ok((name, labels, number(p, x, "the value")?))
    };
    Ok(match verb {
        Verb::Declare => declare(p, args)?,
        Verb::Inc => {
            let (name, labels, amount) = update()?;
            MetricOp::Inc {
                name,
                labels,
                amount,
            }
        }
        Verb::Dec => {
            let (name, labels, amount) = update()?;
            MetricOp::Dec {
                name,
                labels,
                amount,
            }
        }
        Verb::Set => {
            let (name, labels, value) = update()?;
            MetricOp::Set {
                name,
                labels,
                value,
            }
        }
        Verb::Observe => {
            let (name, labels, value) = update()?;
            MetricOp::Observe {
                name,
                labels,
                value,
            }
        }
    })
}

/// A labels dict: names to values, a later duplicate key replacing the earlier as in Python.
fn label_pairs<'b, 'a>(p: &'b Plain<'a>, v: Value<'a>) -> Result<Labels<'b>, OpError> {
    let n = match p.container(v) {
        Some((Shape::Dict, n)) => n / 2,
        _ => {
            return Err(shape(format!(
                "labels must be a dict, not a {}",
                p.type_name(v)
            )))
        }
    };
    if n > MAX_LABELS {
        return Err(OpError::Value(format!("{n} labels: at most {MAX_LABELS}")));
    }
    let mut out: Labels<'b> = Vec::with_capacity(n);
    let mut items = p.items(v);
    while let (Some(k), Some(val)) = (items.next(), items.next()) {
        let k = text(p, k, "a label name")?;
        // Python's str() of an int or bool, as the old decoder and client-py's labels take it.
        let val = match (val, p.str(val)) {
            (_, Some(s)) => Cow::Borrowed(s),
            (Value::Int(i), _) => Cow::Owned(i.to_string()),
            (Value::Bool(b), _) => Cow::Borrowed(if b { "True" } else { "False" }),
            (other, None) => return Err(not_text(p, other, &format!("label {k:?}: a value"))),
        };
        match out.iter_mut().find(|(name, _)| name == k) {
            Some(slot) => slot.1 = val,
            None => out.push((Cow::Borrowed(k), val)),
        }
    }
    Ok(out)
}

fn declare<'b, 'a>(p: &'b Plain<'a>, args: &[Value<'a>]) -> Result<MetricOp<'b>, OpError> {
    let (name, kind, help, names, options) = match *args {
        [a, b, c, d] => (a, b, c, d, Value::None),
        [a, b, c, d, e] => (a, b, c, d, e),
        _ => {
            return Err(shape(
                "declare takes (name, type, help, label_names, options)",
            ))
        }
    };
    let name = Cow::Borrowed(text(p, name, "the metric name")?);
    let kind_name = text(p, kind, "the type")?;
    let kind = MetricKind::parse(kind_name).ok_or_else(|| {
        shape(format!(
            "type {kind_name:?}: give counter, gauge, histogram or summary"
        ))
    })?;
    let help = Cow::Borrowed(text(p, help, "help")?);
    let Some((n, items)) = sequence(p, names) else {
        return Err(shape("label names must be a tuple or list of str"));
    };
    if n > MAX_LABELS {
        return Err(OpError::Value(format!("{n} labels: at most {MAX_LABELS}")));
    }
    let labels = items
        .map(|l| text(p, l, "a label name").map(Cow::Borrowed))
        .collect::<Result<Vec<_>, _>>()?;
    let (buckets, mode) = declare_options(p, kind, options)?;
    Ok(MetricOp::Declare {
        name,
        kind,
        help,
        labels,
        buckets,
        mode,
    })
}

type Options = (Option<Vec<f64>>, Option<GaugeMode>);

/// `{"buckets": [...]}` for a histogram, `{"mode": ...}` for a gauge, `{}` or `None`.
fn declare_options<'a>(p: &Plain<'a>, kind: MetricKind, v: Value<'a>) -> Result<Options, OpError> {
    let n = match (v, p.container(v)) {
        (Value::None, _) => return Ok((None, None)),
        (_, Some((Shape::Dict, n))) => n / 2,
        _ => return Err(shape("options must be a dict")),
    };
    if n > 2 {
        return Err(shape(
            "options hold at most buckets (histograms) and mode (gauges)",
        ));
    }
    let (mut buckets, mut mode) = (None, None);
    let mut items = p.items(v);
    while let (Some(k), Some(val)) = (items.next(), items.next()) {
        match p.str(k) {
            Some("buckets") if kind == MetricKind::Histogram => {
                let Some((n, bounds)) = sequence(p, val) else {
                    return Err(shape("buckets must be a list of numbers"));
                };
                // A trailing +Inf is allowed beyond the limit.
                if n > MAX_BUCKETS + 1 {
                    return Err(OpError::Value(format!(
                        "{n} buckets: at most {MAX_BUCKETS}"
                    )));
                }
                buckets = Some(
                    bounds
                        .map(|b| number(p, b, "a bucket"))
                        .collect::<Result<_, _>>()?,
                );
            }
            Some("mode") if kind == MetricKind::Gauge => {
                let m = text(p, val, "mode")?;
                mode = Some(GaugeMode::parse(m).ok_or_else(|| {
                    let names: Vec<&str> = GaugeMode::ALL.iter().map(|m| m.name()).collect();
                    shape(format!("mode {m:?}: give one of {}", names.join(", ")))
                })?);
            }
            Some(other) => {
                return Err(shape(format!(
                    "option {other:?} does not apply to a {}",
                    kind.name()
                )))
            }
            None => {
                return Err(shape(format!(
                    "option names must be str, not a {}",
                    p.type_name(k)
                )))
            }
        }
    }
    Ok((buckets, mode))
}
