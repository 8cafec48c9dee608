//! Multi-master transactions, end to end.
//!
//! - `scenarios`: golden scripts (`tests/scenarios/*.txt`) run against an
//!   in-process 3-node cluster, one anomaly per file. Regenerate the expected
//!   output with `UPDATE_GOLDENFILES=1 cargo test -p trireme-tests --test
//!   transactions scenarios`, then read the diff: it is the specification.
//! - `serial`: random concurrent transactions on 3 in-process nodes, checked
//!   against a serial reference model replayed in seqno order.
//! - `gc`: bounded MVCC history, and what happens to snapshots below it.
//! - `counters`: certification and server-retry counters in `Status`.
//! - `bank`, `counter`: workloads against 3 real `trireme-server` processes.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use trireme_client::{Client, Error, Isolation, ReadConsistency, ScanSpec};
use trireme_tests::{wait_for, Cluster};

/// How long a cluster may take to elect a leader or to converge.
const READY: Duration = Duration::from_secs(20);

/// Makes in-process nodes patient: a loaded 2-core machine (debug builds,
/// fsync contention, other tests) can stall replication for longer than the
/// harness's 600 ms election timeout, and a leader that has not heard from a
/// quorum for that long leaves the primary component, turning in-flight
/// commits into unknown outcomes. These tests are about certification, not
/// failover.
fn patient(c: &mut trireme_server::Config) {
    c.heartbeat_ms = 100;
    c.election_timeout_min_ms = 800;
    c.election_timeout_max_ms = 1600;
}

/// Bytes as text.
fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Every pair with `prefix` (paged), read from `client` with `consistency`.
async fn scan_all(
    client: &Client,
    prefix: &str,
    consistency: ReadConsistency,
) -> Result<BTreeMap<String, String>> {
    let end = trireme_client::prefix_end(prefix.as_bytes());
    let mut cursor = prefix.as_bytes().to_vec();
    let mut out = BTreeMap::new();
    loop {
        let spec = ScanSpec::range(cursor.clone(), end.clone());
        let (kvs, more, _) = client.scan(&spec, consistency).await?;
        let last = kvs.last().map(|kv| kv.key.clone());
        for kv in kvs {
            out.insert(text(&kv.key), text(&kv.value));
        }
        match (more, last) {
            (true, Some(mut last)) => {
                last.push(0);
                cursor = last;
            }
            _ => return Ok(out),
        }
    }
}

/// Waits until every client's node has applied the same seqno, then requires
/// the same data checksum and the same verdict chain there: every node decided
/// every write set the same way and holds the same data.
async fn converged(clients: &[Client], deadline: Duration) -> Result<u64> {
    wait_for("every node to apply the same seqno", deadline, || async {
        let mut sums = Vec::new();
        for c in clients {
            sums.push(c.checksum().await?);
        }
        if sums.iter().any(|s| s.seqno != sums[0].seqno) {
            return Ok(None);
        }
        for (i, s) in sums.iter().enumerate() {
            ensure!(
                (s.checksum, s.verdict_chain) == (sums[0].checksum, sums[0].verdict_chain),
                "divergence at seqno {}: node #{i} has {s:?}, node #0 has {:?}",
                s.seqno,
                sums[0]
            );
        }
        Ok(Some(sums[0].seqno))
    })
    .await
}

mod scenarios {
    //! The runner for `tests/scenarios/*.txt`. Commands (`N` a node id, 1 by
    //! default; `T1` any transaction name, given as a goldenscript prefix):
    //!
    //! - `cluster [cert_window=W] [gc_interval_ms=G]`: start the 3-node
    //!   cluster with these settings (first command only; without it the
    //!   cluster starts with the defaults).
    //! - `put K=V... [node=N]`, `del K... [node=N]`: single-key writes.
    //! - `get K... [node=N]`, `scan PREFIX [node=N]`: linearizable reads.
    //! - `writes COUNT [node=N]`: blind writes of a filler key, to advance the log.
    //! - `gc`: wait until every node has garbage-collected up to its window.
    //! - `T1: begin [node=N] [iso=serializable|snapshot] [raw]`: a transaction
    //!   through the client library, pinned to node N; with `raw`, the runner
    //!   keeps the transaction itself and each read and the commit can go to
    //!   any node (`node=` on that command), which shows that the server holds
    //!   no per-transaction state.
    //! - `T1: get K...`, `T1: scan PREFIX`, `T1: put K=V...`, `T1: del K...`,
    //!   `T1: commit`.
    //!
    //! Output never shows seqnos, which depend on leader blanks and
    //! membership entries: only values, `(nil)`, `committed` and `aborted:
    //! KIND on "KEY"`.

    use std::error::Error as StdError;
    use std::fmt::Write as _;
    use std::path::Path;

    use goldenscript::{ArgumentConsumer, Command, Context as ScriptContext};
    use trireme_client::proto;
    use trireme_client::Transaction;
    use trireme_server::Config;
    use trireme_tests::inproc::InProcCluster;

    use super::*;

    type StdResult<T> = std::result::Result<T, Box<dyn StdError>>;

    /// The filler key of `writes`.
    const FILLER: &str = "_filler";

    /// A transaction of a script.
    enum Txn {
        /// Through the client library, on the node it began on.
        Lib(Transaction),
        /// Kept by the runner, as a client that moves between nodes would.
        Raw(RawTxn),
    }

    /// The whole of a transaction, held by the runner.
    struct RawTxn {
        /// The node it began on; reads and the commit go there by default.
        node: u64,
        /// The snapshot every read uses.
        snapshot: u64,
        /// What certification checks.
        isolation: Isolation,
        /// Keys read and the version seen (0: absent).
        reads: BTreeMap<Vec<u8>, u64>,
        /// Prefixes scanned, as `[start, end)`.
        ranges: BTreeSet<(Vec<u8>, Vec<u8>)>,
        /// Buffered writes: `None` deletes.
        writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    }

    /// The state of one script.
    struct Runner {
        /// The runtime every command blocks on.
        rt: tokio::runtime::Runtime,
        /// The cluster, once started.
        cluster: Option<InProcCluster>,
        /// One client per node, talking to that node only.
        clients: BTreeMap<u64, Client>,
        /// Open transactions by name.
        txns: BTreeMap<String, Txn>,
    }

    impl Runner {
        fn new() -> Result<Runner> {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            Ok(Runner {
                rt,
                cluster: None,
                clients: BTreeMap::new(),
                txns: BTreeMap::new(),
            })
        }

        fn start(&mut self, tweak: impl Fn(&mut Config)) -> Result<()> {
            let cluster = self.rt.block_on(async {
                let cluster = InProcCluster::start(3, |c| {
                    patient(c);
                    tweak(c);
                })
                .await?;
                cluster.wait_leader(READY).await?;
                anyhow::Ok(cluster)
            })?;
            let _entered = self.rt.enter();
            for id in 1..=3 {
                self.clients.insert(id, cluster.client(id)?);
            }
            self.cluster = Some(cluster);
            Ok(())
        }

        fn client(&self, node: u64) -> StdResult<&Client> {
            Ok(self
                .clients
                .get(&node)
                .ok_or_else(|| format!("no node {node}"))?)
        }

        fn shutdown(mut self) -> Result<()> {
            if let Some(cluster) = self.cluster.take() {
                self.rt.block_on(cluster.shutdown())?;
            }
            Ok(())
        }

