//! Decoding a `$metrics` payload (plain data, already checked to hold no code) into ops.

use std::collections::BTreeMap;

use serde_pickle::{HashableValue, Value};

use super::Reject;

/// A metric family's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
    Summary,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
            Kind::Summary => "summary",
        }
    }
}

/// How per-connection gauge values combine (PROTOCOL §10).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    LiveAll,
    LiveSum,
    LiveMax,
    LiveMin,
    Sum,
    Max,
    Min,
    MostRecent,
    All,
}

impl Mode {
    fn parse(s: &str) -> Option<Mode> {
        Some(match s {
            "liveall" => Mode::LiveAll,
            "livesum" => Mode::LiveSum,
            "livemax" => Mode::LiveMax,
            "livemin" => Mode::LiveMin,
            "sum" => Mode::Sum,
            "max" => Mode::Max,
            "min" => Mode::Min,
            "mostrecent" => Mode::MostRecent,
            "all" => Mode::All,
            _ => return None,
        })
    }

    /// The name used on the wire.
    pub fn name(self) -> &'static str {
        match self {
            Mode::LiveAll => "liveall",
            Mode::LiveSum => "livesum",
            Mode::LiveMax => "livemax",
            Mode::LiveMin => "livemin",
            Mode::Sum => "sum",
            Mode::Max => "max",
            Mode::Min => "min",
            Mode::MostRecent => "mostrecent",
            Mode::All => "all",
        }
    }

    /// Values of a closed connection vanish.
    pub fn is_live(self) -> bool {
        matches!(
            self,
            Mode::LiveAll | Mode::LiveSum | Mode::LiveMax | Mode::LiveMin
        )
    }
}

/// What a family is declared as; declaring it again must match.
#[derive(Debug, Clone, PartialEq)]
pub struct Shape {
    pub kind: Kind,
    pub help: String,
    pub labels: Vec<String>,
    /// Histogram upper bounds, ascending, without +Inf.
    pub buckets: Vec<f64>,
    pub mode: Mode,
}

/// One operation of a `$metrics` batch.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    Declare {
        name: String,
        shape: Shape,
    },
    Inc {
        name: String,
        labels: Labels,
        amount: f64,
    },
    Dec {
        name: String,
        labels: Labels,
        amount: f64,
    },
    Set {
        name: String,
        labels: Labels,
        value: f64,
    },
    Observe {
        name: String,
        labels: Labels,
        value: f64,
    },
}

/// Label name -> value, as sent.
pub type Labels = BTreeMap<String, String>;

/// prometheus_client's default buckets.
pub const DEFAULT_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];
const MAX_BUCKETS: usize = 64;
const MAX_LABELS: usize = 16;
const MAX_HELP: usize = 1024;
const MAX_LABEL_VALUE: usize = 1024;
const RESERVED: [&str; 3] = ["le", "quantile", "conn"];

/// The op list of a `("$metrics", ops)` body.
pub fn decode(body: &[u8]) -> Result<Vec<Value>, Reject> {
    let v = serde_pickle::value_from_slice(body, serde_pickle::DeOptions::new())
        .map_err(|e| Reject::Decode(e.to_string()))?;
    match v {
        Value::Tuple(mut t) if t.len() == 2 => match t.swap_remove(1) {
            Value::List(ops) | Value::Tuple(ops) => Ok(ops),
            other => Err(Reject::BadOp(format!(
                "the $metrics payload must be a list of op tuples, not {}",
                kind_of(&other)
            ))),
        },
        _ => Err(Reject::Decode("not a 2-tuple".into())),
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::None => "None",
        Value::Bool(_) => "bool",
        Value::I64(_) | Value::Int(_) => "int",
        Value::F64(_) => "float",
        Value::Bytes(_) => "bytes",
        Value::String(_) => "str",
        Value::List(_) => "list",
        Value::Tuple(_) => "tuple",
        Value::Set(_) | Value::FrozenSet(_) => "set",
        Value::Dict(_) => "dict",
    }
}

