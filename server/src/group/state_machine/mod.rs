//! The replicated state machine: certifies each committed write set in log
//! order and applies the winners to MVCC storage.
//!
//! One `apply` call (a run of committed entries) becomes one atomic engine
//! batch: the versions of every committed write set, the write-set ids (for
//! deduplication), the applied log id and the membership. Only then does the
//! watermark advance and the origin's waiters learn their verdicts, so a
//! reader never sees part of a batch.
//!
//! A failure here (storage I/O, undecodable data) is not a client error: it is
//! returned to openraft as a `StorageError`, which stops the node. Turning it
//! into a verdict would let replicas diverge.

//!
//! The modules: this file applies entries; `snapshots` builds and installs
//! snapshots; `dedup` remembers recent write-set ids.

mod dedup;
mod snapshots;

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Seek;
use std::sync::Arc;

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{EntryPayload, SnapshotMeta, StorageIOError};
use tokio::io::AsyncWriteExt;
use tokio::sync::Mutex;

use super::applied::Applied;
use super::params::{ClusterParams, ParamsChange, MIN_CERT_WINDOW};
use crate::blocking::Blocking;
use crate::certify::{Certifier, History, Verdict};
use crate::codec::{self, Tag};
use crate::error::{Error, Result};
use crate::raft::types::{
    Entry, LogId, Outcome, Request, Response, StorageError, StoredMembership, TypeConfig,
};
use crate::storage::{BatchOp, KeyMeta, Mvcc};
use crate::txn::{Key, KeyRange, Mutation, NodeId, Seqno, Value};

use dedup::RecentIds;
use snapshots::{install_stream, meta_of, SnapshotFiles, StoredSnapshot};
pub use snapshots::{write_stream, SnapshotBuilder};

const META_APPLIED: &str = "applied";
const META_MEMBERSHIP: &str = "membership";
const META_CHAIN: &str = "chain";
const META_DEPARTED: &str = "departed";
const META_PARAMS: &str = "params";
const META_FORMAT: &str = "format";
/// The applied log id and the chain in one key: what a restart resumes from.
/// Older stores have only `applied` and `chain`; a store where those are
/// ahead of it (written by an older build after this one) resumes from them.
const META_TAIL: &str = "tail";

/// Decodes store metadata `name`, which must hold a `tag` envelope.
fn meta<T: serde::de::DeserializeOwned>(mvcc: &Mvcc, name: &str, tag: Tag) -> Result<Option<T>> {
    match mvcc.meta(name)? {
        Some(raw) => Ok(Some(codec::decode(
            &raw,
            tag,
            &format!("store metadata {name:?}"),
        )?)),
        None => Ok(None),
    }
}

/// Extends the verdict hash chain by one write set's outcome. Every node that
/// applied the same log holds the same chain: comparing chains at equal seqnos
/// checks that every verdict was identical everywhere.
pub fn chain_step(chain: u64, seqno: Seqno, id: crate::txn::TxnId, outcome: &Outcome) -> u64 {
    let code: u8 = match outcome {
        Outcome::Certified(_, Verdict::Commit) => 0,
        Outcome::Certified(_, Verdict::Abort(a)) => 1 + a.kind_index() as u8,
        Outcome::Duplicate(_) => 200,
    };
    let mut buf = [0u8; 8 + 8 + 16 + 1];
    buf[..8].copy_from_slice(&chain.to_le_bytes());
    buf[8..16].copy_from_slice(&seqno.to_le_bytes());
    buf[16..32].copy_from_slice(&id.0.to_le_bytes());
    buf[32] = code;
    xxhash_rust::xxh3::xxh3_64(&buf)
}

/// The openraft state machine over [`Mvcc`].
pub struct StateMachine {
    mvcc: Mvcc,
    /// The certifier in force: the cluster's parameters', or [`MIN_CERT_WINDOW`]'s before them.
    certifier: Certifier,
    /// The replicated cluster parameters (`None`: not bootstrapped yet).
    params: Option<ClusterParams>,
    /// This node's own `cert_window` flag, only compared with the cluster's.
    configured_window: u64,
    applied_id: Option<LogId>,
    membership: StoredMembership,
    /// Verdict hash chain at `applied_id`.
    chain: u64,
    /// Nodes that left for good (replicated, so every node refuses their return).
    departed: BTreeSet<NodeId>,
    shared: Arc<Applied>,
    snapshot: Arc<std::sync::Mutex<Option<StoredSnapshot>>>,
    /// Held by garbage collection and by snapshot building: a snapshot at log
    /// id `L` needs every version visible at `L`, which GC must not remove.
    gc_lock: Arc<Mutex<()>>,
    files: Arc<SnapshotFiles>,
    /// Where certification, applying and snapshot encoding run.
    blocking: Blocking,
    /// The applied index the store has made durable (the log's purge fence).
    durable: Option<Arc<std::sync::atomic::AtomicU64>>,
    recent: RecentIds,
}

fn io_err(e: impl std::fmt::Display) -> StorageError {
    StorageError::IO {
        source: StorageIOError::write_state_machine(&std::io::Error::other(e.to_string())),
    }
}