        /// Waits until every node's GC horizon has reached `applied - cert_window`.
        fn wait_gc(&self) -> Result<()> {
            let cluster = self.cluster.as_ref().context("no cluster")?;
            self.rt.block_on(wait_for(
                "garbage collection on every node",
                READY,
                || async {
                    Ok(cluster
                        .nodes
                        .values()
                        .all(|n| {
                            let target = n
                                .node
                                .applied()
                                .seqno()
                                .saturating_sub(n.node.config().cert_window);
                            n.node.applied().horizon() >= target
                        })
                        .then_some(()))
                },
            ))
        }

        fn run_txn(&mut self, name: &str, command: &Command) -> StdResult<String> {
            let mut args = command.consume_args();
            let mut out = String::new();
            if command.name == "begin" {
                let node = node_arg(&mut args)?;
                let isolation = match args.take_key("iso") {
                    Some(iso) => iso.parse::<Isolation>()?,
                    None => Isolation::Serializable,
                };
                let raw = match args.next_pos() {
                    Some("raw") => true,
                    Some(other) => return Err(format!("unknown begin flag {other:?}").into()),
                    None => false,
                };
                args.reject_next()?;
                let tx = self.rt.block_on(self.client(node)?.begin(isolation))?;
                let txn = if raw {
                    let snapshot = tx.snapshot().context("a begun transaction's snapshot")?;
                    tx.rollback();
                    Txn::Raw(RawTxn {
                        node,
                        snapshot,
                        isolation,
                        reads: BTreeMap::new(),
                        ranges: BTreeSet::new(),
                        writes: BTreeMap::new(),
                    })
                } else {
                    Txn::Lib(tx)
                };
                self.txns.insert(name.to_string(), txn);
                return Ok(out);
            }
            let node = args.take_key("node").map(str::parse::<u64>).transpose()?;
            let Runner {
                rt, clients, txns, ..
            } = self;
            let txn = txns
                .get_mut(name)
                .ok_or_else(|| format!("no open transaction {name}"))?;
            // A raw transaction's request goes to node= if given, else where it began.
            let addr = match (&*txn, node) {
                (Txn::Lib(_), Some(_)) => return Err("node= needs a raw transaction".into()),
                (Txn::Lib(_), None) => String::new(),
                (Txn::Raw(raw), node) => clients
                    .get(&node.unwrap_or(raw.node))
                    .ok_or("no such node")?
                    .endpoints()[0]
                    .clone(),
            };
            match (command.name.as_str(), txn) {
                ("get", txn) => {
                    let keys: Vec<&str> = std::iter::from_fn(|| args.next_pos()).collect();
                    args.reject_next()?;
                    for key in keys {
                        let found = match &mut *txn {
                            Txn::Lib(tx) => rt.block_on(tx.get(key)),
                            Txn::Raw(raw) if raw.writes.contains_key(key.as_bytes()) => {
                                Ok(raw.writes[key.as_bytes()].clone())
                            }
                            Txn::Raw(raw) => {
                                let found = rt.block_on(raw_get(&addr, key, raw.snapshot))?;
                                raw.reads
                                    .entry(key.as_bytes().to_vec())
                                    .or_insert(found.as_ref().map_or(0, |(_, v)| *v));
                                Ok(found.map(|(value, _)| value))
                            }
                        };
                        match found {
                            Ok(Some(v)) => writeln!(out, "{key} = {}", text(&v))?,
                            Ok(None) => writeln!(out, "{key} = (nil)")?,
                            Err(e) => writeln!(out, "{key}: error: {}", error_kind(e)?)?,
                        }
                    }
                }
                ("scan", txn) => {
                    let prefix = args.next_pos().ok_or("scan: no prefix given")?;
                    args.reject_next()?;
                    let pairs = match txn {
                        Txn::Lib(tx) => rt.block_on(tx.scan(prefix)),
                        Txn::Raw(raw) => {
                            let start = prefix.as_bytes().to_vec();
                            let end = trireme_client::prefix_end(prefix.as_bytes());
                            let pairs = rt.block_on(raw_scan(
                                &addr,
                                start.clone(),
                                end.clone(),
                                raw.snapshot,
                            ))?;
                            raw.ranges.insert((start, end));
                            // Overlay the transaction's own writes, as the library does.
                            let mut merged: BTreeMap<Vec<u8>, Vec<u8>> =
                                pairs.into_iter().collect();
                            for (k, w) in &raw.writes {
                                if k.starts_with(prefix.as_bytes()) {
                                    match w {
                                        Some(v) => merged.insert(k.clone(), v.clone()),
                                        None => merged.remove(k),
                                    };
                                }
                            }
                            Ok(merged.into_iter().collect())
                        }
                    };
                    match pairs {
                        Ok(pairs) => show_pairs(&mut out, &pairs)?,
                        Err(e) => writeln!(out, "error: {}", error_kind(e)?)?,
                    }
                }
                (verb @ ("put" | "del"), txn) => {
                    let writes = parse_writes(verb, &mut args)?;
                    args.reject_next()?;
                    for (key, value) in writes {
                        match (&mut *txn, value) {
                            (Txn::Lib(tx), Some(v)) => tx.put(key, v)?,
                            (Txn::Lib(tx), None) => tx.delete(key)?,
                            (Txn::Raw(raw), value) => {
                                raw.writes
                                    .insert(key.into_bytes(), value.map(String::into_bytes));
                            }
                        }
                    }
                }
                ("commit", _) => {
                    args.reject_next()?;
                    let outcome = match txns.remove(name) {
                        Some(Txn::Lib(tx)) => rt.block_on(tx.commit()),
                        Some(Txn::Raw(raw)) if raw.writes.is_empty() => Ok(raw.snapshot),
                        Some(Txn::Raw(raw)) => {
                            let client = clients
                                .get(&node.unwrap_or(raw.node))
                                .ok_or("no such node")?;
                            rt.block_on(client.commit(raw.commit_request()))
                        }
                        None => return Err(format!("no open transaction {name}").into()),
                    };
                    match outcome {
                        Ok(_) => writeln!(out, "committed")?,
                        Err(e) => writeln!(out, "{}", show_abort(e)?)?,
                    }
                }
                (other, _) => return Err(format!("unknown transaction command {other:?}").into()),
            }
            Ok(out)
        }
    }

    impl RawTxn {
        fn commit_request(&self) -> proto::CommitRequest {
            let serializable = self.isolation == Isolation::Serializable;
            proto::CommitRequest {
                snapshot: Some(self.snapshot),
                isolation: if serializable {
                    proto::Isolation::Serializable as i32
                } else {
                    proto::Isolation::Snapshot as i32
                },
                mutations: self
                    .writes
                    .iter()
                    .map(|(key, value)| proto::Mutation {
                        key: key.clone(),
                        value: value.clone().unwrap_or_default(),
                        delete: value.is_none(),
                        lease: 0,
                    })
                    .collect(),
                reads: if serializable {
                    self.reads
                        .iter()
                        .map(|(key, version)| proto::ReadKey {
                            key: key.clone(),
                            version: *version,
                        })
                        .collect()
                } else {
                    Vec::new()
                },
                ranges: if serializable {
                    self.ranges
                        .iter()
                        .map(|(start, end)| proto::ReadRange {
                            start: start.clone(),
                            end: end.clone(),
                        })
                        .collect()
                } else {
                    Vec::new()
                },
                ..Default::default()
            }
        }
    }

    /// Reads at a snapshot on one node (SESSION with the snapshot as its
    /// minimum, as the client library does): the value and its version.
    async fn raw_get(addr: &str, key: &str, snapshot: u64) -> Result<Option<(Vec<u8>, u64)>> {
        let mut kv = proto::kv_client::KvClient::connect(format!("http://{addr}")).await?;
        let response = kv
            .get(proto::GetRequest {
                key: key.as_bytes().to_vec(),
                read: Some(snapshot_read(snapshot)),
            })
            .await?
            .into_inner();
        Ok(response.found.then_some((response.value, response.version)))
    }

