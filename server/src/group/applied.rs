//! What the state machine shares with the rest of the node: the applied
//! watermark readers wait on, the origin's waiters for verdicts, and counters.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{oneshot, watch};

use crate::error::{Error, Result};
use crate::raft::types::Outcome;
use crate::txn::{Seqno, TxnId};

/// Counters of the apply path, reported by `Status` and `/metrics`.
#[derive(Debug, Default)]
pub struct ApplyStats {
    /// Write sets certified and committed.
    pub commits: AtomicU64,
    /// Write sets aborted by certification, by reason (indexed like `Abort::KINDS`).
    pub aborts: [AtomicU64; crate::certify::Abort::KINDS.len()],
    /// Duplicate copies of a write set ignored.
    pub duplicates: AtomicU64,
    /// Log entries carrying write-set batches.
    pub batches: AtomicU64,
    /// Conflicting single-write commits the server retried itself.
    pub server_retries: AtomicU64,
    /// Snapshots installed (state transfers received).
    pub snapshots_received: AtomicU64,
    /// Voters this node evicted as leader.
    pub evictions: AtomicU64,
    /// Write sets per batch, for `/metrics`.
    pub batch_sizes: BatchSizes,
}

impl ApplyStats {
    /// All certification failures.
    pub fn cert_failures(&self) -> u64 {
        self.aborts.iter().map(|a| a.load(Ordering::Relaxed)).sum()
    }
}

/// The node-local side of apply: readers wait for the watermark, origins wait
/// for their write sets' outcomes.
#[derive(Debug)]
pub struct Applied {
    seqno_tx: watch::Sender<Seqno>,
    /// The verdict hash chain at the watermark, updated together with it.
    chain: Mutex<(Seqno, u64)>,
    waiters: Mutex<HashMap<TxnId, oneshot::Sender<Result<Outcome>>>>,
    /// Nodes that left the cluster for good.
    departed: Mutex<std::collections::BTreeSet<crate::txn::NodeId>>,
    /// Snapshots below this seqno may have lost versions to garbage
    /// collection (or were never received, after a state transfer).
    horizon: AtomicU64,
    /// The replicated cluster parameters (`None`: not bootstrapped yet).
    params: Mutex<Option<super::params::ClusterParams>>,
    /// Seqnos long reads (backups) still read at: garbage collection keeps
    /// what they see (seqno -> readers).
    pins: Mutex<std::collections::BTreeMap<Seqno, usize>>,
    /// Apply counters.
    pub stats: ApplyStats,
    /// The watchers of applied changes (see `crate::watch`).
    hub: Arc<crate::watch::Hub>,
}

/// Unpins a seqno when dropped (see [`Applied::pin`]).
#[derive(Debug)]
pub struct PinGuard {
    applied: Arc<Applied>,
    seqno: Seqno,
}

impl Drop for PinGuard {
    fn drop(&mut self) {
        let mut pins = self.applied.pins.lock().expect("pins lock");
        if let Some(n) = pins.get_mut(&self.seqno) {
            *n -= 1;
            if *n == 0 {
                pins.remove(&self.seqno);
            }
        }
    }
}

/// Forgets a waiter when dropped (see [`Applied::register_guarded`]).
#[derive(Debug)]
pub struct WaiterGuard {
    applied: Arc<Applied>,
    id: TxnId,
}

impl Drop for WaiterGuard {
    fn drop(&mut self) {
        self.applied.forget(self.id);
    }
}

impl Applied {
    /// A watermark starting at `seqno`.
    pub fn new(seqno: Seqno) -> Self {
        Applied {
            seqno_tx: watch::channel(seqno).0,
            chain: Mutex::new((seqno, 0)),
            waiters: Mutex::new(HashMap::new()),
            horizon: AtomicU64::new(0),
            params: Mutex::new(None),
            pins: Mutex::new(Default::default()),
            departed: Mutex::new(Default::default()),
            stats: ApplyStats::default(),
            hub: Arc::new(crate::watch::Hub::new(seqno)),
        }
    }

