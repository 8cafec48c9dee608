//! A node: the Raft group, the MVCC store, the batcher and the read index,
//! wired together, with the operations the gRPC services call.
//!
//! `Node::start` opens the data directory, starts openraft, initializes a new
//! cluster from `initial_cluster` if the directory is fresh (every first member
//! may do so with the same membership; openraft treats that as one
//! initialization), and starts the background tasks.
//! [`serve`](crate::server::serve) runs the gRPC services on a bound listener
//! until a shutdown future resolves.
//!
//! `Node::start_with` does the same on an injected [`Backend`] (storage engine,
//! Raft log, peer transport, blocking mode): the deterministic simulation runs
//! nodes on the in-memory engine and log over a simulated network.
//!
//! [`drain`]: a node asked to stop takes nothing new, finishes what it took
//! and, as leader, hands its leadership over before it exits; a resuming
//! node holds its elections until it has heard from a leader. It lives here,
//! not in `cluster/`, because it works on the whole node (admission, the
//! batcher, Raft), and `cluster/` must never import `node`.

pub mod drain;
pub mod lease;
pub mod status;

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use openraft::storage::RaftLogStorage;
use openraft::BasicNode;
// tokio's clock: std's in production, the simulated one under simulation.
use tokio::time::Instant;

use crate::blocking::Blocking;
use crate::certify::{Abort, Certifier, Verdict};
use crate::cluster::flow::Flow;
use crate::cluster::health::Health;
use crate::cluster::primary::Primary;
use crate::cluster::snapshot::Limits;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::group::applied::Applied;
use crate::group::reads::ReadIndex;
use crate::group::state_machine::StateMachine;
use crate::group::submit::{BatchConfig, Submitter};
use crate::raft::log_store::{LogStats, LogStore};
use crate::raft::network::{NetworkFactory, Peers};
use crate::raft::types::{Outcome, Raft, TypeConfig};
use crate::storage::{Engine, Mvcc, SledEngine, Versioned};
use crate::txn::{Key, KeyRange, NodeId, Seqno, Value, WriteSet};

/// How fresh a read must be (see the `ReadConsistency` enum of the API).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Consistency {
    /// Read index through the leader, then read at the applied seqno.
    Linearizable,
    /// Wait until this node has applied `min_seqno`.
    Session(Seqno),
    /// Whatever this node has applied.
    Local,
}

/// Where a read is served: how fresh, and optionally at a fixed snapshot.
#[derive(Clone, Copy, Debug)]
pub struct ReadOptions {
    /// Freshness.
    pub consistency: Consistency,
    /// A transaction's snapshot seqno to read at.
    pub snapshot: Option<Seqno>,
}

/// A node's convergence digest (see [`Node::checksum`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Checksum {
    /// The applied seqno it was taken at.
    pub seqno: Seqno,
    /// Digest of every live key, value and version at `seqno`.
    pub checksum: u64,
    /// Live keys at `seqno`.
    pub keys: u64,
    /// Hash chain over every verdict up to `seqno`.
    pub verdict_chain: u64,
}

/// A running node.
///
/// Its parts are private: the services reach them through the operations
/// below ([`Node::commit`], [`Node::get`], [`Node::scan`], [`Node::watch`],
/// ...), the read-only views ([`Node::config`], [`Node::applied`],
/// [`Node::raft_metrics`], [`Node::status`]) and the membership layer's
/// [`cluster::Handle`](crate::cluster::Handle) ([`Node::cluster`]). Only the
/// peer service (`api::raft`, inside this crate) gets Raft itself and the
/// primary check; nothing outside the crate does.
pub struct Node {
    /// The configuration it started with.
    config: Config,
    /// The openraft handle.
    raft: Raft,
    /// MVCC storage.
    mvcc: Mvcc,
    /// The applied watermark, waiters and apply counters.
    applied: Arc<Applied>,
    /// Channels to peers.
    peers: Peers,
    submitter: Arc<Submitter>,
    reads: ReadIndex,
    log_stats: Arc<crate::raft::log_store::LogStats>,
    /// The in-memory view of the segment-file log (retention by bytes).
    log_reader: Option<crate::raft::log_store::LogReader>,
    /// Whether this node is in the primary component.
    primary: Arc<Primary>,
    /// The membership layer's handle (failure detector, flow control,
    /// replication watch); its loops hold it weakly.
    cluster: Arc<crate::cluster::Handle>,
    /// Client API latency histograms.
    requests: crate::request_metrics::RequestMetrics,
    /// Leader changes seen by this node.
    leader_changes: std::sync::atomic::AtomicU64,
    /// Where scans, checksums and garbage collection run.
    blocking: Blocking,
    /// The bound on client requests in flight (`max_requests_in_flight`).
    admission: crate::admission::Limiter,
    /// Whether the node drains before it stops (see [`Node::drain`]).
    drain: crate::node::drain::Drain,
    /// The leader's lease deadlines (empty on a follower; see [`crate::lease`]).
    lease_deadlines: Arc<crate::lease::Deadlines>,
}