    /// Scans `[start, end)` at a snapshot on one node.
    async fn raw_scan(
        addr: &str,
        start: Vec<u8>,
        end: Vec<u8>,
        snapshot: u64,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut kv = proto::kv_client::KvClient::connect(format!("http://{addr}")).await?;
        let response = kv
            .scan(proto::ScanRequest {
                start,
                end,
                read: Some(snapshot_read(snapshot)),
                ..Default::default()
            })
            .await?
            .into_inner();
        ensure!(!response.more, "a scenario scan fits in one page");
        Ok(response
            .kvs
            .into_iter()
            .map(|kv| (kv.key, kv.value))
            .collect())
    }

    fn snapshot_read(snapshot: u64) -> proto::ReadOptions {
        proto::ReadOptions {
            consistency: proto::ReadConsistency::Session as i32,
            min_seqno: snapshot,
            snapshot: Some(snapshot),
        }
    }

    fn node_arg(args: &mut ArgumentConsumer) -> StdResult<u64> {
        Ok(args
            .take_key("node")
            .map(str::parse)
            .transpose()?
            .unwrap_or(1))
    }

    fn parse_writes(
        verb: &str,
        args: &mut ArgumentConsumer,
    ) -> StdResult<Vec<(String, Option<String>)>> {
        let mut writes = Vec::new();
        if verb == "put" {
            while let Some((k, v)) = args.next_key() {
                writes.push((k.to_string(), Some(v.to_string())));
            }
        } else {
            while let Some(k) = args.next_pos() {
                writes.push((k.to_string(), None));
            }
        }
        if writes.is_empty() {
            return Err(format!("{verb}: no keys given").into());
        }
        Ok(writes)
    }

    fn show_pairs(out: &mut String, pairs: &[(Vec<u8>, Vec<u8>)]) -> StdResult<()> {
        if pairs.is_empty() {
            writeln!(out, "(empty)")?;
        }
        for (k, v) in pairs {
            writeln!(out, "{} = {}", text(k), text(v))?;
        }
        Ok(())
    }

    /// `aborted: KIND on "KEY"` for a certification abort; other errors fail the script.
    fn show_abort(e: Error) -> StdResult<String> {
        match e {
            Error::Aborted {
                kind, key: Some(k), ..
            } => Ok(format!("aborted: {kind} on {:?}", text(&k))),
            Error::Aborted {
                kind, key: None, ..
            } => Ok(format!("aborted: {kind}")),
            other => Err(other.into()),
        }
    }

    /// The stable name of an expected read error; other errors fail the script.
    fn error_kind(e: Error) -> StdResult<String> {
        match e {
            Error::SnapshotTooOld(_) | Error::Aborted { .. } => Ok(e.kind_name()),
            other => Err(other.into()),
        }
    }

    impl goldenscript::Runner for Runner {
        type Command = Command;

        fn run(&mut self, command: &Command, context: &ScriptContext) -> StdResult<String> {
            if command.name == "cluster" {
                if self.cluster.is_some() {
                    return Err("cluster must be the first command".into());
                }
                let mut args = command.consume_args();
                let window = args.take_key("cert_window").map(str::parse).transpose()?;
                let gc = args
                    .take_key("gc_interval_ms")
                    .map(str::parse)
                    .transpose()?;
                args.reject_next()?;
                self.start(|c| {
                    if let Some(w) = window {
                        c.cert_window = w;
                    }
                    if let Some(g) = gc {
                        c.gc_interval_ms = g;
                    }
                })?;
                return Ok("3 nodes, leader elected\n".into());
            }
            if self.cluster.is_none() {
                self.start(|_| {})?;
            }
            if let Some(name) = context.prefix.as_deref() {
                return self.run_txn(name, command);
            }
            let mut args = command.consume_args();
            let mut out = String::new();
            match command.name.as_str() {
                verb @ ("put" | "del") => {
                    let node = node_arg(&mut args)?;
                    let writes = parse_writes(verb, &mut args)?;
                    args.reject_next()?;
                    let client = self.client(node)?;
                    for (key, value) in writes {
                        match value {
                            Some(v) => self.rt.block_on(client.put(key, v))?,
                            None => self.rt.block_on(client.delete(key, None))?,
                        };
                    }
                    writeln!(out, "ok")?;
                }
                "get" => {
                    let node = node_arg(&mut args)?;
                    let client = self.client(node)?;
                    while let Some(key) = args.next_pos() {
                        let found = self
                            .rt
                            .block_on(client.get(key, ReadConsistency::Linearizable))?;
                        match found {
                            Some(v) => writeln!(out, "{key} = {}", text(&v.value))?,
                            None => writeln!(out, "{key} = (nil)")?,
                        }
                    }
                }
                "scan" => {
                    let node = node_arg(&mut args)?;
                    let prefix = args.next_pos().ok_or("scan: no prefix given")?;
                    args.reject_next()?;
                    let (kvs, more, _) = self.rt.block_on(
                        self.client(node)?
                            .scan(&ScanSpec::prefix(prefix), ReadConsistency::Linearizable),
                    )?;
                    if more {
                        return Err("a scenario scan fits in one page".into());
                    }
                    let pairs: Vec<_> = kvs.into_iter().map(|kv| (kv.key, kv.value)).collect();
                    show_pairs(&mut out, &pairs)?;
                }
                "writes" => {
                    let node = node_arg(&mut args)?;
                    let count: u64 = args.next_pos().ok_or("writes: no count given")?.parse()?;
                    args.reject_next()?;
                    let client = self.client(node)?;
                    for i in 0..count {
                        self.rt.block_on(client.put(FILLER, i.to_string()))?;
                    }
                    writeln!(out, "ok")?;
                }
                "gc" => {
                    args.reject_next()?;
                    self.wait_gc()?;
                    writeln!(out, "ok")?;
                }
                other => return Err(format!("unknown command {other:?}").into()),
            }
            Ok(out)
        }
    }

    fn run_script(name: &str) -> Result<()> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("scenarios")
            .join(format!("{name}.txt"));
        let mut runner = Runner::new()?;
        goldenscript::run(&mut runner, &path)?;
        runner.shutdown()
    }

    macro_rules! scenario {
        ($($name:ident),* $(,)?) => {
            $(
                #[test]
                fn $name() -> Result<()> {
                    run_script(stringify!($name))
                }
            )*
        };
    }

    scenario!(
        lost_update,
        write_skew,
        phantom,
        read_only,
        snapshot_too_old,
        same_node,
        switching_nodes,
    );
}

mod serial {
    //! Random concurrent transactions on 3 in-process nodes, checked against
    //! a serial reference model: replaying the committed transactions in
    //! seqno order (in some order within one seqno, since a log entry carries
    //! a batch of write sets) must reproduce every read they made.
    //!
    //! The workload of a run is a function of its seed, printed at the start
    //! (`TRIREME_SEED=N` replays it); the interleaving is whatever the
    //! scheduler makes of it.

    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use trireme_tests::inproc::InProcCluster;

    use super::*;

    /// Rounds of concurrent transactions, each on its own keys.
    const CASES: usize = 16;
    /// Transactions per round.
    const TXNS: usize = 12;
    /// Transactions of a round in flight at once.
    const IN_FLIGHT: usize = 4;
    /// Keys per round: few, so that transactions conflict.
    const KEYS: usize = 4;