    /// The watchers of applied changes: the state machine publishes every
    /// applied run to it before moving the watermark.
    pub fn hub(&self) -> &Arc<crate::watch::Hub> {
        &self.hub
    }

    /// Whether node `id` left the cluster for good.
    pub fn is_departed(&self, id: crate::txn::NodeId) -> bool {
        self.departed.lock().expect("departed lock").contains(&id)
    }

    /// Replaces the set of departed nodes (the state machine keeps it).
    pub fn set_departed(&self, departed: std::collections::BTreeSet<crate::txn::NodeId>) {
        *self.departed.lock().expect("departed lock") = departed;
    }

    /// The replicated cluster parameters as of the watermark (`None`: a new
    /// cluster whose first leader has not proposed them yet).
    pub fn params(&self) -> Option<super::params::ClusterParams> {
        *self.params.lock().expect("params lock")
    }

    /// The certifier in force at the watermark.
    pub fn certifier(&self) -> crate::certify::Certifier {
        self.params().map_or_else(
            || crate::certify::Certifier::new(super::params::MIN_CERT_WINDOW),
            |p| p.certifier(),
        )
    }

    /// Publishes the parameters (the state machine calls this before it
    /// advances the watermark past the entry that set them).
    pub fn set_params(&self, params: Option<super::params::ClusterParams>) {
        *self.params.lock().expect("params lock") = params;
    }

    /// Keeps garbage collection from removing what a read at `seqno` sees
    /// until the guard is dropped.
    pub fn pin(self: &Arc<Self>, seqno: Seqno) -> PinGuard {
        *self
            .pins
            .lock()
            .expect("pins lock")
            .entry(seqno)
            .or_default() += 1;
        PinGuard {
            applied: self.clone(),
            seqno,
        }
    }

    /// The lowest pinned seqno, if any.
    pub fn min_pin(&self) -> Option<Seqno> {
        self.pins.lock().expect("pins lock").keys().next().copied()
    }

    /// The oldest snapshot this node can still read at.
    pub fn horizon(&self) -> Seqno {
        self.horizon.load(Ordering::Acquire)
    }

    /// Raises the horizon (never lowers it). Call before removing versions.
    pub fn raise_horizon(&self, seqno: Seqno) {
        self.horizon.fetch_max(seqno, Ordering::AcqRel);
    }

    /// The highest seqno whose effects are visible to reads.
    pub fn seqno(&self) -> Seqno {
        *self.seqno_tx.borrow()
    }

    /// The applied seqno and the verdict hash chain up to it.
    pub fn chain(&self) -> (Seqno, u64) {
        *self.chain.lock().expect("chain lock")
    }

    /// Advances the watermark (the state machine calls this after each apply),
    /// with the verdict chain at `seqno`.
    pub fn advance(&self, seqno: Seqno, chain: u64) {
        *self.chain.lock().expect("chain lock") = (seqno, chain);
        self.seqno_tx.send_if_modified(|s| {
            let moved = seqno != *s;
            *s = seqno;
            moved
        });
    }

    /// Waits until the watermark reaches `seqno`, for at most `timeout`.
    pub async fn wait_for(&self, seqno: Seqno, timeout: Duration) -> Result<Seqno> {
        let mut rx = self.seqno_tx.subscribe();
        let wait = async { rx.wait_for(|s| *s >= seqno).await.map(|s| *s) };
        match tokio::time::timeout(timeout, wait).await {
            Ok(Ok(s)) => Ok(s),
            Ok(Err(_)) => Err(Error::Unavailable("node is shutting down".into())),
            Err(_) => Err(Error::Unavailable(format!(
                "this node has applied up to seqno {} and did not reach {seqno} within {timeout:?}",
                self.seqno()
            ))),
        }
    }