fn items(v: &Value) -> Option<&[Value]> {
    match v {
        Value::List(x) | Value::Tuple(x) => Some(x),
        _ => None,
    }
}

fn string(v: &Value, what: &str) -> Result<String, Reject> {
    match v {
        Value::String(s) => Ok(s.clone()),
        other => Err(Reject::BadOp(format!(
            "{what} must be a str, not {}",
            kind_of(other)
        ))),
    }
}

fn number(v: &Value, what: &str) -> Result<f64, Reject> {
    let x = match v {
        Value::I64(i) => *i as f64,
        Value::F64(f) => *f,
        Value::Bool(b) => f64::from(u8::from(*b)),
        Value::Int(i) => i.to_string().parse::<f64>().unwrap_or(f64::INFINITY),
        other => {
            return Err(Reject::BadValue(format!(
                "{what} must be a number, not {}",
                kind_of(other)
            )))
        }
    };
    if x.is_nan() {
        return Err(Reject::BadValue(format!("{what} is NaN")));
    }
    Ok(x)
}

/// A metric or label name by Prometheus's rules.
pub fn check_name(name: &str, label: bool) -> Result<(), Reject> {
    let ok_first = |c: char| c.is_ascii_alphabetic() || c == '_' || (!label && c == ':');
    let ok_rest = |c: char| ok_first(c) || c.is_ascii_digit();
    let mut chars = name.chars();
    let valid = name.len() <= 200
        && chars.next().is_some_and(ok_first)
        && chars.all(ok_rest)
        && !(label && name.starts_with("__"));
    if !valid {
        let what = if label { "label" } else { "metric" };
        return Err(Reject::BadName(format!(
            "{what} name {name:?} breaks Prometheus's rules ([a-zA-Z_:][a-zA-Z0-9_:]*, at most 200)"
        )));
    }
    if !label && name.starts_with("mphub_") {
        return Err(Reject::BadName(format!(
            "metric name {name:?}: the mphub_ prefix is the broker's own"
        )));
    }
    if label && RESERVED.contains(&name) {
        return Err(Reject::Reserved(format!(
            "label {name:?} is reserved (le, quantile, conn)"
        )));
    }
    Ok(())
}

fn labels(v: &Value) -> Result<Labels, Reject> {
    let Value::Dict(d) = v else {
        return Err(Reject::BadOp(format!(
            "labels must be a dict, not {}",
            kind_of(v)
        )));
    };
    let mut out = Labels::new();
    for (k, val) in d {
        let HashableValue::String(k) = k else {
            return Err(Reject::BadOp("label names must be str".into()));
        };
        let val = match val {
            Value::String(s) => s.clone(),
            Value::I64(i) => i.to_string(),
            Value::Bool(b) => if *b { "True" } else { "False" }.to_owned(),
            other => {
                return Err(Reject::BadOp(format!(
                    "label {k:?}: a value must be a str, not {}",
                    kind_of(other)
                )))
            }
        };
        if val.len() > MAX_LABEL_VALUE {
            return Err(Reject::BadValue(format!(
                "label {k:?}: value over {MAX_LABEL_VALUE} bytes"
            )));
        }
        out.insert(k.clone(), val);
    }
    Ok(out)
}