impl StateMachine {
    /// Opens the state machine over `mvcc`, resuming from its stored applied
    /// log id. `configured` is this node's own configuration: the cluster's
    /// replicated parameters decide verdicts, and a difference is logged.
    /// `snapshot_path` keeps the last snapshot across restarts (`None`: a
    /// temporary directory).
    pub fn open(
        mvcc: Mvcc,
        configured: Certifier,
        snapshot_path: Option<std::path::PathBuf>,
    ) -> Result<(StateMachine, Arc<Applied>)> {
        // Checked first: a store written by a newer version is refused as a whole.
        let _format: Option<u16> = meta(&mvcc, META_FORMAT, Tag::MetaFormat)?;
        let applied_id: Option<LogId> =
            meta(&mvcc, META_APPLIED, Tag::MetaApplied)?.unwrap_or_default();
        let chain: u64 = meta(&mvcc, META_CHAIN, Tag::MetaChain)?.unwrap_or(0);
        // The tail is written before `applied` and `chain` (see `meta_ops`):
        // when they name the same entry or an older one, the tail is right.
        let tail: Option<(Option<LogId>, u64)> = meta(&mvcc, META_TAIL, Tag::MetaTail)?;
        let (applied_id, chain) = match tail {
            Some((tail_id, tail_chain)) if tail_id >= applied_id => (tail_id, tail_chain),
            _ => (applied_id, chain),
        };
        let membership: StoredMembership =
            meta(&mvcc, META_MEMBERSHIP, Tag::MetaMembership)?.unwrap_or_default();
        let files = Arc::new(SnapshotFiles::open(snapshot_path.as_deref())?);
        let current = files.current();
        let snapshot = if current.exists() {
            let header = super::snapshot::read_header(&current)?;
            Some(StoredSnapshot {
                meta: meta_of(&header),
                path: current,
            })
        } else {
            None
        };
        let departed: BTreeSet<NodeId> =
            meta(&mvcc, META_DEPARTED, Tag::MetaDeparted)?.unwrap_or_default();
        let params: Option<ClusterParams> = meta(&mvcc, META_PARAMS, Tag::MetaParams)?;
        let certifier = effective_certifier(params.as_ref());
        let applied = applied_id.map_or(0, |l| l.index);
        let shared = Arc::new(Applied::new(applied));
        shared.set_departed(departed.clone());
        shared.set_params(params);
        shared.advance(applied, chain);
        // GC before the restart may have removed versions below this.
        shared.raise_horizon(certifier.horizon(applied));
        let sm = StateMachine {
            mvcc,
            certifier,
            params,
            configured_window: configured.window,
            applied_id,
            membership,
            chain,
            departed,
            shared: shared.clone(),
            snapshot: Arc::new(std::sync::Mutex::new(snapshot)),
            gc_lock: Arc::new(Mutex::new(())),
            files,
            blocking: Blocking::default(),
            durable: None,
            recent: RecentIds::new(applied + 1),
        };
        sm.compare_with_configuration();
        Ok((sm, shared))
    }

    /// Logs a warning when this node's own flag differs from the cluster's value.
    fn compare_with_configuration(&self) {
        if let Some(p) = &self.params {
            if p.cert_window != self.configured_window {
                tracing::warn!(
                    configured = self.configured_window,
                    cluster = p.cert_window,
                    "this node was started with cert_window {} but the cluster's is {} \
                     (set at seqno {}): following the cluster; change it with \
                     `trireme config set cert_window N`",
                    self.configured_window,
                    p.cert_window,
                    p.since
                );
            }
        }
    }

    /// Applies a change of the cluster parameters at `seqno` (ignored, the
    /// same way on every node, when it is a late bootstrap or invalid).
    fn apply_params(&mut self, change: &ParamsChange, seqno: Seqno) {
        match ClusterParams::after(self.params.as_ref(), change, seqno) {
            Some(p) => {
                tracing::info!(
                    seqno,
                    cert_window = p.cert_window,
                    bootstrap = change.bootstrap,
                    "cluster parameters set"
                );
                self.params = Some(p);
                self.certifier = p.certifier();
                self.shared.set_params(self.params);
                self.compare_with_configuration();
            }
            None => tracing::debug!(seqno, ?change, "cluster parameter change ignored"),
        }
    }

    /// Sets where blocking work runs (default: tokio's blocking pool).
    pub fn set_blocking(&mut self, blocking: Blocking) {
        self.blocking = blocking;
    }

    /// Publishes, in `fence`, the applied index the store has made durable:
    /// what it holds on disk now, then each snapshot built or installed (both
    /// sync the store). The Raft log never purges past it.
    pub fn set_durable_fence(&mut self, fence: Arc<std::sync::atomic::AtomicU64>) {
        fence.store(
            self.applied_id.map_or(0, |l| l.index),
            std::sync::atomic::Ordering::Release,
        );
        self.durable = Some(fence);
    }

    /// The lock garbage collection holds while it runs.
    pub fn gc_lock(&self) -> Arc<Mutex<()>> {
        self.gc_lock.clone()
    }

    /// The store's metadata writes, the tail first: an apply written in
    /// order (see `apply_entries`) that a crash cut short keeps either the
    /// tail of the run before (the run is applied again) or this one, with
    /// every data write before it.
    fn meta_ops(&self) -> Result<Vec<BatchOp>> {
        let mut ops = vec![
            Mvcc::meta_op(
                META_TAIL,
                codec::encode(Tag::MetaTail, &(self.applied_id, self.chain))?,
            ),
            Mvcc::meta_op(
                META_FORMAT,
                codec::encode(Tag::MetaFormat, &codec::FORMAT_VERSION)?,
            ),
            Mvcc::meta_op(
                META_APPLIED,
                codec::encode(Tag::MetaApplied, &self.applied_id)?,
            ),
            Mvcc::meta_op(
                META_MEMBERSHIP,
                codec::encode(Tag::MetaMembership, &self.membership)?,
            ),
            Mvcc::meta_op(META_CHAIN, codec::encode(Tag::MetaChain, &self.chain)?),
            Mvcc::meta_op(
                META_DEPARTED,
                codec::encode(Tag::MetaDeparted, &self.departed)?,
            ),
        ];
        if let Some(p) = &self.params {
            ops.push(Mvcc::meta_op(
                META_PARAMS,
                codec::encode(Tag::MetaParams, p)?,
            ));
        }
        Ok(ops)
    }

