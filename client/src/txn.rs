//! Client-side transactions: snapshot reads, buffered writes, one commit.
//!
//! The server keeps no transaction state. A [`Transaction`] holds its
//! snapshot seqno, its buffered writes and, for SERIALIZABLE, what it read:
//! the version of every key it read and every range it scanned. Commit ships
//! all of it in one `CommitRequest`; certification decides.
//!
//! Invariants:
//! - Every server read is at the snapshot, so reads are repeatable.
//! - Reads see the transaction's own buffered writes first; a key the
//!   transaction wrote before reading it is not in the read set, since its
//!   value does not depend on anyone else's writes.
//! - A finished (committed, aborted or rolled back) transaction refuses
//!   further operations.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use trireme_proto::v1 as proto;

use crate::backoff::Backoff;
use crate::client::Client;
use crate::error::{Error, Result};
use crate::types::{in_bounds, prefix_end, Isolation, ReadConsistency};

/// Backoff between attempts of [`Client::transaction`].
const TXN_BACKOFF: Backoff = Backoff {
    base: Duration::from_millis(10),
    cap: Duration::from_secs(1),
};

/// Where a transaction is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Accepting operations.
    Active,
    /// Commit was sent (or the transaction was read-only).
    Committing,
    /// Committed at this seqno.
    Committed(u64),
    /// Aborted by certification or by an error while committing.
    Failed,
    /// Rolled back by the caller.
    RolledBack,
}

/// The pure half of a transaction: buffered writes and what was read.
#[derive(Debug, Clone)]
pub(crate) struct TxnState {
    /// Buffered writes: `Some(value)` to put, `None` to delete.
    writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    /// Keys read from the server and the version seen (0: absent).
    reads: BTreeMap<Vec<u8>, u64>,
    /// Ranges scanned, as `[start, end)` with an empty end unbounded.
    ranges: BTreeSet<(Vec<u8>, Vec<u8>)>,
    /// Life cycle.
    phase: Phase,
}

impl TxnState {
    fn new() -> Self {
        TxnState {
            writes: BTreeMap::new(),
            reads: BTreeMap::new(),
            ranges: BTreeSet::new(),
            phase: Phase::Active,
        }
    }

    fn ensure_active(&self) -> Result<()> {
        match self.phase {
            Phase::Active => Ok(()),
            Phase::Committing | Phase::Committed(_) => {
                Err(Error::Other("the transaction has already committed".into()))
            }
            Phase::Failed => Err(Error::Other("the transaction has aborted".into())),
            Phase::RolledBack => Err(Error::Other("the transaction was rolled back".into())),
        }
    }

    /// The transaction's own write of `key`: `Some(Some(v))` put, `Some(None)`
    /// deleted, `None` not written.
    pub(crate) fn buffered(&self, key: &[u8]) -> Option<Option<&[u8]>> {
        self.writes.get(key).map(|v| v.as_deref())
    }

    /// Buffers a put (`Some`) or a delete (`None`); the last write of a key wins.
    pub(crate) fn write(&mut self, key: Vec<u8>, value: Option<Vec<u8>>) {
        self.writes.insert(key, value);
    }

    /// Records that `key` was read from the server at `version` (0: absent).
    pub(crate) fn record_read(&mut self, key: &[u8], version: u64) {
        self.reads.entry(key.to_vec()).or_insert(version);
    }

    /// Records that `[start, end)` was scanned.
    pub(crate) fn record_range(&mut self, start: Vec<u8>, end: Vec<u8>) {
        self.ranges.insert((start, end));
    }

    /// What a scan of `[start, end)` sees: the server's pairs (at the
    /// snapshot, in key order) overlaid with the buffered writes in the range.
    pub(crate) fn merge_scan(
        &self,
        start: &[u8],
        end: &[u8],
        server: Vec<(Vec<u8>, Vec<u8>)>,
    ) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut merged: BTreeMap<Vec<u8>, Vec<u8>> = server.into_iter().collect();
        for (key, write) in self.writes.range(start.to_vec()..) {
            if !in_bounds(key, start, end) {
                break;
            }
            match write {
                Some(value) => merged.insert(key.clone(), value.clone()),
                None => merged.remove(key),
            };
        }
        merged.into_iter().collect()
    }

    /// The write set to send: mutations in key order, and for SERIALIZABLE
    /// the read set and ranges.
    pub(crate) fn commit_request(
        &self,
        snapshot: u64,
        isolation: Isolation,
    ) -> proto::CommitRequest {
        let serializable = isolation == Isolation::Serializable;
        proto::CommitRequest {
            snapshot: Some(snapshot),
            isolation: isolation.to_proto() as i32,
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
            compares: Vec::new(),
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
            server_retry: false,
        }
    }
}