fn declare(args: &[Value]) -> Result<Op, Reject> {
    let [name, kind, help, labelnames, rest @ ..] = args else {
        return Err(Reject::BadOp(
            "declare takes (name, type, help, label_names, options)".into(),
        ));
    };
    let name = string(name, "the metric name")?;
    check_name(&name, false)?;
    let kind = match string(kind, "the type")?.as_str() {
        "counter" => Kind::Counter,
        "gauge" => Kind::Gauge,
        "histogram" => Kind::Histogram,
        "summary" => Kind::Summary,
        other => {
            return Err(Reject::BadOp(format!(
                "type {other:?}: give counter, gauge, histogram or summary"
            )))
        }
    };
    let help = string(help, "help")?;
    if help.len() > MAX_HELP {
        return Err(Reject::BadValue(format!("help over {MAX_HELP} bytes")));
    }
    let names = items(labelnames)
        .ok_or_else(|| Reject::BadOp("label names must be a tuple or list of str".into()))?;
    if names.len() > MAX_LABELS {
        return Err(Reject::BadValue(format!("more than {MAX_LABELS} labels")));
    }
    let mut labels = Vec::with_capacity(names.len());
    for n in names {
        let n = string(n, "a label name")?;
        check_name(&n, true)?;
        if labels.contains(&n) {
            return Err(Reject::BadName(format!("label {n:?} given twice")));
        }
        labels.push(n);
    }
    let mut buckets = Vec::new();
    let mut mode = Mode::LiveAll;
    if let Some(Value::Dict(opts)) = rest.first() {
        for (k, v) in opts {
            match k {
                HashableValue::String(k) if k == "buckets" && kind == Kind::Histogram => {
                    let b = items(v)
                        .ok_or_else(|| Reject::BadOp("buckets must be a list of numbers".into()))?;
                    for x in b {
                        buckets.push(number(x, "a bucket")?);
                    }
                }
                HashableValue::String(k) if k == "mode" && kind == Kind::Gauge => {
                    let m = string(v, "mode")?;
                    mode = Mode::parse(&m).ok_or_else(|| {
                        Reject::BadOp(format!(
                            "mode {m:?}: give liveall, livesum, livemax, livemin, sum, max, min, mostrecent or all"
                        ))
                    })?;
                }
                other => {
                    return Err(Reject::BadOp(format!(
                        "option {other} does not apply to a {}",
                        kind.name()
                    )))
                }
            }
        }
    } else if let Some(v) = rest.first() {
        if !matches!(v, Value::None) {
            return Err(Reject::BadOp("options must be a dict".into()));
        }
    }
    if kind == Kind::Histogram {
        if buckets.is_empty() {
            buckets = DEFAULT_BUCKETS.to_vec();
        }
        if buckets.last() == Some(&f64::INFINITY) {
            buckets.pop();
        }
        if buckets.len() > MAX_BUCKETS
            || buckets.windows(2).any(|w| w[0] >= w[1])
            || buckets.iter().any(|b| !b.is_finite())
        {
            return Err(Reject::BadValue(format!(
                "buckets must be finite, strictly increasing, at most {MAX_BUCKETS}"
            )));
        }
    }
    Ok(Op::Declare {
        name,
        shape: Shape {
            kind,
            help,
            labels,
            buckets,
            mode,
        },
    })
}

/// One op tuple.
pub fn parse(op: &Value) -> Result<Op, Reject> {
    let t = items(op)
        .ok_or_else(|| Reject::BadOp(format!("an op must be a tuple, not {}", kind_of(op))))?;
    let Some((verb, args)) = t.split_first() else {
        return Err(Reject::BadOp("an empty op".into()));
    };
    let verb = string(verb, "the op")?;
    if verb == "declare" {
        return declare(args);
    }
    let [name, labels_v, amount] = args else {
        return Err(Reject::BadOp(format!("{verb} takes (name, labels, value)")));
    };
    let name = string(name, "the metric name")?;
    let labels = labels(labels_v)?;
    let x = number(amount, "the value")?;
    Ok(match verb.as_str() {
        "inc" => Op::Inc {
            name,
            labels,
            amount: x,
        },
        "dec" => Op::Dec {
            name,
            labels,
            amount: x,
        },
        "set" => Op::Set {
            name,
            labels,
            value: x,
        },
        "observe" => Op::Observe {
            name,
            labels,
            value: x,
        },
        other => {
            return Err(Reject::BadOp(format!(
                "unknown op {other:?}: declare, inc, dec, set or observe"
            )))
        }
    })
}
