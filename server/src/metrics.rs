//! Prometheus metrics: request latency, commit latency, batch size and apply
//! lag histograms and the status fields, in the OpenMetrics text format on
//! `--metrics-listen` at `/metrics`.
//!
//! Encoding is prometheus-client's; HTTP is hyper's (already in the tree
//! through tonic). The status fields are read from the node at each scrape;
//! the histograms are observed as things happen.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

use crate::cluster::snapshot::NodeState;
use crate::node::Node;
pub use crate::request_metrics::{RequestMetrics, METHODS};

/// How often the apply lag is sampled into its histogram.
const LAG_SAMPLE_EVERY: Duration = Duration::from_millis(100);

/// A sample value: whole numbers stay whole in the exposition.
#[derive(Debug, Clone, Copy)]
enum Value {
    Int(u64),
    Float(f64),
}

/// One metric family read from the node at scrape time.
#[derive(Debug)]
struct Family0 {
    /// The name without the `trireme_` prefix (and, for counters, without `_total`).
    name: &'static str,
    help: &'static str,
    kind: MetricType,
    /// Extra labels (after `node`) and the value of each series.
    samples: Vec<(Vec<(&'static str, String)>, Value)>,
}

/// The status fields of a node at one scrape.
#[derive(Debug, Default)]
struct StatusFields(Vec<Family0>);

impl StatusFields {
    fn push(&mut self, name: &'static str, help: &'static str, kind: MetricType, v: Value) {
        self.0.push(Family0 {
            name,
            help,
            kind,
            samples: vec![(Vec::new(), v)],
        });
    }

    fn gauge(&mut self, name: &'static str, help: &'static str, v: u64) {
        self.push(name, help, MetricType::Gauge, Value::Int(v));
    }

    fn counter(&mut self, name: &'static str, help: &'static str, v: u64) {
        self.push(name, help, MetricType::Counter, Value::Int(v));
    }
}

impl Collector for StatusFields {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for family in &self.0 {
            let mut metric =
                encoder.encode_descriptor(family.name, family.help, None, family.kind)?;
            for (labels, value) in &family.samples {
                let series = metric.encode_family(labels)?;
                match (family.kind, value) {
                    (MetricType::Counter, Value::Int(v)) => ConstCounter::new(*v).encode(series)?,
                    (MetricType::Counter, Value::Float(v)) => {
                        ConstCounter::new(*v).encode(series)?
                    }
                    (_, Value::Int(v)) => ConstGauge::new(*v).encode(series)?,
                    (_, Value::Float(v)) => ConstGauge::new(*v).encode(series)?,
                }
            }
        }
        Ok(())
    }
}

/// Reads the status fields of `node`.
fn status_fields(node: &Node) -> StatusFields {
    let mut f = StatusFields::default();
    let st = node.status();
    let m = &st.raft;
    let stats = st.stats;
    let applied = st.applied;
    f.gauge(
        "applied_seqno",
        "Highest seqno applied on this node",
        applied,
    );
    f.gauge(
        "committed_seqno",
        "Highest seqno in this node's log",
        st.committed(),
    );
    f.gauge(
        "apply_lag",
        "Log entries held but not yet applied",
        st.apply_lag(),
    );
    f.gauge("raft_term", "Current Raft term", m.current_term);
    f.gauge(
        "is_leader",
        "1 if this node leads",
        u64::from(m.current_leader == Some(node.id())),
    );
    f.counter(
        "leader_changes",
        "Leader changes seen by this node",
        st.leader_changes,
    );
    f.gauge(
        "unreplicated_voters",
        "Voters this leader has not replicated to for down_after_ms while behind",
        st.unreplicated_voters.len() as u64,
    );
    let up = st.members.iter().filter(|m| m.up).count() as u64;
    f.gauge("cluster_size", "Voters in the membership", st.voters());
    f.gauge(
        "members_up",
        "Members this node sees up (itself included)",
        up,
    );
    let state = st.state;
    f.0.push(Family0 {
        name: "state",
        help: "Galera-like node state (1 for the current one)",
        kind: MetricType::Gauge,
        samples: NodeState::ALL
            .iter()
            .map(|s| {
                (
                    vec![("state", s.as_str().to_string())],
                    Value::Int(u64::from(*s == state)),
                )
            })
            .collect(),
    });
    f.counter(
        "commits",
        "Write sets certified and committed",
        stats.commits.load(Ordering::Relaxed),
    );
    f.0.push(Family0 {
        name: "cert_failures",
        help: "Write sets aborted by certification, by reason",
        kind: MetricType::Counter,
        samples: crate::certify::Abort::KINDS
            .iter()
            .zip(&stats.aborts)
            .map(|(k, c)| {
                (
                    vec![("reason", k.to_string())],
                    Value::Int(c.load(Ordering::Relaxed)),
                )
            })
            .collect(),
    });
    f.counter(
        "server_retries",
        "Conflicting write sets the server retried",
        stats.server_retries.load(Ordering::Relaxed),
    );
    f.counter(
        "duplicates",
        "Resubmitted write sets ignored",
        stats.duplicates.load(Ordering::Relaxed),
    );
    f.counter(
        "batches",
        "Log entries carrying write-set batches",
        stats.batches.load(Ordering::Relaxed),
    );
    f.counter("snapshots_sent", "State transfers sent", st.snapshots_sent);
    f.counter(
        "snapshots_received",
        "State transfers installed",
        stats.snapshots_received.load(Ordering::Relaxed),
    );
    f.counter(
        "log_fsyncs",
        "fdatasyncs of the Raft log",
        node.log_stats().fsyncs.load(Ordering::Relaxed),
    );
    f.counter(
        "log_records",
        "Records written to the Raft log",
        node.log_stats().records.load(Ordering::Relaxed),
    );
    f.gauge("log_retained", "Log entries retained", st.log_retained());
    f.gauge(
        "log_retained_bytes",
        "Bytes of the log entries retained",
        st.log_bytes,
    );
    f.push(
        "flow_control_paused_seconds",
        "Time writers were slowed by flow control",
        MetricType::Counter,
        Value::Float(st.flow_paused_us as f64 / 1e6),
    );
    f.counter(
        "evictions",
        "Voters evicted by this node as leader",
        stats.evictions.load(Ordering::Relaxed),
    );
    let (pings, attached) = node.cluster().health.counts();
    f.counter("pings_sent", "Failure-detector pings this node sent", pings);
    f.counter(
        "ping_answers_attached",
        "Failure-detector answers this node took from AppendEntries calls and replies instead of pinging",
        attached,
    );
    f
}

/// The whole exposition for `node` (OpenMetrics text, ending in `# EOF`).
pub fn render(node: &Node) -> String {
    let mut registry = Registry::with_prefix_and_labels(
        "trireme",
        [("node".into(), node.id().to_string().into())].into_iter(),
    );
    registry.register_collector(Box::new(status_fields(node)));
    let r = &node.requests();
    registry.register(
        "request_duration_seconds",
        "Client API request latency",
        r.duration.clone(),
    );
    registry.register(
        "request_errors",
        "Client API requests that failed",
        r.errors.clone(),
    );
    registry.register(
        "commit_latency_seconds",
        "Time from a write request's arrival to its commit verdict (put, delete, commit that committed)",
        r.commit_latency.clone(),
    );
    registry.register(
        "batch_size",
        "Write sets per applied log entry",
        node.applied().stats.batch_sizes.histogram(),
    );
    registry.register(
        "apply_lag_entries",
        "Log entries held but not yet applied, sampled every 100 ms",
        r.apply_lag.clone(),
    );
    let mut out = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &registry) {
        tracing::warn!(error = %e, "cannot encode the metrics");
    }
    out
}

