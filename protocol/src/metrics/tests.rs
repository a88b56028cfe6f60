use std::borrow::Cow;

use super::*;
use crate::error::{BatchError, OpError};

fn decoded(body: &[u8]) -> Vec<Result<MetricOp<'static>, OpError>> {
    // The ops borrow from the batch, so compare owned copies.
    let batch = Batch::decode(body).expect("a batch");
    batch.ops().map(|r| r.map(owned)).collect()
}

fn owned(op: MetricOp<'_>) -> MetricOp<'static> {
    let o = |c: Cow<'_, str>| Cow::Owned(c.into_owned());
    let pairs = |l: Labels<'_>| l.into_iter().map(|(k, v)| (o(k), o(v))).collect();
    match op {
        MetricOp::Declare {
            name,
            kind,
            help,
            labels,
            buckets,
            mode,
        } => MetricOp::Declare {
            name: o(name),
            kind,
            help: o(help),
            labels: labels.into_iter().map(o).collect(),
            buckets,
            mode,
        },
        MetricOp::Inc {
            name,
            labels,
            amount,
        } => MetricOp::Inc {
            name: o(name),
            labels: pairs(labels),
            amount,
        },
        MetricOp::Dec {
            name,
            labels,
            amount,
        } => MetricOp::Dec {
            name: o(name),
            labels: pairs(labels),
            amount,
        },
        MetricOp::Set {
            name,
            labels,
            value,
        } => MetricOp::Set {
            name: o(name),
            labels: pairs(labels),
            value,
        },
        MetricOp::Observe {
            name,
            labels,
            value,
        } => MetricOp::Observe {
            name: o(name),
            labels: pairs(labels),
            value,
        },
    }
}

#[test]
fn names_round_trip_and_the_modes_are_prometheus_clients_ten() {
    for v in Verb::ALL {
        assert_eq!(Verb::parse(v.name()), Some(v));
    }
    for k in MetricKind::ALL {
        assert_eq!(MetricKind::parse(k.name()), Some(k));
    }
    // prometheus_client/metrics.py, Gauge._MULTIPROC_MODES.
    let mut names: Vec<&str> = GaugeMode::ALL.iter().map(|m| m.name()).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "all",
            "liveall",
            "livemax",
            "livemin",
            "livemostrecent",
            "livesum",
            "max",
            "min",
            "mostrecent",
            "sum"
        ]
    );
    for m in GaugeMode::ALL {
        assert_eq!(GaugeMode::parse(m.name()), Some(m));
        assert_eq!(m.is_live(), m.name().starts_with("live"), "{m:?}");
    }
    assert_eq!(GaugeMode::default(), GaugeMode::LiveAll);
    assert!(Verb::Inc.applies_to(MetricKind::Gauge) && !Verb::Inc.applies_to(MetricKind::Summary));
    assert!(Verb::Observe.applies_to(MetricKind::Summary));
    assert!(!Verb::Set.applies_to(MetricKind::Counter));
}

#[test]
fn every_op_survives_encode_then_decode() {
    let labels: Labels<'_> = vec![("queue".into(), "fa\"st\\ ä".into())];
    let ops = vec![
        MetricOp::Declare {
            name: "jobs_total".into(),
            kind: MetricKind::Counter,
            help: "Jobs\nfinished".into(),
            labels: vec!["queue".into()],
            buckets: None,
            mode: None,
        },
        MetricOp::Declare {
            name: "g".into(),
            kind: MetricKind::Gauge,
            help: "".into(),
            labels: vec![],
            buckets: None,
            mode: Some(GaugeMode::LiveMostRecent),
        },
        MetricOp::Declare {
            name: "h".into(),
            kind: MetricKind::Histogram,
            help: "h".into(),
            labels: vec![],
            buckets: Some(vec![f64::NEG_INFINITY, 0.5, f64::INFINITY]),
            mode: None,
        },
        MetricOp::Inc {
            name: "jobs_total".into(),
            labels: labels.clone(),
            amount: 2.0,
        },
        MetricOp::Dec {
            name: "g".into(),
            labels: vec![],
            amount: -1.5,
        },
        MetricOp::Set {
            name: "g".into(),
            labels: vec![],
            value: f64::INFINITY,
        },
        MetricOp::Observe {
            name: "h".into(),
            labels,
            value: 1e-300,
        },
    ];
    let body = encode(&ops);
    let got: Vec<MetricOp<'static>> = decoded(&body)
        .into_iter()
        .map(|r| r.expect("decodes"))
        .collect();
    assert_eq!(got, ops);
}

/// `("$metrics", [op] + [memo reference to op] * copies)`, protocol 2, the op given as the
/// pickle of its items after a MARK.
fn repeated(op_items: &[u8], copies: usize) -> Vec<u8> {
    let mut b = b"\x80\x02X\x08\x00\x00\x00$metrics]q\x00((".to_vec();
    b.extend_from_slice(op_items);
    b.extend_from_slice(b"tr\x01\x00\x00\x00");
    for _ in 0..copies {
        b.extend_from_slice(b"j\x01\x00\x00\x00");
    }
    b.extend_from_slice(b"e\x86.");
    b
}

