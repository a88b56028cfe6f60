//! Registering Prometheus metrics whose names are fixed in the code: a name that does not
//! parse or collides is a bug caught by the first test that starts a broker, not a runtime
//! condition, hence `unreachable!`.

use prometheus::{
    Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

/// A counter registered in `reg`.
pub fn counter(reg: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).unwrap_or_else(|e| unreachable!("metric {name}: {e}"));
    register(reg, name, c.clone());
    c
}

/// A gauge registered in `reg`.
pub fn gauge(reg: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).unwrap_or_else(|e| unreachable!("metric {name}: {e}"));
    register(reg, name, g.clone());
    g
}

/// A counter with one label, registered in `reg`.
pub fn counter_vec(reg: &Registry, name: &str, help: &str, label: &str) -> IntCounterVec {
    counter_labelled(reg, name, help, &[label])
}

/// A counter with these labels, registered in `reg`.
pub fn counter_labelled(reg: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels)
        .unwrap_or_else(|e| unreachable!("metric {name}: {e}"));
    register(reg, name, c.clone());
    c
}

/// A gauge with one label, registered in `reg`.
pub fn gauge_vec(reg: &Registry, name: &str, help: &str, label: &str) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), &[label])
        .unwrap_or_else(|e| unreachable!("metric {name}: {e}"));
    register(reg, name, g.clone());
    g
}

/// A histogram with these bucket bounds, registered in `reg`.
pub fn histogram(reg: &Registry, name: &str, help: &str, buckets: Vec<f64>) -> Histogram {
    let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))
        .unwrap_or_else(|e| unreachable!("metric {name}: {e}"));
    register(reg, name, h.clone());
    h
}

fn register(reg: &Registry, name: &str, c: impl prometheus::core::Collector + 'static) {
    reg.register(Box::new(c))
        .unwrap_or_else(|e| unreachable!("metric {name}: {e}"));
}