/// The content type of the exposition.
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Answers one HTTP request: the exposition at `GET /metrics`, 404 elsewhere.
fn respond(node: &Weak<Node>, req: &Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
    let node = node.upgrade();
    let (status, ctype, body) = match (req.method(), req.uri().path(), node) {
        (&Method::GET, "/metrics", Some(node)) => (StatusCode::OK, CONTENT_TYPE, render(&node)),
        (_, _, None) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "the node is shutting down\n".to_string(),
        ),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "only GET /metrics is served here\n".to_string(),
        ),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(ctype),
    );
    response
}

/// Serves `/metrics` on `listener` until the node is dropped.
pub async fn serve_metrics(node: Weak<Node>, listener: TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        if node.strong_count() == 0 {
            return;
        }
        let node = node.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let response = respond(&node, &req);
                async move { Ok::<_, std::convert::Infallible>(response) }
            });
            // One request per connection: scrapers reconnect anyway, and a
            // closed connection ends clients that read to the end.
            let conn = hyper::server::conn::http1::Builder::new()
                .keep_alive(false)
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(5))
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "metrics connection");
            }
        });
    }
}

/// Samples the apply lag into its histogram, every [`LAG_SAMPLE_EVERY`] on
/// the node's grid (so half of its wakes are the pings' too), until the node
/// is dropped.
async fn sample_apply_lag(node: Weak<Node>) {
    let Some(grid) = node.upgrade().map(|n| n.cluster().ticks) else {
        return;
    };
    loop {
        grid.sleep(LAG_SAMPLE_EVERY).await;
        let Some(node) = node.upgrade() else { return };
        let last_log = node.raft().metrics().borrow().last_log_index.unwrap_or(0);
        let lag = last_log.saturating_sub(node.applied().seqno());
        node.requests().observe_apply_lag(lag);
    }
}

/// Starts the metrics endpoint for `node` on `addr`; returns the bound address.
pub async fn start(node: &Arc<Node>, addr: &str) -> crate::Result<std::net::SocketAddr> {
    let listener = TcpListener::bind(addr).await.map_err(|e| {
        crate::Error::InvalidInput(format!("cannot listen for metrics on {addr}: {e}"))
    })?;
    let local = listener.local_addr()?;
    tokio::spawn(serve_metrics(Arc::downgrade(node), listener));
    tokio::spawn(sample_apply_lag(Arc::downgrade(node)));
    Ok(local)
}