    /// Certifies and applies a run of committed entries; one response each.
    pub(crate) fn apply_entries(&mut self, entries: Vec<Entry>) -> Result<Vec<Response>> {
        // The store holds what was applied at or below `base`; a write above
        // it can only be what a crash left of an earlier, in-order write of
        // this same run (see the end). Every read here stops at `base`, so
        // applying the run again computes the same verdicts and writes.
        let base = self.applied_id.map_or(0, |l| l.index);
        // Membership, departure and parameter changes write metadata outside
        // the tail: a run that holds one is written atomically.
        let mut atomic = false;
        let mut responses = Vec::with_capacity(entries.len());
        let mut pending: Pending = BTreeMap::new();
        let mut ops: Vec<BatchOp> = Vec::new();
        // Ids applied earlier in this same run (not yet in the engine).
        let mut seen: BTreeMap<crate::txn::TxnId, Seqno> = BTreeMap::new();
        // The committed changes, for watchers (collected only when there are any).
        let mut changes = self.shared.hub().wants_events().then(Vec::new);
        for entry in entries {
            let seqno = entry.log_id.index;
            if let Some(prev) = self.applied_id {
                assert!(
                    seqno > prev.index,
                    "apply out of order: {seqno} after {}",
                    prev.index
                );
            }
            let mut outcomes = Vec::new();
            match entry.payload {
                EntryPayload::Blank => {}
                EntryPayload::Membership(m) => {
                    atomic = true;
                    self.membership = StoredMembership::new(Some(entry.log_id), m);
                }
                EntryPayload::Normal(Request::Depart(id)) => {
                    atomic = true;
                    tracing::info!(node = id, seqno, "node departed the cluster for good");
                    self.departed.insert(id);
                    self.shared.set_departed(self.departed.clone());
                }
                EntryPayload::Normal(Request::Params(change)) => {
                    atomic = true;
                    self.apply_params(&change, seqno);
                }
                EntryPayload::Normal(Request::Batch(write_sets)) => {
                    self.shared
                        .stats
                        .batches
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    self.shared.stats.batch_sizes.observe(write_sets.len());
                    let horizon = self.certifier.horizon(seqno);
                    for ws in write_sets {
                        let dup = match seen.get(&ws.id) {
                            Some(s) => Some(*s),
                            None => self
                                .recent
                                .lookup(ws.id, horizon, &self.mvcc)?
                                .filter(|first| *first <= base),
                        };
                        let outcome = match dup.filter(|s| *s >= horizon) {
                            Some(first) => Outcome::Duplicate(first),
                            None => {
                                let view = Overlay::new(&self.mvcc, &pending, base);
                                let verdict = self.certifier.certify(&ws, seqno, &view);
                                view.result()?;
                                if verdict == Verdict::Commit {
                                    for m in &ws.mutations {
                                        self.apply_mutation(
                                            m,
                                            seqno,
                                            base,
                                            &mut pending,
                                            &mut ops,
                                            changes.as_mut(),
                                        )?;
                                    }
                                }
                                ops.push(Mvcc::txn_op(ws.id, seqno));
                                crate::crash_point!("crash-mid-certify");
                                seen.insert(ws.id, seqno);
                                Outcome::Certified(seqno, verdict)
                            }
                        };
                        tracing::debug!(seqno, txn = %ws.id, ?outcome, "certified");
                        self.chain = chain_step(self.chain, seqno, ws.id, &outcome);
                        self.shared.count(&outcome);
                        outcomes.push((ws.id, outcome));
                    }
                }
            }
            self.applied_id = Some(entry.log_id);
            responses.push(Response { seqno, outcomes });
        }
        ops.extend(self.meta_ops()?);
        crate::crash_point!("crash-after-certify");
        fail::fail_point!("apply-before-write", |_| Err(Error::Storage(
            "failpoint apply-before-write".into()
        )));
        // In order, not as one atomic batch (the cost of which sled pays in
        // IO-thread wake-ups, see `Engine::apply_in_order`): the tail comes
        // after every data write, so a crash keeps either this run whole or
        // the previous tail, and the run is applied again from the log,
        // which is never purged past what `Mvcc::sync` made durable.
        if atomic {
            self.mvcc.apply(ops)?;
        } else {
            self.mvcc.apply_in_order(ops)?;
        }
        fail::fail_point!("apply-after-write-before-ack");
        crate::crash_point!("crash-after-apply");
        let applied = self.applied_id.map_or(0, |l| l.index);
        let mut fresh: Vec<_> = seen.into_iter().collect();
        fresh.sort_unstable_by_key(|(_, seqno)| *seqno);
        for (id, seqno) in fresh {
            self.recent.insert(id, seqno);
        }
        self.recent.trim(self.certifier.horizon(applied));
        // In storage now: watchers may see it (before readers do, harmlessly).
        self.shared.hub().publish(applied, changes);
        self.shared.advance(applied, self.chain);
        // Only the origin registered a waiter; elsewhere this finds none.
        for (id, outcome) in responses.iter().flat_map(|r| r.outcomes.iter()) {
            self.shared.resolve(*id, Ok(outcome.clone()));
        }
        Ok(responses)
    }
}

/// This run's writes not yet in storage: key -> (seqno, value or tombstone, metadata).
type Pending = BTreeMap<Key, (Seqno, Option<Value>, KeyMeta)>;

impl StateMachine {
    /// Adds one committed mutation at `seqno` to the run: its version with
    /// the key's metadata (computed from the key's previous version, which
    /// may be earlier in this run), and, when the key's lease changes, the
    /// lease index entries (`lease::keys::attached`) it moves.
    fn apply_mutation(
        &self,
        m: &Mutation,
        seqno: Seqno,
        base: Seqno,
        pending: &mut Pending,
        ops: &mut Vec<BatchOp>,
        changes: Option<&mut Vec<crate::watch::Event>>,
    ) -> Result<()> {
        let (key, value, lease) = match m {
            Mutation::Put { key, value, lease } => (key, Some(value), *lease),
            Mutation::Delete { key } => (key, None, 0),
        };
        let prev: Option<KeyMeta> = match pending.get(key) {
            Some((_, v, meta)) => v.as_ref().map(|_| *meta),
            None => self
                .mvcc
                .newest_meta(key, base)?
                .and_then(|(_, v)| v.map(|(_, meta)| meta)),
        };
        let meta = match (value, prev) {
            (None, _) => KeyMeta::default(),
            (Some(_), Some(p)) => KeyMeta {
                create_seqno: p.create_seqno,
                modifications: p.modifications.saturating_add(1),
                lease,
            },
            (Some(_), None) => KeyMeta {
                lease,
                ..KeyMeta::created(seqno)
            },
        };
        ops.push(Mvcc::version_op_meta(
            key,
            seqno,
            value.map(Vec::as_slice),
            &meta,
        ));
        let prev_lease = prev.map_or(0, |p| p.lease);
        if prev_lease != meta.lease {
            if prev_lease != 0 {
                let entry = crate::lease::keys::attached(prev_lease, key);
                ops.push(Mvcc::version_op(&entry, seqno, None));
                pending.insert(entry, (seqno, None, KeyMeta::default()));
            }
            if meta.lease != 0 {
                let entry = crate::lease::keys::attached(meta.lease, key);
                ops.push(Mvcc::version_op(&entry, seqno, Some(&[])));
                pending.insert(entry, (seqno, Some(Vec::new()), KeyMeta::created(seqno)));
            }
        }
        if let Some(c) = changes {
            c.push(crate::watch::Event {
                seqno,
                key: key.clone(),
                value: value.cloned(),
                meta,
            });
        }
        pending.insert(key.clone(), (seqno, value.cloned(), meta));
        Ok(())
    }
}