/// What a node runs on: its storage, its Raft log, its peer transport and
/// where blocking work goes. [`Backend::open`] is the production backend (the
/// data directory: segment-file log, sled, tokio's blocking pool);
/// [`Backend::memory`] is the deterministic one of the simulation.
pub struct Backend<LS = LogStore> {
    /// The ordered byte store under MVCC.
    pub engine: Arc<dyn Engine>,
    /// The Raft log.
    pub log: LS,
    /// Group-commit counters of the log (zero for a log without files).
    pub log_stats: Arc<LogStats>,
    /// Where the last snapshot is kept across restarts (`None`: memory only).
    pub snapshot_path: Option<std::path::PathBuf>,
    /// Channels to peers (and how they connect: see [`Peers::with_connector`]).
    pub peers: Peers,
    /// Where blocking work runs.
    pub blocking: Blocking,
    /// Shared by the state machine (the applied index its store has made
    /// durable) and the log (which never purges beyond it).
    pub purge_fence: Option<Arc<std::sync::atomic::AtomicU64>>,
    /// A reader of the log, for retention by bytes (`None`: entries only).
    pub log_reader: Option<crate::raft::log_store::LogReader>,
}

impl Backend<LogStore> {
    /// Opens (or creates) the data directory of `config`: the Raft log in
    /// `raft-log/`, sled in `db/`, the last snapshot in `snapshot.data`.
    pub fn open(config: &Config) -> Result<Backend<LogStore>> {
        let dir = &config.data_dir;
        std::fs::create_dir_all(dir).map_err(|e| {
            Error::Storage(format!("cannot create data dir {}: {e}", dir.display()))
        })?;
        let mut log = LogStore::open(&dir.join("raft-log"))?;
        log.set_append_max_bytes(config.append_max_bytes);
        let log_stats = log.stats();
        let log_reader = Some(log.reader());
        let purge_fence = Arc::new(std::sync::atomic::AtomicU64::new(0));
        log.set_purge_fence(purge_fence.clone());
        let engine = SledEngine::open(&dir.join("db"), config.cache_bytes)?;
        Ok(Backend {
            engine: Arc::new(engine),
            log,
            log_stats,
            snapshot_path: Some(dir.join("snapshot.data")),
            peers: Peers::default(),
            blocking: Blocking::Pool,
            purge_fence: Some(purge_fence),
            log_reader,
        })
    }
}

impl Backend<crate::raft::mem_log::MemLogStore> {
    /// A backend without files or threads: `engine` and `log` (clones share
    /// their state, so a caller that keeps clones can restart a node on the
    /// same "disk" after a simulated crash), peers reached through `peers`,
    /// blocking work inline, snapshots kept in memory.
    pub fn memory(
        engine: crate::storage::MemoryEngine,
        log: crate::raft::mem_log::MemLogStore,
        peers: Peers,
    ) -> Self {
        Backend {
            engine: Arc::new(engine),
            log,
            log_stats: Arc::default(),
            snapshot_path: None,
            peers,
            blocking: Blocking::Inline,
            // The in-memory log and store share one fate: no fence needed.
            purge_fence: None,
            log_reader: None,
        }
    }
}

impl Node {
    /// Opens the data directory and starts the node's Raft group and tasks.
    pub async fn start(config: Config) -> Result<Arc<Node>> {
        config.validate()?;
        let backend = Backend::open(&config)?;
        Self::start_with(config, backend).await
    }

    /// [`Node::start`] with peer channels made by `peers` (TLS: see
    /// [`crate::tls::Tls::peers`]).
    pub async fn start_with_peers(config: Config, peers: Peers) -> Result<Arc<Node>> {
        config.validate()?;
        let mut backend = Backend::open(&config)?;
        backend.peers = peers;
        Self::start_with(config, backend).await
    }

