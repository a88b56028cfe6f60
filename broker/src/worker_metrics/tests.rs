use std::borrow::Cow;

use mphub_protocol::metrics::{encode, GaugeMode, MetricKind, MetricOp};

use super::*;

fn declare(name: &str, kind: MetricKind, mode: Option<GaugeMode>) -> MetricOp<'_> {
    MetricOp::Declare {
        name: name.into(),
        kind,
        help: "h".into(),
        labels: vec![],
        buckets: None,
        mode,
    }
}

fn set(name: &str, value: f64) -> MetricOp<'_> {
    MetricOp::Set {
        name: name.into(),
        labels: vec![],
        value,
    }
}

fn inc(name: &str, amount: f64) -> MetricOp<'_> {
    MetricOp::Inc {
        name: name.into(),
        labels: vec![],
        amount,
    }
}

fn apply(st: &Store, conn: u64, ops: &[MetricOp<'_>]) -> Vec<&'static str> {
    let out = st.apply_frame(conn, &encode(ops), false);
    out.rejected.iter().map(Reject::label).collect()
}

fn render(store: &Store) -> String {
    let mut out = String::new();
    store.render(&mut out);
    out
}

#[test]
fn counters_sum_over_connections_and_survive_a_close() {
    let st = Store::default();
    let ops = [
        declare("n_total", MetricKind::Counter, None),
        inc("n_total", 2.0),
    ];
    assert!(apply(&st, 1, &ops).is_empty());
    assert!(apply(&st, 2, &ops).is_empty());
    st.connection_closed(1);
    assert!(render(&st).contains("\nn_total 4\n"));
}

#[test]
fn a_livesum_gauge_forgets_a_closed_connection_and_a_max_gauge_does_not() {
    let st = Store::default();
    for (conn, v) in [(1, 5.0), (2, 7.0)] {
        let ops = [
            declare("g", MetricKind::Gauge, Some(GaugeMode::LiveSum)),
            declare("m", MetricKind::Gauge, Some(GaugeMode::Max)),
            set("g", v),
            set("m", v),
        ];
        assert!(apply(&st, conn, &ops).is_empty());
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
fn livemostrecent_falls_back_to_the_latest_live_writer_and_mostrecent_keeps_the_closed_one() {
    let st = Store::default();
    let decl = [
        declare("lr", MetricKind::Gauge, Some(GaugeMode::LiveMostRecent)),
        declare("mr", MetricKind::Gauge, Some(GaugeMode::MostRecent)),
    ];
    for (conn, v) in [(1, 1.0), (2, 2.0), (3, 3.0)] {
        let mut ops = decl.to_vec();
        ops.extend([set("lr", v), set("mr", v)]);
        assert!(apply(&st, conn, &ops).is_empty());
    }
    assert!(render(&st).contains("\nlr 3\n"));
    st.connection_closed(3);
    let text = render(&st);
    assert!(
        text.contains("\nlr 2\n") && text.contains("\nmr 3\n"),
        "{text}"
    );
    st.connection_closed(1);
    st.connection_closed(2);
    let text = render(&st);
    assert!(
        !text.contains("\nlr ") && text.contains("\nmr 3\n"),
        "{text}"
    );
}

#[test]
fn a_family_writing_a_name_the_broker_serves_is_refused() {
    for (name, kind) in [
        ("process_cpu_seconds_total", MetricKind::Counter),
        ("process_open_fds", MetricKind::Gauge),
        ("process_threads", MetricKind::Summary),
    ] {
        let st = Store::default();
        assert_eq!(
            apply(&st, 1, &[declare(name, kind, None)]),
            ["conflict"],
            "{name}"
        );
    }
    // Other process_ names are the workers' to use.
    let st = Store::default();
    assert!(apply(
        &st,
        1,
        &[declare("process_jobs", MetricKind::Counter, None)]
    )
    .is_empty());
}

#[test]
fn sample_names_collide_in_either_declaration_order() {
    let pairs = [
        (
            declare("q", MetricKind::Histogram, None),
            declare("q_count", MetricKind::Gauge, None),
        ),
        (
            declare("s", MetricKind::Summary, None),
            declare("s_sum", MetricKind::Counter, None),
        ),
        (
            declare("b", MetricKind::Histogram, None),
            declare("b_bucket", MetricKind::Summary, None),
        ),
        // A histogram named like a summary's sample writes that name as its TYPE.
        (
            declare("x", MetricKind::Summary, None),
            declare("x_count", MetricKind::Histogram, None),
        ),
    ];
    for (a, b) in pairs {
        for (first, second) in [(&a, &b), (&b, &a)] {
            let st = Store::default();
            assert_eq!(
                apply(&st, 1, &[first.clone(), second.clone()]),
                ["conflict"],
                "{} then {}",
                first.name(),
                second.name()
            );
        }
    }
    // Suffixes a type does not write leave the name free.
    let st = Store::default();
    let ops = [
        declare("c", MetricKind::Summary, None),
        declare("c_bucket", MetricKind::Gauge, None),
        declare("t_total", MetricKind::Counter, None),
        declare("t", MetricKind::Gauge, None),
    ];
    assert!(apply(&st, 1, &ops).is_empty());
}

#[test]
fn a_shared_labels_dict_applies_to_every_op_that_names_it() {
    // The example, as CPython 3.13 pickles it with Connection.send (protocol 4): the
    // second `lbl` is a memo reference to the first.
    let body = b"\x80\x04\x95d\x00\x00\x00\x00\x00\x00\x00\x8c\x08$metrics\x94]\x94((\x8c\x07declare\x94\x8c\x07k_total\x94\x8c\x07counter\x94\x8c\x01k\x94\x8c\x05queue\x94\x85\x94}\x94t\x94(\x8c\x03inc\x94h\x03}\x94h\x06\x8c\x01a\x94sK\x01t\x94(h\nh\x03h\x0bK\x01t\x94e\x86\x94.";
    let st = Store::default();
    let out = st.apply_frame(1, body, false);
    assert!(out.rejected.is_empty(), "{:?}", out.reason());
    assert!(render(&st).contains("\nk_total{queue=\"a\"} 2\n"));
}

#[test]
fn rejections_are_reported_and_the_rest_applies() {
    let st = Store::default();
    let ops = [
        declare("c_total", MetricKind::Counter, None),
        inc("c_total", -1.0),
        inc("nope", 1.0),
        declare("mphub_x", MetricKind::Counter, None),
        inc("c_total", 0.5),
        MetricOp::Declare {
            name: "h".into(),
            kind: MetricKind::Histogram,
            help: "h".into(),
            labels: vec![],
            buckets: Some(vec![]),
            mode: None,
        },
        MetricOp::Inc {
            name: "c_total".into(),
            labels: vec![(Cow::Borrowed("x"), Cow::Borrowed("y"))],
            amount: 1.0,
        },
    ];
    let out = st.apply_frame(1, &encode(&ops), false);
    let labels: Vec<&str> = out.rejected.iter().map(Reject::label).collect();
    assert_eq!(
        labels,
        [
            "negative_counter",
            "undeclared",
            "bad_name",
            "bad_value",
            "labels"
        ]
    );
    assert_eq!(out.applied, 2);
    assert!(out
        .reason()
        .is_some_and(|r| r.starts_with("$metrics: 5 of 7 ops rejected")));
    assert!(render(&st).contains("\nc_total 0.5\n"));
    assert_eq!(st.apply_frame(1, b"", true).rejected, vec![Reject::Code]);
    assert_eq!(
        st.apply_frame(1, b"garbage", false).rejected[0].label(),
        "decode"
    );
}
