//! The Prometheus text format (0.0.4) for worker families: one HELP and one TYPE per family,
//! escaped label values, cumulative buckets ending in `+Inf` equal to `_count`.

use std::fmt::Write;

use mphub_protocol::metrics::{GaugeMode, MetricKind};

use super::{Data, Shape};

const BUCKET: &str = "_bucket";
const SUM: &str = "_sum";
const COUNT: &str = "_count";

/// Every suffix a family's samples add to its name, the empty one included. Counters are
/// written under their name as declared (`jobs_total` stays `jobs_total`): nothing is added,
/// and no `_created` sample is written.
pub(super) const SUFFIXES: [&str; 4] = ["", BUCKET, SUM, COUNT];

/// The suffixes the samples of a `kind` family add to its name.
pub(super) fn suffixes(kind: MetricKind) -> &'static [&'static str] {
    match kind {
        MetricKind::Counter | MetricKind::Gauge => &[""],
        MetricKind::Histogram => &[BUCKET, SUM, COUNT],
        MetricKind::Summary => &[SUM, COUNT],
    }
}

/// Every name family `name` of type `kind` writes: its `# TYPE` name and its sample names.
pub(super) fn names(name: &str, kind: MetricKind) -> impl Iterator<Item = String> + '_ {
    std::iter::once(name.to_owned()).chain(
        suffixes(kind)
            .iter()
            .filter(|s| !s.is_empty())
            .map(move |s| format!("{name}{s}")),
    )
}

/// Go-style float text: `+Inf`, `-Inf`, `NaN`, else the shortest round-trip form.
fn num(out: &mut String, x: f64) {
    if x == f64::INFINITY {
        out.push_str("+Inf");
    } else if x == f64::NEG_INFINITY {
        out.push_str("-Inf");
    } else if x.is_nan() {
        out.push_str("NaN");
    } else {
        let _ = write!(out, "{x}");
    }
}

fn escape_help(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn escape_value(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' => out.push_str("\\\""),
            c => out.push(c),
        }
    }
}

/// `{a="x",b="y"}` from names and values, with `extra` pairs after them.
fn labels(out: &mut String, names: &[String], values: &[String], extra: &[(&str, &str)]) {
    if names.is_empty() && extra.is_empty() {
        return;
    }
    out.push('{');
    let mut first = true;
    for (n, v) in names
        .iter()
        .map(String::as_str)
        .zip(values.iter().map(String::as_str))
        .chain(extra.iter().copied())
    {
        if !first {
            out.push(',');
        }
        first = false;
        out.push_str(n);
        out.push_str("=\"");
        escape_value(out, v);
        out.push('"');
    }
    out.push('}');
}

fn sample(
    out: &mut String,
    name: &str,
    suffix: &str,
    shape: &Shape,
    key: &[String],
    extra: &[(&str, &str)],
    x: f64,
) {
    out.push_str(name);
    out.push_str(suffix);
    labels(out, &shape.labels, key, extra);
    out.push(' ');
    num(out, x);
    out.push('\n');
}

pub(super) fn family<'a>(
    out: &mut String,
    name: &str,
    shape: &Shape,
    series: impl Iterator<Item = (&'a Vec<String>, &'a Data)>,
) {
    let _ = write!(out, "# HELP {name} ");
    escape_help(out, &shape.help);
    let _ = writeln!(out, "\n# TYPE {name} {}", shape.kind.name());
    for (key, data) in series {
        match data {
            Data::Counter(total) => sample(out, name, "", shape, key, &[], *total),
            Data::Histogram(counts, sum, count) => {
                let mut cumulative = 0u64;
                let mut bound = String::new();
                for (i, c) in counts.iter().enumerate() {
                    cumulative += c;
                    bound.clear();
                    num(
                        &mut bound,
                        shape.buckets.get(i).copied().unwrap_or(f64::INFINITY),
                    );
                    sample(
                        out,
                        name,
                        BUCKET,
                        shape,
                        key,
                        &[("le", &bound)],
                        cumulative as f64,
                    );
                }
                sample(out, name, SUM, shape, key, &[], *sum);
                sample(out, name, COUNT, shape, key, &[], *count as f64);
            }
            Data::Summary(sum, count) => {
                sample(out, name, SUM, shape, key, &[], *sum);
                sample(out, name, COUNT, shape, key, &[], *count as f64);
            }
            Data::Gauge(per) => gauge(out, name, shape, key, per),
        }
    }
}

fn gauge(
    out: &mut String,
    name: &str,
    shape: &Shape,
    key: &[String],
    per: &std::collections::HashMap<u64, (f64, u64, bool)>,
) {
    let live = |v: &&(f64, u64, bool)| !shape.mode.is_live() || v.2;
    match shape.mode {
        GaugeMode::LiveAll | GaugeMode::All => {
            let mut conns: Vec<(&u64, &(f64, u64, bool))> =
                per.iter().filter(|(_, v)| live(v)).collect();
            conns.sort_by_key(|(c, _)| **c);
            for (conn, v) in conns {
                let conn = conn.to_string();
                sample(out, name, "", shape, key, &[("conn", &conn)], v.0);
            }
        }
        GaugeMode::LiveSum | GaugeMode::Sum => {
            let x = per.values().filter(live).map(|v| v.0).sum();
            sample(out, name, "", shape, key, &[], x);
        }
        GaugeMode::LiveMax | GaugeMode::Max => {
            if let Some(x) = per.values().filter(live).map(|v| v.0).reduce(f64::max) {
                sample(out, name, "", shape, key, &[], x);
            }
        }
        GaugeMode::LiveMin | GaugeMode::Min => {
            if let Some(x) = per.values().filter(live).map(|v| v.0).reduce(f64::min) {
                sample(out, name, "", shape, key, &[], x);
            }
        }
        // A `livemostrecent` writer's value left with its connection: the latest of the
        // remaining live ones shows, as prometheus_client's files of dead pids are removed.
        GaugeMode::MostRecent | GaugeMode::LiveMostRecent => {
            if let Some(v) = per.values().filter(live).max_by_key(|v| v.1) {
                sample(out, name, "", shape, key, &[], v.0);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_print_as_prometheus_expects() {
        let mut s = String::new();
        for x in [1.0, 0.25, f64::INFINITY, f64::NEG_INFINITY, 1e21] {
            num(&mut s, x);
            s.push(' ');
        }
        assert_eq!(s, "1 0.25 +Inf -Inf 1000000000000000000000 ");
    }

    #[test]
    fn label_values_are_escaped() {
        let mut s = String::new();
        labels(&mut s, &["a".into()], &["x\"y\\z\nw".into()], &[]);
        assert_eq!(s, r#"{a="x\"y\\z\nw"}"#);
    }
}