    /// Starts the node's Raft group and tasks on `backend` instead of the data
    /// directory (which it does not touch).
    pub async fn start_with<LS>(config: Config, backend: Backend<LS>) -> Result<Arc<Node>>
    where
        LS: RaftLogStorage<TypeConfig>,
    {
        config.validate()?;
        let Backend {
            engine,
            log: log_store,
            log_stats,
            snapshot_path,
            peers,
            blocking,
            purge_fence,
            log_reader,
        } = backend;
        let mvcc = Mvcc::new(engine);
        let (mut sm, applied) = StateMachine::open(
            mvcc.clone(),
            Certifier::new(config.cert_window),
            snapshot_path,
        )?;
        sm.set_blocking(blocking);
        if let Some(fence) = purge_fence {
            sm.set_durable_fence(fence);
        }
        let gc_lock = sm.gc_lock();
        let raft_config = openraft::Config {
            cluster_name: "trireme".into(),
            heartbeat_interval: config.heartbeat_ms,
            election_timeout_min: config.election_timeout_min_ms,
            election_timeout_max: config.election_timeout_max_ms,
            max_payload_entries: 64,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(config.snapshot_every_entries),
            // With the segment-file log, the node's retention loop purges
            // (`raft::retention`: it also waits for nodes catching up);
            // the in-memory log keeps openraft's own entry bound.
            max_in_snapshot_log_to_keep: if log_reader.is_some() {
                u64::MAX
            } else {
                config.log_retain_entries
            },
            // A state transfer goes in 1 MiB chunks; installing the last one
            // writes the whole store, which takes far longer than a heartbeat.
            snapshot_max_chunk_size: 1 << 20,
            install_snapshot_timeout: INSTALL_SNAPSHOT_TIMEOUT.as_millis() as u64,
            // Turned on by `quiet_start` below (at once for a new cluster).
            enable_elect: false,
            ..Default::default()
        };
        let raft_config = Arc::new(
            raft_config
                .validate()
                .map_err(|e| Error::InvalidInput(format!("raft configuration: {e}")))?,
        );
        let raft = Raft::new(
            config.node_id,
            raft_config,
            NetworkFactory::new(peers.clone())
                .with_bulk(crate::raft::network::BulkSettings::from_config(&config)),
            log_store,
            sm,
        )
        .await
        .map_err(|e| Error::Internal(format!("starting raft: {e}")))?;

        let initialized = raft
            .is_initialized()
            .await
            .map_err(|e| Error::Internal(format!("raft: {e}")))?;
        let join_target = match (&config.join, initialized) {
            (Some(target), false) => Some(target.clone()),
            _ => None,
        };
        if !initialized && join_target.is_none() {
            let members: BTreeMap<NodeId, BasicNode> = config
                .initial_members()
                .into_iter()
                .map(|(id, addr)| (id, BasicNode::new(addr)))
                .collect();
            tracing::info!(?members, "initializing a new cluster");
            if let Err(e) = raft.initialize(members).await {
                // Another first member got there first: its log wins, nothing is lost.
                tracing::info!(error = %e, "not initializing: already part of a cluster");
            }
            raft.runtime_config().elect(true);
        } else {
            tracing::info!(
                applied = applied.seqno(),
                "resuming from the data directory"
            );
            // A restarted node does not depose the leader by campaigning
            // before it hears from it (see `quiet_start`).
            tokio::spawn(crate::node::drain::quiet_start(
                raft.clone(),
                config.node_id,
                Duration::from_millis(2 * config.election_timeout_max_ms),
            ));
        }

        let health = Arc::new(Health::new());
        let flow = Arc::new(Flow::new(
            config.node_id,
            raft.clone(),
            health.clone(),
            applied.clone(),
            Limits::from_config(&config),
        ));
        let primary = Arc::new(Primary::new(
            config.node_id,
            raft.clone(),
            Duration::from_millis(config.election_timeout_max_ms),
            Duration::from_millis(config.election_timeout_max_ms + config.down_after_ms),
        ));
        let submitter = Submitter::start(
            config.node_id,
            raft.clone(),
            peers.clone(),
            primary.clone(),
            applied.clone(),
            BatchConfig {
                max_write_sets: config.batch_max_write_sets,
                max_bytes: config.batch_max_bytes,
                max_in_flight: config.batch_in_flight,
            },
            flow.clone(),
            crate::admission::Limiter::new(
                config.max_pending_write_sets,
                "write sets queued or being ordered (max_pending_write_sets)",
            ),
        );
        let reads = ReadIndex::start(
            config.node_id,
            raft.clone(),
            peers.clone(),
            primary.clone(),
            config.read_timeout(),
            crate::admission::Limiter::new(
                config.max_pending_reads,
                "reads waiting for a read index (max_pending_reads)",
            ),
        );
        let admission = crate::admission::Limiter::new(
            config.max_requests_in_flight,
            "client requests in flight (max_requests_in_flight)",
        );
        let cluster = Arc::new(crate::cluster::Handle {
            config: config.clone(),
            raft: raft.clone(),
            applied: applied.clone(),
            peers: peers.clone(),
            health,
            flow,
            primary: primary.clone(),
            replication: Arc::new(crate::cluster::replication::ReplicationWatch::new(
                Duration::from_millis(config.down_after_ms),
            )),
            ticks: crate::ticks::Ticks::new(),
        });
        let node = Arc::new(Node {
            config,
            raft,
            mvcc,
            applied,
            peers,
            submitter,
            reads,
            log_stats,
            primary,
            cluster,
            requests: Default::default(),
            leader_changes: Default::default(),
            blocking,
            log_reader,
            admission,
            drain: Default::default(),
            lease_deadlines: Default::default(),
        });
        tokio::spawn(watch_leader(Arc::downgrade(&node)));
        tokio::spawn(crate::node::lease::expiry_loop(Arc::downgrade(&node)));
        if node.config.gc_interval_ms > 0 {
            tokio::spawn(gc_loop(Arc::downgrade(&node), gc_lock));
        }
        if node.log_reader.is_some() {
            tokio::spawn(retention_loop(Arc::downgrade(&node)));
        }
        node.cluster.spawn_loops(join_target);
        Ok(node)
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.config.node_id
    }

