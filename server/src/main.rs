//! `trireme-server`: one Trireme node.
//!
//! With no flags: a single-node cluster serving clients on 127.0.0.1:7420
//! and peers on 127.0.0.1:7421, with data in `./trireme-data`. Configuration: defaults < `--config FILE` (TOML) <
//! `TRIREME_*` environment variables < flags.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use tracing::Instrument;
use trireme_server::config::Overrides;
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
    /// Settings given as flags or `TRIREME_*` variables (see `config.rs`).
    #[command(flatten)]
    overrides: Overrides,
    /// Tokio worker threads serving requests and Raft (0: one per core).
    #[arg(long, env = "TRIREME_WORKER_THREADS", default_value_t = 0)]
    worker_threads: usize,
    /// Take the node id from the hostname's trailing ordinal plus 1 (a
    /// StatefulSet pod `trireme-0` is node 1), for images without a shell.
    #[arg(long, env = "TRIREME_NODE_ID_FROM_HOSTNAME")]
    node_id_from_hostname: bool,
    /// Print the effective configuration as TOML and exit.
    #[arg(long)]
    print_config: bool,
    /// Seed this node's empty data dir from a backup file (`trireme snapshot
    /// save`) and start it as the first node of a new cluster; the others
    /// join it as usual. Refused, starting nothing, if the data dir is not
    /// empty or the file is truncated or corrupt.
    #[arg(long, value_name = "FILE")]
    restore: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

/// Tasks other than running a node.
#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Make a CA and certificates for TLS (for a test or a first deployment).
    #[command(subcommand)]
    Certs(Certs),
}

/// `certs`: files in one directory; keys are written mode 0600.
#[derive(clap::Subcommand, Debug)]
enum Certs {
    /// Make a CA: DIR/ca.crt and DIR/ca.key (refused if one exists).
    Init {
        /// Directory for the CA and the certificates it signs.
        dir: PathBuf,
        /// Days the CA is valid.
        #[arg(long, default_value_t = 3650)]
        days: u32,
    },
    /// Make node ID's certificate (SAN node-ID.trireme and each --host),
    /// signed by the CA: DIR/node-ID.crt and .key, for both ports.
    Node {
        /// The node id the certificate proves.
        id: u64,
        /// A name or IP address the node is reached at (repeat; default:
        /// localhost and 127.0.0.1).
        #[arg(long = "host", value_name = "H")]
        hosts: Vec<String>,
        /// Directory holding the CA.
        #[arg(long, env = "TRIREME_CERTS_DIR", default_value = "certs")]
        dir: PathBuf,
        /// Days the certificate is valid.
        #[arg(long, default_value_t = 365)]
        days: u32,
    },
    /// Make a client certificate with CN NAME, signed by the CA:
    /// DIR/client-NAME.crt and .key.
    Client {
        /// The common name (the user it authenticates as).
        name: String,
        /// Directory holding the CA.
        #[arg(long, env = "TRIREME_CERTS_DIR", default_value = "certs")]
        dir: PathBuf,
        /// Days the certificate is valid.
        #[arg(long, default_value_t = 365)]
        days: u32,
    },
}

fn certs(command: Certs) -> anyhow::Result<()> {
    use trireme_server::tls::certs::{self, Validity};
    let (cert, key) = match command {
        Certs::Init { dir, days } => {
            let cert = certs::init(&dir, Validity::days(days))?;
            (cert, dir.join("ca.key"))
        }
        Certs::Node {
            id,
            hosts,
            dir,
            days,
        } => certs::node(&dir, id, &hosts, Validity::days(days))?,
        Certs::Client { name, dir, days } => certs::client(&dir, &name, Validity::days(days))?,
    };
    println!("wrote {} and {} (mode 0600)", cert.display(), key.display());
    Ok(())
}

