//! Writing typed ops as the pickle a client sends: `("$metrics", [op, …])`, each op the tuple
//! the format defines, pickled with serde-pickle (protocol 3), which CPython and the broker
//! both read.

use std::collections::BTreeMap;

use serde_pickle::{HashableValue, SerOptions, Value};

use super::{Labels, MetricOp};

fn text(s: &str) -> Value {
    Value::String(s.to_owned())
}

fn labels(l: &Labels<'_>) -> Value {
    Value::Dict(
        l.iter()
            .map(|(k, v)| (HashableValue::String(k.to_string()), text(v)))
            .collect::<BTreeMap<_, _>>(),
    )
}

fn op(op: &MetricOp<'_>) -> Value {
    let verb = text(op.verb().name());
    let update = |name: &str, l: &Labels<'_>, x: f64| {
        Value::Tuple(vec![verb.clone(), text(name), labels(l), Value::F64(x)])
    };
    match op {
        MetricOp::Declare {
            name,
            kind,
            help,
            labels,
            buckets,
            mode,
        } => {
            let mut opts = BTreeMap::new();
            if let Some(b) = buckets {
                opts.insert(
                    HashableValue::String("buckets".into()),
                    Value::List(b.iter().map(|x| Value::F64(*x)).collect()),
                );
            }
            if let Some(m) = mode {
                opts.insert(HashableValue::String("mode".into()), text(m.name()));
            }
            Value::Tuple(vec![
                verb.clone(),
                text(name),
                text(kind.name()),
                text(help),
                Value::Tuple(labels.iter().map(|l| text(l)).collect()),
                Value::Dict(opts),
            ])
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
        } => update(name, labels, *x),
    }
}

/// The frame body of `("$metrics", ops)`, ready for [`frame::encode`](crate::frame::encode).
/// Nothing is checked here: the broker answers a bad op with `("$error", reason)`.
pub fn encode(ops: &[MetricOp<'_>]) -> Vec<u8> {
    let v = Value::Tuple(vec![
        text("$metrics"),
        Value::List(ops.iter().map(op).collect()),
    ]);
    // Pickling a Value of str, float, tuple, list and dict cannot fail.
    serde_pickle::value_to_vec(&v, SerOptions::new())
        .unwrap_or_else(|e| unreachable!("pickling plain metric ops failed: {e}"))
}
