//! Workloads: concurrent clients that drive a cluster and record a
//! [`History`] for the [`crate::checkers`].
//!
//! | workload | keys | operations | checker |
//! |---|---|---|---|
//! | [`bank`] | `bank/acct/0..9`, `bank/ledger/*` | SERIALIZABLE transfers, read-only reads of all accounts | [`crate::checkers::bank`] |
//! | [`register`] | `register/<seed>/<slot>/<gen>` | LINEARIZABLE read, write, compare-and-set on the value; a fresh key every 128 ops | [`crate::checkers::register`] |
//! | [`set`] | `set/<seed>/<n>` | unique inserts | [`crate::checkers::set`] |
//! | [`list_append`] | `la/<seed>/<n>`, 5 hot keys, rotated | transactions of 1-4 appends / reads | [`crate::checkers::list_append`] |
//!
//! Worker `i` of a workload uses `Client` pinned to endpoint `i % n` (node
//! id `i % n + 1`), with a per-request timeout of [`Options::request_timeout`].
//! Each workload has three parts:
//! - `traffic(&Options, &Recorder) -> WorkloadStats`: one-time setup (bank),
//!   then `concurrency` workers until `duration` has passed;
//! - `final_read(&Options, &Recorder, deadline)`: reads the whole state on
//!   every node (bank, set, list-append; a no-op for register), retrying
//!   failed reads until `deadline`; call it once the faults are healed;
//! - `run(endpoints, recorder, duration, concurrency, seed)`: both, for runs
//!   without faults.
//!
//! For a chaos scenario:
//!
//! ```no_run
//! # async fn f(endpoints: Vec<String>) -> anyhow::Result<()> {
//! use std::time::Duration;
//! use trireme_tests::{checkers, history, workloads};
//! let opts = workloads::Options::new(endpoints, Duration::from_secs(60), 4, 42);
//! let recorders = workloads::Recorders::new();
//! // ... start the nemesis (it may log into recorders.bank.nemesis(...)) ...
//! let stats = workloads::run_traffic(&opts, &recorders).await?;
//! // ... heal every fault, wait for a leader ...
//! workloads::final_reads(&opts, &recorders, Duration::from_secs(30)).await?;
//! let histories = recorders.histories();
//! histories.save(&history::run_dir("partition-leader"))?;
//! let results = checkers::check_all(&histories, &checkers::CheckOptions::default());
//! assert!(checkers::all_valid(&results));
//! # let _ = stats; Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Result;
use serde::Serialize;
use trireme_client::{Client, ClientOptions, Isolation};

use crate::checkers::convergence::NodeState;
use crate::history::{History, Recorder};

pub mod bank;
pub mod list_append;
pub mod register;
pub mod set;

/// Default per-request timeout of the workloads' clients.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);

/// Default deadline of the final reads of [`run_all`] and each `run`.
pub const FINAL_READ_DEADLINE: Duration = Duration::from_secs(30);

/// What a workload runs against, and how hard.
#[derive(Debug, Clone)]
pub struct Options {
    /// The nodes' client addresses, in node id order.
    pub endpoints: Vec<String>,
    /// How long the workers keep invoking operations.
    pub duration: Duration,
    /// Workers (concurrent clients) per workload.
    pub concurrency: usize,
    /// Seeds every worker's random choices; also names the keys of the
    /// register, set and list-append workloads.
    pub seed: u64,
    /// Per-request deadline of each client (failover included).
    pub request_timeout: Duration,
    /// Isolation of the list-append transactions.
    pub isolation: Isolation,
    /// The clients' TLS settings (a cluster with TLS on).
    pub tls: Option<trireme_client::ClientTls>,
}

impl Options {
    /// Options with the default request timeout and SERIALIZABLE list-append.
    pub fn new(endpoints: Vec<String>, duration: Duration, concurrency: usize, seed: u64) -> Self {
        Options {
            endpoints,
            duration,
            concurrency: concurrency.max(1),
            seed,
            request_timeout: REQUEST_TIMEOUT,
            isolation: Isolation::Serializable,
            tls: None,
        }
    }

    /// The client of worker `i`: pinned to endpoint `i % n`, failing over to the others.
    pub fn client(&self, i: usize) -> Result<Client> {
        Ok(Client::with_options(
            self.endpoints.clone(),
            ClientOptions {
                timeout: self.request_timeout,
                start_index: i,
                txn_max_attempts: 1,
                tls: self.tls.clone(),
                ..ClientOptions::default()
            },
        )?)
    }