fn main() -> anyhow::Result<()> {
    // Named failpoints from the FAILPOINTS environment variable (fault-injection builds only).
    #[cfg(feature = "failpoints")]
    let _failpoints = fail::FailScenario::setup();
    let mut args = Args::parse();
    if let Some(Command::Certs(c)) = args.command.take() {
        return certs(c);
    }
    // The worker count is a process setting, not part of the node's
    // configuration: several nodes on one small machine each get fewer
    // workers than cores, to spend less on wake-ups and hand-offs.
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if args.worker_threads > 0 {
        runtime.worker_threads(args.worker_threads);
    }
    runtime
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?
        .block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let mut config = Config::layered(args.config.as_deref(), &args.overrides)?;
    if args.node_id_from_hostname {
        if args.overrides.node_id.is_some() {
            anyhow::bail!("--node-id and --node-id-from-hostname both name the node id: give one");
        }
        let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .or_else(|_| std::env::var("HOSTNAME"))
            .context("--node-id-from-hostname: cannot read the hostname")?;
        config.node_id = trireme_server::config::node_id_from_hostname(&hostname)?;
        config.validate()?;
    }
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
        .with_context(|| {
            format!(
                "cannot listen on {} (listen, the client port)",
                config.listen
            )
        })?;
    let local = listener.local_addr()?;
    if config.advertise.is_none() && config.listen.ends_with(":0") {
        config.advertise = Some(local.to_string());
    }
    let peer_listener = tokio::net::TcpListener::bind(&config.peer_listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (peer_listen, the peer port)",
                config.peer_listen
            )
        })?;
    let peer_local = peer_listener.local_addr()?;
    if config.peer_advertise.is_none() && config.peer_listen.ends_with(":0") {
        config.peer_advertise = Some(peer_local.to_string());
    }
    let etcd_listener = match &config.etcd_listen {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} (etcd_listen, the etcd API)"))?,
        ),
        None => None,
    };
    let span = tracing::info_span!("node", id = config.node_id);
    let tls = trireme_server::tls::Tls::load(&config.tls).context("loading TLS certificates")?;
    let peers = trireme_server::tls::Tls::peers(tls.as_deref());
    let node = match &args.restore {
        Some(file) => {
            if config.join.is_some() || config.initial_cluster.len() > 1 {
                anyhow::bail!(
                    "--restore seeds the first node of a new cluster alone: give neither \
                     --join nor --initial-cluster (the others join it)"
                );
            }
            Node::start_restored_with_peers(config.clone(), file, peers)
                .instrument(span.clone())
                .await
                .with_context(|| {
                    format!(
                        "restoring {} into {}",
                        file.display(),
                        config.data_dir.display()
                    )
                })?
        }
        None => Node::start_with_peers(config.clone(), peers)
            .instrument(span.clone())
            .await
            .with_context(|| {
                format!(
                    "starting node {} with data in {}",
                    config.node_id,
                    config.data_dir.display()
                )
            })?,
    };
    if let Some(addr) = &config.metrics_listen {
        let bound = trireme_server::metrics::start(&node, addr).await?;
        span.in_scope(|| tracing::info!(%bound, "serving metrics at /metrics"));
    }
    // Tests and scripts read this line to learn the bound addresses.
    println!(
        "trireme-server node {} listening on {} peers on {} (data in {})",
        config.node_id,
        local,
        peer_local,
        config.data_dir.display()
    );
    span.in_scope(|| tracing::info!(client = %local, peer = %peer_local, "serving"));
    if let Some(l) = &etcd_listener {
        // Tests read this line to learn the bound address (port 0).
        let etcd = l.local_addr()?;
        span.in_scope(|| tracing::info!(%etcd, "serving the etcd v3 API"));
    }
    // Serving goes on while the node drains (peers, status, health, and the
    // refusals that send clients elsewhere); it stops once the drain is done,
    // or at once on a second signal.
    let drained = {
        let node = node.clone();
        let span = span.clone();
        async move {
            shutdown_signal().await;
            span.in_scope(|| tracing::info!("asked to stop: draining"));
            tokio::select! {
                _ = node.drain().instrument(span.clone()) => {}
                _ = shutdown_signal() => {
                    span.in_scope(|| tracing::warn!("asked again: stopping without finishing the drain"));
                }
            }
        }
    };
    if let Some(tls) = &tls {
        span.in_scope(|| {
            tracing::info!(
                client_tls = tls.client.is_some(),
                client_cert_auth = config.tls.client_cert_auth,
                peer_mtls = tls.peer.is_some(),
                "TLS on; certificate files are re-read on SIGHUP"
            )
        });
        tokio::spawn(reload_on_sighup(tls.clone(), span.clone()));
    }
    let drained = futures::FutureExt::shared(drained);
    let etcd = async {
        match etcd_listener {
            Some(l) => trireme_server::etcd::serve(node.clone(), l, drained.clone()).await,
            None => Ok(()),
        }
    };
    let serving = async {
        tokio::try_join!(
            trireme_server::server::serve_tls(
                node.clone(),
                listener,
                peer_listener,
                tls,
                drained.clone()
            ),
            etcd
        )
    };
    serving.instrument(span.clone()).await?;
    span.in_scope(|| tracing::info!("shutting down"));
    node.shutdown().await?;
    span.in_scope(|| tracing::info!("stopped"));
    Ok(())
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

/// Re-reads the certificate files on each SIGHUP: new connections use them;
/// a file that does not load leaves the old configuration in force.
async fn reload_on_sighup(tls: std::sync::Arc<trireme_server::tls::Tls>, span: tracing::Span) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            span.in_scope(|| tracing::error!(error = %e, "cannot install the SIGHUP handler: certificates will not be reloaded"));
            return;
        }
    };
    while hup.recv().await.is_some() {
        match tls.reload() {
            Ok(()) => span.in_scope(|| tracing::info!("SIGHUP: certificate files reloaded")),
            Err(e) => span.in_scope(|| {
                tracing::error!(error = %e, "SIGHUP: certificate files not reloaded; the previous ones stay in force")
            }),
        }
    }
}