    type State = BTreeMap<String, String>;

    /// A read a transaction makes.
    #[derive(Debug, Clone)]
    enum Read {
        /// One key.
        Get(String),
        /// Every key of the round's prefix.
        Scan,
        /// Several keys in one call (repeats allowed).
        GetMany(Vec<String>),
    }

    /// What one transaction will do.
    #[derive(Debug, Clone)]
    struct Plan {
        /// The node it runs on.
        node: usize,
        isolation: Isolation,
        /// Begin at the node's applied seqno, without a read-index round.
        local_snapshot: bool,
        /// Begin deferred: the first read (or the commit) takes the snapshot.
        deferred: bool,
        reads: Vec<Read>,
        /// Distinct keys; `None` deletes.
        writes: Vec<(String, Option<String>)>,
        /// Per read: how many of the writes are buffered before it (so that
        /// reads see the transaction's own writes), non-decreasing.
        writes_before: Vec<usize>,
    }

    /// What it observed, and how it ended.
    #[derive(Debug)]
    struct Record {
        plan: Plan,
        snapshot: u64,
        /// Per read of the plan: the pairs it returned.
        observed: Vec<State>,
        /// The commit seqno, or the abort.
        outcome: std::result::Result<u64, Error>,
    }

    impl Record {
        fn committed(&self) -> Option<u64> {
            self.outcome.as_ref().ok().copied()
        }

        fn writes(&self, key: &str) -> bool {
            self.plan.writes.iter().any(|(k, _)| k == key)
        }

        /// Whether its reads are what `state`, overlaid with the writes the
        /// transaction buffered before each read, holds.
        fn read_matches(&self, prefix: &str, state: &State) -> bool {
            let mut overlay = state.clone();
            let mut applied = 0;
            for ((read, seen), before) in self
                .plan
                .reads
                .iter()
                .zip(&self.observed)
                .zip(&self.plan.writes_before)
            {
                for (k, v) in &self.plan.writes[applied..*before] {
                    match v {
                        Some(v) => overlay.insert(k.clone(), v.clone()),
                        None => overlay.remove(k),
                    };
                }
                applied = applied.max(*before);
                if view(prefix, read, &overlay) != *seen {
                    return false;
                }
            }
            true
        }
    }

    /// What `read` returns from `state`.
    fn view(prefix: &str, read: &Read, state: &State) -> State {
        match read {
            Read::Get(k) => state
                .get(k)
                .map(|v| State::from([(k.clone(), v.clone())]))
                .unwrap_or_default(),
            Read::Scan => state
                .range(prefix.to_string()..)
                .take_while(|(k, _)| k.starts_with(prefix))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            Read::GetMany(keys) => keys
                .iter()
                .filter_map(|k| Some((k.clone(), state.get(k)?.clone())))
                .collect(),
        }
    }

    fn plan(rng: &mut StdRng, prefix: &str, case: usize, i: usize) -> Plan {
        let key = |rng: &mut StdRng| format!("{prefix}k{}", rng.gen_range(0..KEYS));
        let reads: Vec<Read> = (0..rng.gen_range(1..=3))
            .map(|_| match rng.gen_range(0..8) {
                0 | 1 => Read::Scan,
                2 | 3 => Read::GetMany((0..rng.gen_range(1..=3)).map(|_| key(rng)).collect()),
                _ => Read::Get(key(rng)),
            })
            .collect();
        let mut writes: Vec<(String, Option<String>)> = Vec::new();
        for j in 0..rng.gen_range(1..=2) {
            let k = key(rng);
            if writes.iter().all(|(w, _)| *w != k) {
                let value = (!rng.gen_bool(0.2)).then(|| format!("c{case}t{i}w{j}"));
                writes.push((k, value));
            }
        }
        // Mostly reads first; sometimes a read of the transaction's own writes.
        let mut writes_before: Vec<usize> = reads
            .iter()
            .map(|_| {
                if rng.gen_bool(0.7) {
                    0
                } else {
                    rng.gen_range(0..=writes.len())
                }
            })
            .collect();
        writes_before.sort_unstable();
        let local_snapshot = rng.gen_bool(0.25);
        Plan {
            node: rng.gen_range(0..3),
            isolation: if rng.gen_bool(0.75) {
                Isolation::Serializable
            } else {
                Isolation::Snapshot
            },
            local_snapshot,
            deferred: !local_snapshot && rng.gen_bool(0.4),
            reads,
            writes,
            writes_before,
        }
    }

    /// Runs one transaction. A node that did not take a request
    /// (`Unavailable`) ends it with nothing applied; an unknown commit
    /// outcome is recorded, and makes its round inconclusive.
    async fn execute(client: Client, prefix: String, plan: Plan) -> Result<Record> {
        let mut record = Record {
            plan,
            snapshot: 0,
            observed: Vec::new(),
            outcome: Ok(0),
        };
        let plan = record.plan.clone();
        let unavailable = |mut record: Record, e: Error| match e {
            Error::Unavailable(_) => {
                record.outcome = Err(e);
                Ok(record)
            }
            other => Err(anyhow::Error::new(other).context("a read in a healthy cluster")),
        };
        let begun = if plan.local_snapshot {
            client
                .begin_with(plan.isolation, ReadConsistency::Local)
                .await
        } else if plan.deferred {
            Ok(client.begin_deferred(plan.isolation))
        } else {
            client.begin(plan.isolation).await
        };
        let tx = match begun {
            Ok(tx) => tx,
            Err(e) => return unavailable(record, e),
        };
        // A deferred transaction has its snapshot once it reads (or commits).
        record.snapshot = tx.snapshot().unwrap_or(0);
        let mut buffered = 0;
        let mut buffer_until = |n: usize| -> Result<()> {
            for (k, v) in &plan.writes[buffered.min(n)..n] {
                match v {
                    Some(v) => tx.put(k.clone(), v.clone())?,
                    None => tx.delete(k.clone())?,
                }
            }
            buffered = buffered.max(n);
            Ok(())
        };
        for (read, before) in plan.reads.iter().zip(&plan.writes_before) {
            buffer_until(*before)?;
            let seen = match read {
                Read::Get(k) => tx.get(k).await.map(|v| {
                    v.map(|v| State::from([(k.clone(), text(&v))]))
                        .unwrap_or_default()
                }),
                Read::Scan => tx.scan(&prefix).await.map(|pairs| {
                    pairs
                        .into_iter()
                        .map(|(k, v)| (text(&k), text(&v)))
                        .collect()
                }),
                Read::GetMany(keys) => tx.get_many(keys).await.map(|found| {
                    keys.iter()
                        .zip(found)
                        .filter_map(|(k, v)| Some((k.clone(), text(&v?))))
                        .collect()
                }),
            };
            match seen {
                Ok(seen) => record.observed.push(seen),
                Err(e) => return unavailable(record, e),
            }
            record.snapshot = tx.snapshot().unwrap_or(0);
        }
        buffer_until(plan.writes.len())?;
        let committing = tx.clone();
        record.outcome = match tx.commit().await {
            Ok(seqno) => Ok(seqno),
            Err(e @ (Error::Aborted { .. } | Error::Unavailable(_) | Error::Indeterminate(_))) => {
                Err(e)
            }
            Err(e) => return Err(e).context("commit in a healthy cluster"),
        };
        record.snapshot = committing.snapshot().unwrap_or(0);
        Ok(record)
    }