    /// The configuration it started with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The applied watermark: the seqno applied, waiting for one, the GC
    /// horizon, the replicated parameters and the apply counters.
    pub fn applied(&self) -> &Applied {
        &self.applied
    }

    /// The MVCC store, for reads at a seqno this node has applied.
    pub fn mvcc(&self) -> &Mvcc {
        &self.mvcc
    }

    /// Raft's view of this node now (role, term, leader, log positions,
    /// membership), read once.
    pub fn raft_metrics(&self) -> openraft::RaftMetrics<NodeId, BasicNode> {
        self.raft.metrics().borrow().clone()
    }

    /// The openraft handle: for the peer service, which hands Raft its
    /// messages (not part of the library's surface).
    pub(crate) fn raft(&self) -> &Raft {
        &self.raft
    }

    /// The primary-component check (see [`Node::check_primary`]), for the
    /// peer service.
    pub(crate) fn primary(&self) -> &Primary {
        &self.primary
    }

    /// The membership layer: members, join and leave, health, flow control.
    pub fn cluster(&self) -> &Arc<crate::cluster::Handle> {
        &self.cluster
    }

    /// The client API's latency histograms.
    pub fn requests(&self) -> &crate::request_metrics::RequestMetrics {
        &self.requests
    }

    /// Leader changes seen by this node.
    pub fn leader_changes(&self) -> u64 {
        self.leader_changes.load(Ordering::Relaxed)
    }

    /// The bound on client requests in flight (`max_requests_in_flight`),
    /// shared by the services' admission layers.
    pub fn admission(&self) -> &crate::admission::Limiter {
        &self.admission
    }

    /// Whether this node is draining, and the forward guard of the peer
    /// service (see [`Node::drain`]).
    pub fn drain_state(&self) -> &crate::node::drain::Drain {
        &self.drain
    }

    /// Group-commit counters of the Raft log.
    pub fn log_stats(&self) -> &LogStats {
        &self.log_stats
    }

    /// Bytes of log entries this node holds (0 for a log without files).
    pub fn log_bytes(&self) -> u64 {
        self.log_reader.as_ref().map_or(0, |r| r.bytes())
    }

    /// Whether this node is in the primary component (knows a leader that can
    /// reach a quorum); returns the leader. A node cut off from the quorum
    /// refuses writes and linearizable reads at once instead of hanging (see
    /// [`Primary`] for how a follower of a leader without a quorum knows).
    pub fn check_primary(&self) -> Result<NodeId> {
        self.primary.check()
    }

    /// The seqno a read with these options is served at, once this node has applied it.
    pub async fn read_seqno(&self, opts: ReadOptions) -> Result<Seqno> {
        let timeout = self.config.read_timeout();
        let fresh = match opts.consistency {
            Consistency::Linearizable => {
                self.check_primary()?;
                let index = self.reads.read_index().await?;
                self.applied.wait_for(index, timeout).await?
            }
            Consistency::Session(min) => self.applied.wait_for(min, timeout).await?,
            Consistency::Local => self.applied.seqno(),
        };
        match opts.snapshot {
            None => Ok(fresh),
            Some(s) => {
                self.applied.wait_for(s, timeout).await?;
                self.check_horizon(s)?;
                Ok(s)
            }
        }
    }

    fn check_horizon(&self, at: Seqno) -> Result<()> {
        let horizon = self.applied.horizon();
        if at < horizon {
            return Err(Error::SnapshotTooOld(format!(
                "snapshot {at} is below this node's garbage-collection horizon {horizon} (cert_window {})",
                self.applied.certifier().window
            )));
        }
        Ok(())
    }

    /// Begins a transaction: the snapshot its reads use.
    pub async fn begin(&self, consistency: Consistency) -> Result<Seqno> {
        self.read_seqno(ReadOptions {
            consistency,
            snapshot: None,
        })
        .await
    }

    /// Reads one key: its newest version at the read seqno, and that seqno.
    pub async fn get(
        &self,
        key: &[u8],
        opts: ReadOptions,
    ) -> Result<(Option<(Seqno, Value)>, Seqno)> {
        self.config.limits.check_key(key)?;
        let at = self.read_seqno(opts).await?;
        // On the calling task, not the blocking pool: see INLINE_READ_KEYS.
        let found = self.mvcc.get(key, at)?;
        // GC may have started while we read: only a read that finished above its horizon counts.
        self.check_horizon(at)?;
        Ok((found, at))
    }