/// A transaction in progress: a handle that is cheap to clone (clones share
/// the same buffered writes and read set), so that it can be moved into the
/// `async move` block of [`Client::transaction`].
#[derive(Debug, Clone)]
pub struct Transaction {
    /// The client that began it; reads and the commit go through it.
    client: Client,
    /// The snapshot seqno every read uses: taken at begin, or, for a
    /// deferred transaction ([`Client::begin_deferred`]), by its first read
    /// (or its commit, if it reads nothing). Set once, shared by the clones.
    snapshot: Arc<tokio::sync::OnceCell<u64>>,
    /// How a deferred transaction takes its snapshot.
    consistency: ReadConsistency,
    /// What certification checks.
    isolation: Isolation,
    /// Writes, reads and life cycle, shared by the clones.
    state: Arc<Mutex<TxnState>>,
}

impl Client {
    /// Begins a transaction at a linearizable snapshot.
    pub async fn begin(&self, isolation: Isolation) -> Result<Transaction> {
        self.begin_with(isolation, ReadConsistency::Linearizable)
            .await
    }

    /// Begins a transaction whose snapshot is taken with `consistency`
    /// (`Local` starts from a possibly stale snapshot without a round trip to
    /// the leader; such a transaction can still only commit if nothing it
    /// depends on changed since).
    pub async fn begin_with(
        &self,
        isolation: Isolation,
        consistency: ReadConsistency,
    ) -> Result<Transaction> {
        let snapshot = self.begin_snapshot(consistency).await?;
        Ok(Transaction {
            client: self.clone(),
            snapshot: Arc::new(tokio::sync::OnceCell::new_with(Some(snapshot))),
            consistency,
            isolation,
            state: Arc::new(Mutex::new(TxnState::new())),
        })
    }

    /// Begins a transaction without a round trip: its snapshot is taken by
    /// its first `get` or `get_many`, in the same call (a linearizable read
    /// whose seqno becomes the snapshot), or by a separate begin before its
    /// first scan or its commit. One round trip fewer than [`Client::begin`];
    /// the same guarantees, as the snapshot is still a linearizable point
    /// taken after this call. [`Transaction::snapshot`] is `None` until then.
    pub fn begin_deferred(&self, isolation: Isolation) -> Transaction {
        Transaction {
            client: self.clone(),
            snapshot: Arc::new(tokio::sync::OnceCell::new()),
            consistency: ReadConsistency::Linearizable,
            isolation,
            state: Arc::new(Mutex::new(TxnState::new())),
        }
    }