    /// Applies committed `members` of one seqno in an order in which every
    /// SERIALIZABLE member's reads hold just before it and no member wrote a
    /// key written after its snapshot; `None` if there is no such order.
    fn serial_order(
        prefix: &str,
        seqno: u64,
        members: &[&Record],
        state: &State,
        last_write: &BTreeMap<String, u64>,
    ) -> Option<(State, BTreeMap<String, u64>)> {
        if members.is_empty() {
            return Some((state.clone(), last_write.clone()));
        }
        for (i, r) in members.iter().enumerate() {
            let fresh_writes = r
                .plan
                .writes
                .iter()
                .all(|(k, _)| last_write.get(k).is_none_or(|w| *w <= r.snapshot));
            let reads_hold =
                r.plan.isolation == Isolation::Snapshot || r.read_matches(prefix, state);
            if !(fresh_writes && reads_hold) {
                continue;
            }
            let (mut next, mut written) = (state.clone(), last_write.clone());
            for (k, v) in &r.plan.writes {
                match v {
                    Some(v) => next.insert(k.clone(), v.clone()),
                    None => next.remove(k),
                };
                written.insert(k.clone(), seqno);
            }
            let rest: Vec<&Record> = members
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, r)| *r)
                .collect();
            if let Some(done) = serial_order(prefix, seqno, &rest, &next, &written) {
                return Some(done);
            }
        }
        None
    }

    /// Checks one round against the model; returns the final state.
    fn check(prefix: &str, records: &[Record]) -> Result<State> {
        let mut by_seqno: BTreeMap<u64, Vec<&Record>> = BTreeMap::new();
        for r in records {
            if let Some(seqno) = r.committed() {
                ensure!(
                    seqno > r.snapshot,
                    "committed at {seqno}, not after its snapshot {}",
                    r.snapshot
                );
                by_seqno.entry(seqno).or_default().push(r);
            }
        }
        // The model's state after each seqno that committed something.
        let mut states: Vec<(u64, State)> = vec![(0, State::new())];
        let mut last_write = BTreeMap::new();
        for (seqno, members) in &by_seqno {
            let state = &states.last().expect("starts non-empty").1;
            let (next, written) = serial_order(prefix, *seqno, members, state, &last_write)
                .with_context(|| {
                    format!(
                        "the transactions committed at seqno {seqno} are not serializable \
                         there (a read no longer held, or a key was written after the \
                         snapshot of a transaction that wrote it): {members:#?}"
                    )
                })?;
            last_write = written;
            states.push((*seqno, next));
        }
        let at = |snapshot: u64| -> &State {
            &states
                .iter()
                .rev()
                .find(|(s, _)| *s <= snapshot)
                .expect("seqno 0 is the empty state")
                .1
        };
        for r in records {
            // Every transaction, committed or not, read one snapshot.
            ensure!(
                r.read_matches(prefix, at(r.snapshot)),
                "reads differ from the model at snapshot {}: {r:#?}\nmodel: {:?}",
                r.snapshot,
                at(r.snapshot)
            );
            // Every conflict names a key some committed transaction really wrote after the snapshot.
            if let Err(Error::Aborted {
                kind, key, seqno, ..
            }) = &r.outcome
            {
                let (Some(key), Some(seqno)) = (key, seqno) else {
                    bail!("abort without a conflicting key and seqno: {r:#?}");
                };
                let key = text(key);
                let mine = match kind.as_str() {
                    "write_conflict" => r.writes(&key),
                    "read_conflict" => {
                        r.plan.isolation == Isolation::Serializable
                            && r.plan.reads.iter().any(|x| match x {
                                Read::Get(k) => *k == key,
                                Read::GetMany(keys) => keys.contains(&key),
                                Read::Scan => false,
                            })
                    }
                    "range_conflict" => {
                        r.plan.isolation == Isolation::Serializable
                            && key.starts_with(prefix)
                            && r.plan.reads.iter().any(|x| matches!(x, Read::Scan))
                    }
                    _ => false,
                };
                ensure!(
                    mine,
                    "{kind} on {key:?} is not about this transaction: {r:#?}"
                );
                ensure!(
                    *seqno > r.snapshot
                        && records
                            .iter()
                            .any(|w| w.committed() == Some(*seqno) && w.writes(&key)),
                    "{kind} on {key:?} at {seqno}: no committed write of it there: {r:#?}"
                );
            }
        }
        Ok(states.pop().expect("non-empty").1)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn random_concurrent_transactions_are_serializable_in_seqno_order() -> Result<()> {
        let seed: u64 = match std::env::var("TRIREME_SEED") {
            Ok(s) => s.parse().context("TRIREME_SEED")?,
            Err(_) => rand::random(),
        };
        eprintln!("seed {seed} (replay the workload with TRIREME_SEED={seed})");
        let mut rng = StdRng::seed_from_u64(seed);
        let cluster = InProcCluster::start(3, patient).await?;
        cluster.wait_leader(READY).await?;
        let clients: Vec<Client> = (1..=3)
            .map(|id| cluster.client(id))
            .collect::<Result<_>>()?;
        let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
        let mut inconclusive = 0;
        for case in 0..CASES {
            let prefix = format!("r{case}/");
            let plans: Vec<Plan> = (0..TXNS)
                .map(|i| plan(&mut rng, &prefix, case, i))
                .collect();
            let slots = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
            let run = async {
                let tasks: Vec<_> = plans
                    .iter()
                    .map(|p| {
                        let (client, prefix, p) =
                            (clients[p.node].clone(), prefix.clone(), p.clone());
                        let slots = slots.clone();
                        tokio::spawn(async move {
                            let _slot = slots.acquire_owned().await?;
                            execute(client, prefix, p).await
                        })
                    })
                    .collect();
                let mut records = Vec::new();
                for t in tasks {
                    records.push(t.await??);
                }
                anyhow::Ok(records)
            };
            let records = tokio::time::timeout(Duration::from_secs(30), run)
                .await
                .with_context(|| format!("seed {seed} round {case} took over 30 s"))?
                .with_context(|| format!("seed {seed} round {case}"))?;
            for r in &records {
                let name = match &r.outcome {
                    Ok(_) => "committed".to_string(),
                    Err(e) => e.kind_name(),
                };
                *outcomes.entry(name).or_default() += 1;
            }
            if records
                .iter()
                .any(|r| matches!(r.outcome, Err(Error::Indeterminate(_))))
            {
                // Which side of the commit point it fell on is unknown, so the
                // model cannot be replayed; convergence is still checked below.
                eprintln!("seed {seed} round {case}: inconclusive, a commit outcome is unknown");
                inconclusive += 1;
                continue;
            }
            let model =
                check(&prefix, &records).with_context(|| format!("seed {seed} round {case}"))?;
            // Every node holds what the model holds.
            for (i, client) in clients.iter().enumerate() {
                let got = scan_all(client, &prefix, ReadConsistency::Linearizable).await?;
                ensure!(
                    got == model,
                    "seed {seed} round {case}: node {} holds {got:?}, the model {model:?}",
                    i + 1
                );
            }
        }
        eprintln!("outcomes: {outcomes:?}; {inconclusive} rounds inconclusive");
        ensure!(
            inconclusive <= CASES / 4,
            "{inconclusive} of {CASES} rounds had unknown commit outcomes: the cluster was not healthy"
        );
        // Coverage: both outcomes happened, or the check proved little.
        ensure!(
            outcomes.get("committed").copied().unwrap_or(0) >= CASES,
            "too few commits: {outcomes:?}"
        );
        ensure!(
            outcomes.keys().any(|k| k.starts_with("aborted:")),
            "no conflict at all: {outcomes:?}"
        );
        converged(&clients, READY).await?;
        cluster.shutdown().await?;
        Ok(())
    }

    /// The checker itself: it must reject a lost update and a SERIALIZABLE
    /// write skew, and accept a SNAPSHOT write skew.
    #[test]
    fn the_model_check_rejects_anomalies() {
        let record = |isolation, reads: Vec<Read>, seen: Vec<State>, key: &str, seqno| Record {
            plan: Plan {
                node: 0,
                isolation,
                local_snapshot: false,
                deferred: false,
                writes_before: vec![0; reads.len()],
                reads,
                writes: vec![(key.to_string(), Some(format!("{key}@{seqno}")))],
            },
            snapshot: 1,
            observed: seen,
            outcome: Ok(seqno),
        };
        let get = |k: &str| Read::Get(k.to_string());
        let absent = State::new;
        // Lost update: both read x absent at 1 and both wrote x.
        let lost = [
            record(Isolation::Snapshot, vec![get("x")], vec![absent()], "x", 2),
            record(Isolation::Snapshot, vec![get("x")], vec![absent()], "x", 3),
        ];
        assert!(check("", &lost).is_err());
        // The same in one batch (one seqno).
        let batched = [
            record(Isolation::Snapshot, vec![get("x")], vec![absent()], "x", 2),
            record(Isolation::Snapshot, vec![get("x")], vec![absent()], "x", 2),
        ];
        assert!(check("", &batched).is_err());
        // Write skew: each read both keys absent and wrote one.
        let skew = |isolation| {
            [
                record(
                    isolation,
                    vec![get("x"), get("y")],
                    vec![absent(), absent()],
                    "x",
                    2,
                ),
                record(
                    isolation,
                    vec![get("x"), get("y")],
                    vec![absent(), absent()],
                    "y",
                    3,
                ),
            ]
        };
        assert!(check("", &skew(Isolation::Serializable)).is_err());
        assert!(check("", &skew(Isolation::Snapshot)).is_ok());
        // The same skew with both keys read in one get_many.
        let both = || Read::GetMany(vec!["x".to_string(), "y".to_string()]);
        let skew_many = |isolation| {
            [
                record(isolation, vec![both()], vec![absent()], "x", 2),
                record(isolation, vec![both()], vec![absent()], "y", 3),
            ]
        };
        assert!(check("", &skew_many(Isolation::Serializable)).is_err());
        assert!(check("", &skew_many(Isolation::Snapshot)).is_ok());
        // A read of a value nobody wrote.
        let phantom_value = [record(
            Isolation::Snapshot,
            vec![get("y")],
            vec![State::from([("y".to_string(), "boo".to_string())])],
            "x",
            2,
        )];
        assert!(check("", &phantom_value).is_err());
        // Within one seqno, an order exists where the reader goes first.
        let ordered = [
            record(
                Isolation::Serializable,
                vec![get("y")],
                vec![absent()],
                "x",
                2,
            ),
            record(
                Isolation::Serializable,
                vec![get("z")],
                vec![absent()],
                "y",
                2,
            ),
        ];
        assert!(check("", &ordered).is_ok());
        // A read after the transaction's own write sees that write.
        let seen = State::from([("x".to_string(), "x@2".to_string())]);
        let mut own = record(Isolation::Serializable, vec![get("x")], vec![seen], "x", 2);
        own.plan.writes_before = vec![1];
        assert!(check("", std::slice::from_ref(&own)).is_ok());
        own.plan.writes_before = vec![0];
        assert!(check("", &[own]).is_err());
    }
}