    /// Reads several keys at one read seqno, with one read-index round (for
    /// LINEARIZABLE) and one trip to the blocking pool: each key's newest
    /// version there, in the order asked, and that seqno. At most
    /// `max_scan_limit` keys, and at most [`GET_MANY_MAX_BYTES`] of values
    /// in all: past either the read is refused, naming the limit.
    pub async fn get_many(
        &self,
        keys: Vec<Key>,
        opts: ReadOptions,
    ) -> Result<(Vec<Option<(Seqno, Value)>>, Seqno)> {
        let max = self.config.limits.max_scan_limit;
        if keys.len() > max {
            return Err(Error::InvalidInput(format!(
                "get_many asks for {} keys, over the limit of {max} (max_scan_limit)",
                keys.len()
            )));
        }
        for key in &keys {
            self.config.limits.check_key(key)?;
        }
        let at = self.read_seqno(opts).await?;
        let mvcc = self.mvcc.clone();
        let mode = if keys.len() <= INLINE_READ_KEYS {
            Blocking::Inline
        } else {
            self.blocking
        };
        let found = Blocking::run(mode, move || {
            let mut bytes = 0usize;
            keys.iter()
                .map(|key| {
                    let found = mvcc.get(key, at)?;
                    bytes += found.as_ref().map_or(0, |(_, v)| v.len() + key.len());
                    if bytes > GET_MANY_MAX_BYTES {
                        return Err(Error::InvalidInput(format!(
                            "get_many of {} keys would return over {} MiB of values, the limit \
                             of one response: ask for fewer keys",
                            keys.len(),
                            GET_MANY_MAX_BYTES >> 20
                        )));
                    }
                    Ok(found)
                })
                .collect::<Result<Vec<_>>>()
        })
        .await??;
        self.check_horizon(at)?;
        Ok((found, at))
    }

    /// Scans a range: live pairs at the read seqno, whether more remain, and that seqno.
    pub async fn scan(
        &self,
        range: KeyRange,
        limit: usize,
        keys_only: bool,
        opts: ReadOptions,
    ) -> Result<(Vec<Versioned>, bool, Seqno)> {
        let max = self.config.limits.max_scan_limit;
        if limit > max {
            return Err(Error::InvalidInput(format!(
                "scan limit {limit} is over the limit of {max} (max_scan_limit)"
            )));
        }
        let limit = if limit == 0 { max } else { limit };
        let at = self.read_seqno(opts).await?;
        let mvcc = self.mvcc.clone();
        let (pairs, more) = Blocking::run(self.blocking, move || {
            mvcc.scan(&range, at, limit, keys_only)
        })
        .await??;
        self.check_horizon(at)?;
        Ok((pairs, more, at))
    }

    /// Orders, certifies and applies a write set; returns its seqno if it
    /// committed. With `server_retry`, a write set that read nothing and lost a
    /// write-write conflict is retried from a fresh snapshot, up to
    /// `retry_autocommit` times (its writes did not depend on what it read).
    pub async fn commit(&self, mut ws: WriteSet, server_retry: bool) -> Result<Seqno> {
        let retryable = server_retry
            && ws.snapshot.is_some()
            && ws.reads.is_empty()
            && ws.ranges.is_empty()
            && ws.compares.is_empty();
        let mut retries = 0;
        loop {
            match self.commit_once(ws.clone()).await {
                Err(Error::Aborted(Abort::WriteConflict { .. }))
                    if retryable && retries < self.config.retry_autocommit =>
                {
                    retries += 1;
                    self.applied
                        .stats
                        .server_retries
                        .fetch_add(1, Ordering::Relaxed);
                    ws.id = crate::txn::TxnId::random();
                    ws.snapshot = Some(self.applied.seqno());
                }
                other => return other,
            }
        }
    }

    async fn commit_once(&self, mut ws: WriteSet) -> Result<Seqno> {
        ws.origin = self.id();
        self.config.limits.check_write_set(&ws)?;
        self.check_primary()?;
        let id = ws.id;
        // Dropped with this future: a client that goes away leaves no waiter.
        let (rx, _waiter) = self.applied.register_guarded(id);
        let timeout = self.config.commit_timeout();
        self.submitter.submit(ws, Instant::now() + timeout)?;
        // Never hang: give up at the deadline, or as soon as this node leaves
        // the primary component (the write may still commit elsewhere).
        let mut rx = rx;
        let outcome = tokio::select! {
            r = tokio::time::timeout(timeout + Duration::from_millis(500), &mut rx) => match r {
                Ok(Ok(outcome)) => outcome?,
                // Nobody will report this write set's outcome here, and it may
                // have been sent: only its absence from a log would make it
                // UNAVAILABLE.
                Ok(Err(_)) => {
                    return Err(Error::Indeterminate(format!(
                        "no outcome will be reported for write set {id} (its waiter was dropped)"
                    )))
                }
                Err(_) => {
                    self.applied.forget(id);
                    return Err(Error::Indeterminate(format!(
                        "no verdict for write set {id} within {timeout:?}"
                    )));
                }
            },
            e = self.primary.lost() => {
                // The batcher ends every write set it holds as soon as the node
                // is not primary, and knows whether it can have reached a log:
                // let it say so (UNAVAILABLE or outcome unknown).
                match tokio::time::timeout(LEFT_PRIMARY_SETTLE, &mut rx).await {
                    Ok(Ok(outcome)) => outcome?,
                    _ => {
                        self.applied.forget(id);
                        return Err(Error::Indeterminate(format!(
                            "write set {id} was in flight when this node left the primary component ({e})"
                        )));
                    }
                }
            }
        };
        match outcome {
            Outcome::Certified(seqno, Verdict::Commit) | Outcome::Duplicate(seqno) => Ok(seqno),
            Outcome::Certified(_, Verdict::Abort(abort)) => Err(Error::Aborted(abort)),
        }
    }