/// The history certification reads: storage plus this run's pending writes.
/// Storage errors are remembered and surface from [`Overlay::result`], after
/// which the verdict is discarded.
struct Overlay<'a> {
    mvcc: &'a Mvcc,
    pending: &'a Pending,
    /// The store is read at or below this seqno (the run's `base`).
    base: Seqno,
    error: RefCell<Option<Error>>,
}

impl<'a> Overlay<'a> {
    fn new(mvcc: &'a Mvcc, pending: &'a Pending, base: Seqno) -> Self {
        Overlay {
            mvcc,
            pending,
            base,
            error: RefCell::new(None),
        }
    }

    fn keep<T: Default>(&self, r: Result<T>) -> T {
        r.unwrap_or_else(|e| {
            self.error.borrow_mut().get_or_insert(e);
            T::default()
        })
    }

    fn result(self) -> Result<()> {
        match self.error.into_inner() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

impl History for Overlay<'_> {
    fn last_write(&self, key: &[u8]) -> Option<Seqno> {
        match self.pending.get(key) {
            Some((s, _, _)) => Some(*s),
            None => self.keep(self.mvcc.last_write(key, self.base)),
        }
    }

    fn current(&self, key: &[u8]) -> Option<(Seqno, Value)> {
        match self.pending.get(key) {
            Some((s, v, _)) => v.clone().map(|v| (*s, v)),
            None => self.keep(self.mvcc.get(key, self.base)),
        }
    }

    fn first_write_in_range_after(&self, range: &KeyRange, after: Seqno) -> Option<(Key, Seqno)> {
        let upper = match &range.end {
            Some(e) => std::ops::Bound::Excluded(e.clone()),
            None => std::ops::Bound::Unbounded,
        };
        // An inverted range holds no key (and would panic `BTreeMap::range`).
        if range.end.as_ref().is_some_and(|e| *e < range.start) {
            return None;
        }
        let from_pending = self
            .pending
            .range((std::ops::Bound::Included(range.start.clone()), upper))
            .find(|(_, (s, _, _))| *s > after)
            .map(|(k, (s, _, _))| (k.clone(), *s));
        let from_store = self.keep(
            self.mvcc
                .first_write_in_range_after(range, after, self.base),
        );
        match (from_pending, from_store) {
            (Some(p), Some(s)) if s.0 < p.0 => Some(s),
            (Some(p), _) => Some(p),
            (None, s) => s,
        }
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        Ok((self.applied_id, self.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        // Certification and sled calls block: a large run goes off the async
        // workers. A small one is applied here, see INLINE_APPLY_MUTATIONS; a
        // panic becomes an error that stops the node, as it does on the pool.
        // Under simulation everything runs here and a panic unwinds, as
        // `Blocking::Inline` does elsewhere.
        match self.blocking {
            Blocking::Inline => return self.apply_entries(entries).map_err(io_err),
            Blocking::Pool if is_small_run(&entries) => {
                let run = std::panic::AssertUnwindSafe(|| self.apply_entries(entries));
                return match std::panic::catch_unwind(run) {
                    Ok(res) => res.map_err(io_err),
                    Err(_) => Err(io_err("the state machine panicked while applying")),
                };
            }
            Blocking::Pool => {}
        }
        let mut this = std::mem::replace(self, self.placeholder());
        let (this, res) = Blocking::run(self.blocking, move || {
            let res = this.apply_entries(entries);
            (this, res)
        })
        .await
        .map_err(io_err)?;
        *self = this;
        res.map_err(io_err)
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        let guard = self.gc_lock.clone().lock_owned().await;
        SnapshotBuilder {
            mvcc: self.mvcc.clone(),
            chain: self.chain,
            departed: self.departed.clone(),
            params: self.params,
            applied_id: self.applied_id,
            membership: self.membership.clone(),
            snapshot: self.snapshot.clone(),
            files: self.files.clone(),
            blocking: self.blocking,
            durable: self.durable.clone(),
            _gc_guard: guard,
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<tokio::fs::File>, StorageError> {
        let path = self.files.scratch("recv");
        let file = tokio::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .await
            .map_err(|e| io_err(format!("creating {}: {e}", path.display())))?;
        // Only the newest transfer can complete: an abandoned one goes.
        let old = self
            .files
            .receiving
            .lock()
            .expect("receiving lock")
            .replace(path);
        if let Some(old) = old {
            let _ = std::fs::remove_file(old);
        }
        Ok(Box::new(file))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, openraft::BasicNode>,
        snapshot: Box<tokio::fs::File>,
    ) -> Result<(), StorageError> {
        let mut file = *snapshot;
        file.flush()
            .await
            .map_err(|e| io_err(format!("received snapshot: {e}")))?;
        let file = file.into_std().await;
        // `None`: not a transfer `begin_receiving_snapshot` started (a
        // snapshot handed to openraft whole): copied into a file of our own.
        let received = self.files.receiving.lock().expect("receiving lock").take();
        let _gc = self.gc_lock.lock().await;
        let last = meta.last_log_id.map_or(0, |l| l.index);
        // The snapshot holds what is visible from its certification horizon on.
        self.shared.raise_horizon(self.certifier.horizon(last));
        let mvcc = self.mvcc.clone();
        let files = self.files.clone();
        let meta_owned = meta.clone();
        let mut next = self.placeholder();
        next.applied_id = meta.last_log_id;
        next.membership = meta.last_membership.clone();
        // Reading and writing the whole store blocks: keep it off the async workers.
        let res = Blocking::run(self.blocking, move || -> Result<_> {
            let (file, received) = match received {
                Some(path) => (file, path),
                None => {
                    let path = files.scratch("recv");
                    let mut from = file;
                    from.rewind()?;
                    let mut to = std::fs::File::create(&path)?;
                    std::io::copy(&mut from, &mut to)?;
                    to.sync_all()?;
                    (std::fs::File::open(&path)?, path)
                }
            };
            let header = install_stream(&mvcc, file, &mut next, "received snapshot", |h| {
                if h.last_log_id != meta_owned.last_log_id {
                    return Err(Error::InvalidData(format!(
                        "received snapshot: holds the state at {:?}, announced as {:?}",
                        h.last_log_id, meta_owned.last_log_id
                    )));
                }
                Ok(())
            })?;
            let path = files.promote(&received)?;
            Ok((
                StoredSnapshot {
                    meta: meta_owned,
                    path,
                },
                header,
            ))
        })
        .await
        .map_err(io_err)?;
        let (stored, header) = match res {
            Ok(done) => done,
            Err(e) => {
                tracing::error!(error = %e, "refusing a received snapshot");
                return Err(io_err(e));
            }
        };
        let (chain, departed, params) = (header.chain, header.departed, header.params);
        self.applied_id = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        self.chain = chain;
        self.departed = departed;
        self.params = params;
        self.certifier = effective_certifier(params.as_ref());
        self.shared.set_params(params);
        // ... by the snapshot's own parameters.
        self.shared.raise_horizon(self.certifier.horizon(last));
        self.compare_with_configuration();
        self.recent = RecentIds::new(last + 1);
        self.shared.set_departed(self.departed.clone());
        *self.snapshot.lock().expect("snapshot lock") = Some(stored);
        // The store was replaced: watchers catch up from it again.
        self.shared.hub().reset(last);
        self.shared
            .advance(self.applied_id.map_or(0, |l| l.index), self.chain);
        self.shared
            .stats
            .snapshots_received
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let Some(fence) = &self.durable {
            fence.fetch_max(
                meta.last_log_id.map_or(0, |l| l.index),
                std::sync::atomic::Ordering::AcqRel,
            );
        }
        tracing::info!(last_log_id = ?meta.last_log_id, "installed snapshot");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        // Opened under the lock: a build or install renames the file under it.
        let guard = self.snapshot.lock().expect("snapshot lock");
        let Some(stored) = guard.as_ref() else {
            return Ok(None);
        };
        let file = std::fs::File::open(&stored.path)
            .map_err(|e| io_err(format!("opening {}: {e}", stored.path.display())))?;
        Ok(Some(Snapshot {
            meta: stored.meta.clone(),
            snapshot: Box::new(tokio::fs::File::from_std(file)),
        }))
    }
}

impl StateMachine {
    /// A cheap stand-in used while the real state machine is on a blocking thread.
    fn placeholder(&self) -> StateMachine {
        StateMachine {
            mvcc: self.mvcc.clone(),
            certifier: self.certifier,
            params: self.params,
            configured_window: self.configured_window,
            applied_id: self.applied_id,
            membership: self.membership.clone(),
            chain: self.chain,
            departed: self.departed.clone(),
            shared: self.shared.clone(),
            snapshot: self.snapshot.clone(),
            gc_lock: self.gc_lock.clone(),
            files: self.files.clone(),
            blocking: self.blocking,
            durable: self.durable.clone(),
            recent: RecentIds::new(Seqno::MAX),
        }
    }
}

/// Most mutations in a run applied on the state machine's own task instead
/// of tokio's blocking pool. Certifying and writing a few mutations to sled's
/// page cache takes microseconds, while the trip to the pool and back costs
/// two thread wake-ups on the path of every acknowledgement, which a single
/// client waits for in full. A larger run (a busy node's batches) still goes
/// to the pool so that it cannot hold an async worker for long.
const INLINE_APPLY_MUTATIONS: usize = 16;

/// Whether `entries` hold only write sets, with at most
/// [`INLINE_APPLY_MUTATIONS`] mutations between them. Membership, departure
/// and parameter changes write atomically and go to the pool as before.
fn is_small_run(entries: &[Entry]) -> bool {
    let mut mutations = 0usize;
    for entry in entries {
        match &entry.payload {
            EntryPayload::Blank => {}
            EntryPayload::Normal(Request::Batch(write_sets)) => {
                mutations += write_sets
                    .iter()
                    .map(|ws| ws.mutations.len())
                    .sum::<usize>();
            }
            _ => return false,
        }
        if mutations > INLINE_APPLY_MUTATIONS {
            return false;
        }
    }
    true
}

/// The certifier `params` define, or the one in force before a cluster has them.
fn effective_certifier(params: Option<&ClusterParams>) -> Certifier {
    params.map_or_else(|| Certifier::new(MIN_CERT_WINDOW), |p| p.certifier())
}

#[cfg(test)]
mod tests {
    use openraft::RaftSnapshotBuilder;

    use super::*;
    use crate::storage::MemoryEngine;
    use crate::txn::{TxnId, WriteSet};

    fn entry(index: u64, write_sets: Vec<WriteSet>) -> Entry {
        Entry {
            log_id: LogId::new(openraft::CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(Request::Batch(write_sets)),
        }
    }

    /// Small runs of write sets are applied inline, larger ones and any
    /// run with a membership change go to the pool.
    #[test]
    fn only_small_runs_of_write_sets_are_applied_inline() {
        let puts = |n: u128| (0..n).map(|i| put(TxnId(i), "k")).collect::<Vec<_>>();
        assert!(is_small_run(&[]));
        assert!(is_small_run(&[entry(1, puts(1))]));
        let limit = INLINE_APPLY_MUTATIONS as u128;
        assert!(is_small_run(&[
            entry(1, puts(limit - 1)),
            entry(2, puts(1))
        ]));
        assert!(!is_small_run(&[entry(1, puts(limit)), entry(2, puts(1))]));
        assert!(!is_small_run(&[entry(1, puts(limit + 1))]));
        let membership = Entry {
            log_id: LogId::new(openraft::CommittedLeaderId::new(1, 1), 3),
            payload: EntryPayload::Membership(openraft::Membership::new(
                vec![BTreeSet::from([1])],
                None,
            )),
        };
        assert!(!is_small_run(&[entry(1, puts(1)), membership]));
    }

    fn put(id: TxnId, key: &str) -> WriteSet {
        let mut ws = WriteSet::blind(
            1,
            vec![Mutation::Put {
                key: key.as_bytes().to_vec(),
                value: b"v".to_vec(),
                lease: 0,
            }],
        );
        ws.id = id;
        ws
    }

    fn params_entry(index: u64, cert_window: u64, bootstrap: bool) -> Entry {
        Entry {
            log_id: LogId::new(openraft::CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(Request::Params(ParamsChange {
                cert_window,
                bootstrap,
            })),
        }
    }

    /// The window comes from the log, not from the node's flag: a bootstrap
    /// entry sets it once, a later change replaces it, both survive a
    /// restart, and a snapshot carries them to a node that installs it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn cert_window_follows_the_log_restarts_and_snapshots() {
        let mvcc = Mvcc::new(Arc::new(MemoryEngine::new()));
        // This node's flag says 5000; the cluster's entries decide.
        let (mut sm, applied) =
            StateMachine::open(mvcc.clone(), Certifier::new(5000), None).unwrap();
        assert_eq!(applied.params(), None);
        assert_eq!(applied.certifier().window, MIN_CERT_WINDOW);
        sm.apply_entries(vec![params_entry(1, 1000, true), params_entry(2, 40, true)])
            .unwrap();
        assert_eq!(applied.certifier().window, 1000, "the first bootstrap wins");
        sm.apply_entries(vec![params_entry(3, 20, false)]).unwrap();
        let p = applied.params().expect("set");
        assert_eq!((p.cert_window, p.since), (20, 3));

        // A write set 25 seqnos old is now too old.
        let mut ws = put(TxnId::random(), "k");
        ws.snapshot = Some(10);
        let r = sm.apply_entries(vec![entry(35, vec![ws])]).unwrap();
        assert!(
            matches!(
                outcome(&r),
                Outcome::Certified(
                    35,
                    Verdict::Abort(crate::certify::Abort::SnapshotTooOld { .. })
                )
            ),
            "{:?}",
            outcome(&r)
        );

        let (_, reopened) = StateMachine::open(mvcc.clone(), Certifier::new(5000), None).unwrap();
        assert_eq!(reopened.params(), Some(p), "kept across a restart");

        // A snapshot carries them to a fresh node.
        let mut builder = sm.get_snapshot_builder().await;
        let snap = builder.build_snapshot().await.unwrap();
        drop(builder);
        let other = Mvcc::new(Arc::new(MemoryEngine::new()));
        let (mut joiner, joined) = StateMachine::open(other, Certifier::new(700), None).unwrap();
        joiner
            .install_snapshot(&snap.meta, snap.snapshot)
            .await
            .unwrap();
        assert_eq!(joined.params(), Some(p));
        assert_eq!(joiner.certifier.window, 20);
    }

    /// Store metadata written by a newer format version is refused at open.
    #[test]
    fn metadata_of_a_newer_format_version_is_refused() {
        let mvcc = Mvcc::new(Arc::new(MemoryEngine::new()));
        let mut raw = codec::encode(Tag::MetaFormat, &4u16).unwrap();
        raw[4..6].copy_from_slice(&4u16.to_le_bytes());
        mvcc.apply(vec![Mvcc::meta_op(META_FORMAT, raw)]).unwrap();
        let err = StateMachine::open(mvcc, Certifier::new(16), None)
            .err()
            .expect("refused")
            .to_string();
        assert!(
            err.contains("\"format\"") && err.contains("format version 4"),
            "{err}"
        );
    }

    fn outcome(r: &[Response]) -> Outcome {
        r.last().expect("a response").outcomes[0].1.clone()
    }

    /// A scanned range that ends before it starts, after an earlier write set
    /// of the same run left a pending write (the case that used to panic in
    /// `BTreeMap::range`), aborts as `invalid_write_set` and changes nothing;
    /// the write sets around it are certified as usual.
    #[test]
    fn an_inverted_range_aborts_instead_of_panicking() {
        let mvcc = Mvcc::new(Arc::new(MemoryEngine::new()));
        let (mut sm, _) = StateMachine::open(mvcc.clone(), Certifier::new(16), None).unwrap();
        sm.apply_entries(vec![entry(1, vec![put(TxnId::random(), "a")])])
            .unwrap();
        let mut bad = put(TxnId::random(), "m");
        bad.snapshot = Some(1);
        bad.ranges = vec![KeyRange {
            start: b"z".to_vec(),
            end: Some(b"b".to_vec()),
        }];
        let after = put(TxnId::random(), "n");
        let r = sm
            .apply_entries(vec![entry(
                2,
                vec![put(TxnId::random(), "c"), bad.clone(), after],
            )])
            .unwrap();
        let verdicts: Vec<_> = r[0].outcomes.iter().map(|(_, o)| o.clone()).collect();
        assert_eq!(
            verdicts,
            vec![
                Outcome::Certified(2, Verdict::Commit),
                Outcome::Certified(
                    2,
                    Verdict::Abort(crate::certify::Abort::InvalidWriteSet {
                        reason: "read range 0 ends (\"b\") before it starts (\"z\")".into()
                    })
                ),
                Outcome::Certified(2, Verdict::Commit),
            ]
        );
        assert_eq!(mvcc.get(b"m", Seqno::MAX).unwrap(), None);
        assert_eq!(mvcc.get(b"n", Seqno::MAX).unwrap().map(|(s, _)| s), Some(2));
    }

    /// A resubmitted write set is ignored within the certification window:
    /// in the same run, in a later run, and after a restart (when the id is
    /// only in storage); beyond the window it is certified again.
    #[test]
    fn duplicates_are_ignored_within_the_window_across_restarts() {
        let mvcc = Mvcc::new(Arc::new(MemoryEngine::new()));
        let open = || {
            StateMachine::open(mvcc.clone(), Certifier::new(16), None)
                .unwrap()
                .0
        };
        let mut sm = open();
        let a = TxnId::random();
        let r = sm
            .apply_entries(vec![entry(1, vec![put(a, "k"), put(a, "k")])])
            .unwrap();
        assert_eq!(r[0].outcomes[0].1, Outcome::Certified(1, Verdict::Commit));
        assert_eq!(r[0].outcomes[1].1, Outcome::Duplicate(1));
        let r = sm.apply_entries(vec![entry(2, vec![put(a, "k")])]).unwrap();
        assert_eq!(outcome(&r), Outcome::Duplicate(1));

        // After a restart the id is found in storage.
        let mut sm = open();
        let r = sm.apply_entries(vec![entry(3, vec![put(a, "k")])]).unwrap();
        assert_eq!(outcome(&r), Outcome::Duplicate(1));
        let b = TxnId::random();
        let r = sm.apply_entries(vec![entry(4, vec![put(b, "j")])]).unwrap();
        assert_eq!(outcome(&r), Outcome::Certified(4, Verdict::Commit));

        // Past the window (16 seqnos) the first copy no longer counts, and
        // the ids applied since the restart are still recognised.
        let r = sm
            .apply_entries(vec![entry(19, vec![put(b, "j")])])
            .unwrap();
        assert_eq!(outcome(&r), Outcome::Duplicate(4));
        let r = sm
            .apply_entries(vec![entry(30, vec![put(a, "k")])])
            .unwrap();
        assert_eq!(outcome(&r), Outcome::Certified(30, Verdict::Commit));
        let r = sm
            .apply_entries(vec![entry(31, vec![put(a, "k")])])
            .unwrap();
        assert_eq!(outcome(&r), Outcome::Duplicate(30));
        assert!(
            sm.recent.ids.len() <= 2,
            "ids below the window are forgotten"
        );
    }

    fn ws(mutations: Vec<Mutation>) -> WriteSet {
        WriteSet::blind(1, mutations)
    }

    fn put_lease(key: &str, value: &str, lease: i64) -> Mutation {
        Mutation::Put {
            key: key.as_bytes().to_vec(),
            value: value.as_bytes().to_vec(),
            lease,
        }
    }

    fn del(key: &str) -> Mutation {
        Mutation::Delete {
            key: key.as_bytes().to_vec(),
        }
    }

    /// Each version carries its key's create seqno, write count and lease,
    /// computed from the previous version whether that is in storage or
    /// earlier in the same run; a delete ends the count; the lease index
    /// follows the key's lease.
    #[test]
    fn apply_records_key_metadata_and_the_lease_index() {
        use crate::lease::keys;
        let mvcc = Mvcc::new(Arc::new(MemoryEngine::new()));
        let (mut sm, _) = StateMachine::open(mvcc.clone(), Certifier::new(1000), None).unwrap();
        let meta = |key: &str, at: Seqno| mvcc.get_meta(key.as_bytes(), at).unwrap();
        let attached = |lease: i64, key: &str, at: Seqno| {
            mvcc.get(&keys::attached(lease, key.as_bytes()), at)
                .unwrap()
                .is_some()
        };
        // Seqno 1: created; seqno 2: two write sets in one entry (the second
        // sees the first, pending in the run), the second attaching lease 7.
        sm.apply_entries(vec![
            entry(1, vec![ws(vec![put_lease("a", "1", 0)])]),
            entry(
                2,
                vec![
                    ws(vec![put_lease("a", "2", 0)]),
                    ws(vec![put_lease("a", "3", 7), put_lease("b", "1", 7)]),
                ],
            ),
        ])
        .unwrap();
        let m = meta("a", 1).unwrap();
        assert_eq!((m.create_seqno, m.modifications, m.lease), (1, 1, 0));
        let m = meta("a", 2).unwrap();
        assert_eq!((m.create_seqno, m.modifications, m.lease), (1, 3, 7));
        let m = meta("b", 2).unwrap();
        assert_eq!((m.create_seqno, m.modifications, m.lease), (2, 1, 7));
        assert!(attached(7, "a", 2) && attached(7, "b", 2));
        let v = mvcc.get_versioned(b"a", 2).unwrap().unwrap();
        assert_eq!(
            (
                v.version,
                v.value.as_slice(),
                v.create_seqno,
                v.modifications,
                v.lease
            ),
            (2, &b"3"[..], 1, 3, 7)
        );
        // A later run: a put without a lease detaches "a"; "b" is deleted,
        // then created again (its count starts over at the new seqno).
        sm.apply_entries(vec![
            entry(3, vec![ws(vec![put_lease("a", "4", 0), del("b")])]),
            entry(4, vec![ws(vec![put_lease("b", "2", 0)])]),
        ])
        .unwrap();
        let m = meta("a", 3).unwrap();
        assert_eq!((m.create_seqno, m.modifications, m.lease), (1, 4, 0));
        assert_eq!(meta("b", 3), None);
        let m = meta("b", 4).unwrap();
        assert_eq!((m.create_seqno, m.modifications, m.lease), (4, 1, 0));
        assert!(!attached(7, "a", 4) && !attached(7, "b", 4));
        // Scans and the change history carry the same metadata.
        let all = KeyRange {
            start: Vec::new(),
            end: Some(crate::txn::reserved::PREFIX.to_vec()),
        };
        let (rows, _) = mvcc.scan(&all, 2, 10, false).unwrap();
        let got: Vec<_> = rows
            .iter()
            .map(|r| {
                (
                    r.key.clone(),
                    r.version,
                    r.create_seqno,
                    r.modifications,
                    r.lease,
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![(b"a".to_vec(), 2, 1, 3, 7), (b"b".to_vec(), 2, 2, 1, 7)]
        );
        let changes = mvcc.history(&all, 1, 4, true, 1 << 20).unwrap();
        let got: Vec<_> = changes
            .iter()
            .map(|c| {
                (
                    c.seqno,
                    c.key.clone(),
                    c.create_seqno,
                    c.modifications,
                    c.lease,
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (2, b"a".to_vec(), 1, 3, 7),
                (2, b"b".to_vec(), 2, 1, 7),
                (3, b"a".to_vec(), 1, 4, 0),
                (3, b"b".to_vec(), 0, 0, 0),
                (4, b"b".to_vec(), 4, 1, 0),
            ]
        );
    }

    /// An engine that, when told to, keeps only the first writes of the next
    /// in-order batch and then fails: what a crash (`kill -9`, or a machine
    /// crash before a sync) can leave of a run written in order.
    struct Torn {
        inner: MemoryEngine,
        keep: std::sync::Mutex<Option<usize>>,
        last: std::sync::Mutex<usize>,
    }

    impl crate::storage::Engine for Torn {
        fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
            self.inner.get(key)
        }
        fn scan(
            &self,
            start: &[u8],
            end: Option<&[u8]>,
            f: &mut dyn FnMut(&[u8], &[u8]) -> bool,
        ) -> Result<()> {
            self.inner.scan(start, end, f)
        }
        fn scan_rev(
            &self,
            start: &[u8],
            end: &[u8],
            f: &mut dyn FnMut(&[u8], &[u8]) -> bool,
        ) -> Result<()> {
            self.inner.scan_rev(start, end, f)
        }
        fn apply(&self, batch: Vec<BatchOp>) -> Result<()> {
            self.inner.apply(batch)
        }
        fn apply_in_order(&self, batch: Vec<BatchOp>) -> Result<()> {
            *self.last.lock().unwrap() = batch.len();
            match self.keep.lock().unwrap().take() {
                None => self.inner.apply(batch),
                Some(n) => {
                    self.inner.apply(batch.into_iter().take(n).collect())?;
                    Err(Error::Storage("crashed mid-apply".into()))
                }
            }
        }
        fn sync(&self) -> Result<()> {
            Ok(())
        }
        fn size_on_disk(&self) -> u64 {
            0
        }
        fn stage(&self, batch: Vec<BatchOp>) -> Result<()> {
            self.inner.stage(batch)
        }
        fn commit_staged(&self) -> Result<()> {
            self.inner.commit_staged()
        }
        fn discard_staged(&self) -> Result<()> {
            self.inner.discard_staged()
        }
        fn generation(&self) -> u64 {
            self.inner.generation()
        }
    }

    fn dump_all(engine: &dyn crate::storage::Engine) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut all = Vec::new();
        engine
            .scan(&[], None, &mut |k, v| {
                all.push((k.to_vec(), v.to_vec()));
                true
            })
            .unwrap();
        all
    }

    /// A run is written in order, not atomically (`Engine::apply_in_order`).
    /// Whatever prefix of its writes a crash keeps, reopening the store and
    /// applying the entries after its tail again gives the same verdicts, the
    /// same chain and (once the next run is written) the same store, byte
    /// for byte, as the run uncut: reads
    /// during apply stop at the run's base, so the torn writes (versions,
    /// write-set ids above it) cannot turn a commit into a conflict, a new
    /// write set into a duplicate, or change a key's metadata.
    #[test]
    fn a_run_torn_at_any_write_is_applied_again_to_the_same_state() {
        let set = |id: TxnId, snapshot: Option<Seqno>, muts: Vec<Mutation>| {
            let mut ws = WriteSet::blind(1, muts);
            ws.id = id;
            ws.snapshot = snapshot;
            ws
        };
        let put_m = |k: &str, v: &str| Mutation::Put {
            key: k.as_bytes().to_vec(),
            value: v.as_bytes().to_vec(),
            lease: 0,
        };
        let early = TxnId::random();
        let first_run = vec![
            entry(1, vec![put(early, "a"), put(TxnId::random(), "b")]),
            entry(2, vec![put(TxnId::random(), "c")]),
        ];
        let (x, y, z) = (TxnId::random(), TxnId::random(), TxnId::random());
        let mut reader = set(TxnId::random(), Some(2), vec![put_m("d", "from-reader")]);
        reader.reads = vec![b"a".to_vec(), b"e".to_vec()];
        reader.ranges = vec![KeyRange::prefix(b"c")];
        let mut guarded = set(TxnId::random(), Some(2), vec![put_m("g", "guarded")]);
        guarded.compares = vec![crate::txn::Compare {
            key: b"a".to_vec(),
            condition: crate::txn::Condition::Version(1),
        }];
        let second_run = vec![
            // Certified against the store as it was before the run.
            entry(
                3,
                vec![
                    set(x, Some(2), vec![put_m("a", "x1"), put_m("e", "x1")]),
                    reader,
                    guarded,
                    put(early, "again"),
                ],
            ),
            entry(
                4,
                vec![
                    set(y, Some(2), vec![put_m("a", "y")]),
                    set(z, None, vec![Mutation::Delete { key: b"b".to_vec() }]),
                    put(x, "dup-in-run"),
                ],
            ),
            entry(
                5,
                vec![set(TxnId::random(), Some(4), vec![put_m("c", "c5")])],
            ),
        ];

        // The next run rewrites all metadata: after it, even the keys an
        // older build reads (`applied`, `chain`) are equal, not only the tail.
        let third_run = vec![entry(6, vec![put(TxnId::random(), "f")])];
        let reference = MemoryEngine::new();
        let want = {
            let mvcc = Mvcc::new(Arc::new(reference.clone()));
            let (mut sm, _) = StateMachine::open(mvcc, Certifier::new(16), None).unwrap();
            sm.apply_entries(first_run.clone()).unwrap();
            let r = sm.apply_entries(second_run.clone()).unwrap();
            let chain = sm.chain;
            sm.apply_entries(third_run.clone()).unwrap();
            (r, chain, sm.chain)
        };
        let verdicts: Vec<Outcome> = want
            .0
            .iter()
            .flat_map(|r| r.outcomes.iter().map(|(_, o)| o.clone()))
            .collect();
        // The run does exercise what a torn write could change.
        assert!(
            verdicts.contains(&Outcome::Certified(3, Verdict::Commit)),
            "{verdicts:?}"
        );
        assert!(verdicts.contains(&Outcome::Duplicate(1)), "{verdicts:?}");
        assert!(verdicts.contains(&Outcome::Duplicate(3)), "{verdicts:?}");
        assert!(
            verdicts
                .iter()
                .any(|o| matches!(o, Outcome::Certified(4, Verdict::Abort(_)))),
            "{verdicts:?}"
        );
        let want_store = dump_all(&reference);

        let writes = {
            let torn = Torn {
                inner: MemoryEngine::new(),
                keep: Default::default(),
                last: Default::default(),
            };
            let engine = Arc::new(torn);
            let mvcc = Mvcc::new(engine.clone());
            let (mut sm, _) = StateMachine::open(mvcc, Certifier::new(16), None).unwrap();
            sm.apply_entries(first_run.clone()).unwrap();
            sm.apply_entries(second_run.clone()).unwrap();
            let n = *engine.last.lock().unwrap();
            n
        };
        assert!(writes > 10, "{writes} writes in the run");
        for keep in 0..=writes {
            let engine = Arc::new(Torn {
                inner: MemoryEngine::new(),
                keep: Default::default(),
                last: Default::default(),
            });
            let mvcc = Mvcc::new(engine.clone());
            let (mut sm, _) = StateMachine::open(mvcc.clone(), Certifier::new(16), None).unwrap();
            sm.apply_entries(first_run.clone()).unwrap();
            *engine.keep.lock().unwrap() = Some(keep);
            assert!(sm.apply_entries(second_run.clone()).is_err());
            drop(sm);
            // The restart: openraft applies again what follows the tail.
            let (mut sm, _) = StateMachine::open(mvcc, Certifier::new(16), None).unwrap();
            let resumed = sm.applied_id.map_or(0, |l| l.index);
            assert!(
                resumed == 2 || resumed == 5,
                "kept {keep}: resumed at {resumed}"
            );
            let again: Vec<Entry> = second_run
                .iter()
                .filter(|e| e.log_id.index > resumed)
                .cloned()
                .collect();
            if !again.is_empty() {
                let r = sm.apply_entries(again).unwrap();
                assert_eq!(r, want.0, "kept {keep} of {writes} writes: verdicts differ");
            }
            assert_eq!(
                sm.chain, want.1,
                "kept {keep} of {writes} writes: chain differs"
            );
            sm.apply_entries(third_run.clone()).unwrap();
            assert_eq!(
                sm.chain, want.2,
                "kept {keep} of {writes} writes: chain differs"
            );
            assert_eq!(
                dump_all(engine.as_ref()),
                want_store,
                "kept {keep} of {writes} writes: the store differs"
            );
        }
    }
}