mod gc {
    //! Garbage collection keeps the MVCC history bounded by the certification
    //! window, and snapshots below the window fail cleanly instead of reading
    //! a history that is gone.

    use trireme_server::storage::keycode;
    use trireme_tests::inproc::InProcCluster;

    use super::*;

    const WINDOW: u64 = 100;
    const KEYS: usize = 10;
    /// Overwrites of each key.
    const ROUNDS: usize = 300;

    /// Entries of one namespace of the node's store.
    fn count(node: &trireme_server::Node, namespace: u8) -> Result<u64> {
        let mut n = 0u64;
        node.mvcc()
            .engine()
            .scan(&[namespace], Some(&[namespace + 1]), &mut |_, _| {
                n += 1;
                true
            })?;
        Ok(n)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn gc_keeps_versions_bounded_and_old_snapshots_fail() -> Result<()> {
        let cluster = InProcCluster::start(1, |c| {
            patient(c);
            c.cert_window = WINDOW;
            c.gc_interval_ms = 100;
            c.snapshot_every_entries = 200;
            c.log_retain_entries = 50;
        })
        .await?;
        cluster.wait_leader(READY).await?;
        let node = cluster.nodes[&1].node.clone();
        let client = cluster.client(1)?;
        client.put("k0", "initial").await?;
        let old_reader = client.begin(Isolation::Serializable).await?;
        let old_writer = client.begin(Isolation::Snapshot).await?;
        ensure!(old_reader.get("k0").await? == Some(b"initial".to_vec()));

        // One writer per key, so at most KEYS write sets share a seqno.
        let writers: Vec<_> = (0..KEYS)
            .map(|k| {
                let client = client.clone();
                tokio::spawn(async move {
                    for round in 0..ROUNDS {
                        client.put(format!("k{k}"), format!("v{round}")).await?;
                    }
                    anyhow::Ok(())
                })
            })
            .collect();
        for w in writers {
            w.await??;
        }
        let written = (KEYS * ROUNDS) as u64;

        // Each key keeps its versions above the horizon (at most WINDOW seqnos)
        // plus the newest one at or below it.
        let bound = KEYS as u64 * (WINDOW + 1);
        let versions = wait_for("GC to bound the versions", READY, || async {
            let n = count(&node, keycode::DATA)?;
            Ok((n <= bound).then_some(n))
        })
        .await?;
        ensure!(
            versions < written,
            "{versions} versions of {written} writes"
        );
        // Write-set ids (for deduplication) are collected below the horizon too;
        // at most one write set per writer is in flight, so KEYS per seqno.
        let ids = wait_for("GC to bound the write-set ids", READY, || async {
            let n = count(&node, keycode::TXN)?;
            Ok((n <= bound).then_some(n))
        })
        .await?;
        eprintln!("{written} writes leave {versions} versions and {ids} write-set ids");
        // The log was snapshotted and purged too.
        wait_for("a log snapshot and purge", READY, || async {
            let m = node.raft_metrics();
            Ok((m.snapshot.is_some() && m.purged.is_some()).then_some(()))
        })
        .await?;

        // The old snapshot is below the horizon: reads and commits refuse it.
        match old_reader.get("k1").await {
            Err(Error::SnapshotTooOld(msg)) => ensure!(msg.contains("horizon"), "{msg}"),
            other => bail!("a read below the horizon gave {other:?}"),
        }
        old_writer.put("k0", "late")?;
        match old_writer.commit().await {
            Err(Error::Aborted { kind, .. }) if kind == "snapshot_too_old" => {}
            other => bail!("a commit from below the window gave {other:?}"),
        }
        // Every key still reads its latest value, in and out of transactions.
        let fresh = client.begin(Isolation::Serializable).await?;
        for k in 0..KEYS {
            let want = Some(format!("v{}", ROUNDS - 1).into_bytes());
            ensure!(fresh.get(format!("k{k}")).await? == want, "k{k}");
            let plain = client.get(format!("k{k}"), ReadConsistency::Linearizable);
            ensure!(plain.await?.map(|v| v.value) == want, "k{k}");
        }
        fresh.put("k0", "after")?;
        fresh.commit().await?;
        cluster.shutdown().await?;
        Ok(())
    }
}

mod counters {
    //! `Status` counts certification failures by reason, and the server's own
    //! retries of blind writes (`retry_autocommit`).

