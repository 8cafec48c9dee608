//! The deterministic simulation tier (TESTING.md): whole Trireme clusters run
//! inside `turmoil`, on a seeded simulated network and clock.
//!
//! Each seed builds a cluster of 3 (or 5) nodes, each a real [`Node`] (openraft,
//! the state machine and certifier, the gRPC services) started with
//! [`Node::start_with`] on the in-memory Raft log ([`MemLogStore`]) and a
//! crash-lossy in-memory store (as [`Backend::memory`], but see [`SimEngine`]),
//! served with [`serve_incoming`] on turmoil's TCP; client hosts drive a
//! workload through the real `trireme_client::Client` over turmoil's TCP too.
//! From the seed come the election timeouts, the latencies, the workload and a
//! fault schedule: partitions (symmetric, one-way, majority/minority, clients
//! included), holds (messages queued, then delivered in a burst), latency
//! spikes, lossy links, and crashes of one node, two, or all of them, each
//! restarted later on its own "disk": the Raft log survives whole (an append
//! is acknowledged only once durable), the store keeps a random prefix of the
//! batches applied since its last sync (sled's crash semantics, see
//! [`SimEngine`]). After the traffic phase every fault is healed and a
//! checker verifies:
//!
//! - liveness: every node accepts a write, and all nodes converge to the same
//!   applied seqno, data checksum and verdict chain within a bound;
//! - every acknowledged write is readable, and no write that failed
//!   definitely (`Unavailable`, aborted) is;
//! - a CAS counter: its final value is at least the acknowledged increments
//!   and at most those plus the indeterminate ones, no two acknowledged
//!   increments wrote the same value, and linearizable reads of it never go
//!   back in real time (after a completed increment or read);
//! - a bank, by the shared checker (`tests/src/checkers/bank.rs`): each
//!   transfer also writes a unique ledger entry; every serializable snapshot
//!   of the accounts sums to the total with no negative balance, and every
//!   node's final bank does too and equals the initial balances with exactly
//!   the transfers its ledger shows (no acknowledged transfer missing, no
//!   failed one visible, no update lost or doubled).
//!
//! Seeds run each in a fresh process of this test binary, `TRIREME_SIM_JOBS`
//! at a time (default: the cores); a failing seed prints the command that
//! replays it (`TRIREME_SIM_SEED=N TRIREME_SIM_NODES=3|5`, same build profile).
//! `TRIREME_SIM_SEEDS` and `TRIREME_SIM_FIRST` choose the seeds of the default
//! run; `TRIREME_SOAK=1` runs thousands (`TRIREME_SOAK_SEEDS`, default 2000);
//! `TRIREME_SIM_DUMP=DIR` writes each passing seed's history there.
//!
//! Determinism: everything in a seed is driven by turmoil's clock and rng, the
//! seeded rngs here and in the client (`Client::seed_jitter`), and fixed
//! per-node election timeouts (openraft draws its timeout from the thread
//! rng: a one-millisecond range makes that draw constant). The server has no
//! real threads here (`Blocking::Inline`, no files) and reads tokio's clock.
//! Left outside, and checked not to matter by `a_seed_replays_exactly`:
//! write-set ids are random (`TxnId::random`; they change the verdict chain's
//! value, which the digest leaves out, but no control flow), hash maps are
//! randomly keyed, and tokio seeds the branch order of an unbiased `select!`
//! only when built with `--cfg tokio_unstable` (then turmoil seeds it too).

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;
use tonic::transport::server::Connected;
use tonic::transport::{Channel, Endpoint, Uri};
use trireme_client::{
    Client, ClientOptions, Error as ClientError, Isolation, ReadConsistency, ScanSpec,
};
use trireme_server::blocking::Blocking;
use trireme_server::node::Backend;
use trireme_server::raft::mem_log::MemLogStore;
use trireme_server::raft::network::Peers;
use trireme_server::server::serve_incoming;
use trireme_server::storage::{BatchOp, Engine, MemoryEngine};
use trireme_server::{Config, Node};
use trireme_tests::checkers::bank;
use trireme_tests::history::{History, Op as HistoryOp, OpFn, OpKind, Value};

/// The port every node serves on.
const PORT: u16 = 7420;
/// The CAS counter's key.
const COUNTER: &str = "counter";
/// Bank accounts; an absent account holds `INITIAL`.
const ACCOUNTS: usize = 5;
const INITIAL: i64 = 100;
const TOTAL: i64 = ACCOUNTS as i64 * INITIAL;
/// How long after the heal the cluster has to accept writes and converge.
const LIVENESS_BOUND: Duration = Duration::from_secs(40);

// ---------------------------------------------------------------------------
// Transport: tonic over turmoil's TCP.

/// A client channel whose connections are turmoil TCP streams.
fn sim_channel(endpoint: Endpoint) -> Channel {
    endpoint.connect_with_connector_lazy(tower::service_fn(|uri: Uri| async move {
        let host = uri
            .host()
            .ok_or_else(|| io::Error::other(format!("no host in {uri}")))?
            .to_string();
        let port = uri.port_u16().unwrap_or(80);
        let stream = turmoil::net::TcpStream::connect((host.as_str(), port)).await?;
        Ok::<_, io::Error>(TokioIo::new(stream))
    }))
}

/// An accepted turmoil connection, as tonic's server wants it.
struct SimConn(turmoil::net::TcpStream);

impl Connected for SimConn {
    type ConnectInfo = ();

    fn connect_info(&self) {}
}

impl AsyncRead for SimConn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl AsyncWrite for SimConn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}

// ---------------------------------------------------------------------------
// Nodes.

/// A node's durable state: what survives its crash.
#[derive(Clone, Default)]
struct Disk {
    engine: SimEngine,
    log: MemLogStore,
}

/// The storage engine of a simulated node, with sled's crash semantics in
/// memory: a batch is atomic and visible at once, but durable only after
/// `sync` (the state machine syncs before building or after installing a
/// snapshot) or a background flush. A crash keeps a seeded prefix of the
/// batches applied since the last sync, as sled recovers a prefix of its
/// log; openraft then re-applies the rest from the Raft log.
#[derive(Clone, Default)]
struct SimEngine(Arc<Mutex<EngineState>>);

#[derive(Default)]
struct EngineState {
    /// What the node reads: everything applied.
    view: MemoryEngine,
    /// What survives a crash.
    durable: MemoryEngine,
    /// Batches applied since the last sync, oldest first.
    unsynced: Vec<Vec<BatchOp>>,
}

impl SimEngine {
    fn view(&self) -> MemoryEngine {
        self.0.lock().unwrap().view.clone()
    }

