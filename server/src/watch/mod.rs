//! Watches: streams of every put and delete of a key, a prefix or a range,
//! in seqno order, from a past seqno or from now.
//!
//! Two sources feed a watcher, and a cursor joins them without a gap or a
//! duplicate. The [`Hub`] is told of every applied run of entries (the state
//! machine calls [`Hub::publish`] after the run is in storage and before the
//! watermark moves) and hands the changes, without ever blocking apply, to
//! the watchers whose keys they touch. A watcher registers with the hub
//! first, learning the seqno `P` up to which publishing is done: everything
//! at or below `P` is already in storage, everything above will come from
//! the hub. It catches up from the MVCC history in storage (`(cursor, P]`),
//! then follows the hub, skipping what its cursor already covers.
//!
//! A watcher's hub queue is bounded. When it is full (the client reads too
//! slowly), the hub drops the watcher's subscription and flags it lagged;
//! the watcher registers again and catches up from storage from its cursor.
//! A snapshot install (the store replaced wholesale) does the same for
//! every watcher ([`Hub::reset`]). Catching up from below the GC horizon
//! would miss versions, so it fails with [`WatchError::Compacted`] instead.
//!
//! Matching a change against thousands of watchers costs a few hash lookups
//! per changed key (exact keys and prefixes are indexed), not one comparison
//! per watcher, so idle watchers on other keys do not slow apply.
//!
//! What it may import: `storage`, `txn`, `error`. What it must never import:
//! `group`, `node`, `api` (the state machine and the API call into it).

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;

use crate::error::Error;
pub use crate::storage::Change;
use crate::storage::{KeyMeta, Mvcc};
use crate::txn::{Key, KeyRange, Seqno, Value};

/// Batches a watcher's hub queue holds before it is flagged lagged.
pub const QUEUE_BATCHES: usize = 256;
/// At most this many changes go in one catch-up message (a seqno's changes
/// are never split, so one message may exceed it).
pub const CATCH_UP_CHUNK: usize = 1000;

/// What a watch covers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selector {
    /// Exactly this key.
    Key(Key),
    /// Every key starting with this (empty: every key).
    Prefix(Key),
    /// Keys in the range.
    Range(KeyRange),
}

impl Selector {
    /// Whether `key` is covered.
    pub fn matches(&self, key: &[u8]) -> bool {
        match self {
            Selector::Key(k) => k.as_slice() == key,
            Selector::Prefix(p) => key.starts_with(p),
            Selector::Range(r) => r.contains(key),
        }
    }

    /// The key range covered, for scanning storage.
    pub fn range(&self) -> KeyRange {
        match self {
            Selector::Key(k) => {
                let mut end = k.clone();
                end.push(0);
                KeyRange {
                    start: k.clone(),
                    end: Some(end),
                }
            }
            Selector::Prefix(p) => KeyRange::prefix(p),
            Selector::Range(r) => r.clone(),
        }
    }
}

/// One applied key change as the state machine reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// The seqno that wrote it.
    pub seqno: Seqno,
    /// The key.
    pub key: Key,
    /// The new value; `None`: deleted.
    pub value: Option<Value>,
    /// The new version's metadata (default for a delete).
    pub meta: KeyMeta,
}

/// The changes of one applied run of entries, published to the watchers
/// they concern.
#[derive(Debug)]
pub struct Batch {
    /// Sorted by (seqno, key), one per (seqno, key): the last write of a key
    /// within one seqno wins, as in storage.
    pub events: Vec<Event>,
    /// Every change at or below this seqno has been published.
    pub upto: Seqno,
}

/// Sorts changes by (seqno, key) and keeps the last write of each key within
/// a seqno, as storage keeps it (a batch's write sets share one seqno).
pub fn normalize(mut events: Vec<Event>) -> Vec<Event> {
    // Stable: writes of one key in one seqno stay in log order.
    events.sort_by(|a, b| (a.seqno, &a.key).cmp(&(b.seqno, &b.key)));
    let mut out: Vec<Event> = Vec::with_capacity(events.len());
    for e in events {
        match out.last_mut() {
            Some(last) if last.seqno == e.seqno && last.key == e.key => *last = e,
            _ => out.push(e),
        }
    }
    out
}

struct Sub {
    selector: Selector,
    tx: mpsc::Sender<Arc<Batch>>,
    lagged: Arc<AtomicBool>,
}