    use trireme_client::proto::{self, CommitRequest};
    use trireme_tests::inproc::InProcCluster;

    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn conflicts_are_counted_and_blind_writes_are_retried_by_the_server() -> Result<()> {
        let cluster = InProcCluster::start(3, |c| {
            patient(c);
            c.retry_autocommit = 1;
        })
        .await?;
        cluster.wait_leader(READY).await?;
        let clients: Vec<Client> = (1..=3)
            .map(|id| cluster.client(id))
            .collect::<Result<_>>()?;
        clients[0].put("x", "0").await?;

        // A write-write conflict between nodes 1 and 2.
        let t1 = clients[0].begin(Isolation::Snapshot).await?;
        let t2 = clients[1].begin(Isolation::Snapshot).await?;
        t1.put("x", "1")?;
        t2.put("x", "2")?;
        t1.commit().await?;
        let lost = t2.commit().await;
        ensure!(
            matches!(&lost, Err(e @ Error::Aborted { kind, .. }) if e.is_conflict() && kind == "write_conflict"),
            "{lost:?}"
        );
        // Every node certifies every write set, so every node counts the abort.
        for (i, client) in clients.iter().enumerate() {
            wait_for("the abort to be counted", READY, || async {
                let s = client.status().await?;
                let by_reason = s.cert_failures_by_reason.get("write_conflict").copied();
                Ok((s.cert_failures >= 1 && by_reason >= Some(1)).then_some(()))
            })
            .await
            .with_context(|| format!("node {}", i + 1))?;
        }

        // A blind write with a stale snapshot: y is written after it.
        let before = clients[1].status().await?.server_retries;
        let old = clients[1]
            .begin(Isolation::Snapshot)
            .await?
            .snapshot()
            .context("a begun transaction's snapshot")?;
        clients[2].put("y", "a").await?;
        let request = |server_retry| CommitRequest {
            snapshot: Some(old),
            isolation: proto::Isolation::Snapshot as i32,
            mutations: vec![proto::Mutation {
                key: b"y".to_vec(),
                value: b"b".to_vec(),
                delete: false,
                lease: 0,
            }],
            server_retry,
            ..Default::default()
        };
        // Without server retry, it loses.
        let refused = clients[1].commit(request(false)).await;
        ensure!(matches!(&refused, Err(e) if e.is_conflict()), "{refused:?}");
        ensure!(clients[1].status().await?.server_retries == before);
        // With it, the server retries it from a fresh snapshot and it commits.
        clients[1].commit(request(true)).await?;
        let after = clients[1].status().await?.server_retries;
        ensure!(after > before, "server_retries {before} -> {after}");
        let y = clients[0].get("y", ReadConsistency::Linearizable).await?;
        ensure!(y.map(|v| v.value) == Some(b"b".to_vec()));
        // A write set that read something is never retried by the server.
        let reader = clients[1].begin(Isolation::Serializable).await?;
        reader.get("y").await?;
        clients[0].put("y", "c").await?;
        reader.put("y", "d")?;
        ensure!(matches!(reader.commit().await, Err(e) if e.is_conflict()));
        ensure!(clients[1].status().await?.server_retries == after);
        converged(&clients, READY).await?;
        cluster.shutdown().await?;
        Ok(())
    }
}

mod bank {
    //! The bank workload on 3 real server processes: transfers between 10
    //! accounts through every node, each writing a unique ledger key, and
    //! snapshot reads of all accounts meanwhile. Every read sums to the total,
    //! no balance goes negative, and at the end every node's balances are the
    //! initial ones plus the transfers its ledger records.

    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;

    const ACCOUNTS: usize = 10;
    const INITIAL: i64 = 100;
    const TOTAL: i64 = ACCOUNTS as i64 * INITIAL;
    const WORKERS: u64 = 6;
    const READERS: u64 = 2;
    /// How long transfers run.
    const TRAFFIC: Duration = Duration::from_secs(4);

    fn account(i: usize) -> String {
        format!("acct/{i}")
    }

    fn balance(value: Option<Vec<u8>>, key: &str) -> trireme_client::Result<i64> {
        let value = value.ok_or_else(|| Error::Other(format!("account {key} is missing")))?;
        text(&value)
            .parse()
            .map_err(|_| Error::Other(format!("account {key} holds {:?}", text(&value))))
    }

    /// What one worker did.
    #[derive(Default)]
    struct Log {
        /// Ledger keys of acknowledged transfers, with `from to amount`.
        acked: BTreeMap<String, String>,
        /// Ledger keys of transfers whose outcome is unknown.
        unknown: BTreeMap<String, String>,
        /// Ledger keys of transfers that gave up after conflicts.
        failed: BTreeSet<String>,
    }

    async fn transfers(client: Client, worker: u64, isolation: Isolation) -> Result<Log> {
        let mut rng = StdRng::seed_from_u64(worker);
        let mut log = Log::default();
        let start = Instant::now();
        let mut i = 0;
        while start.elapsed() < TRAFFIC {
            i += 1;
            let from = rng.gen_range(0..ACCOUNTS);
            let to = (from + rng.gen_range(1..ACCOUNTS)) % ACCOUNTS;
            let amount: i64 = rng.gen_range(1..=30);
            let ledger = format!("ledger/w{worker}-{i:05}");
            let entry = format!("{from} {to} {amount}");
            let result = client
                .transaction(isolation, |tx| {
                    let (ledger, entry) = (ledger.clone(), entry.clone());
                    async move {
                        let (a, b) = (account(from), account(to));
                        let have = balance(tx.get(&a).await?, &a)?;
                        let other = balance(tx.get(&b).await?, &b)?;
                        if have < amount {
                            return Ok(false);
                        }
                        tx.put(a, (have - amount).to_string())?;
                        tx.put(b, (other + amount).to_string())?;
                        tx.put(ledger, entry)?;
                        Ok(true)
                    }
                })
                .await;
            match result {
                Ok((true, _)) => {
                    log.acked.insert(ledger, entry);
                }
                Ok((false, _)) => {}
                Err(Error::Indeterminate(why)) => {
                    eprintln!("transfer {ledger}: outcome unknown: {why}");
                    log.unknown.insert(ledger, entry);
                }
                // Gave up after conflicts, or no node took it: nothing applied.
                Err(e) if e.is_transaction_retryable() || matches!(e, Error::Unavailable(_)) => {
                    log.failed.insert(ledger);
                }
                Err(e) => return Err(e).context(format!("transfer {ledger}")),
            }
        }
        Ok(log)
    }

    /// Read-only transactions over all accounts until `stop`; returns how many.
    async fn audits(client: Client, isolation: Isolation, stop: Arc<AtomicBool>) -> Result<u64> {
        let mut audits = 0;
        while !stop.load(Ordering::Relaxed) {
            let audit = async {
                let tx = client.begin(isolation).await?;
                let mut balances = Vec::new();
                if audits % 2 == 0 {
                    for i in 0..ACCOUNTS {
                        balances.push(balance(tx.get(account(i)).await?, &account(i))?);
                    }
                } else {
                    for (k, v) in tx.scan("acct/").await? {
                        balances.push(balance(Some(v), &text(&k))?);
                    }
                }
                tx.commit().await?;
                trireme_client::Result::Ok(balances)
            };
            let balances = match audit.await {
                Ok(balances) => balances,
                // No node took a read: try again.
                Err(Error::Unavailable(_)) => continue,
                Err(e) => return Err(e.into()),
            };
            ensure!(
                balances.len() == ACCOUNTS
                    && balances.iter().sum::<i64>() == TOTAL
                    && balances.iter().all(|b| *b >= 0),
                "an audit at one snapshot saw {balances:?}"
            );
            audits += 1;
        }
        Ok(audits)
    }