    /// The node crashed: keep a random prefix of the unsynced batches.
    /// Returns how many batches were lost.
    fn crash(&self, rng: &mut StdRng) -> u64 {
        let mut st = self.0.lock().unwrap();
        let unsynced = std::mem::take(&mut st.unsynced);
        let keep = rng.gen_range(0..=unsynced.len());
        let lost = (unsynced.len() - keep) as u64;
        for batch in unsynced.into_iter().take(keep) {
            st.durable.apply(batch).expect("memory engine");
        }
        let view = MemoryEngine::new();
        let mut all = Vec::new();
        st.durable
            .scan(&[], None, &mut |k, v| {
                all.push((k.to_vec(), Some(v.to_vec())));
                true
            })
            .expect("memory engine");
        view.apply(all).expect("memory engine");
        st.view = view;
        lost
    }
}

impl Engine for SimEngine {
    fn get(&self, key: &[u8]) -> trireme_server::Result<Option<Vec<u8>>> {
        self.view().get(key)
    }

    fn scan(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
        f: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> trireme_server::Result<()> {
        self.view().scan(start, end, f)
    }

    fn scan_rev(
        &self,
        start: &[u8],
        end: &[u8],
        f: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> trireme_server::Result<()> {
        self.view().scan_rev(start, end, f)
    }

    fn apply(&self, batch: Vec<BatchOp>) -> trireme_server::Result<()> {
        let mut st = self.0.lock().unwrap();
        st.view.apply(batch.clone())?;
        st.unsynced.push(batch);
        Ok(())
    }

    fn sync(&self) -> trireme_server::Result<()> {
        let mut st = self.0.lock().unwrap();
        for batch in std::mem::take(&mut st.unsynced) {
            st.durable.apply(batch)?;
        }
        Ok(())
    }

    fn size_on_disk(&self) -> u64 {
        self.view().size_on_disk()
    }

    // Staging lives in the view: a crash (a fresh view) loses it, as a
    // real crash before the switch does.
    fn stage(&self, batch: Vec<BatchOp>) -> trireme_server::Result<()> {
        self.view().stage(batch)
    }

    fn commit_staged(&self) -> trireme_server::Result<()> {
        let mut st = self.0.lock().unwrap();
        st.view.commit_staged()?;
        // The switch is durable, and with it everything before it.
        st.unsynced.clear();
        let durable = MemoryEngine::new();
        let mut all = Vec::new();
        st.view.scan(&[], None, &mut |k, v| {
            all.push((k.to_vec(), Some(v.to_vec())));
            true
        })?;
        durable.apply(all)?;
        st.durable = durable;
        Ok(())
    }

    fn discard_staged(&self) -> trireme_server::Result<()> {
        self.view().discard_staged()
    }

    fn generation(&self) -> u64 {
        self.view().generation()
    }
}

fn node_name(i: usize) -> String {
    format!("n{}", i + 1)
}

fn node_config(index: usize, nodes: usize, election_timeout_ms: u64) -> Config {
    Config {
        node_id: index as u64 + 1,
        listen: format!("0.0.0.0:{PORT}"),
        advertise: Some(format!("{}:{PORT}", node_name(index))),
        // One port per simulated host serves both sides (`serve_incoming`).
        peer_advertise: Some(format!("{}:{PORT}", node_name(index))),
        initial_cluster: (0..nodes)
            .map(|j| (j as u64 + 1, format!("{}:{PORT}", node_name(j))))
            .collect(),
        heartbeat_ms: 100,
        // A one-millisecond range: openraft's draw from the thread rng is constant.
        election_timeout_min_ms: election_timeout_ms,
        election_timeout_max_ms: election_timeout_ms + 1,
        commit_timeout_ms: 5_000,
        read_timeout_ms: 3_000,
        // Small enough that snapshots, log purges, state transfers and GC happen.
        snapshot_every_entries: 300,
        log_retain_entries: 100,
        gc_interval_ms: 2_000,
        cert_window: 2_000,
        ..Config::default()
    }
}

/// A node host's software: start on its disk, serve until crashed.
async fn run_node(config: Config, disk: Disk) -> turmoil::Result {
    // `Backend::memory` with the crash-lossy engine instead of `MemoryEngine`,
    // so the log must not purge past what the store made durable (as with sled).
    let fence = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut log = disk.log;
    log.set_purge_fence(fence.clone());
    let backend = Backend {
        engine: Arc::new(disk.engine),
        log,
        log_stats: Arc::default(),
        snapshot_path: None,
        peers: Peers::with_connector(Arc::new(sim_channel)),
        blocking: Blocking::Inline,
        purge_fence: Some(fence),
        log_reader: None,
    };
    let node = Node::start_with(config, backend).await?;
    let listener = turmoil::net::TcpListener::bind(("0.0.0.0", PORT)).await?;
    let incoming = futures::stream::unfold(listener, |listener| async move {
        let conn = listener.accept().await.map(|(stream, _)| SimConn(stream));
        Some((conn, listener))
    });
    serve_incoming(node, incoming, std::future::pending()).await?;
    Ok(())
}

// ---------------------------------------------------------------------------
// What clients saw.

/// The outcome of a write, as the client contract defines it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Outcome {
    /// Acknowledged at this seqno.
    Ok(u64),
    /// Certainly not applied (unavailable, aborted, rejected).
    Failed,
    /// May or may not have committed.
    Unknown,
}

fn outcome(r: &Result<u64, ClientError>) -> Outcome {
    match r {
        Ok(seqno) => Outcome::Ok(*seqno),
        Err(ClientError::Indeterminate(_)) | Err(ClientError::Other(_)) => Outcome::Unknown,
        Err(_) => Outcome::Failed,
    }
}

/// One client operation, with its simulated start and end times (ms).
#[derive(Clone, Debug, Hash)]
enum Op {
    /// A linearizable read of the counter.
    ReadCounter { value: u64 },
    /// CAS of the counter from `from` to `from + 1`.
    Increment { from: u64, outcome: Outcome },
    /// A unique key and its value.
    Put { key: String, outcome: Outcome },
    /// A serializable transfer between two accounts, with the ledger entry
    /// it writes in the same transaction (`amount`: what it moved, once read).
    Transfer {
        from: usize,
        to: usize,
        amount: i64,
        ledger: String,
        outcome: Outcome,
    },
    /// A serializable snapshot of every account.
    Balances { balances: Vec<i64> },
}

#[derive(Clone, Debug, Hash)]
struct Record {
    client: usize,
    start_ms: u64,
    end_ms: u64,
    op: Op,
}

/// State shared by the simulated hosts and the test driver.
#[derive(Default)]
struct Shared {
    history: Vec<Record>,
    /// Safety and liveness violations, as found.
    violations: Vec<String>,
    /// Each node's final checksum (seqno, checksum, keys, verdict chain).
    finals: Vec<(u64, u64, u64, u64)>,
    /// Each node's final bank: balances and ledger, read locally after convergence.
    bank_finals: Vec<FinalBank>,
    /// From every node's final status: the highest term, snapshots installed
    /// and duplicate write sets ignored since its last start.
    terms: u64,
    snapshot_installs: u64,
    duplicates: u64,
}

type SharedRef = Arc<Mutex<Shared>>;

/// One node's bank at the end: balances by account, ledger key to value.
type FinalBank = (BTreeMap<u32, i64>, BTreeMap<String, String>);

fn since(origin: Instant) -> u64 {
    origin.elapsed().as_millis() as u64
}

// ---------------------------------------------------------------------------
// Workload.

fn parse_u64(v: &[u8]) -> u64 {
    std::str::from_utf8(v)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(u64::MAX)
}

fn account(i: usize) -> String {
    format!("bank/{i}")
}

fn parse_balance(v: Option<Vec<u8>>) -> i64 {
    match v {
        None => INITIAL,
        Some(v) => std::str::from_utf8(&v)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(i64::MIN),
    }
}

fn client_options(start_index: usize) -> ClientOptions {
    ClientOptions {
        timeout: Duration::from_secs(3),
        connect_timeout: Duration::from_millis(500),
        keepalive_interval: Duration::from_secs(1),
        keepalive_timeout: Duration::from_secs(1),
        start_index,
        txn_max_attempts: 1,
        ..ClientOptions::default()
    }
}

fn endpoints(nodes: usize) -> Vec<String> {
    (0..nodes)
        .map(|i| format!("{}:{PORT}", node_name(i)))
        .collect()
}

/// One workload client: a mix of counter increments, unique puts, transfers
/// and balance snapshots until `traffic` has passed.
async fn workload(
    client_index: usize,
    seed: u64,
    nodes: usize,
    traffic: Duration,
    shared: SharedRef,
) -> turmoil::Result {
    let origin = Instant::now();
    let client =
        Client::with_connector(endpoints(nodes), client_options(client_index), sim_channel)?;
    client.seed_jitter(seed);
    let mut rng = StdRng::seed_from_u64(seed);
    let mut n = 0u64;
    while origin.elapsed() < traffic {
        let start_ms = since(origin);
        let op = match rng.gen_range(0..10) {
            0..=3 => {
                let current = client.get(COUNTER, ReadConsistency::Linearizable).await;
                match current {
                    Err(_) => None,
                    Ok(v) => {
                        let (from, version) =
                            v.map_or((0, 0), |v| (parse_u64(&v.value), v.version));
                        let end_ms = since(origin);
                        shared.lock().unwrap().history.push(Record {
                            client: client_index,
                            start_ms,
                            end_ms,
                            op: Op::ReadCounter { value: from },
                        });
                        let r = client
                            .put_if_version(COUNTER, (from + 1).to_string(), version)
                            .await;
                        Some(Op::Increment {
                            from,
                            outcome: outcome(&r),
                        })
                    }
                }
            }
            4..=6 => {
                n += 1;
                let key = format!("u/{client_index}/{n}");
                let r = client.put(key.clone(), n.to_string()).await;
                Some(Op::Put {
                    key,
                    outcome: outcome(&r),
                })
            }
            7..=8 => {
                let (a, b) = {
                    let mut pick: Vec<usize> = (0..ACCOUNTS).collect();
                    pick.shuffle(&mut rng);
                    (pick[0], pick[1])
                };
                let wanted = rng.gen_range(1..=30);
                n += 1;
                let ledger = format!("ledger/{client_index}/{n}");
                let mut moved = wanted;
                let r: Result<u64, ClientError> = async {
                    let tx = client.begin(Isolation::Serializable).await?;
                    let va = parse_balance(tx.get(account(a)).await?);
                    let vb = parse_balance(tx.get(account(b)).await?);
                    moved = wanted.min(va.max(0));
                    tx.put(account(a), (va - moved).to_string())?;
                    tx.put(account(b), (vb + moved).to_string())?;
                    tx.put(ledger.clone(), ledger_value(a, b, moved))?;
                    tx.commit().await
                }
                .await;
                Some(Op::Transfer {
                    from: a,
                    to: b,
                    amount: moved,
                    ledger,
                    outcome: outcome(&r),
                })
            }
            _ => {
                let r: Result<Vec<i64>, ClientError> = async {
                    let tx = client.begin(Isolation::Serializable).await?;
                    let mut balances = Vec::with_capacity(ACCOUNTS);
                    for i in 0..ACCOUNTS {
                        balances.push(parse_balance(tx.get(account(i)).await?));
                    }
                    tx.rollback();
                    Ok(balances)
                }
                .await;
                r.ok().map(|balances| Op::Balances { balances })
            }
        };
        if let Some(op) = op {
            let end_ms = since(origin);
            shared.lock().unwrap().history.push(Record {
                client: client_index,
                start_ms,
                end_ms,
                op,
            });
        }
        tokio::time::sleep(Duration::from_millis(rng.gen_range(0..30))).await;
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// The checker, after the heal.

async fn retry_until<T, F, Fut>(deadline: Instant, mut f: F) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let mut last = String::from("never tried");
    while Instant::now() < deadline {
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(last)
}

async fn checker(nodes: usize, shared: SharedRef) -> turmoil::Result {
    let deadline = Instant::now() + LIVENESS_BOUND;
    let eps = endpoints(nodes);
    let mut violations = Vec::new();

    // Liveness: a write through every node.
    let mut last_seqno = 0;
    for (i, ep) in eps.iter().enumerate() {
        let client = Client::with_connector(vec![ep.clone()], client_options(0), sim_channel)?;
        client.seed_jitter(i as u64);
        let r = retry_until(deadline, || {
            let client = client.clone();
            async move {
                client
                    .put(format!("final/{i}"), "x")
                    .await
                    .map_err(|e| e.to_string())
            }
        })
        .await;
        match r {
            Ok(s) => last_seqno = last_seqno.max(s),
            Err(e) => violations.push(format!(
                "liveness: node {ep} accepted no write within {LIVENESS_BOUND:?} of the heal: {e}"
            )),
        }
    }

    // Convergence: same applied seqno, data checksum and verdict chain everywhere.
    let client = Client::with_connector(eps.clone(), client_options(0), sim_channel)?;
    client.seed_jitter(99);
    let converged = retry_until(deadline, || {
        let (client, eps) = (client.clone(), eps.clone());
        async move {
            let mut sums = Vec::new();
            for ep in &eps {
                let c = client
                    .checksum_of(ep)
                    .await
                    .map_err(|e| format!("{ep}: {e}"))?;
                sums.push((c.seqno, c.checksum, c.keys, c.verdict_chain));
            }
            let first = sums[0];
            if first.0 >= last_seqno && sums.iter().all(|s| *s == first) {
                Ok(sums)
            } else {
                Err(format!(
                    "not converged: {sums:?} (last write at {last_seqno})"
                ))
            }
        }
    })
    .await;
    let finals = match converged {
        Ok(f) => f,
        Err(e) => {
            violations.push(format!(
                "convergence: not within {LIVENESS_BOUND:?} of the heal: {e}"
            ));
            Vec::new()
        }
    };

    // Safety: what the history promises must be in the data.
    let history = shared.lock().unwrap().history.clone();
    let read = |key: String| {
        let client = client.clone();
        async move {
            retry_until(Instant::now() + Duration::from_secs(10), || {
                let (client, key) = (client.clone(), key.clone());
                async move {
                    client
                        .get(key, ReadConsistency::Linearizable)
                        .await
                        .map(|v| v.map(|v| v.value))
                        .map_err(|e| e.to_string())
                }
            })
            .await
        }
    };
    for r in &history {
        if let Op::Put { key, outcome } = &r.op {
            let want = key
                .rsplit('/')
                .next()
                .unwrap_or_default()
                .as_bytes()
                .to_vec();
            match (read(key.clone()).await, outcome) {
                (Err(e), _) => violations.push(format!("final read of {key} failed: {e}")),
                (Ok(None), Outcome::Ok(s)) => violations.push(format!(
                    "lost write: {key} was acknowledged at seqno {s} and is gone"
                )),
                (Ok(Some(v)), Outcome::Failed) => violations.push(format!(
                    "{key} = {:?} exists, but its write failed definitely",
                    String::from_utf8_lossy(&v)
                )),
                (Ok(Some(v)), _) if v != want => violations.push(format!(
                    "{key} = {:?}, a value no client wrote",
                    String::from_utf8_lossy(&v)
                )),
                _ => {}
            }
        }
    }
    match read(COUNTER.into()).await {
        Err(e) => violations.push(format!("final read of the counter failed: {e}")),
        Ok(v) => {
            let value = v.as_deref().map_or(0, parse_u64);
            violations.extend(check_counter(&history, value));
        }
    }
    // Each node's bank, read locally once converged: checked with the
    // history by the shared bank checker (see `check_bank`).
    let mut bank_finals = Vec::new();
    for ep in &eps {
        let one = Client::with_connector(vec![ep.clone()], client_options(0), sim_channel)?;
        let mut balances = BTreeMap::new();
        for i in 0..ACCOUNTS {
            match one.get(account(i), ReadConsistency::Local).await {
                Ok(v) => {
                    balances.insert(i as u32, parse_balance(v.map(|v| v.value)));
                }
                Err(e) => violations.push(format!("final read of {} on {ep}: {e}", account(i))),
            }
        }
        match one
            .scan(&ScanSpec::prefix("ledger/"), ReadConsistency::Local)
            .await
        {
            Ok((entries, false, _)) => {
                let ledger = entries
                    .into_iter()
                    .map(|v| {
                        (
                            String::from_utf8_lossy(&v.key).into_owned(),
                            String::from_utf8_lossy(&v.value).into_owned(),
                        )
                    })
                    .collect();
                if balances.len() == ACCOUNTS {
                    bank_finals.push((balances, ledger));
                }
            }
            Ok((entries, true, _)) => violations.push(format!(
                "final ledger scan on {ep} stopped after {} entries",
                entries.len()
            )),
            Err(e) => violations.push(format!("final ledger scan on {ep}: {e}")),
        }
    }
    {
        let mut s = shared.lock().unwrap();
        s.violations.extend(violations);
        s.finals = finals;
        s.bank_finals = bank_finals;
    }
    for ep in &eps {
        if let Ok(st) = client.status_of(ep).await {
            let mut s = shared.lock().unwrap();
            s.terms = s.terms.max(st.term);
            s.snapshot_installs += st.snapshots_received;
            s.duplicates += st.duplicates;
        }
    }
    Ok(())
}

/// The counter's invariants over the history and its final value.
fn check_counter(history: &[Record], final_value: u64) -> Vec<String> {
    let mut v = Vec::new();
    let mut acked: BTreeMap<u64, &Record> = BTreeMap::new();
    let mut unknown = 0u64;
    for r in history {
        if let Op::Increment { from, outcome } = &r.op {
            match outcome {
                Outcome::Ok(_) => {
                    if let Some(other) = acked.insert(from + 1, r) {
                        v.push(format!(
                            "lost update: two acknowledged increments wrote {} ({other:?} and {r:?})",
                            from + 1
                        ));
                    }
                }
                Outcome::Unknown => unknown += 1,
                Outcome::Failed => {}
            }
        }
    }
    let n = acked.len() as u64;
    if final_value < n || final_value > n + unknown {
        v.push(format!(
            "counter is {final_value}: outside [{n} acknowledged, {} with the {unknown} indeterminate]",
            n + unknown
        ));
    }
    if let Some((&max, _)) = acked.last_key_value() {
        if max > final_value {
            v.push(format!(
                "counter is {final_value}, below the acknowledged write of {max}"
            ));
        }
    }
    // Real time: a read never returns less than a value written or read by an
    // operation that completed before the read began (the counter only grows).
    let mut floor_events: Vec<(u64, u64)> = history
        .iter()
        .filter_map(|r| match &r.op {
            Op::ReadCounter { value } => Some((r.end_ms, *value)),
            Op::Increment {
                from,
                outcome: Outcome::Ok(_),
            } => Some((r.end_ms, from + 1)),
            _ => None,
        })
        .collect();
    floor_events.sort();
    let mut reads: Vec<&Record> = history
        .iter()
        .filter(|r| matches!(r.op, Op::ReadCounter { .. }))
        .collect();
    reads.sort_by_key(|r| r.start_ms);
    let (mut i, mut floor) = (0, 0u64);
    for r in reads {
        while i < floor_events.len() && floor_events[i].0 < r.start_ms {
            floor = floor.max(floor_events[i].1);
            i += 1;
        }
        if let Op::ReadCounter { value } = r.op {
            if value < floor {
                v.push(format!(
                    "stale read: {r:?} returned {value} after {floor} was written or read"
                ));
            }
        }
    }
    v
}

/// The ledger value a transfer writes: which accounts, how much it moved.
fn ledger_value(from: usize, to: usize, amount: i64) -> String {
    format!("{from}>{to}:{amount}")
}

/// The run's bank as a [`History`] for the shared bank checker
/// (`tests/src/checkers/bank.rs`): every account set up at `INITIAL`, each
/// balance snapshot a read, each transfer with its ledger entry, and each
/// node's final bank a final read after everything else. The checker then
/// holds each snapshot and final bank to the total and to non-negative
/// balances, and each final bank to exactly the transfers its ledger shows
/// (no acknowledged transfer lost, no failed one visible, no lost or doubled
/// update). Every anomaly, and an undecided check, is a violation.
fn check_bank(history: &[Record], finals: &[FinalBank]) -> Vec<String> {
    let ms = |t: u64| t * 1_000_000;
    let mut ops = Vec::new();
    let mut push = |process: u64, kind: OpKind, f: OpFn, value: Value, time_ns: u64| {
        ops.push(HistoryOp {
            process,
            index: ops.len() as u64,
            kind,
            f,
            value,
            time_ns,
            node: 0,
            error: None,
        })
    };
    let initial: BTreeMap<u32, i64> = (0..ACCOUNTS as u32).map(|a| (a, INITIAL)).collect();
    let setup = u64::MAX - 1;
    push(
        setup,
        OpKind::Invoke,
        OpFn::Setup,
        Value::Balances(initial.clone()),
        0,
    );
    push(setup, OpKind::Ok, OpFn::Setup, Value::Balances(initial), 0);
    let mut end = 0;
    for r in history {
        let process = r.client as u64;
        end = end.max(r.end_ms);
        match &r.op {
            Op::Balances { balances } => {
                let read: BTreeMap<u32, i64> = (0..).zip(balances.iter().copied()).collect();
                push(
                    process,
                    OpKind::Invoke,
                    OpFn::Read,
                    Value::Balances(BTreeMap::new()),
                    ms(r.start_ms),
                );
                push(
                    process,
                    OpKind::Ok,
                    OpFn::Read,
                    Value::Balances(read),
                    ms(r.end_ms),
                );
            }
            Op::Transfer {
                from,
                to,
                amount,
                ledger,
                outcome,
            } => {
                let value = Value::Transfer {
                    from: *from as u32,
                    to: *to as u32,
                    amount: *amount,
                    ledger_key: ledger.clone(),
                    ledger_value: ledger_value(*from, *to, *amount),
                };
                let kind = match outcome {
                    Outcome::Ok(_) => OpKind::Ok,
                    Outcome::Failed => OpKind::Fail,
                    Outcome::Unknown => OpKind::Info,
                };
                push(
                    process,
                    OpKind::Invoke,
                    OpFn::Transfer,
                    value.clone(),
                    ms(r.start_ms),
                );
                push(process, kind, OpFn::Transfer, value, ms(r.end_ms));
            }
            _ => {}
        }
    }
    // The final reads began after every client operation had ended.
    for (i, (balances, ledger)) in finals.iter().enumerate() {
        let process = u64::MAX - 2 - i as u64;
        let state = Value::BankState {
            balances: balances.clone(),
            ledger: ledger.clone(),
        };
        push(
            process,
            OpKind::Invoke,
            OpFn::FinalRead,
            Value::None,
            ms(end + 1),
        );
        push(process, OpKind::Ok, OpFn::FinalRead, state, ms(end + 2));
    }
    let result = bank::check(&History { ops });
    let mut out: Vec<String> = result
        .anomalies
        .iter()
        .map(|a| format!("bank checker: {a}"))
        .collect();
    if result.is_valid() != out.is_empty() {
        out.push(format!("bank checker: verdict {:?}", result.valid));
    }
    if result.stats.get("total") != Some(&(TOTAL as u64)) {
        out.push(format!(
            "bank checker saw total {:?}, not {TOTAL}",
            result.stats.get("total")
        ));
    }
    out
}

// ---------------------------------------------------------------------------
// Faults.

#[derive(Clone, Debug)]
enum Fault {
    /// Everything between the two groups is dropped.
    Partition(Vec<String>, Vec<String>),
    /// Messages from the first host to the second are dropped.
    OneWay(String, String),
    /// Messages between two hosts are queued, then delivered at once.
    Hold(String, String),
    /// Every link's latency goes up to this bound.
    Slow(Duration),
    /// Each message breaks its link with this probability (turmoil's random
    /// partition, repaired by a later message); TCP streams that lose a
    /// segment stall until keepalive closes them.
    Lossy(f64),
    /// The node's software stops; its disk is kept.
    Crash(Vec<String>),
}

#[derive(Clone, Debug)]
struct Event {
    at: Duration,
    start: bool,
    fault: Fault,
}

/// Counts of what really happened, to show the faults were exercised.
#[derive(Clone, Debug, Default)]
struct Coverage {
    partitions: u64,
    one_way: u64,
    holds: u64,
    slow: u64,
    lossy: u64,
    crashes: u64,
    all_crashed: u64,
    lost_batches: u64,
    ok_writes: u64,
    unknown_writes: u64,
    aborted_or_failed: u64,
    balance_reads: u64,
    terms: u64,
    snapshot_installs: u64,
    duplicates: u64,
}

impl Coverage {
    fn named(&self) -> [(&'static str, u64); 15] {
        [
            ("partitions", self.partitions),
            ("one_way", self.one_way),
            ("holds", self.holds),
            ("slow", self.slow),
            ("lossy", self.lossy),
            ("crashes", self.crashes),
            ("all_crashed", self.all_crashed),
            ("lost_batches", self.lost_batches),
            ("ok_writes", self.ok_writes),
            ("unknown_writes", self.unknown_writes),
            ("aborted_or_failed", self.aborted_or_failed),
            ("balance_reads", self.balance_reads),
            ("terms", self.terms),
            ("snapshot_installs", self.snapshot_installs),
            ("duplicates", self.duplicates),
        ]
    }

    fn counts(&self) -> Vec<u64> {
        self.named().iter().map(|(_, n)| *n).collect()
    }

    fn from_counts(c: &[u64]) -> Option<Coverage> {
        let &[partitions, one_way, holds, slow, lossy, crashes, all_crashed, lost_batches, ok_writes, unknown_writes, aborted_or_failed, balance_reads, terms, snapshot_installs, duplicates] =
            c
        else {
            return None;
        };
        Some(Coverage {
            partitions,
            one_way,
            holds,
            slow,
            lossy,
            crashes,
            all_crashed,
            lost_batches,
            ok_writes,
            unknown_writes,
            aborted_or_failed,
            balance_reads,
            terms,
            snapshot_installs,
            duplicates,
        })
    }

    fn add(&mut self, o: &Coverage) {
        let sum: Vec<u64> = self
            .counts()
            .iter()
            .zip(o.counts())
            .map(|(a, b)| a + b)
            .collect();
        *self = Coverage::from_counts(&sum).expect("same shape");
    }
}

fn schedule(
    rng: &mut StdRng,
    nodes: &[String],
    clients: &[String],
    traffic: Duration,
) -> Vec<Event> {
    let mut events = Vec::new();
    let end = traffic.saturating_sub(Duration::from_secs(1));
    let ms = |rng: &mut StdRng, lo: u64, hi: u64| Duration::from_millis(rng.gen_range(lo..hi));
    // Network track: one fault at a time.
    let mut t = ms(rng, 1_000, 3_000);
    while t < end {
        let d = ms(rng, 300, 4_000);
        let fault = match rng.gen_range(0..5) {
            0 => {
                let mut hosts: Vec<String> = nodes.to_vec();
                hosts.shuffle(rng);
                let cut = rng.gen_range(1..=hosts.len() / 2);
                let mut a: Vec<String> = hosts[..cut].to_vec();
                let mut b: Vec<String> = hosts[cut..].to_vec();
                for c in clients {
                    if rng.gen_bool(0.5) {
                        a.push(c.clone())
                    } else {
                        b.push(c.clone())
                    }
                }
                Fault::Partition(a, b)
            }
            1 => {
                let mut two: Vec<String> = nodes.choose_multiple(rng, 2).cloned().collect();
                two.shuffle(rng);
                Fault::OneWay(two[0].clone(), two[1].clone())
            }
            2 => {
                let two: Vec<String> = nodes.choose_multiple(rng, 2).cloned().collect();
                Fault::Hold(two[0].clone(), two[1].clone())
            }
            3 => Fault::Slow(ms(rng, 100, 1_500)),
            _ => Fault::Lossy(rng.gen_range(0.001..0.02)),
        };
        events.push(Event {
            at: t,
            start: true,
            fault: fault.clone(),
        });
        events.push(Event {
            at: t + d,
            start: false,
            fault,
        });
        t += d + ms(rng, 200, 2_000);
    }
    // Crash track: one node mostly, sometimes two, rarely all.
    let mut t = ms(rng, 2_000, 5_000);
    while t < end {
        let d = ms(rng, 500, 5_000);
        let k = match rng.gen_range(0..10) {
            0..=6 => 1,
            7..=8 => 2.min(nodes.len()),
            _ => nodes.len(),
        };
        let victims: Vec<String> = nodes.choose_multiple(rng, k).cloned().collect();
        let fault = Fault::Crash(victims);
        events.push(Event {
            at: t,
            start: true,
            fault: fault.clone(),
        });
        events.push(Event {
            at: t + d,
            start: false,
            fault,
        });
        t += d + ms(rng, 1_000, 4_000);
    }
    events.sort_by_key(|e| e.at);
    events
}

fn apply(
    sim: &mut turmoil::Sim<'_>,
    e: &Event,
    disks: &[Disk],
    rng: &mut StdRng,
    base_latency: Duration,
    cov: &mut Coverage,
    nodes: usize,
) {
    match (&e.fault, e.start) {
        (Fault::Partition(a, b), true) => {
            cov.partitions += 1;
            for x in a {
                for y in b {
                    sim.partition(x.as_str(), y.as_str());
                }
            }
        }
        (Fault::Partition(a, b), false) => {
            for x in a {
                for y in b {
                    sim.repair(x.as_str(), y.as_str());
                }
            }
        }
        (Fault::OneWay(a, b), true) => {
            cov.one_way += 1;
            sim.partition_oneway(a.as_str(), b.as_str());
        }
        (Fault::OneWay(a, b), false) => sim.repair_oneway(a.as_str(), b.as_str()),
        (Fault::Hold(a, b), true) => {
            cov.holds += 1;
            sim.hold(a.as_str(), b.as_str());
        }
        (Fault::Hold(a, b), false) => sim.release(a.as_str(), b.as_str()),
        (Fault::Slow(d), true) => {
            cov.slow += 1;
            sim.set_max_message_latency(*d);
        }
        (Fault::Slow(_), false) => sim.set_max_message_latency(base_latency),
        (Fault::Lossy(rate), true) => {
            cov.lossy += 1;
            sim.set_fail_rate(*rate);
        }
        (Fault::Lossy(_), false) => sim.set_fail_rate(0.0),
        (Fault::Crash(victims), true) => {
            cov.crashes += victims.len() as u64;
            if victims.len() == nodes {
                cov.all_crashed += 1;
            }
            for v in victims {
                sim.crash(v.as_str());
                let index: usize = v[1..].parse().expect("node name");
                cov.lost_batches += disks[index - 1].engine.crash(rng);
            }
        }
        (Fault::Crash(victims), false) => {
            for v in victims {
                sim.bounce(v.as_str());
            }
        }
    }
}

// ---------------------------------------------------------------------------
// One seed.

#[derive(Clone, Copy, Debug)]
struct Params {
    seed: u64,
    nodes: usize,
    clients: usize,
    traffic: Duration,
}

#[derive(Debug)]
struct Report {
    /// A digest of the history and final state (write-set ids excluded).
    digest: u64,
    coverage: Coverage,
    ops: usize,
}

fn run_seed(p: Params) -> Result<Report, String> {
    let mut rng = StdRng::seed_from_u64(p.seed ^ 0x7472_6972_656d_6521);
    let base_latency = Duration::from_millis(rng.gen_range(2..15));
    let mut sim = turmoil::Builder::new()
        .rng_seed(p.seed)
        .simulation_duration(p.traffic + LIVENESS_BOUND + Duration::from_secs(60))
        .min_message_latency(Duration::from_millis(1))
        .max_message_latency(base_latency)
        .build();
    let nodes: Vec<String> = (0..p.nodes).map(node_name).collect();
    let clients: Vec<String> = (0..p.clients).map(|c| format!("c{}", c + 1)).collect();
    // Distinct election timeouts, in a seeded order.
    let mut slots: Vec<u64> = (0..p.nodes as u64).collect();
    slots.shuffle(&mut rng);
    let disks: Vec<Disk> = nodes.iter().map(|_| Disk::default()).collect();
    for (i, name) in nodes.iter().enumerate() {
        let timeout = 350 + 110 * slots[i] + rng.gen_range(0..60);
        let config = node_config(i, p.nodes, timeout);
        let disk = disks[i].clone();
        sim.host(name.as_str(), move || {
            run_node(config.clone(), disk.clone())
        });
    }
    let shared: SharedRef = Arc::default();
    for (c, name) in clients.iter().enumerate() {
        let seed = rng.gen();
        sim.client(
            name.as_str(),
            workload(c, seed, p.nodes, p.traffic, shared.clone()),
        );
    }
    let events = schedule(&mut rng, &nodes, &clients, p.traffic);
    let mut cov = Coverage::default();
    let (mut next, mut healed, mut checking) = (0, false, false);
    let mut crashed: BTreeSet<String> = BTreeSet::new();
    loop {
        let done = sim.step().map_err(|e| format!("simulation error: {e}"))?;
        let now = sim.elapsed();
        while !healed && next < events.len() && events[next].at <= now {
            let e = &events[next];
            if let Fault::Crash(v) = &e.fault {
                for h in v {
                    if e.start {
                        crashed.insert(h.clone());
                    } else {
                        crashed.remove(h);
                    }
                }
            }
            apply(
                &mut sim,
                e,
                &disks,
                &mut rng,
                base_latency,
                &mut cov,
                p.nodes,
            );
            next += 1;
        }
        if !healed && now >= p.traffic {
            // Heal everything: links, latency, crashed nodes.
            let all: Vec<&String> = nodes.iter().chain(clients.iter()).collect();
            for (i, a) in all.iter().enumerate() {
                for b in &all[i + 1..] {
                    sim.repair(a.as_str(), b.as_str());
                    sim.release(a.as_str(), b.as_str());
                }
            }
            sim.set_max_message_latency(base_latency);
            sim.set_fail_rate(0.0);
            for h in std::mem::take(&mut crashed) {
                sim.bounce(h.as_str());
            }
            healed = true;
        }
        if done && healed {
            if checking {
                break;
            }
            sim.client("checker", checker(p.nodes, shared.clone()));
            checking = true;
        }
    }
    let s = shared.lock().unwrap();
    let mut violations = s.violations.clone();
    violations.extend(check_bank(&s.history, &s.bank_finals));
    cov.terms = s.terms;
    cov.snapshot_installs = s.snapshot_installs;
    cov.duplicates = s.duplicates;
    for r in &s.history {
        match &r.op {
            Op::Increment { outcome, .. }
            | Op::Put { outcome, .. }
            | Op::Transfer { outcome, .. } => match outcome {
                Outcome::Ok(_) => cov.ok_writes += 1,
                Outcome::Unknown => cov.unknown_writes += 1,
                Outcome::Failed => cov.aborted_or_failed += 1,
            },
            Op::Balances { .. } => cov.balance_reads += 1,
            Op::ReadCounter { .. } => {}
        }
    }
    if !violations.is_empty() {
        return Err(violations.join("\n  "));
    }
    if let Ok(dir) = std::env::var("TRIREME_SIM_DUMP") {
        let text: String = s.history.iter().map(|r| format!("{r:?}\n")).collect();
        let _ = std::fs::write(format!("{dir}/seed-{}.history", p.seed), text);
    }
    let mut h = DefaultHasher::new();
    s.history.hash(&mut h);
    for f in &s.finals {
        // The verdict chain hashes random write-set ids: left out.
        (f.0, f.1, f.2).hash(&mut h);
    }
    sim.elapsed().as_millis().hash(&mut h);
    Ok(Report {
        digest: h.finish(),
        coverage: cov,
        ops: s.history.len(),
    })
}

/// The command that replays a seed, with this build's profile (a seed's run
/// depends on the binary: replay it with the same profile).
fn replay_command(seed: u64, nodes: usize) -> String {
    let release = if cfg!(debug_assertions) {
        ""
    } else {
        " --release"
    };
    format!(
        "TRIREME_SIM_SEED={seed} TRIREME_SIM_NODES={nodes} \
         cargo test{release} -p trireme-tests --test simulation -- --nocapture simulation_seeds"
    )
}

fn params(seed: u64, nodes: usize) -> Params {
    Params {
        seed,
        nodes,
        clients: 3,
        traffic: Duration::from_secs(15),
    }
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// What a seed's process reported.
struct SeedResult {
    seed: u64,
    nodes: usize,
    outcome: Result<(u64, usize, Coverage), String>,
    seconds: f64,
}

/// Runs one seed in a fresh process of this test binary (the `sim_child`
/// test). A process per seed keeps seeds independent: tokio numbers tasks
/// from a process-wide counter and, when a crash drops a host's runtime,
/// cancels its tasks in an order that depends on those numbers; the order
/// decides which connection closes first on the simulated network. In a
/// fresh process a seed always starts from the same counters, so a seed
/// replays exactly, alone or in a batch.
fn run_seed_in_child(seed: u64, nodes: usize) -> SeedResult {
    let started = std::time::Instant::now();
    let exe = std::env::current_exe().expect("test binary");
    let output = std::process::Command::new(exe)
        .args(["--exact", "sim_child", "--nocapture", "--test-threads=1"])
        .env("TRIREME_SIM_CHILD", "1")
        .env("TRIREME_SIM_SEED", seed.to_string())
        .env("TRIREME_SIM_NODES", nodes.to_string())
        .env("RUST_BACKTRACE", "0")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("spawn a seed's process");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.split_once("SIMRESULT ").map(|(_, r)| r));
    let outcome = match line.map(parse_result) {
        Some(Some(r)) if output.status.success() => Ok(r),
        _ => {
            // The violations the child reported, then the first panics (the
            // replay command shows everything).
            let stderr = String::from_utf8_lossy(&output.stderr);
            let mut lines: Vec<String> = stdout
                .lines()
                .filter_map(|l| l.split_once("SIMFAIL ").map(|(_, m)| m.to_string()))
                .collect();
            let err: Vec<&str> = stderr.lines().collect();
            for (i, l) in err
                .iter()
                .enumerate()
                .filter(|(_, l)| l.contains("panicked at"))
            {
                if lines.len() >= 12 {
                    break;
                }
                lines.push(format!("{l} {}", err.get(i + 1).unwrap_or(&"")));
            }
            Err(format!("exit {}: {}", output.status, lines.join("\n  ")))
        }
    };
    SeedResult {
        seed,
        nodes,
        outcome,
        seconds: started.elapsed().as_secs_f64(),
    }
}

fn parse_result(line: &str) -> Option<(u64, usize, Coverage)> {
    let mut fields = line.split_whitespace();
    let digest = u64::from_str_radix(fields.next()?, 16).ok()?;
    let ops = fields.next()?.parse().ok()?;
    let counts: Vec<u64> = fields.map(|f| f.parse().ok()).collect::<Option<_>>()?;
    Some((digest, ops, Coverage::from_counts(&counts)?))
}

/// Runs `seeds` (seed, nodes) in child processes, `jobs` at a time.
fn run_batch(seeds: Vec<(u64, usize)>, jobs: usize) -> Vec<SeedResult> {
    let queue = Arc::new(Mutex::new(seeds.into_iter()));
    let results = Arc::new(Mutex::new(Vec::new()));
    let workers: Vec<_> = (0..jobs.max(1))
        .map(|_| {
            let (queue, results) = (queue.clone(), results.clone());
            std::thread::spawn(move || loop {
                let Some((seed, nodes)) = queue.lock().unwrap().next() else {
                    return;
                };
                let r = run_seed_in_child(seed, nodes);
                match &r.outcome {
                    Ok((digest, ops, _)) => println!(
                        "seed {seed} ({nodes} nodes): ok, {ops} ops, digest {digest:016x}, {:.1}s",
                        r.seconds
                    ),
                    Err(e) => eprintln!(
                        "SIMULATION FAILURE seed={seed} nodes={nodes}:\n  {e}\n  replay: {}",
                        replay_command(seed, nodes)
                    ),
                }
                results.lock().unwrap().push(r);
            })
        })
        .collect();
    for w in workers {
        w.join().expect("worker");
    }
    let mut results = std::mem::take(&mut *results.lock().unwrap());
    results.sort_by_key(|r| (r.nodes, r.seed));
    results
}

fn jobs() -> usize {
    env_u64("TRIREME_SIM_JOBS").map_or_else(
        || std::thread::available_parallelism().map_or(2, |n| n.get()),
        |j| j as usize,
    )
}

/// The default run: seeds of 3- and 5-node clusters, each in its own process
/// (`TRIREME_SIM_SEEDS` seeds, default 60 in release and 20 in debug, a third
/// of them with 5 nodes, from `TRIREME_SIM_FIRST`, default 1);
/// `TRIREME_SOAK=1`: `TRIREME_SOAK_SEEDS` (default 2000). With
/// `TRIREME_SIM_SEED` (and `TRIREME_SIM_NODES`, default 3): that one seed,
/// in this process, which is how a failure is replayed.
#[test]
fn simulation_seeds() {
    if let Some(seed) = env_u64("TRIREME_SIM_SEED") {
        if std::env::var("TRIREME_SIM_CHILD").is_ok() {
            return;
        }
        // `TRIREME_SIM_LOG=info` (any tracing filter) shows the nodes' logs.
        if let Ok(filter) = std::env::var("TRIREME_SIM_LOG") {
            tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
                .without_time()
                .init();
        }
        let nodes = env_u64("TRIREME_SIM_NODES").unwrap_or(3) as usize;
        let r = run_seed(params(seed, nodes));
        match r {
            Ok(r) => println!(
                "seed {seed} ({nodes} nodes): ok, {} ops, digest {:016x}, {:?}",
                r.ops, r.digest, r.coverage
            ),
            Err(e) => panic!("SIMULATION FAILURE seed={seed} nodes={nodes}:\n  {e}"),
        }
        return;
    }
    let soak = std::env::var("TRIREME_SOAK").is_ok_and(|v| !v.is_empty() && v != "0");
    let count = if soak {
        env_u64("TRIREME_SOAK_SEEDS").unwrap_or(2000)
    } else {
        // A few dozen: about 30 s in release, 2 to 3 minutes in debug (2 cores).
        let default = if cfg!(debug_assertions) { 20 } else { 60 };
        env_u64("TRIREME_SIM_SEEDS").unwrap_or(default)
    };
    let first = env_u64("TRIREME_SIM_FIRST").unwrap_or(1);
    let seeds: Vec<(u64, usize)> = (first..first + count)
        .map(|s| (s, if s % 3 == 0 { 5 } else { 3 }))
        .collect();
    let started = std::time::Instant::now();
    let results = run_batch(seeds, jobs());
    let mut total = Coverage::default();
    let mut ops = 0;
    let mut failures = Vec::new();
    for r in &results {
        match &r.outcome {
            Ok((_, n, c)) => {
                ops += n;
                total.add(c);
            }
            Err(_) => failures.push((r.seed, r.nodes)),
        }
    }
    println!(
        "simulation: {} seeds ({first}..{}), {} failed, {ops} ops, {:.1}s; coverage {total:?}",
        results.len(),
        first + count,
        failures.len(),
        started.elapsed().as_secs_f64()
    );
    if let Some(&(seed, nodes)) = failures.first() {
        panic!(
            "failing seeds (seed, nodes): {failures:?}; replay the first with: {}",
            replay_command(seed, nodes)
        );
    }
    // Coverage: every kind of fault really happened, and so did conflicts,
    // elections, state transfers and resubmissions (over enough seeds).
    if results.len() < 10 {
        println!("coverage not checked: fewer than 10 seeds");
        return;
    }
    for (name, n) in total.named() {
        assert!(
            n > 0,
            "coverage: no {name} in {} seeds: {total:?}",
            results.len()
        );
    }
}

/// One seed, run twice in fresh processes: the same history and final state.
/// `check_bank` passes a consistent run and names each kind of broken one.
#[test]
fn the_bank_check_fails_on_a_broken_bank() {
    let rec = |client, start_ms, end_ms, op| Record {
        client,
        start_ms,
        end_ms,
        op,
    };
    let transfer = |from, to, amount, n: u32, outcome| Op::Transfer {
        from,
        to,
        amount,
        ledger: format!("ledger/0/{n}"),
        outcome,
    };
    let mut balances = vec![INITIAL; ACCOUNTS];
    balances[0] -= 30;
    balances[1] += 30;
    let history = vec![
        rec(0, 0, 5, transfer(0, 1, 30, 1, Outcome::Ok(7))),
        rec(0, 6, 9, transfer(2, 3, 10, 2, Outcome::Failed)),
        rec(
            1,
            1,
            8,
            Op::Balances {
                balances: balances.clone(),
            },
        ),
    ];
    let ledger = BTreeMap::from([("ledger/0/1".to_string(), ledger_value(0, 1, 30))]);
    let as_map = |b: &[i64]| -> BTreeMap<u32, i64> { (0..).zip(b.iter().copied()).collect() };
    let good = (as_map(&balances), ledger.clone());
    assert_eq!(
        check_bank(&history, &[good.clone(), good.clone()]),
        Vec::<String>::new()
    );

    // No final read at all: undecided, which fails.
    assert!(check_bank(&history, &[])
        .iter()
        .any(|v| v.contains("no ok final read")));
    // The acknowledged transfer is gone from one node.
    let lost = (as_map(&[INITIAL; ACCOUNTS]), BTreeMap::new());
    assert!(check_bank(&history, &[good.clone(), lost])
        .iter()
        .any(|v| v.contains("lost-transfer")));
    // A snapshot that does not sum to the total.
    let mut torn = history.clone();
    torn.push(rec(
        1,
        9,
        10,
        Op::Balances {
            balances: vec![INITIAL - 1; ACCOUNTS],
        },
    ));
    assert!(check_bank(&torn, std::slice::from_ref(&good))
        .iter()
        .any(|v| v.contains("wrong-total")));
    // The failed transfer's ledger entry is visible.
    let mut leaked = good.clone();
    leaked.1.insert("ledger/0/2".into(), ledger_value(2, 3, 10));
    assert!(check_bank(&history, &[leaked])
        .iter()
        .any(|v| v.contains("aborted-transfer-visible")));
}

#[test]
fn a_seed_replays_exactly() {
    if std::env::var("TRIREME_SIM_CHILD").is_ok() {
        return;
    }
    let seed = env_u64("TRIREME_SIM_REPLAY_SEED").unwrap_or(7);
    let runs = run_batch(vec![(seed, 3), (seed, 3)], 2);
    let digests: Vec<u64> = runs
        .iter()
        .map(|r| match &r.outcome {
            Ok((d, _, _)) => *d,
            Err(e) => panic!("seed {seed} failed: {e}"),
        })
        .collect();
    assert_eq!(
        digests[0], digests[1],
        "seed {seed} did not replay: digests {:016x} and {:016x}",
        digests[0], digests[1]
    );
    println!("seed {seed} replayed exactly: digest {:016x}", digests[0]);
}

/// A seed's process (see [`run_seed_in_child`]); nothing outside one.
#[test]
fn sim_child() {
    if std::env::var("TRIREME_SIM_CHILD").is_err() {
        return;
    }
    let seed = env_u64("TRIREME_SIM_SEED").expect("TRIREME_SIM_SEED");
    let nodes = env_u64("TRIREME_SIM_NODES").unwrap_or(3) as usize;
    match run_seed(params(seed, nodes)) {
        Ok(r) => {
            let counts: Vec<String> = r.coverage.counts().iter().map(u64::to_string).collect();
            println!("SIMRESULT {:016x} {} {}", r.digest, r.ops, counts.join(" "));
        }
        Err(e) => {
            for line in e.lines() {
                println!("SIMFAIL {}", line.trim());
            }
            panic!("seed {seed} ({nodes} nodes) failed");
        }
    }
}