#[derive(Default)]
struct Inner {
    /// Every change at or below this seqno is in storage and was published.
    published: Seqno,
    next_id: u64,
    subs: HashMap<u64, Sub>,
    /// Exact-key watchers.
    keys: HashMap<Key, Vec<u64>>,
    /// Prefix watchers, and the prefix lengths in use.
    prefixes: HashMap<Key, Vec<u64>>,
    prefix_lens: BTreeSet<usize>,
    /// Range watchers (checked one by one).
    ranges: Vec<u64>,
}

impl Inner {
    fn index(&mut self, id: u64, selector: &Selector) {
        match selector {
            Selector::Key(k) => self.keys.entry(k.clone()).or_default().push(id),
            Selector::Prefix(p) => {
                self.prefixes.entry(p.clone()).or_default().push(id);
                self.prefix_lens.insert(p.len());
            }
            Selector::Range(_) => self.ranges.push(id),
        }
    }

    fn unindex(&mut self, id: u64, selector: &Selector) {
        fn remove(map: &mut HashMap<Key, Vec<u64>>, k: &[u8], id: u64) -> bool {
            let mut emptied = false;
            if let Some(ids) = map.get_mut(k) {
                ids.retain(|i| *i != id);
                if ids.is_empty() {
                    map.remove(k);
                    emptied = true;
                }
            }
            emptied
        }
        match selector {
            Selector::Key(k) => {
                remove(&mut self.keys, k, id);
            }
            Selector::Prefix(p) => {
                if remove(&mut self.prefixes, p, id)
                    && !self.prefixes.keys().any(|q| q.len() == p.len())
                {
                    self.prefix_lens.remove(&p.len());
                }
            }
            Selector::Range(_) => self.ranges.retain(|i| *i != id),
        }
    }

    fn drop_sub(&mut self, id: u64, lagged: bool) {
        if let Some(sub) = self.subs.remove(&id) {
            sub.lagged.store(lagged, Ordering::Release);
            self.unindex(id, &sub.selector);
        }
    }

    /// The watchers some event of `events` concerns.
    fn interested(&self, events: &[Event]) -> BTreeSet<u64> {
        let mut ids = BTreeSet::new();
        for e in events {
            if let Some(w) = self.keys.get(&e.key) {
                ids.extend(w);
            }
            for &len in self.prefix_lens.range(..=e.key.len()) {
                if let Some(w) = self.prefixes.get(&e.key[..len]) {
                    ids.extend(w);
                }
            }
        }
        for id in &self.ranges {
            let sub = &self.subs[id];
            if events.iter().any(|e| sub.selector.matches(&e.key)) {
                ids.insert(*id);
            }
        }
        ids
    }
}

/// Where applied changes meet the watchers (one per node).
#[derive(Default)]
pub struct Hub {
    inner: Mutex<Inner>,
    /// Registered watchers (read without the lock by the state machine).
    count: AtomicUsize,
    /// Watchers dropped for a full queue, for `/metrics` and tests.
    pub lagged_total: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Hub({} watchers)", self.watchers())
    }
}

impl Hub {
    /// A hub for a store that holds every change up to `applied`.
    pub fn new(applied: Seqno) -> Self {
        let hub = Hub::default();
        hub.inner.lock().expect("hub lock").published = applied;
        hub
    }

