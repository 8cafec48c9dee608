//! `trireme-server`: one Trireme node.
//!
//! With no flags: a single-node cluster on 127.0.0.1:7420 with data in
//! `./trireme-data`. Configuration: defaults < `--config FILE` (TOML) <
//! `TRIREME_*` environment variables < flags.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use tracing::Instrument;
use trireme_server::{Config, Node};

/// glibc's malloc was a tenth of a node's CPU under load (many small,
/// short-lived buffers across threads); mimalloc costs a fraction of that.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// One Trireme node: a multi-master replicated key-value server.
#[derive(Parser, Debug)]
#[command(name = "trireme-server", version, about)]
struct Args {
    /// TOML configuration file (see trireme.example.toml).
    #[arg(long, env = "TRIREME_CONFIG")]
    config: Option<PathBuf>,
    /// This node's id (unique, not 0).
    #[arg(long, env = "TRIREME_NODE_ID")]
    node_id: Option<u64>,
    /// Take the node id from the hostname's trailing ordinal plus 1 (a
    /// StatefulSet pod `trireme-0` is node 1), for images without a shell.
    #[arg(
        long,
        env = "TRIREME_NODE_ID_FROM_HOSTNAME",
        conflicts_with = "node_id"
    )]
    node_id_from_hostname: bool,
    /// Address to listen on for clients and peers (HOST:PORT; port 0 picks a free one).
    #[arg(long, env = "TRIREME_LISTEN")]
    listen: Option<String>,
    /// Address others reach this node at (default: the listen address).
    #[arg(long, env = "TRIREME_ADVERTISE")]
    advertise: Option<String>,
    /// Data directory.
    #[arg(long, env = "TRIREME_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// First members of a new cluster: ID=HOST:PORT,ID=HOST:PORT,... (ignored once initialized).
    #[arg(long, env = "TRIREME_INITIAL_CLUSTER")]
    initial_cluster: Option<String>,
    /// Join an existing cluster through any member (HOST:PORT), with a fresh data dir.
    #[arg(long, env = "TRIREME_JOIN")]
    join: Option<String>,
    /// Evict a voter that stays down (or stalled) this long, e.g. 30s; 0 = never (default).
    #[arg(long, env = "TRIREME_EVICT_AFTER", value_parser = parse_duration_ms)]
    evict_after: Option<u64>,
    /// Serve Prometheus metrics at http://HOST:PORT/metrics.
    #[arg(long, env = "TRIREME_METRICS_LISTEN")]
    metrics_listen: Option<String>,
    /// Flow control: slow writers while a voter's apply lag exceeds this many log entries.
    #[arg(long, env = "TRIREME_FC_LIMIT")]
    fc_limit: Option<u64>,
    /// Certification window in seqnos (cluster-wide).
    #[arg(long, env = "TRIREME_CERT_WINDOW")]
    cert_window: Option<u64>,
    /// Leader heartbeat interval in milliseconds.
    #[arg(long, env = "TRIREME_HEARTBEAT_MS")]
    heartbeat_ms: Option<u64>,
    /// Election timeout lower bound in milliseconds.
    #[arg(long, env = "TRIREME_ELECTION_TIMEOUT_MIN_MS")]
    election_timeout_min_ms: Option<u64>,
    /// Election timeout upper bound in milliseconds.
    #[arg(long, env = "TRIREME_ELECTION_TIMEOUT_MAX_MS")]
    election_timeout_max_ms: Option<u64>,
    /// Build a snapshot every this many log entries.
    #[arg(long, env = "TRIREME_SNAPSHOT_EVERY_ENTRIES")]
    snapshot_every_entries: Option<u64>,
    /// Log entries kept behind the last snapshot (replayable to a lagging node).
    #[arg(long, env = "TRIREME_LOG_RETAIN_ENTRIES")]
    log_retain_entries: Option<u64>,
    /// Most bytes of log entries kept (the gcache size); 0: no byte bound.
    #[arg(long, env = "TRIREME_LOG_RETAIN_BYTES")]
    log_retain_bytes: Option<u64>,
    /// Print the effective configuration as TOML and exit.
    #[arg(long)]
    print_config: bool,
}