    /// A client of node `i % n` alone (no failover), for final reads.
    pub fn node_client(&self, i: usize) -> Result<Client> {
        Ok(Client::with_options(
            vec![self.endpoints[i % self.endpoints.len()].clone()],
            ClientOptions {
                timeout: self.request_timeout,
                tls: self.tls.clone(),
                ..ClientOptions::default()
            },
        )?)
    }

    /// The node id (1-based) worker `i` is pinned to.
    pub fn node_of(&self, i: usize) -> u64 {
        (i % self.endpoints.len().max(1)) as u64 + 1
    }

    /// The per-worker random seed.
    pub(crate) fn worker_seed(&self, workload: u64, i: usize) -> u64 {
        self.seed
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .wrapping_add(workload << 32)
            .wrapping_add(i as u64)
    }
}

/// What one workload did.
#[derive(Debug, Clone, Serialize)]
pub struct WorkloadStats {
    /// The workload's name.
    pub workload: String,
    /// Operations completed ok (setup and final reads excluded).
    pub ok: u64,
    /// Operations that failed (certainly did not happen).
    pub fail: u64,
    /// Indeterminate operations.
    pub info: u64,
    /// How long the traffic ran.
    pub seconds: f64,
    /// `ok / seconds`.
    pub ok_per_sec: f64,
    /// Failures and indeterminate outcomes by error kind (`aborted:write_conflict`, ...).
    pub errors: BTreeMap<String, u64>,
}

impl WorkloadStats {
    /// Counts from a history whose traffic lasted `elapsed`.
    pub fn from_history(workload: &str, history: &History, elapsed: Duration) -> Self {
        let (ok, fail, info) = history.counts();
        let mut errors = BTreeMap::new();
        for p in history.pairs() {
            if let Some(e) = p.completion.and_then(|c| c.error.as_deref()) {
                let kind = e.split(": ").next().unwrap_or(e).to_string();
                *errors.entry(kind).or_insert(0) += 1;
            }
        }
        let seconds = elapsed.as_secs_f64();
        WorkloadStats {
            workload: workload.to_string(),
            ok,
            fail,
            info,
            seconds,
            ok_per_sec: if seconds > 0.0 {
                ok as f64 / seconds
            } else {
                0.0
            },
            errors,
        }
    }
}

impl std::fmt::Display for WorkloadStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {} ok, {} fail, {} info in {:.1} s = {:.1} ok ops/s; errors {:?}",
            self.workload,
            self.ok,
            self.fail,
            self.info,
            self.seconds,
            self.ok_per_sec,
            self.errors
        )
    }
}

/// One recorder per workload, sharing one clock.
#[derive(Debug, Clone)]
pub struct Recorders {
    /// The bank workload's.
    pub bank: Recorder,
    /// The register workload's.
    pub register: Recorder,
    /// The set workload's.
    pub set: Recorder,
    /// The list-append workload's.
    pub list_append: Recorder,
}

impl Default for Recorders {
    fn default() -> Self {
        Recorders::new()
    }
}

impl Recorders {
    /// Four recorders whose clocks start now.
    pub fn new() -> Recorders {
        let start = Instant::now();
        Recorders {
            bank: Recorder::with_start(start),
            register: Recorder::with_start(start),
            set: Recorder::with_start(start),
            list_append: Recorder::with_start(start),
        }
    }

    /// The histories recorded so far.
    pub fn histories(&self) -> Histories {
        Histories {
            bank: self.bank.history(),
            register: self.register.history(),
            set: self.set.history(),
            list_append: self.list_append.history(),
        }
    }
}

/// The histories of one run of every workload.
#[derive(Debug, Clone, Default)]
pub struct Histories {
    /// Bank.
    pub bank: History,
    /// Register.
    pub register: History,
    /// Set.
    pub set: History,
    /// List-append.
    pub list_append: History,
}