    /// A digest of the live data at the applied seqno: the seqno, the
    /// checksum, the number of keys, and the verdict chain at that seqno.
    pub async fn checksum(&self) -> Result<Checksum> {
        let (seqno, verdict_chain) = self.applied.chain();
        let mvcc = self.mvcc.clone();
        let (checksum, keys) = Blocking::run(self.blocking, move || mvcc.checksum(seqno)).await??;
        Ok(Checksum {
            seqno,
            checksum,
            keys,
            verdict_chain,
        })
    }

    /// The batcher.
    pub(crate) fn submitter(&self) -> &Submitter {
        &self.submitter
    }

    /// Prepares a stop that clients do not notice, within `drain_timeout_ms`:
    /// takes no new request, finishes what it took, and hands leadership over
    /// if it leads (see [`crate::node::drain`]). Serving goes on meanwhile
    /// (peers, status, health NOT_SERVING); call [`Node::shutdown`] after.
    pub async fn drain(&self) -> crate::node::drain::DrainReport {
        let timeout = Duration::from_millis(self.config.drain_timeout_ms);
        let report = crate::node::drain::drain(self, timeout).await;
        tracing::info!(
            took_ms = report.took.as_millis() as u64,
            handed_to = ?report.handed_to,
            finished = report.finished,
            "drained"
        );
        if report.hand_over_failed {
            tracing::warn!("this leader stops without having handed over: the others elect a leader after the election timeout");
        }
        if !report.finished {
            tracing::warn!(
                timeout_ms = self.config.drain_timeout_ms,
                "requests still in flight at the drain timeout were ended (drain_timeout_ms)"
            );
        }
        report
    }