fn short_str(s: &str) -> Vec<u8> {
    let mut b = vec![0x8c, s.len() as u8];
    b.extend_from_slice(s.as_bytes());
    b
}

#[test]
fn one_op_referred_to_many_times_reads_as_many_ops() {
    let mut items = short_str("inc");
    items.extend(short_str("x"));
    items.extend(b"}(");
    for i in 0..MAX_LABELS {
        items.extend(short_str(&format!("l{i}")));
        items.extend(short_str("v"));
    }
    items.extend(b"uK\x01");
    let body = repeated(&items, 100_000);
    let batch = Batch::decode(&body).expect("decodes");
    assert_eq!(batch.len(), 100_001);
    assert!(batch
        .ops()
        .all(|op| matches!(op, Ok(MetricOp::Inc { labels, .. }) if labels.len() == MAX_LABELS)));
}

#[test]
fn too_many_labels_or_buckets_are_refused_before_they_are_read() {
    let mut items = short_str("inc");
    items.extend(short_str("x"));
    items.extend(b"}(");
    for i in 0..=MAX_LABELS {
        items.extend(short_str(&format!("l{i}")));
        items.extend(short_str("v"));
    }
    items.extend(b"uK\x01");
    let ops = decoded(&repeated(&items, 3));
    assert!(ops.iter().all(|op| matches!(op, Err(OpError::Value(_)))));
    let buckets: Vec<f64> = (0..=MAX_BUCKETS + 1).map(|i| i as f64).collect();
    let body = encode(&[MetricOp::Declare {
        name: "h".into(),
        kind: MetricKind::Histogram,
        help: "h".into(),
        labels: vec![],
        buckets: Some(buckets),
        mode: None,
    }]);
    assert!(matches!(decoded(&body)[0], Err(OpError::Value(_))));
}

#[test]
fn label_values_read_as_python_str_and_a_repeated_key_keeps_the_last() {
    // ("inc", "x", {"a": 5, "b": True, "a": "z"}, 1): the dict pickled by hand with "a" twice.
    let mut items = short_str("inc");
    items.extend(short_str("x"));
    items.extend(b"}(");
    items.extend(short_str("a"));
    items.extend(b"K\x05");
    items.extend(short_str("b"));
    items.extend(b"\x88");
    items.extend(short_str("c"));
    items.extend(b"J\xff\xff\xff\xff");
    items.extend(short_str("a"));
    items.extend(short_str("z"));
    items.extend(b"uK\x01");
    let ops = decoded(&repeated(&items, 0));
    let Ok(MetricOp::Inc { labels, .. }) = &ops[0] else {
        panic!("{ops:?}")
    };
    let got: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (&**k, &**v)).collect();
    assert_eq!(got, [("a", "z"), ("b", "True"), ("c", "-1")]);
}

#[test]
fn options_are_a_dict_of_the_two_known_keys_or_none() {
    let declare = |opts: &[u8]| {
        let mut items = short_str("declare");
        for s in ["g", "gauge", "G"] {
            items.extend(short_str(s));
        }
        items.push(b')');
        items.extend_from_slice(opts);
        decoded(&repeated(&items, 0)).remove(0)
    };
    assert!(matches!(
        declare(b"N"),
        Ok(MetricOp::Declare { mode: None, .. })
    ));
    assert!(matches!(
        declare(b""),
        Ok(MetricOp::Declare { mode: None, .. })
    ));
    let mut mode = b"}(".to_vec();
    mode.extend(short_str("mode"));
    mode.extend(short_str("livemostrecent"));
    mode.push(b'u');
    assert!(matches!(
        declare(&mode),
        Ok(MetricOp::Declare {
            mode: Some(GaugeMode::LiveMostRecent),
            ..
        })
    ));
    let mut three = b"}(".to_vec();
    for k in ["mode", "a", "b"] {
        three.extend(short_str(k));
        three.extend(short_str("sum"));
    }
    three.push(b'u');
    assert!(matches!(declare(&three), Err(OpError::Shape(_))));
    assert!(matches!(declare(b"]"), Err(OpError::Shape(_))));
    let mut int_key = b"}(K\x01".to_vec();
    int_key.extend(short_str("sum"));
    int_key.push(b'u');
    assert!(matches!(declare(&int_key), Err(OpError::Shape(_))));
}

#[test]
fn a_body_that_is_not_a_metrics_batch_says_why() {
    assert_eq!(
        Batch::decode(b"\x80\x02cos\nsystem\n.").err(),
        Some(BatchError::Code)
    );
    assert!(matches!(
        Batch::decode(b"\x80\x02N."),
        Err(BatchError::Decode(m)) if m.contains("tuple")
    ));
    assert!(matches!(
        Batch::decode(b"\x80\x02X\x04\x00\x00\x00$subN\x86."),
        Err(BatchError::Decode(m)) if m.contains("$metrics")
    ));
    assert_eq!(
        Batch::decode(b"\x80\x02X\x08\x00\x00\x00$metricsK\x05\x86.").err(),
        Some(BatchError::NotAList("int"))
    );
    let empty = Batch::decode(b"\x80\x02X\x08\x00\x00\x00$metrics)\x86.").expect("a batch");
    assert!(empty.is_empty() && empty.ops().next().is_none());
}