impl Histories {
    /// `(file stem, history)` for each workload.
    pub fn iter(&self) -> [(&'static str, &History); 4] {
        [
            ("bank", &self.bank),
            ("register", &self.register),
            ("set", &self.set),
            ("list-append", &self.list_append),
        ]
    }

    /// Writes `<dir>/<workload>.jsonl` for each workload.
    pub fn save(&self, dir: &Path) -> Result<()> {
        for (name, h) in self.iter() {
            h.save(dir.join(format!("{name}.jsonl")))?;
        }
        Ok(())
    }

    /// Reads what [`Histories::save`] wrote.
    pub fn load(dir: &Path) -> Result<Histories> {
        let load = |name: &str| History::load(dir.join(format!("{name}.jsonl")));
        Ok(Histories {
            bank: load("bank")?,
            register: load("register")?,
            set: load("set")?,
            list_append: load("list-append")?,
        })
    }
}

/// The histories and statistics of [`run_all`].
#[derive(Debug, Clone)]
pub struct RunAll {
    /// Every workload's history, final reads included.
    pub histories: Histories,
    /// Every workload's statistics, in the order bank, register, set, list-append.
    pub stats: Vec<WorkloadStats>,
}

/// Runs the four workloads at once for `duration` with `concurrency` workers
/// each, then their final reads (for runs without faults).
pub async fn run_all(
    endpoints: Vec<String>,
    duration: Duration,
    concurrency: usize,
    seed: u64,
) -> Result<RunAll> {
    let opts = Options::new(endpoints, duration, concurrency, seed);
    let recorders = Recorders::new();
    let stats = run_traffic(&opts, &recorders).await?;
    final_reads(&opts, &recorders, FINAL_READ_DEADLINE).await?;
    Ok(RunAll {
        histories: recorders.histories(),
        stats,
    })
}

/// Runs the four workloads' setup and traffic at once (no final reads).
pub async fn run_traffic(opts: &Options, recorders: &Recorders) -> Result<Vec<WorkloadStats>> {
    let (b, r, s, l) = tokio::join!(
        bank::traffic(opts, &recorders.bank),
        register::traffic(opts, &recorders.register),
        set::traffic(opts, &recorders.set),
        list_append::traffic(opts, &recorders.list_append),
    );
    Ok(vec![b?, r?, s?, l?])
}

/// The final reads of every workload, on every node, each retried until
/// `deadline`; an error if some node never answered.
pub async fn final_reads(opts: &Options, recorders: &Recorders, deadline: Duration) -> Result<()> {
    let (b, s, l) = tokio::join!(
        bank::final_read(opts, &recorders.bank, deadline),
        set::final_read(opts, &recorders.set, deadline),
        list_append::final_read(opts, &recorders.list_append, deadline),
    );
    b?;
    s?;
    l?;
    Ok(())
}

/// Every node's `(seqno, checksum, verdict chain)`, for
/// [`crate::checkers::convergence::check`]; node ids are 1-based positions.
pub async fn node_states(endpoints: &[String], timeout: Duration) -> Result<Vec<NodeState>> {
    node_states_tls(endpoints, timeout, None).await
}

/// [`node_states`] of a cluster with TLS on.
pub async fn node_states_tls(
    endpoints: &[String],
    timeout: Duration,
    tls: Option<trireme_client::ClientTls>,
) -> Result<Vec<NodeState>> {
    let client = Client::with_options(
        endpoints.to_vec(),
        ClientOptions {
            timeout,
            tls,
            ..ClientOptions::default()
        },
    )?;
    let mut states = Vec::new();
    for (i, ep) in endpoints.iter().enumerate() {
        let c = client.checksum_of(ep).await?;
        states.push(NodeState::from_checksum(i as u64 + 1, &c));
    }
    Ok(states)
}

/// Runs `attempt` on every node `0..n` until each succeeds once or `deadline`
/// passes; `attempt` records its own operations.
pub(crate) async fn on_every_node<F, Fut>(
    opts: &Options,
    deadline: Duration,
    attempt: F,
) -> Result<()>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let until = Instant::now() + deadline;
    for node in 0..opts.endpoints.len() {
        loop {
            match attempt(node).await {
                Ok(()) => break,
                Err(e) if Instant::now() >= until => {
                    anyhow::bail!("final read on node {} never succeeded: {e:#}", node + 1)
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }
    Ok(())
}

/// Comma-separated integers (the list-append encoding); empty for none.
pub fn encode_list(xs: &[u64]) -> String {
    xs.iter().map(u64::to_string).collect::<Vec<_>>().join(",")
}

/// Parses [`encode_list`]'s encoding.
pub fn decode_list(bytes: &[u8]) -> Result<Vec<u64>> {
    let text = std::str::from_utf8(bytes)?;
    if text.is_empty() {
        return Ok(Vec::new());
    }
    text.split(',')
        .map(|x| {
            x.parse()
                .map_err(|e| anyhow::anyhow!("bad list element {x:?}: {e}"))
        })
        .collect()
}

/// Parses a decimal integer value.
pub(crate) fn decode_int(bytes: &[u8]) -> Result<i64> {
    let text = std::str::from_utf8(bytes)?;
    text.parse()
        .map_err(|e| anyhow::anyhow!("bad integer {text:?}: {e}"))
}