    /// Streams a backup of the whole store at the applied seqno (a snapshot
    /// stream, see [`crate::group::snapshot`]) in chunks of about
    /// `chunk_bytes` to `tx`, without stopping writes and in bounded memory:
    /// the store is iterated at that seqno, and garbage collection keeps what
    /// it reads until the end. Returns what was written.
    pub async fn backup(
        &self,
        chunk_bytes: usize,
        tx: tokio::sync::mpsc::Sender<Vec<u8>>,
    ) -> Result<crate::group::snapshot::Summary> {
        // The seqno and the replicated metadata at it: parameters are
        // published before the watermark passes the entry that set them, so
        // read until both agree.
        let (at, chain, params, _pin) = loop {
            let (at, chain) = self.applied.chain();
            let pin = self.applied.pin(at);
            let params = self.applied.params();
            if at < self.applied.horizon() {
                return Err(Error::Unavailable(
                    "backup: the applied seqno fell below the GC horizon; retry".into(),
                ));
            }
            if params.is_none_or(|p| p.since <= at) && self.applied.chain().0 == at {
                break (at, chain, params, pin);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        let metrics = self.raft.metrics().borrow().clone();
        let header = crate::group::snapshot::SnapshotHeader {
            seqno: at,
            last_log_id: metrics.last_applied.filter(|l| l.index == at),
            membership: (*metrics.membership_config).clone(),
            snapshot_id: format!("backup-{at}"),
            chain,
            departed: Default::default(),
            params,
            created_unix_ms: crate::group::snapshot::now_unix_ms(),
        };
        let mvcc = self.mvcc.clone();
        let generation = mvcc.generation();
        // On the pool even under simulation: the writer blocks on the channel.
        let summary = Blocking::run(Blocking::Pool, move || {
            let out = ChunkWriter {
                buf: Vec::with_capacity(chunk_bytes),
                chunk_bytes,
                tx,
            };
            let (out, summary) = crate::group::state_machine::write_stream(&mvcc, &header, out)?;
            drop(out);
            if mvcc.generation() != generation {
                return Err(Error::Unavailable(
                    "backup: a state transfer replaced this node's store while it was read; retry"
                        .into(),
                ));
            }
            Ok(summary)
        })
        .await??;
        tracing::info!(
            seqno = at,
            keys = summary.keys,
            bytes = summary.bytes,
            "backup streamed"
        );
        Ok(summary)
    }

    /// Seeds the fresh data directory of `config` from the backup file
    /// `path` (see [`StateMachine::restore`]), then starts the node on it.
    /// Refuses, creating nothing, a data directory that is not empty or a
    /// file that is truncated or corrupt.
    pub async fn start_restored(config: Config, path: &std::path::Path) -> Result<Arc<Node>> {
        Self::start_restored_with_peers(config, path, Peers::default()).await
    }

    /// [`Node::start_restored`] with peer channels made by `peers` (TLS).
    pub async fn start_restored_with_peers(
        config: Config,
        path: &std::path::Path,
        peers: Peers,
    ) -> Result<Arc<Node>> {
        config.validate()?;
        let mut backend = Self::restore(&config, path)?;
        backend.peers = peers;
        Self::start_with(config, backend).await
    }

    /// The store part of [`Node::start_restored`]: returns the opened backend.
    fn restore(config: &Config, path: &std::path::Path) -> Result<Backend<LogStore>> {
        let dir = &config.data_dir;
        if std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some()) {
            return Err(Error::InvalidInput(format!(
                "--restore: the data dir {} is not empty (already initialized?): a restore \
                 seeds the first node of a new cluster into an empty or missing directory",
                dir.display()
            )));
        }
        // Verified in full before anything is created.
        let (header, summary) = crate::group::snapshot::verify_file(path)?;
        let created = !dir.exists();
        let res = (|| -> Result<Backend<LogStore>> {
            let backend = Backend::open(config)?;
            let mvcc = Mvcc::new(backend.engine.clone());
            StateMachine::restore(&mvcc, path, config.node_id, config.peer_advertise_addr())?;
            Ok(backend)
        })();
        let backend = match res {
            Ok(backend) => backend,
            Err(e) => {
                if created {
                    let _ = std::fs::remove_dir_all(dir);
                } else if let Ok(entries) = std::fs::read_dir(dir) {
                    for entry in entries.flatten() {
                        let p = entry.path();
                        let _ = if p.is_dir() {
                            std::fs::remove_dir_all(&p)
                        } else {
                            std::fs::remove_file(&p)
                        };
                    }
                }
                return Err(e);
            }
        };
        tracing::info!(
            seqno = header.seqno,
            keys = summary.keys,
            checksum = summary.checksum,
            "restored the store from {}",
            path.display()
        );
        Ok(backend)
    }

    /// Stops Raft (pending requests fail as unavailable) and syncs the store.
    pub async fn shutdown(&self) -> Result<()> {
        self.raft
            .shutdown()
            .await
            .map_err(|e| Error::Internal(format!("raft shutdown: {e}")))?;
        let mvcc = self.mvcc.clone();
        Blocking::run(self.blocking, move || mvcc.sync()).await?
    }
}

/// A `Write` that sends what is written in chunks (a backup being streamed).
struct ChunkWriter {
    buf: Vec<u8>,
    chunk_bytes: usize,
    tx: tokio::sync::mpsc::Sender<Vec<u8>>,
}

impl ChunkWriter {
    fn send(&mut self) -> std::io::Result<()> {
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(self.chunk_bytes));
        self.tx.blocking_send(chunk).map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                "backup: the client went away",
            )
        })
    }
}

impl std::io::Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= self.chunk_bytes {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if !self.buf.is_empty() {
            self.send()?;
        }
        Ok(())
    }
}

/// How long a commit waits, once its node left the primary component, for the
/// batcher to say whether the write set can have reached a log.
/// The most value and key bytes one [`Node::get_many`] returns: well under
/// the client port's 80 MiB message limit.
pub const GET_MANY_MAX_BYTES: usize = 64 << 20;

/// Reads of at most this many keys ([`Node::get`], a small
/// [`Node::get_many`]) run on the calling task instead of the blocking pool.
/// A point read is a few microseconds when sled has the page cached (one
/// `pread` of a page when it does not), while the trip to the pool and back
/// costs two thread wake-ups: measured on a 3-node cluster, LOCAL point reads
/// at 64 clients went from 128-130 to 72-73 microseconds of server CPU each,
/// and from 10.1-10.3k to 15.0-15.2k reads/s (BENCHMARKS.md, the A/B of
/// 2026-11-30 20:33 UTC). Scans and larger
/// `get_many`s, which can read many pages, stay on the pool.
pub const INLINE_READ_KEYS: usize = 64;

/// How long installing a received snapshot may take (openraft's
/// `install_snapshot_timeout`): the donor's log is held that long after its
/// last chunk went out.
const INSTALL_SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(30);

const LEFT_PRIMARY_SETTLE: Duration = Duration::from_millis(500);