    /// Registers interest in write set `id`'s outcome.
    pub fn register(&self, id: TxnId) -> oneshot::Receiver<Result<Outcome>> {
        let (tx, rx) = oneshot::channel();
        self.waiters.lock().expect("waiters lock").insert(id, tx);
        rx
    }

    /// Delivers `id`'s outcome (or failure) to its waiter, if one is still waiting.
    pub fn resolve(&self, id: TxnId, outcome: Result<Outcome>) {
        let waiter = self.waiters.lock().expect("waiters lock").remove(&id);
        if let Some(tx) = waiter {
            let _ = tx.send(outcome);
        }
    }

    /// Registers interest in `id`'s outcome, with a guard that stops waiting
    /// when dropped: a request cancelled half-way (client gone, deadline)
    /// leaves no waiter behind.
    pub fn register_guarded(
        self: &Arc<Self>,
        id: TxnId,
    ) -> (oneshot::Receiver<Result<Outcome>>, WaiterGuard) {
        let rx = self.register(id);
        let guard = WaiterGuard {
            applied: self.clone(),
            id,
        };
        (rx, guard)
    }

    /// Waiters registered now.
    pub fn waiting(&self) -> usize {
        self.waiters.lock().expect("waiters lock").len()
    }

    /// Stops waiting for `id` (its client gave up).
    pub fn forget(&self, id: TxnId) {
        self.waiters.lock().expect("waiters lock").remove(&id);
    }

    /// Whether anyone still waits for `id`.
    pub fn is_waiting(&self, id: TxnId) -> bool {
        self.waiters.lock().expect("waiters lock").contains_key(&id)
    }

    /// Counts one certification outcome.
    pub fn count(&self, outcome: &Outcome) {
        use crate::certify::Verdict;
        let s = &self.stats;
        match outcome {
            Outcome::Certified(_, Verdict::Commit) => s.commits.fetch_add(1, Ordering::Relaxed),
            Outcome::Certified(_, Verdict::Abort(abort)) => {
                s.aborts[abort.kind_index()].fetch_add(1, Ordering::Relaxed)
            }
            Outcome::Duplicate(_) => s.duplicates.fetch_add(1, Ordering::Relaxed),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::txn::TxnId;

    #[tokio::test]
    async fn a_dropped_request_leaves_no_waiter() {
        let applied = Arc::new(Applied::new(0));
        let (rx, guard) = applied.register_guarded(TxnId(1));
        assert!(applied.is_waiting(TxnId(1)));
        // The request's future is dropped (client gone): the guard goes with it.
        drop((rx, guard));
        assert!(!applied.is_waiting(TxnId(1)));
        assert_eq!(applied.waiting(), 0);

        // Resolved first, then dropped: still nothing left, nothing panics.
        let (rx, guard) = applied.register_guarded(TxnId(2));
        applied.resolve(TxnId(2), Err(Error::Unavailable("test".into())));
        assert!(rx.await.expect("resolved").is_err());
        drop(guard);
        assert_eq!(applied.waiting(), 0);
    }
}

/// Buckets of [`BatchSizes`]: write sets per log entry.
const BATCH_BUCKETS: [f64; 10] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 1024.0];

/// Write sets per log entry, observed as batches are applied. It lives with
/// the apply counters (not in `metrics`) so that `group` never imports the
/// layer that renders it.
#[derive(Debug, Clone)]
pub struct BatchSizes(prometheus_client::metrics::histogram::Histogram);

impl Default for BatchSizes {
    fn default() -> Self {
        BatchSizes(prometheus_client::metrics::histogram::Histogram::new(
            BATCH_BUCKETS,
        ))
    }
}

impl BatchSizes {
    /// Records a batch of `write_sets` write sets.
    pub fn observe(&self, write_sets: usize) {
        self.0.observe(write_sets as f64);
    }

    /// The histogram, for `/metrics` (a clone shares the same counts).
    pub fn histogram(&self) -> prometheus_client::metrics::histogram::Histogram {
        self.0.clone()
    }
}