impl Args {
    fn config(&self) -> anyhow::Result<Config> {
        let mut c = match &self.config {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        if let Some(v) = self.node_id {
            c.node_id = v;
        }
        if self.node_id_from_hostname {
            let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .or_else(|_| std::env::var("HOSTNAME"))
                .context("--node-id-from-hostname: cannot read the hostname")?;
            c.node_id = trireme_server::config::node_id_from_hostname(&hostname)?;
        }
        if let Some(v) = &self.listen {
            c.listen = v.clone();
        }
        if let Some(v) = &self.advertise {
            c.advertise = Some(v.clone());
        }
        if let Some(v) = &self.data_dir {
            c.data_dir = v.clone();
        }
        if let Some(v) = &self.initial_cluster {
            c.initial_cluster = Config::parse_members(v)?;
        }
        if let Some(v) = &self.join {
            c.join = Some(v.clone());
        }
        if let Some(v) = self.evict_after {
            c.evict_after_ms = v;
        }
        if let Some(v) = &self.metrics_listen {
            c.metrics_listen = Some(v.clone());
        }
        if let Some(v) = self.fc_limit {
            c.fc_limit = v;
        }
        if let Some(v) = self.cert_window {
            c.cert_window = v;
        }
        if let Some(v) = self.heartbeat_ms {
            c.heartbeat_ms = v;
        }
        if let Some(v) = self.election_timeout_min_ms {
            c.election_timeout_min_ms = v;
        }
        if let Some(v) = self.election_timeout_max_ms {
            c.election_timeout_max_ms = v;
        }
        if let Some(v) = self.snapshot_every_entries {
            c.snapshot_every_entries = v;
        }
        if let Some(v) = self.log_retain_entries {
            c.log_retain_entries = v;
        }
        if let Some(v) = self.log_retain_bytes {
            c.log_retain_bytes = v;
        }
        c.validate()?;
        Ok(c)
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Named failpoints from the FAILPOINTS environment variable (fault-injection builds only).
    #[cfg(feature = "failpoints")]
    let _failpoints = fail::FailScenario::setup();
    let args = Args::parse();
    let mut config = args.config()?;
    if args.print_config {
        print!("{}", toml::to_string(&config)?);
        return Ok(());
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,openraft=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();

    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let local = listener.local_addr()?;
    if config.advertise.is_none() && config.listen.ends_with(":0") {
        config.advertise = Some(local.to_string());
    }
    let span = tracing::info_span!("node", id = config.node_id);
    let node = Node::start(config.clone())
        .instrument(span.clone())
        .await
        .with_context(|| {
            format!(
                "starting node {} with data in {}",
                config.node_id,
                config.data_dir.display()
            )
        })?;
    if let Some(addr) = &config.metrics_listen {
        let bound = trireme_server::metrics::start(&node, addr).await?;
        span.in_scope(|| tracing::info!(%bound, "serving metrics at /metrics"));
    }
    // Tests and scripts read this line to learn the bound address.
    println!(
        "trireme-server node {} listening on {} (data in {})",
        config.node_id,
        local,
        config.data_dir.display()
    );
    span.in_scope(|| tracing::info!(%local, "serving"));
    trireme_server::server::serve(node.clone(), listener, shutdown_signal())
        .instrument(span.clone())
        .await?;
    span.in_scope(|| tracing::info!("shutting down"));
    node.shutdown().await?;
    Ok(())
}

/// Parses `30s`, `500ms`, `2m` or a plain number of seconds into milliseconds.
fn parse_duration_ms(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, scale) = if let Some(n) = s.strip_suffix("ms") {
        (n, 1)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1000)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60_000)
    } else {
        (s, 1000)
    };
    num.trim()
        .parse::<u64>()
        .map(|n| n * scale)
        .map_err(|_| format!("{s:?} is not a duration (like 30s, 500ms or 2m)"))
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("install SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