/// Logs and counts leader changes.
///
/// It watches openraft's server metrics (vote, state, leader, membership),
/// which change only when one of those does, not its full metrics: the core
/// publishes those after every pass of its loop, so a watcher of them woke on
/// every heartbeat, reply and flushed append of every write.
async fn watch_leader(node: std::sync::Weak<Node>) {
    let Some(mut rx) = node.upgrade().map(|n| n.raft.server_metrics()) else {
        return;
    };
    let mut last = None;
    loop {
        let (leader, term, me) = {
            let m = rx.borrow_and_update();
            (m.current_leader, m.vote.leader_id().get_term(), m.id)
        };
        if leader == Some(me) {
            if let Some(n) = node.upgrade() {
                n.drain.leading(term);
            }
        }
        if leader != last {
            if let Some(n) = node.upgrade() {
                n.leader_changes.fetch_add(1, Ordering::Relaxed);
                match leader {
                    Some(l) => tracing::info!(leader = l, "leader changed"),
                    None => tracing::info!("no leader"),
                }
            }
            last = leader;
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// Log retention (the gcache policy of [`crate::raft::retention`]): once a
/// second, asks openraft to purge up to what the entry bound
/// (`log_retain_entries` behind the snapshot, held back on the leader for
/// nodes catching up) and the byte bound (`log_retain_bytes`, never held
/// back) allow. openraft purges only entries a snapshot covers (and the log
/// never past what the store has made durable), so the byte bound can be
/// exceeded until the next snapshot.
async fn retention_loop(node: std::sync::Weak<Node>) {
    let mut retention = crate::raft::retention::Retention::default();
    let Some(grid) = node.upgrade().map(|n| n.cluster.ticks) else {
        return;
    };
    loop {
        grid.sleep(Duration::from_secs(1)).await;
        let Some(n) = node.upgrade() else { return };
        let Some(reader) = &n.log_reader else { return };
        let bytes_cut = match n.config.log_retain_bytes {
            0 => None,
            limit => reader.retention(limit).1,
        };
        let inputs = {
            let m = n.raft.metrics().borrow().clone();
            crate::raft::retention::Inputs {
                snapshot: m.snapshot.map(|l| l.index),
                purged: m.purged.map(|l| l.index),
                retain_entries: n.config.log_retain_entries,
                bytes_cut,
                replication: m.replication.map(|r| {
                    r.iter()
                        .filter(|(id, _)| **id != n.config.node_id)
                        .map(|(id, l)| (*id, l.map(|l| l.index)))
                        .collect()
                }),
                transferring: n.peers.transfers.sent_within(INSTALL_SNAPSHOT_TIMEOUT),
            }
        };
        if let Some(cut) = retention.cut(&inputs, tokio::time::Instant::now()) {
            tracing::debug!(cut, ?bytes_cut, "purging the log");
            if n.raft.trigger().purge_log(cut).await.is_err() {
                return;
            }
        }
    }
}

async fn gc_loop(node: std::sync::Weak<Node>, gc_lock: Arc<tokio::sync::Mutex<()>>) {
    loop {
        let Some((interval, grid)) = node
            .upgrade()
            .map(|n| (n.config.gc_interval_ms, n.cluster.ticks))
        else {
            return;
        };
        grid.sleep(Duration::from_millis(interval)).await;
        let Some(n) = node.upgrade() else { return };
        // The seqno first: parameters set at or below it are already published.
        let applied = n.applied.seqno();
        let mut horizon = n.applied.certifier().horizon(applied);
        // A backup in progress reads at its seqno: keep what it sees.
        if let Some(pin) = n.applied.min_pin() {
            horizon = horizon.min(pin);
        }
        if horizon <= n.applied.horizon() {
            continue;
        }
        let _guard = gc_lock.lock().await;
        // Publish the horizon before removing anything, so readers below it fail cleanly.
        n.applied.raise_horizon(horizon);
        let mvcc = n.mvcc.clone();
        let blocking = n.blocking;
        drop(n);
        match Blocking::run(blocking, move || mvcc.gc(horizon)).await {
            Ok(Ok(removed)) => tracing::debug!(horizon, removed, "garbage-collected old versions"),
            Ok(Err(e)) => tracing::warn!(error = %e, "garbage collection failed"),
            Err(e) => tracing::warn!(error = %e, "garbage collection panicked"),
        }
    }
}

/// What a watcher reads on this node: the store and its GC horizon.
struct WatchHistory {
    mvcc: Mvcc,
    applied: Arc<Applied>,
}

impl crate::watch::History for WatchHistory {
    fn mvcc(&self) -> &Mvcc {
        &self.mvcc
    }

    fn horizon(&self) -> Seqno {
        self.applied.horizon()
    }
}

impl Node {
    /// Starts a watch (see [`crate::watch`]); its messages arrive on the
    /// receiver, and it stops when the receiver is dropped.
    pub fn watch(
        &self,
        spec: crate::watch::WatchSpec,
    ) -> tokio::sync::mpsc::Receiver<Result<crate::watch::Message, crate::watch::WatchError>> {
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let history = Arc::new(WatchHistory {
            mvcc: self.mvcc.clone(),
            applied: self.applied.clone(),
        });
        tokio::spawn(crate::watch::run(
            self.applied.hub().clone(),
            history,
            spec,
            tx,
        ));
        rx
    }
}