    /// Watchers registered now.
    pub fn watchers(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    /// Whether the state machine should collect changes for [`Hub::publish`].
    /// A watcher that registers after this said no is resynchronized from
    /// storage by `publish(upto, None)`, so a race costs a catch-up, never a gap.
    pub fn wants_events(&self) -> bool {
        self.watchers() > 0
    }

    /// The seqno up to which every change is in storage and published.
    pub fn published(&self) -> Seqno {
        self.inner.lock().expect("hub lock").published
    }

    /// Publishes the changes of an applied run ending at `upto` (call after
    /// they are in storage). `None`: they were not collected; every watcher
    /// catches up from storage instead. Never blocks on a watcher.
    pub fn publish(&self, upto: Seqno, events: Option<Vec<Event>>) {
        let mut inner = self.inner.lock().expect("hub lock");
        inner.published = inner.published.max(upto);
        if inner.subs.is_empty() {
            return;
        }
        let Some(events) = events else {
            let ids: Vec<u64> = inner.subs.keys().copied().collect();
            for id in ids {
                inner.drop_sub(id, true);
            }
            self.count.store(0, Ordering::Release);
            return;
        };
        if events.is_empty() {
            return;
        }
        let ids = inner.interested(&events);
        if ids.is_empty() {
            return;
        }
        let batch = Arc::new(Batch {
            events: normalize(events),
            upto,
        });
        let mut full = Vec::new();
        for id in ids {
            if inner.subs[&id].tx.try_send(batch.clone()).is_err() {
                full.push(id);
            }
        }
        for id in full {
            inner.drop_sub(id, true);
            self.count.fetch_sub(1, Ordering::AcqRel);
            self.lagged_total.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The store was replaced (a snapshot installed up to `applied`): every
    /// watcher catches up from storage again.
    pub fn reset(&self, applied: Seqno) {
        let mut inner = self.inner.lock().expect("hub lock");
        inner.published = applied;
        let ids: Vec<u64> = inner.subs.keys().copied().collect();
        for id in ids {
            inner.drop_sub(id, true);
        }
        self.count.store(0, Ordering::Release);
    }

    /// Registers a watcher: its queue, and the seqno up to which changes are
    /// already in storage (later ones arrive on the queue).
    pub fn register(self: &Arc<Self>, selector: Selector) -> (Subscription, Seqno) {
        let (tx, rx) = mpsc::channel(QUEUE_BATCHES);
        let lagged = Arc::new(AtomicBool::new(false));
        let mut inner = self.inner.lock().expect("hub lock");
        let id = inner.next_id;
        inner.next_id += 1;
        inner.index(id, &selector);
        inner.subs.insert(
            id,
            Sub {
                selector,
                tx,
                lagged: lagged.clone(),
            },
        );
        self.count.fetch_add(1, Ordering::AcqRel);
        let published = inner.published;
        (
            Subscription {
                hub: self.clone(),
                id,
                rx,
                lagged,
            },
            published,
        )
    }

    fn unregister(&self, id: u64) {
        let mut inner = self.inner.lock().expect("hub lock");
        if inner.subs.contains_key(&id) {
            inner.drop_sub(id, false);
            self.count.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// A watcher's registration; dropping it unregisters.
pub struct Subscription {
    hub: Arc<Hub>,
    id: u64,
    rx: mpsc::Receiver<Arc<Batch>>,
    lagged: Arc<AtomicBool>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.hub.unregister(self.id);
    }
}

/// Why a watch ended.
#[derive(Debug)]
pub enum WatchError {
    /// The start is at or below this node's history horizon: changes at or
    /// below it may be gone.
    Compacted {
        /// The horizon: a watch may start at `horizon + 1` or later.
        horizon: Seqno,
    },
    /// Anything else (storage, shutdown).
    Other(Error),
}

impl std::fmt::Display for WatchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WatchError::Compacted { horizon } => write!(
                f,
                "compacted at seqno {horizon}: this node no longer has every change at or below \
                 seqno {horizon}; watch from seqno {} or later (or from now)",
                horizon + 1
            ),
            WatchError::Other(e) => write!(f, "{e}"),
        }
    }
}

/// What a watch asks for.
#[derive(Clone, Debug)]
pub struct WatchSpec {
    /// The keys.
    pub selector: Selector,
    /// The first seqno to deliver; `None`: from now.
    pub start: Option<Seqno>,
    /// Send each change's previous version too.
    pub prev: bool,
    /// Progress notification after this long without a message.
    pub progress: Duration,
}

/// One message of a watch stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// Changes in (seqno, key) order; empty: a progress notification.
    pub changes: Vec<Change>,
    /// Every change with seqno <= this has been delivered.
    pub seqno: Seqno,
}

/// What a watcher reads besides the hub: the store and its GC horizon.
pub trait History: Send + Sync + 'static {
    /// The store.
    fn mvcc(&self) -> &Mvcc;
    /// Changes at or below this seqno may be gone.
    fn horizon(&self) -> Seqno;
}

/// The most bytes of keys and values a watch's catch-up from storage holds
/// at once: a watch from far back over a large range is refused (naming
/// this limit) rather than read into memory whole.
pub const MAX_CATCH_UP_BYTES: usize = 64 << 20;

/// Runs one watch until the receiver of `out` goes away or it fails (the
/// error is sent as the last item). Messages go out in seqno order, each
/// seqno's changes in one message.
pub async fn run(
    hub: Arc<Hub>,
    history: Arc<dyn History>,
    spec: WatchSpec,
    out: mpsc::Sender<Result<Message, WatchError>>,
) {
    if let Err(e) = follow(&hub, &history, &spec, &out).await {
        let _ = out.send(Err(e)).await;
    }
}

/// Sending failed: the client is gone.
struct Gone;

