//! The histograms the node observes as things happen: client API latency by
//! method (and its errors), commit latency, and the apply lag. Kept apart
//! from `metrics` (which renders a whole node at each scrape, and so imports
//! `node`) so that `node` can hold them without an import cycle.

use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 5.0,
];

/// Upper bounds of the apply-lag buckets, in log entries.
const LAG_BUCKETS: [f64; 10] = [
    0.0, 1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0,
];

/// The client-API methods whose latency is measured.
/// (gRPC's `GetMany` is `get_many`.)
pub const METHODS: [&str; 7] = [
    "get", "get_many", "scan", "put", "delete", "commit", "begin",
];

/// The methods whose successful requests are commits (a certified write set).
const WRITE_METHODS: [&str; 3] = ["put", "delete", "commit"];

/// Labels of a per-method series.
type MethodLabels = Vec<(&'static str, &'static str)>;

fn latency_histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

/// Latency histograms of the client API, one per method, and the other
/// histograms the node observes.
#[derive(Debug)]
pub struct RequestMetrics {
    pub(crate) duration: Family<MethodLabels, Histogram, fn() -> Histogram>,
    pub(crate) errors: Family<MethodLabels, Counter>,
    pub(crate) commit_latency: Histogram,
    pub(crate) apply_lag: Histogram,
}

impl Default for RequestMetrics {
    fn default() -> Self {
        let duration = Family::new_with_constructor(latency_histogram as fn() -> Histogram);
        let errors = Family::<MethodLabels, Counter>::default();
        // Every method has its series from the start, so a scrape shows zeros
        // rather than missing lines.
        for method in METHODS {
            let _ = duration.get_or_create(&vec![("method", method)]);
            let _ = errors.get_or_create(&vec![("method", method)]);
        }
        RequestMetrics {
            duration,
            errors,
            commit_latency: latency_histogram(),
            apply_lag: Histogram::new(LAG_BUCKETS),
        }
    }
}

impl RequestMetrics {
    /// Records one request of `method` that took `elapsed`; a write that
    /// succeeded is also a commit, observed in the commit latency.
    pub fn observe(&self, method: &str, elapsed: Duration, ok: bool) {
        let Some(method) = METHODS.iter().find(|m| **m == method) else {
            return;
        };
        let labels = vec![("method", *method)];
        let secs = elapsed.as_secs_f64();
        self.duration.get_or_create(&labels).observe(secs);
        if !ok {
            self.errors.get_or_create(&labels).inc();
        } else if WRITE_METHODS.contains(method) {
            self.commit_latency.observe(secs);
        }
    }

    /// Records one sample of the apply lag, in log entries.
    pub fn observe_apply_lag(&self, entries: u64) {
        self.apply_lag.observe(entries as f64);
    }
}