    async fn bank(isolation: Isolation) -> Result<()> {
        let cluster = Cluster::start(3, &[])?;
        cluster.wait_leader(&[1, 2, 3], READY).await?;
        cluster
            .client(1)?
            .transaction(Isolation::Serializable, |tx| async move {
                for i in 0..ACCOUNTS {
                    tx.put(account(i), INITIAL.to_string())?;
                }
                Ok(())
            })
            .await?;

        let stop = Arc::new(AtomicBool::new(false));
        let readers: Vec<_> = (0..READERS)
            .map(|r| {
                let client = cluster.client(r % 3 + 1)?;
                Ok(tokio::spawn(audits(client, isolation, stop.clone())))
            })
            .collect::<Result<_>>()?;
        let workers: Vec<_> = (0..WORKERS)
            .map(|w| {
                Ok(tokio::spawn(transfers(
                    cluster.client(w % 3 + 1)?,
                    w,
                    isolation,
                )))
            })
            .collect::<Result<_>>()?;
        let mut log = Log::default();
        for w in workers {
            let l = w.await?.with_context(|| cluster.logs())?;
            log.acked.extend(l.acked);
            log.unknown.extend(l.unknown);
            log.failed.extend(l.failed);
        }
        stop.store(true, Ordering::Relaxed);
        let mut audited = 0;
        for r in readers {
            audited += r.await?.with_context(|| cluster.logs())?;
        }
        eprintln!(
            "{isolation}: {} transfers acknowledged, {} unknown, {} gave up; {audited} audits",
            log.acked.len(),
            log.unknown.len(),
            log.failed.len()
        );
        ensure!(log.acked.len() >= 10, "too few transfers to prove anything");
        ensure!(audited > 0, "no audit ran");

        let clients: Vec<Client> = (1..=3)
            .map(|id| cluster.client_only(id))
            .collect::<Result<_>>()?;
        converged(&clients, READY)
            .await
            .with_context(|| cluster.logs())?;
        for (n, client) in clients.iter().enumerate() {
            // Converged: each node's own applied state is the final state.
            let accounts = scan_all(client, "acct/", ReadConsistency::Local).await?;
            let ledger = scan_all(client, "ledger/", ReadConsistency::Local).await?;
            let balances: Vec<i64> = accounts
                .values()
                .map(|v| v.parse())
                .collect::<Result<_, _>>()?;
            ensure!(
                balances.len() == ACCOUNTS
                    && balances.iter().sum::<i64>() == TOTAL
                    && balances.iter().all(|b| *b >= 0),
                "node {}: balances {balances:?}",
                n + 1
            );
            for key in log.acked.keys() {
                ensure!(
                    ledger.contains_key(key),
                    "node {}: acknowledged {key} is missing",
                    n + 1
                );
            }
            // Replaying the ledger from the initial balances gives the balances.
            let mut replay = [INITIAL; ACCOUNTS];
            for (key, entry) in &ledger {
                let invoked = log.acked.get(key).or_else(|| log.unknown.get(key));
                ensure!(
                    invoked == Some(entry),
                    "node {}: ledger {key} = {entry:?} belongs to no transfer that may have committed",
                    n + 1
                );
                let f: Vec<i64> = entry.split(' ').map(str::parse).collect::<Result<_, _>>()?;
                replay[f[0] as usize] -= f[2];
                replay[f[1] as usize] += f[2];
            }
            ensure!(
                replay.as_slice() == balances.as_slice(),
                "node {}: balances {balances:?}, ledger replay {replay:?}",
                n + 1
            );
        }
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn serializable_transfers_keep_the_total_on_every_node() -> Result<()> {
        bank(Isolation::Serializable).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn snapshot_transfers_writing_both_accounts_keep_the_total() -> Result<()> {
        bank(Isolation::Snapshot).await
    }
}

mod counter {
    //! One counter incremented from every node at once (SNAPSHOT: read, then
    //! write back): first-committer-wins must lose no acknowledged increment.

    use super::*;

    const WORKERS: u64 = 6;
    const TRAFFIC: Duration = Duration::from_secs(4);

    /// Acknowledged, unknown and conflicting increments of one worker.
    async fn increments(client: Client) -> Result<(u64, u64, u64)> {
        let (mut acked, mut unknown, mut conflicts) = (0, 0, 0);
        let start = Instant::now();
        while start.elapsed() < TRAFFIC {
            let read = async {
                let tx = client.begin(Isolation::Snapshot).await?;
                let value = tx.get("counter").await?;
                trireme_client::Result::Ok((tx, value))
            };
            let (tx, n): (_, u64) = match read.await {
                Ok((tx, Some(v))) => (tx, text(&v).parse()?),
                Ok((_, None)) => bail!("the counter is missing"),
                Err(Error::Unavailable(_)) => continue,
                Err(e) => return Err(e.into()),
            };
            tx.put("counter", (n + 1).to_string())?;
            match tx.commit().await {
                Ok(_) => acked += 1,
                Err(e) if e.is_conflict() => conflicts += 1,
                Err(Error::Indeterminate(why)) => {
                    eprintln!("increment: outcome unknown: {why}");
                    unknown += 1;
                }
                // Not taken: nothing applied.
                Err(Error::Unavailable(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok((acked, unknown, conflicts))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_increments_from_every_node_lose_nothing() -> Result<()> {
        let cluster = Cluster::start(3, &[])?;
        cluster.wait_leader(&[1, 2, 3], READY).await?;
        cluster.client(1)?.put("counter", "0").await?;
        let workers: Vec<_> = (0..WORKERS)
            .map(|w| Ok(tokio::spawn(increments(cluster.client_only(w % 3 + 1)?))))
            .collect::<Result<_>>()?;
        let (mut acked, mut unknown, mut conflicts) = (0, 0, 0);
        for w in workers {
            let (a, u, c) = w.await?.with_context(|| cluster.logs())?;
            (acked, unknown, conflicts) = (acked + a, unknown + u, conflicts + c);
        }
        let value: u64 = match cluster
            .client(2)?
            .get("counter", ReadConsistency::Linearizable)
            .await?
        {
            Some(v) => text(&v.value).parse()?,
            None => bail!("the counter is missing"),
        };
        eprintln!(
            "counter {value}: {acked} acknowledged, {unknown} unknown, {conflicts} conflicts"
        );
        ensure!(
            acked <= value && value <= acked + unknown,
            "counter {value}, but {acked} increments were acknowledged and {unknown} unknown"
        );
        ensure!(
            acked > 0 && conflicts > 0,
            "no contention: {acked} acked, {conflicts} conflicts"
        );
        let clients: Vec<Client> = (1..=3)
            .map(|id| cluster.client_only(id))
            .collect::<Result<_>>()?;
        converged(&clients, READY).await?;
        // Every node certified every write set: each counted every abort.
        for c in &clients {
            let s = c.status().await?;
            let by_reason = s.cert_failures_by_reason.get("write_conflict").copied();
            ensure!(
                s.cert_failures >= conflicts && by_reason.unwrap_or(0) > 0,
                "node {} counted {} failures ({by_reason:?} write conflicts), clients saw {conflicts}",
                s.node_id,
                s.cert_failures
            );
        }
        Ok(())
    }
}