async fn follow(
    hub: &Arc<Hub>,
    history: &Arc<dyn History>,
    spec: &WatchSpec,
    out: &mpsc::Sender<Result<Message, WatchError>>,
) -> Result<(), WatchError> {
    // Every change at or below the cursor has been delivered.
    let mut cursor: Option<Seqno> = spec.start.map(|s| s.saturating_sub(1));
    let range = spec.selector.range();
    // Whether the client has heard where the watch starts.
    let mut announced = false;
    loop {
        let (mut sub, published) = hub.register(spec.selector.clone());
        let mut at = *cursor.get_or_insert(published);
        if at < published {
            let horizon = history.horizon();
            if at < horizon {
                return Err(WatchError::Compacted { horizon });
            }
            let mvcc = history.mvcc().clone();
            let (r, prev) = (range.clone(), spec.prev);
            let changes = tokio::task::spawn_blocking(move || {
                mvcc.history(&r, at, published, prev, MAX_CATCH_UP_BYTES)
            })
            .await
            .map_err(|e| WatchError::Other(Error::Internal(e.to_string())))?
            .map_err(WatchError::Other)?;
            // GC raises the horizon before it removes anything: a horizon still
            // at or below the cursor means the scan missed nothing.
            let horizon = history.horizon();
            if at < horizon {
                return Err(WatchError::Compacted { horizon });
            }
            if send_chunks(changes, published, out).await.is_err() {
                return Ok(());
            }
            at = published;
            cursor = Some(at);
            announced = true;
        }
        if !announced {
            // The first message says from where on changes come (a client
            // watching "from now" resumes from it after a failover).
            let created = Message {
                changes: Vec::new(),
                seqno: at,
            };
            if out.send(Ok(created)).await.is_err() {
                return Ok(());
            }
            announced = true;
        }
        // Live: follow the hub until lagged.
        let mut idle =
            tokio::time::interval_at(tokio::time::Instant::now() + spec.progress, spec.progress);
        idle.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                batch = sub.rx.recv() => {
                    let Some(batch) = batch else {
                        if sub.lagged.load(Ordering::Acquire) {
                            break;
                        }
                        return Err(WatchError::Other(Error::Unavailable(
                            "the node is shutting down".into(),
                        )));
                    };
                    let mut changes = Vec::new();
                    for e in &batch.events {
                        if e.seqno > at && spec.selector.matches(&e.key) {
                            let prev = if spec.prev {
                                history
                                    .mvcc()
                                    .get(&e.key, e.seqno - 1)
                                    .map_err(WatchError::Other)?
                            } else {
                                None
                            };
                            let mut change =
                                Change::new(e.seqno, e.key.clone(), e.value.clone(), e.meta);
                            change.prev = prev;
                            changes.push(change);
                        }
                    }
                    if batch.upto > at {
                        at = batch.upto;
                        cursor = Some(at);
                    }
                    if !changes.is_empty() {
                        if out.send(Ok(Message { changes, seqno: at })).await.is_err() {
                            return Ok(());
                        }
                        idle.reset();
                    }
                }
                _ = idle.tick() => {
                    // Read the published seqno first: every change of ours at
                    // or below it was queued before it was set, so an empty
                    // queue means all of them were delivered.
                    let published = hub.published();
                    if sub.rx.is_empty() && !sub.lagged.load(Ordering::Acquire) {
                        at = at.max(published);
                        cursor = Some(at);
                        let progress = Message { changes: Vec::new(), seqno: at };
                        if out.send(Ok(progress)).await.is_err() {
                            return Ok(());
                        }
                    }
                }
                _ = out.closed() => return Ok(()),
            }
        }
        drop(sub);
    }
}

async fn send_chunks(
    changes: Vec<Change>,
    upto: Seqno,
    out: &mpsc::Sender<Result<Message, WatchError>>,
) -> Result<(), Gone> {
    let mut chunk: Vec<Change> = Vec::new();
    let mut iter = changes.into_iter().peekable();
    while let Some(c) = iter.next() {
        let seqno = c.seqno;
        chunk.push(c);
        let seqno_ends = iter.peek().is_none_or(|n| n.seqno != seqno);
        if seqno_ends && chunk.len() >= CATCH_UP_CHUNK {
            let msg = Message {
                changes: std::mem::take(&mut chunk),
                seqno,
            };
            out.send(Ok(msg)).await.map_err(|_| Gone)?;
        }
    }
    // The last message covers the whole caught-up span (even when empty: the
    // client learns how far it got).
    out.send(Ok(Message {
        changes: chunk,
        seqno: upto,
    }))
    .await
    .map_err(|_| Gone)
}

#[cfg(test)]
mod tests;
