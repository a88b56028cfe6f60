//! The broker's rules for decoded ops (the format itself, and its decoder, are
//! `mphub_protocol::metrics`): Prometheus names, reserved labels, text lengths, and histogram
//! buckets as prometheus_client takes them.

use std::borrow::Cow;

use mphub_protocol::metrics::{GaugeMode, Labels, MetricKind, MAX_BUCKETS};
use mphub_protocol::{BatchError, OpError};

use super::Reject;

/// What a family is declared as; declaring it again must match.
#[derive(Debug, Clone, PartialEq)]
pub struct Shape {
    /// Its type.
    pub kind: MetricKind,
    /// The HELP text.
    pub help: String,
    /// Label names, in declaration order.
    pub labels: Vec<String>,
    /// Histogram upper bounds, ascending, without +Inf (empty for other types).
    pub buckets: Vec<f64>,
    /// How a gauge combines connections (the default for other types).
    pub mode: GaugeMode,
}

/// prometheus_client's default buckets.
pub const DEFAULT_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];
const MAX_HELP: usize = 1024;
const MAX_LABEL_VALUE: usize = 1024;
const RESERVED: [&str; 3] = ["le", "quantile", "conn"];

impl From<BatchError> for Reject {
    fn from(e: BatchError) -> Self {
        match e {
            BatchError::Code => Reject::Code,
            BatchError::Decode(m) => Reject::Decode(m),
            BatchError::NotAList(_) => Reject::BadOp(e.to_string()),
        }
    }
}

impl From<OpError> for Reject {
    fn from(e: OpError) -> Self {
        match e {
            OpError::Shape(m) => Reject::BadOp(m),
            OpError::Value(m) => Reject::BadValue(m),
        }
    }
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

/// A declaration checked into the shape the store keeps.
pub fn shape(
    name: &str,
    kind: MetricKind,
    help: &str,
    labels: &[Cow<'_, str>],
    buckets: Option<Vec<f64>>,
    mode: Option<GaugeMode>,
) -> Result<Shape, Reject> {
    check_name(name, false)?;
    if help.len() > MAX_HELP {
        return Err(Reject::BadValue(format!("help over {MAX_HELP} bytes")));
    }
    let mut names: Vec<String> = Vec::with_capacity(labels.len());
    for n in labels {
        check_name(n, true)?;
        if names.iter().any(|m| m == n) {
            return Err(Reject::BadName(format!("label {n:?} given twice")));
        }
        names.push(n.to_string());
    }
    let buckets = match kind {
        MetricKind::Histogram => histogram_buckets(buckets)?,
        _ => Vec::new(),
    };
    Ok(Shape {
        kind,
        help: help.to_owned(),
        labels: names,
        buckets,
        mode: mode.unwrap_or_default(),
    })
}

/// Bucket bounds as prometheus_client's `Histogram._prepare_buckets` takes them: ascending, a
/// trailing `+Inf` optional (it is always served), and at least one bound besides it (`[]`
/// and `[+Inf]` are refused: "Must have at least two buckets"). `-Inf` is a bound like any.
/// Two rules it does not have, for reasons: a bound given twice is refused, since it would
/// write two samples with the same `le` (an invalid exposition); and NaN, which its sort
/// check lets through only because NaN compares false, never reaches here (the decoder
/// refuses a NaN number).
fn histogram_buckets(given: Option<Vec<f64>>) -> Result<Vec<f64>, Reject> {
    let Some(mut b) = given else {
        return Ok(DEFAULT_BUCKETS.to_vec());
    };
    if b.last() == Some(&f64::INFINITY) {
        b.pop();
    }
    if b.is_empty() {
        return Err(Reject::BadValue(
            "buckets: give at least one bound besides +Inf (as prometheus_client: \"Must have \
             at least two buckets\")"
                .into(),
        ));
    }
    if b.windows(2).any(|w| w[0] > w[1]) {
        return Err(Reject::BadValue(format!(
            "buckets {b:?} not in sorted order"
        )));
    }
    if let Some(w) = b.windows(2).find(|w| w[0] == w[1]) {
        return Err(Reject::BadValue(format!(
            "bucket {} given twice: each le must be unique",
            w[0]
        )));
    }
    if b.last() == Some(&f64::INFINITY) {
        return Err(Reject::BadValue(
            "bucket +Inf given twice: each le must be unique".into(),
        ));
    }
    if b.len() > MAX_BUCKETS {
        return Err(Reject::BadValue(format!(
            "{} buckets: at most {MAX_BUCKETS}",
            b.len()
        )));
    }
    Ok(b)
}

/// The series key of an update: its label values in the family's label order.
pub fn series_key(
    verb: &str,
    name: &str,
    declared: &[String],
    labels: &Labels<'_>,
) -> Result<Vec<String>, Reject> {
    let mismatch = || {
        Reject::Labels(format!(
            "{verb} {name:?}: labels must be exactly {declared:?}"
        ))
    };
    if labels.len() != declared.len() {
        return Err(mismatch());
    }
    let mut key = Vec::with_capacity(declared.len());
    for l in declared {
        let (_, v) = labels.iter().find(|(k, _)| k == l).ok_or_else(mismatch)?;
        if v.len() > MAX_LABEL_VALUE {
            return Err(Reject::BadValue(format!(
                "label {l:?}: value over {MAX_LABEL_VALUE} bytes"
            )));
        }
        key.push(v.to_string());
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buckets(b: &[f64]) -> Result<Vec<f64>, &'static str> {
        histogram_buckets(Some(b.to_vec())).map_err(|e| e.label())
    }

    #[test]
    fn buckets_follow_prometheus_client() {
        let inf = f64::INFINITY;
        assert_eq!(buckets(&[]), Err("bad_value"));
        assert_eq!(buckets(&[inf]), Err("bad_value"));
        assert_eq!(buckets(&[2.0, 1.0]), Err("bad_value"));
        assert_eq!(buckets(&[1.0]), Ok(vec![1.0]));
        assert_eq!(buckets(&[1.0, inf]), Ok(vec![1.0]));
        assert_eq!(buckets(&[-inf, 0.0]), Ok(vec![-inf, 0.0]));
        // Where we differ, for a valid exposition: no `le` twice.
        assert_eq!(buckets(&[1.0, 1.0, 2.0]), Err("bad_value"));
        assert_eq!(buckets(&[1.0, inf, inf]), Err("bad_value"));
        assert_eq!(histogram_buckets(None).ok(), Some(DEFAULT_BUCKETS.to_vec()));
        let many: Vec<f64> = (0..65).map(f64::from).collect();
        assert_eq!(buckets(&many), Err("bad_value"));
        assert!(buckets(&many[..64]).is_ok());
    }

    #[test]
    fn names_follow_prometheus_and_keep_ours_apart() {
        assert!(check_name("a:b_c1", false).is_ok());
        assert!(check_name("1a", false).is_err());
        assert!(check_name("mphub_x", false).is_err());
        assert!(check_name("a:b", true).is_err());
        assert!(check_name("__x", true).is_err());
        assert_eq!(
            check_name("le", true).map_err(|e| e.label()),
            Err("reserved_label")
        );
    }
}