    /// Runs `body` as a transaction and commits it, running it again from a
    /// new snapshot when certification aborts it on a conflict (not on a
    /// failed compare), with jittered exponential backoff, at most
    /// [`ClientOptions::txn_max_attempts`](crate::ClientOptions) times. Each
    /// attempt is a deferred transaction ([`Client::begin_deferred`]): its
    /// snapshot is taken by its first read.
    /// Returns the body's value and the commit seqno (the snapshot, for a
    /// transaction that wrote nothing).
    ///
    /// ```no_run
    /// # async fn f(client: trireme_client::Client) -> trireme_client::Result<()> {
    /// use trireme_client::Isolation;
    /// let (old, _seqno) = client
    ///     .transaction(Isolation::Serializable, |tx| async move {
    ///         let old = tx.get("counter").await?;
    ///         let n: u64 = old
    ///             .as_deref()
    ///             .and_then(|v| std::str::from_utf8(v).ok()?.parse().ok())
    ///             .unwrap_or(0);
    ///         tx.put("counter", (n + 1).to_string())?;
    ///         Ok(n)
    ///     })
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn transaction<T, F, Fut>(
        &self,
        isolation: Isolation,
        mut body: F,
    ) -> Result<(T, u64)>
    where
        F: FnMut(Transaction) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let attempts = self.options().txn_max_attempts.max(1);
        let mut attempt = 1;
        loop {
            let outcome: Result<(T, u64)> = async {
                let tx = self.begin_deferred(isolation);
                let value = body(tx.clone()).await?;
                let seqno = tx.finish().await?;
                Ok((value, seqno))
            }
            .await;
            match outcome {
                Err(e) if e.is_transaction_retryable() && attempt < attempts => {
                    tracing::debug!(attempt, error = %e, "retrying transaction");
                    tokio::time::sleep(self.backoff_delay(&TXN_BACKOFF, attempt - 1)).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }
}

impl Transaction {
    /// The snapshot seqno the transaction reads at; `None` for a deferred
    /// transaction that has not taken it yet.
    pub fn snapshot(&self) -> Option<u64> {
        self.snapshot.get().copied()
    }

    /// The snapshot, taken now by a begin round trip if a deferred
    /// transaction has none yet.
    async fn ensure_snapshot(&self) -> Result<u64> {
        self.snapshot
            .get_or_try_init(|| self.client.begin_snapshot(self.consistency))
            .await
            .copied()
    }

    /// A read at the snapshot (`at`). A deferred transaction's first read
    /// takes the snapshot instead: `fresh` reads with no snapshot, and the
    /// seqno it was served at becomes the snapshot. A clone's read racing it
    /// waits for it, then reads `at` the snapshot it took.
    async fn read_at_snapshot<T, Fresh, FreshFut, At, AtFut>(
        &self,
        fresh: Fresh,
        at: At,
    ) -> Result<T>
    where
        Fresh: FnOnce() -> FreshFut,
        FreshFut: Future<Output = Result<(T, u64)>>,
        At: FnOnce(u64) -> AtFut,
        AtFut: Future<Output = Result<T>>,
    {
        if let Some(snapshot) = self.snapshot.get() {
            return at(*snapshot).await;
        }
        let first = Mutex::new(None);
        let snapshot = *self
            .snapshot
            .get_or_try_init(|| async {
                let (found, seqno) = fresh().await?;
                *lock(&first) = Some(found);
                Ok::<_, Error>(seqno)
            })
            .await?;
        let first = lock(&first).take();
        match first {
            Some(found) => Ok(found),
            None => at(snapshot).await,
        }
    }

    /// The transaction's isolation level.
    pub fn isolation(&self) -> Isolation {
        self.isolation
    }

    /// Whether the transaction has buffered no writes.
    pub fn is_read_only(&self) -> bool {
        self.lock().writes.is_empty()
    }

    /// Reads `key`: the transaction's own write if any, else the value at the
    /// snapshot (recorded in the read set).
    pub async fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<Vec<u8>>> {
        let key = key.as_ref();
        {
            let state = self.lock();
            state.ensure_active()?;
            if let Some(write) = state.buffered(key) {
                return Ok(write.map(<[u8]>::to_vec));
            }
        }
        let found = self
            .read_at_snapshot(
                || self.client.get_fresh(key, self.consistency),
                |snapshot| self.client.get_at(key, snapshot),
            )
            .await?;
        let mut state = self.lock();
        state.ensure_active()?;
        state.record_read(key, found.as_ref().map_or(0, |v| v.version));
        // A clone may have written the key while the read was in flight.
        if let Some(write) = state.buffered(key) {
            return Ok(write.map(<[u8]>::to_vec));
        }
        Ok(found.map(|v| v.value))
    }

    /// Reads several keys in one round trip: for each key, in the order
    /// given, the transaction's own write if any, else the value at the
    /// snapshot (recorded in the read set, as [`Transaction::get`] records
    /// it). Keys the transaction wrote are not sent. At most the server's
    /// `max_scan_limit` keys (10,000 by default).
    pub async fn get_many<K: AsRef<[u8]>>(&self, keys: &[K]) -> Result<Vec<Option<Vec<u8>>>> {
        let fetch: Vec<Vec<u8>> = {
            let state = self.lock();
            state.ensure_active()?;
            keys.iter()
                .map(AsRef::as_ref)
                .filter(|k| state.buffered(k).is_none())
                .map(<[u8]>::to_vec)
                .collect()
        };
        let fetched = if fetch.is_empty() {
            Vec::new()
        } else {
            self.read_at_snapshot(
                || self.client.get_many_fresh(fetch.clone(), self.consistency),
                |snapshot| self.client.get_many_at(fetch.clone(), snapshot),
            )
            .await?
        };
        let mut state = self.lock();
        state.ensure_active()?;
        let mut read: BTreeMap<Vec<u8>, Option<Vec<u8>>> = BTreeMap::new();
        for (key, found) in fetch.into_iter().zip(fetched) {
            state.record_read(&key, found.as_ref().map_or(0, |v| v.version));
            read.insert(key, found.map(|v| v.value));
        }
        Ok(keys
            .iter()
            .map(|key| {
                let key = key.as_ref();
                // Buffered before the read, or by a clone while it was in flight.
                match state.buffered(key) {
                    Some(write) => write.map(<[u8]>::to_vec),
                    None => read.get(key).cloned().flatten(),
                }
            })
            .collect())
    }

    /// Every key with this prefix and its value, as of the snapshot overlaid
    /// with the transaction's own writes; the range joins the read set.
    pub async fn scan(&self, prefix: impl AsRef<[u8]>) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let prefix = prefix.as_ref();
        self.scan_range(prefix, prefix_end(prefix)).await
    }

    /// Every key in `[start, end)` (an empty `end` is unbounded) and its
    /// value, as of the snapshot overlaid with the transaction's own writes;
    /// the range joins the read set.
    pub async fn scan_range(
        &self,
        start: impl Into<Vec<u8>>,
        end: impl Into<Vec<u8>>,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let (start, end) = (start.into(), end.into());
        self.lock().ensure_active()?;
        let snapshot = self.ensure_snapshot().await?;
        let mut pairs = Vec::new();
        let mut cursor = start.clone();
        loop {
            let page = self
                .client
                .scan_at(cursor.clone(), end.clone(), snapshot)
                .await?;
            let next = page.kvs.last().map(|kv| {
                let mut next = kv.key.clone();
                next.push(0);
                next
            });
            pairs.extend(page.kvs.into_iter().map(|kv| (kv.key, kv.value)));
            match next {
                Some(next) if page.more => cursor = next,
                // Done, or a server that says "more" without progress.
                _ => break,
            }
        }
        let mut state = self.lock();
        state.ensure_active()?;
        let merged = state.merge_scan(&start, &end, pairs);
        state.record_range(start, end);
        Ok(merged)
    }

    /// Buffers a write of `value` under `key`.
    pub fn put(&self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Result<()> {
        let mut state = self.lock();
        state.ensure_active()?;
        state.write(key.into(), Some(value.into()));
        Ok(())
    }

    /// Buffers a delete of `key`.
    pub fn delete(&self, key: impl Into<Vec<u8>>) -> Result<()> {
        let mut state = self.lock();
        state.ensure_active()?;
        state.write(key.into(), None);
        Ok(())
    }

    /// Commits: returns the commit seqno, or the snapshot for a transaction
    /// that wrote nothing (which commits without a request). An
    /// [`Error::Aborted`] means nothing was applied.
    pub async fn commit(self) -> Result<u64> {
        self.finish().await
    }

    /// Abandons the transaction; nothing was sent, so nothing changes.
    pub fn rollback(self) {
        let mut state = self.lock();
        if state.phase == Phase::Active {
            state.phase = Phase::RolledBack;
        }
    }

    /// Commits unless a clone already did (as [`Client::transaction`] bodies may).
    async fn finish(&self) -> Result<u64> {
        {
            let state = self.lock();
            if let Phase::Committed(seqno) = state.phase {
                return Ok(seqno);
            }
            state.ensure_active()?;
        }
        let snapshot = self.ensure_snapshot().await?;
        let request = {
            let mut state = self.lock();
            if let Phase::Committed(seqno) = state.phase {
                return Ok(seqno);
            }
            state.ensure_active()?;
            if state.writes.is_empty() {
                state.phase = Phase::Committed(snapshot);
                return Ok(snapshot);
            }
            state.phase = Phase::Committing;
            state.commit_request(snapshot, self.isolation)
        };
        let result = self.client.commit(request).await;
        self.lock().phase = match result {
            Ok(seqno) => Phase::Committed(seqno),
            Err(_) => Phase::Failed,
        };
        result
    }

    fn lock(&self) -> MutexGuard<'_, TxnState> {
        lock(&self.state)
    }
}

/// Locks `m`. Every mutex here is updated by plain assignments only, so a
/// panic while one was held cannot have left it half-changed.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(k: &str, v: &str) -> (Vec<u8>, Vec<u8>) {
        (k.as_bytes().to_vec(), v.as_bytes().to_vec())
    }

    #[test]
    fn get_sees_buffered_puts_and_deletes_last_write_wins() {
        let mut s = TxnState::new();
        assert_eq!(s.buffered(b"a"), None);
        s.write(b"a".to_vec(), Some(b"1".to_vec()));
        assert_eq!(s.buffered(b"a"), Some(Some(&b"1"[..])));
        s.write(b"a".to_vec(), None);
        assert_eq!(s.buffered(b"a"), Some(None));
        s.write(b"a".to_vec(), Some(b"2".to_vec()));
        assert_eq!(s.buffered(b"a"), Some(Some(&b"2"[..])));
    }

    #[test]
    fn scan_merges_buffered_writes_within_the_range_only() {
        let mut s = TxnState::new();
        s.write(b"p/b".to_vec(), Some(b"new".to_vec())); // overwrites
        s.write(b"p/c".to_vec(), None); // deletes
        s.write(b"p/d".to_vec(), Some(b"4".to_vec())); // inserts
        s.write(b"p/z".to_vec(), None); // deletes an absent key
        s.write(b"q/a".to_vec(), Some(b"x".to_vec())); // outside
        s.write(b"a".to_vec(), Some(b"x".to_vec())); // outside, before
        let server = vec![kv("p/a", "1"), kv("p/b", "2"), kv("p/c", "3")];
        let (start, end) = (b"p/".to_vec(), prefix_end(b"p/"));
        assert_eq!(
            s.merge_scan(&start, &end, server),
            vec![kv("p/a", "1"), kv("p/b", "new"), kv("p/d", "4")]
        );
    }

    #[test]
    fn scan_with_unbounded_end_merges_everything_after_start() {
        let mut s = TxnState::new();
        s.write(b"m".to_vec(), Some(b"1".to_vec()));
        s.write(b"\xff".to_vec(), Some(b"2".to_vec()));
        s.write(b"a".to_vec(), Some(b"0".to_vec()));
        assert_eq!(
            s.merge_scan(b"b", b"", vec![kv("c", "3")]),
            vec![
                kv("c", "3"),
                kv("m", "1"),
                (b"\xff".to_vec(), b"2".to_vec())
            ]
        );
    }

    #[test]
    fn serializable_commit_carries_reads_and_ranges_snapshot_does_not() {
        let mut s = TxnState::new();
        s.record_read(b"r", 7);
        s.record_read(b"r", 9); // same snapshot: the first version stands
        s.record_range(b"p/".to_vec(), prefix_end(b"p/"));
        s.write(b"w".to_vec(), Some(b"v".to_vec()));
        s.write(b"d".to_vec(), None);

        let req = s.commit_request(5, Isolation::Serializable);
        assert_eq!(req.snapshot, Some(5));
        assert_eq!(req.isolation, proto::Isolation::Serializable as i32);
        assert_eq!(
            req.mutations,
            vec![
                proto::Mutation {
                    key: b"d".to_vec(),
                    value: vec![],
                    delete: true,
                    lease: 0,
                },
                proto::Mutation {
                    key: b"w".to_vec(),
                    value: b"v".to_vec(),
                    delete: false,
                    lease: 0,
                },
            ]
        );
        assert_eq!(
            req.reads,
            vec![proto::ReadKey {
                key: b"r".to_vec(),
                version: 7
            }]
        );
        assert_eq!(
            req.ranges,
            vec![proto::ReadRange {
                start: b"p/".to_vec(),
                end: b"p0".to_vec()
            }]
        );

        let req = s.commit_request(5, Isolation::Snapshot);
        assert!(req.reads.is_empty() && req.ranges.is_empty());
        assert_eq!(req.mutations.len(), 2);
    }

    #[test]
    fn finished_state_refuses_operations() {
        let mut s = TxnState::new();
        assert!(s.ensure_active().is_ok());
        s.phase = Phase::RolledBack;
        assert!(s.ensure_active().is_err());
        s.phase = Phase::Committed(3);
        assert!(s.ensure_active().is_err());
    }
}
