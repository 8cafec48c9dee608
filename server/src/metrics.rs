//! Prometheus metrics: request latency histograms and the status fields, in
//! the text exposition format on `--metrics-listen` at `/metrics`.
//!
//! The HTTP side is deliberately tiny (HTTP/1.1, one GET per connection):
//! scrapers need nothing more, and it keeps a web framework out of the node.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::node::Node;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 5.0,
];

/// The client-API methods whose latency is measured.
pub const METHODS: [&str; 6] = ["get", "scan", "put", "delete", "commit", "begin"];

/// A latency histogram of one method.
#[derive(Debug, Default)]
struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    errors: AtomicU64,
    sum_us: AtomicU64,
}

/// Latency histograms of the client API, one per method.
#[derive(Debug, Default)]
pub struct RequestMetrics {
    methods: [Histogram; METHODS.len()],
}

impl RequestMetrics {
    /// Records one request of `method` that took `elapsed`.
    pub fn observe(&self, method: &str, elapsed: Duration, ok: bool) {
        let Some(i) = METHODS.iter().position(|m| *m == method) else {
            return;
        };
        let h = &self.methods[i];
        let secs = elapsed.as_secs_f64();
        for (b, bound) in h.buckets.iter().zip(BUCKETS) {
            if secs <= bound {
                b.fetch_add(1, Ordering::Relaxed);
            }
        }
        h.count.fetch_add(1, Ordering::Relaxed);
        h.sum_us
            .fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
        if !ok {
            h.errors.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn gauge(out: &mut String, name: &str, help: &str, kind: &str, samples: &[(String, f64)]) {
    let _ = writeln!(out, "# HELP trireme_{name} {help}");
    let _ = writeln!(out, "# TYPE trireme_{name} {kind}");
    for (labels, v) in samples {
        let _ = writeln!(out, "trireme_{name}{labels} {v}");
    }
}

/// The whole exposition for `node`.
pub fn render(node: &Node) -> String {
    let mut out = String::new();
    let m = node.raft.metrics().borrow().clone();
    let stats = &node.applied.stats;
    let n = format!("{{node=\"{}\"}}", node.id());
    let one = |v: u64| vec![(n.clone(), v as f64)];
    let applied = node.applied.seqno();
    let last_log = m.last_log_index.unwrap_or(0);
    gauge(
        &mut out,
        "applied_seqno",
        "Highest seqno applied on this node.",
        "gauge",
        &one(applied),
    );
    gauge(
        &mut out,
        "committed_seqno",
        "Highest seqno in this node's log.",
        "gauge",
        &one(last_log.max(applied)),
    );
    gauge(
        &mut out,
        "apply_lag",
        "Log entries held but not yet applied.",
        "gauge",
        &one(last_log.saturating_sub(applied)),
    );
    gauge(
        &mut out,
        "raft_term",
        "Current Raft term.",
        "gauge",
        &one(m.current_term),
    );
    gauge(
        &mut out,
        "is_leader",
        "1 if this node leads.",
        "gauge",
        &one(u64::from(m.current_leader == Some(node.id()))),
    );
    gauge(
        &mut out,
        "leader_changes_total",
        "Leader changes seen by this node.",
        "counter",
        &one(node.leader_changes.load(Ordering::Relaxed)),
    );
    gauge(
        &mut out,
        "unreplicated_voters",
        "Voters this leader has not replicated to for down_after_ms while behind.",
        "gauge",
        &one(node.replication.unreplicated().len() as u64),
    );
    let members = crate::cluster::membership::members(node);
    let voters = members.iter().filter(|m| m.role == "voter").count() as u64;
    let up = members.iter().filter(|m| m.up).count() as u64;
    gauge(
        &mut out,
        "cluster_size",
        "Voters in the membership.",
        "gauge",
        &one(voters),
    );
    gauge(
        &mut out,
        "members_up",
        "Members this node sees up (itself included).",
        "gauge",
        &one(up),
    );
    let (state, _) = crate::cluster::state::node_state(node);
    let states: Vec<(String, f64)> = ["SYNCED", "JOINING", "DONOR", "JOINED", "NON_PRIMARY"]
        .iter()
        .map(|s| {
            (
                format!("{{node=\"{}\",state=\"{s}\"}}", node.id()),
                f64::from(u8::from(*s == state)),
            )
        })
        .collect();
    gauge(
        &mut out,
        "state",
        "Galera-like node state (1 for the current one).",
        "gauge",
        &states,
    );
    gauge(
        &mut out,
        "commits_total",
        "Write sets certified and committed.",
        "counter",
        &one(stats.commits.load(Ordering::Relaxed)),
    );
    let reasons: Vec<(String, f64)> = crate::certify::Abort::KINDS
        .iter()
        .zip(&stats.aborts)
        .map(|(k, c)| {
            (
                format!("{{node=\"{}\",reason=\"{k}\"}}", node.id()),
                c.load(Ordering::Relaxed) as f64,
            )
        })
        .collect();
    gauge(
        &mut out,
        "cert_failures_total",
        "Write sets aborted by certification, by reason.",
        "counter",
        &reasons,
    );
    gauge(
        &mut out,
        "server_retries_total",
        "Conflicting write sets the server retried.",
        "counter",
        &one(stats.server_retries.load(Ordering::Relaxed)),
    );
    gauge(
        &mut out,
        "duplicates_total",
        "Resubmitted write sets ignored.",
        "counter",
        &one(stats.duplicates.load(Ordering::Relaxed)),
    );
    gauge(
        &mut out,
        "batches_total",
        "Log entries carrying write-set batches.",
        "counter",
        &one(stats.batches.load(Ordering::Relaxed)),
    );
    gauge(
        &mut out,
        "snapshots_sent_total",
        "State transfers sent.",
        "counter",
        &one(node.peers.transfers.sent.load(Ordering::Relaxed)),
    );
    gauge(
        &mut out,
        "snapshots_received_total",
        "State transfers installed.",
        "counter",
        &one(stats.snapshots_received.load(Ordering::Relaxed)),
    );
    gauge(
        &mut out,
        "log_fsyncs_total",
        "fdatasyncs of the Raft log.",
        "counter",
        &one(node.log_stats().fsyncs.load(Ordering::Relaxed)),
    );
    gauge(
        &mut out,
        "log_records_total",
        "Records written to the Raft log.",
        "counter",
        &one(node.log_stats().records.load(Ordering::Relaxed)),
    );
    gauge(
        &mut out,
        "log_retained",
        "Log entries retained.",
        "gauge",
        &one(last_log.saturating_sub(m.purged.map_or(0, |p| p.index))),
    );
    gauge(
        &mut out,
        "log_retained_bytes",
        "Bytes of the log entries retained.",
        "gauge",
        &one(node.log_bytes()),
    );
    gauge(
        &mut out,
        "flow_control_paused_seconds_total",
        "Time writers were slowed by flow control.",
        "counter",
        &[(
            n.clone(),
            node.flow.paused_us.load(Ordering::Relaxed) as f64 / 1e6,
        )],
    );
    gauge(
        &mut out,
        "evictions_total",
        "Voters evicted by this node as leader.",
        "counter",
        &one(stats.evictions.load(Ordering::Relaxed)),
    );

    let _ = writeln!(
        out,
        "# HELP trireme_request_duration_seconds Client API request latency."
    );
    let _ = writeln!(out, "# TYPE trireme_request_duration_seconds histogram");
    for (method, h) in METHODS.iter().zip(&node.requests.methods) {
        let labels = format!("node=\"{}\",method=\"{method}\"", node.id());
        for (b, bound) in h.buckets.iter().zip(BUCKETS) {
            let _ = writeln!(
                out,
                "trireme_request_duration_seconds_bucket{{{labels},le=\"{bound}\"}} {}",
                b.load(Ordering::Relaxed)
            );
        }
        let count = h.count.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "trireme_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {count}"
        );
        let _ = writeln!(
            out,
            "trireme_request_duration_seconds_sum{{{labels}}} {}",
            h.sum_us.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(
            out,
            "trireme_request_duration_seconds_count{{{labels}}} {count}"
        );
    }
    let errors: Vec<(String, f64)> = METHODS
        .iter()
        .zip(&node.requests.methods)
        .map(|(method, h)| {
            (
                format!("{{node=\"{}\",method=\"{method}\"}}", node.id()),
                h.errors.load(Ordering::Relaxed) as f64,
            )
        })
        .collect();
    gauge(
        &mut out,
        "request_errors_total",
        "Client API requests that failed.",
        "counter",
        &errors,
    );
    out
}

/// Serves `/metrics` on `listener` until the node is dropped.
pub async fn serve_metrics(node: std::sync::Weak<Node>, listener: TcpListener) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        let Some(n) = node.upgrade() else { return };
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await;
            let Ok(Ok(len)) = read else { return };
            let request = String::from_utf8_lossy(&buf[..len]);
            let path = request.split_whitespace().nth(1).unwrap_or("");
            let (status, body, ctype) = if request.starts_with("GET ")
                && (path == "/metrics" || path.starts_with("/metrics?"))
            {
                ("200 OK", render(&n), "text/plain; version=0.0.4")
            } else {
                (
                    "404 Not Found",
                    "only GET /metrics is served here\n".to_string(),
                    "text/plain",
                )
            };
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes()).await;
            let _ = stream.write_all(body.as_bytes()).await;
            let _ = stream.shutdown().await;
        });
    }
}

/// Starts the metrics endpoint for `node` on `addr`; returns the bound address.
pub async fn start(node: &Arc<Node>, addr: &str) -> crate::Result<std::net::SocketAddr> {
    let listener = TcpListener::bind(addr).await.map_err(|e| {
        crate::Error::InvalidInput(format!("cannot listen for metrics on {addr}: {e}"))
    })?;
    let local = listener.local_addr()?;
    tokio::spawn(serve_metrics(Arc::downgrade(node), listener));
    Ok(local)
}
