//! The durable Raft log: segment files, group commit, and crash recovery.
//!
//! # On-disk format
//!
//! A log directory holds:
//!
//! - segment files `log-<NNNNNNNNNNNNNNNNNNNN>.seg`, where the number is the index of the
//!   first entry the segment was opened for (bumped when needed so that names stay strictly
//!   increasing after a truncation rewound the log; file-name order is always write order);
//! - `vote`: the last saved vote, replaced atomically (tmp file, fsync, rename, fsync dir);
//! - `committed`: the last saved committed log id, replaced by rename without fsync (openraft
//!   tolerates it being stale).
//!
//! A segment is a sequence of records framed as `[u32 len LE][u32 crc32 LE][payload]`, where
//! the CRC (crc32fast) covers the payload and the payload is a `crate::codec` envelope
//! (magic, format version, tag) whose tag says which record it is: an entry, a truncation
//! (`since`) or a purge (a log id). A record in a newer format version or with an unknown
//! tag is refused at start with an error naming both versions. Recovery replays every segment in
//! name order and applies the records to rebuild the in-memory log. The active segment's space
//! is reserved when it is opened (see `writer`), so the last segment may end in zeros: they are
//! the end of the log. A torn or CRC-failing record at the very end of the **last** segment
//! (followed by nothing or by zeros) is the tail of a write that was never acknowledged: the
//! file is cut there. A bad record anywhere else is corruption, and
//! [`LogStore::open`] fails with [`Error::InvalidData`] naming the file and offset: the node
//! must not start and serve divergent data. The active segment rolls over once it passes
//! the segment size (64 MiB by default); purging deletes the oldest segments whose entries
//! are all at or below the purged index (never the active one).
//!
//! # Group commit
//!
//! One writer thread owns the files. [`RaftLogStorage::append`] puts the entries into the
//! in-memory map (so readers see them at once), queues their encoded records and returns.
//! The writer blocks for one command, drains every command already queued, writes them all,
//! issues **one** `fdatasync` for the lot and only then reports each append's completion to
//! openraft (`LogFlushed::log_io_completed`). Truncate, purge and vote go through the same
//! queue, so the order on disk is the order of the calls, and wait until their own record is
//! durable before returning.
//!
//! # Durability contract
//!
//! An append is acknowledged only after its bytes were written and `fdatasync`ed. If a write
//! or a sync fails, nothing written since the last good sync is acknowledged: every pending
//! callback gets the error and the store enters a failed state in which every later append,
//! truncate, purge and vote save returns a [`StorageError`], so openraft stops the node
//! instead of running on a log whose durability is unknown.
//!
//! # Modules
//!
//! - this file: [`LogStore`] and [`LogReader`], openraft's log storage and reader traits;
//! - `format`: the record framing and encoding;
//! - `recovery`: replaying a directory's segments at open, the vote and committed files;
//! - `writer`: the group-commit thread that owns the files;
//! - `index`: the live log in memory, with byte accounting for retention.

mod format;
mod index;
mod recovery;
mod writer;

use std::fmt::Debug;
use std::fs;
use std::io;
use std::ops::RangeBounds;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, RwLock};
use std::thread::JoinHandle;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{AnyError, OptionalSend, RaftLogReader, StorageIOError, Vote};
use tokio::sync::oneshot;

use super::types::{Entry, LogId, StorageError, TypeConfig};
use crate::codec::{self, Tag};
use crate::Error;

use format::{encode_record, frame, RecordRef};
pub(super) use index::Mem;
use recovery::{read_committed_file, read_vote_file, recover, remove_tmp_files};
use writer::{Command, LogWrite, Shared, Writer};

/// Default size past which the active segment is closed and a new one started.
pub const DEFAULT_SEGMENT_SIZE: u64 = 64 * 1024 * 1024;

/// Default byte budget of the entries one AppendEntries carries (at least one
/// entry is always sent, whatever its size).
pub const DEFAULT_APPEND_MAX_BYTES: u64 = 1 << 20;

/// A completion callback for a queued write: called once, with the outcome of the fsync.
pub type Done = Box<dyn FnOnce(io::Result<()>) + Send + 'static>;

/// Counters that show how well group commit batches (fsyncs versus records).
#[derive(Debug, Default)]
pub struct LogStats {
    /// `fdatasync` calls issued on segment files.
    pub fsyncs: AtomicU64,
    /// Records (entries, truncations, purges) written to segment files.
    pub records: AtomicU64,
    /// Bytes written to segment files, framing included.
    pub bytes: AtomicU64,
}

/// A cheap, cloneable reader of the log, for openraft's replication tasks.
#[derive(Clone, Debug)]
pub struct LogReader {
    mem: Arc<RwLock<Mem>>,
    /// Byte budget of one replication read (see [`DEFAULT_APPEND_MAX_BYTES`]).
    append_max_bytes: u64,
}

impl LogReader {
    /// The bytes of the entries held.
    pub fn bytes(&self) -> u64 {
        read_mem(&self.mem).bytes()
    }

    /// The bytes of the entries held, and the greatest index whose purge
    /// would bring them within `limit` (`None`: they fit).
    pub fn retention(&self, limit: u64) -> (u64, Option<u64>) {
        let mem = read_mem(&self.mem);
        (mem.bytes(), mem.purge_cut_for_bytes(limit))
    }
}

impl RaftLogReader<TypeConfig> for LogReader {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        Ok(read_mem(&self.mem).range(&range))
    }

    /// Replication reads are bounded by bytes as well as by openraft's
    /// entry count, so one AppendEntries fits its heartbeat-sized timeout
    /// whatever the value sizes.
    async fn limited_get_log_entries(
        &mut self,
        start: u64,
        end: u64,
    ) -> Result<Vec<Entry>, StorageError> {
        Ok(read_mem(&self.mem).range_within_bytes(start, end, self.append_max_bytes))
    }
}

/// The durable Raft log of one node: segment files written by a group-commit thread.
pub struct LogStore {
    mem: Arc<RwLock<Mem>>,
    shared: Arc<Shared>,
    stats: Arc<LogStats>,
    tx: Option<mpsc::Sender<Command>>,
    writer: Option<JoinHandle<()>>,
    vote: Option<Vote<u64>>,
    committed: Option<LogId>,
    /// The highest index the state machine has made durable; purges stop there.
    purge_fence: Option<Arc<AtomicU64>>,
    /// A purge cut back by the fence, carried out once the fence reaches it.
    deferred_purge: Option<LogId>,
    /// Byte budget of one replication read, handed to readers.
    append_max_bytes: u64,
}

impl Debug for LogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mem = read_mem(&self.mem);
        f.debug_struct("LogStore")
            .field("last_purged", &mem.last_purged)
            .field("last_log_id", &mem.last_log_id())
            .field("vote", &self.vote)
            .field("failed", &self.shared.failed.get())
            .finish_non_exhaustive()
    }
}

fn read_mem(mem: &RwLock<Mem>) -> std::sync::RwLockReadGuard<'_, Mem> {
    mem.read()
        .expect("log memory lock poisoned: a holder panicked")
}

fn write_mem(mem: &RwLock<Mem>) -> std::sync::RwLockWriteGuard<'_, Mem> {
    mem.write()
        .expect("log memory lock poisoned: a holder panicked")
}

fn write_logs_err(msg: impl ToString) -> StorageError {
    StorageIOError::write_logs(AnyError::error(msg)).into()
}

fn io_copy(e: &io::Error) -> io::Error {
    io::Error::new(e.kind(), e.to_string())
}

impl LogStore {
    /// Opens (or creates) the log in `dir`, with the default 64 MiB segment size.
    pub fn open(dir: &Path) -> Result<LogStore, Error> {
        Self::open_with_segment_size(dir, DEFAULT_SEGMENT_SIZE)
    }

    /// Opens (or creates) the log in `dir`, rolling segments past `segment_size` bytes.
    pub fn open_with_segment_size(dir: &Path, segment_size: u64) -> Result<LogStore, Error> {
        fs::create_dir_all(dir)
            .map_err(|e| Error::Storage(format!("creating log dir {}: {e}", dir.display())))?;
        remove_tmp_files(dir)?;

        let (mem, segments, active, active_size) = recover(dir)?;
        let vote = read_vote_file(dir)?;
        let committed = read_committed_file(dir);

        let shared = Arc::new(Shared::default());
        let stats = Arc::new(LogStats::default());
        let (tx, rx) = mpsc::channel();
        let mut writer = Writer {
            dir: dir.to_path_buf(),
            segment_size: segment_size.max(1),
            segments,
            active,
            active_size,
            unsynced: false,
            shared: Arc::clone(&shared),
            stats: Arc::clone(&stats),
            committed_written: None,
        };
        writer.preallocate();
        let handle = std::thread::Builder::new()
            .name("trireme-log-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| Error::Storage(format!("spawning log writer: {e}")))?;

        Ok(LogStore {
            mem: Arc::new(RwLock::new(mem)),
            shared,
            stats,
            tx: Some(tx),
            writer: Some(handle),
            vote,
            committed,
            purge_fence: None,
            deferred_purge: None,
            append_max_bytes: DEFAULT_APPEND_MAX_BYTES,
        })
    }

    /// Bounds the entries one replication read (one AppendEntries) returns
    /// to `bytes` (at least one entry); applies to readers made after it.
    pub fn set_append_max_bytes(&mut self, bytes: u64) {
        self.append_max_bytes = bytes;
    }

    /// Limits purges to the index in `fence` (the state machine's durably
    /// applied index, which it keeps up to date).
    pub fn set_purge_fence(&mut self, fence: Arc<AtomicU64>) {
        self.purge_fence = Some(fence);
    }

    /// The group-commit counters of this store.
    pub fn stats(&self) -> Arc<LogStats> {
        Arc::clone(&self.stats)
    }

    /// A reader sharing this store's in-memory log.
    pub fn reader(&self) -> LogReader {
        LogReader {
            mem: Arc::clone(&self.mem),
            append_max_bytes: self.append_max_bytes,
        }
    }

    /// Appends `entries` to memory and queues them for the writer; `done` is called once
    /// they are durable (or with the error if they cannot be). The core of `append`.
    // StorageError is openraft's (large) error type; the trait forces it on us.
    #[allow(clippy::result_large_err)]
    pub fn append_records(
        &self,
        entries: impl IntoIterator<Item = Entry>,
        done: Done,
    ) -> Result<(), StorageError> {
        self.check_failed()?;
        let entries: Vec<Entry> = entries.into_iter().collect();
        let mut frames = Vec::new();
        // Each entry's framed size, for retention by bytes: measured here,
        // outside the memory lock, rather than by encoding it again.
        let mut sizes = Vec::with_capacity(entries.len());
        for e in &entries {
            let before = frames.len();
            encode_record(&mut frames, &RecordRef::Entry(e))
                .map_err(|err| StorageIOError::write_log_entry(e.log_id, AnyError::new(&err)))?;
            sizes.push((frames.len() - before) as u64);
        }
        let records = entries.len() as u64;
        let start_index = entries.first().map(|e| e.log_id.index);
        let max_entry = entries.iter().map(|e| e.log_id.index).max();

        let mut mem = write_mem(&self.mem);
        let start_index = start_index.unwrap_or_else(|| mem.next_index());
        for (e, size) in entries.into_iter().zip(sizes) {
            mem.apply_sized_entry(e, size);
        }
        // Queued while still holding the lock, so that the disk order is the memory order
        // even when several threads append through `&self`.
        self.send(Command::Log(LogWrite {
            frames,
            records,
            start_index,
            max_entry,
            purge_upto: None,
            done,
        }))
    }

    #[allow(clippy::result_large_err)] // StorageError is openraft's; see append_records.
    fn check_failed(&self) -> Result<(), StorageError> {
        match self.shared.failed.get() {
            Some(msg) => Err(write_logs_err(format!(
                "log store failed earlier and refuses writes: {msg}"
            ))),
            None => Ok(()),
        }
    }

    #[allow(clippy::result_large_err)] // StorageError is openraft's; see append_records.
    fn send(&self, cmd: Command) -> Result<(), StorageError> {
        let tx = self.tx.as_ref().expect("sender lives until drop");
        tx.send(cmd).map_err(|e| {
            let msg = "log writer thread is gone";
            e.0.fail(io::Error::other(msg));
            write_logs_err(msg)
        })
    }

    /// Queues a log record through the writer and waits until it is durable.
    async fn write_record_durably(
        &self,
        rec: RecordRef<'_>,
        start_index: u64,
        purge_upto: Option<u64>,
        apply: impl FnOnce(&mut Mem),
    ) -> Result<(), StorageError> {
        self.check_failed()?;
        let mut frames = Vec::new();
        encode_record(&mut frames, &rec).map_err(|e| write_logs_err(&e))?;
        let (tx, rx) = oneshot::channel();
        {
            let mut mem = write_mem(&self.mem);
            apply(&mut mem);
            self.send(Command::Log(LogWrite {
                frames,
                records: 1,
                start_index,
                max_entry: None,
                purge_upto,
                done: Box::new(move |r| {
                    let _ = tx.send(r);
                }),
            }))?;
        }
        rx.await
            .map_err(|_| write_logs_err("log writer thread is gone"))?
            .map_err(|e| write_logs_err(&e))
    }
}

impl Drop for LogStore {
    fn drop(&mut self) {
        // Closing the channel lets the writer finish what is queued and exit; joining it
        // means the files are closed when the store is gone (a reopen sees everything).
        drop(self.tx.take());
        if let Some(handle) = self.writer.take() {
            if handle.join().is_err() {
                tracing::error!("log writer thread panicked");
            }
        }
    }
}

impl LogStore {
    /// Waits until the state machine has made `want` durable (a snapshot
    /// install finishing), then purges up to it.
    async fn settle_deferred_purge(&mut self, want: LogId) -> Result<(), StorageError> {
        let Some(fence) = self.purge_fence.clone() else {
            return Ok(());
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
        while fence.load(Ordering::Acquire) < want.index {
            if std::time::Instant::now() > deadline {
                return Err(write_logs_err(format!(
                    "the state machine did not make index {} durable within 300 s",
                    want.index
                )));
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        self.deferred_purge = None;
        Box::pin(RaftLogStorage::purge(self, want)).await
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        Ok(read_mem(&self.mem).range(&range))
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogReader;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let mem = read_mem(&self.mem);
        Ok(LogState {
            last_purged_log_id: mem.last_purged,
            last_log_id: mem.last_log_id(),
        })
    }

    async fn get_log_reader(&mut self) -> LogReader {
        self.reader()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> Result<(), StorageError> {
        self.check_failed()
            .map_err(|e| StorageIOError::write_vote(AnyError::new(&e)))?;
        if self.vote.as_ref() == Some(vote) {
            return Ok(());
        }
        let payload = codec::encode(Tag::Vote, vote)
            .map_err(|e| StorageIOError::write_vote(AnyError::new(&e)))?;
        let (tx, rx) = oneshot::channel();
        self.send(Command::Vote {
            bytes: frame(&payload),
            done: Box::new(move |r| {
                let _ = tx.send(r);
            }),
        })?;
        rx.await
            .map_err(|_| StorageIOError::write_vote(AnyError::error("log writer thread is gone")))?
            .map_err(|e| StorageIOError::write_vote(AnyError::new(&e)))?;
        self.vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<u64>>, StorageError> {
        Ok(self.vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        self.check_failed()?;
        if self.committed == committed {
            return Ok(());
        }
        let payload = codec::encode(Tag::Committed, &committed).map_err(|e| write_logs_err(&e))?;
        // Not waited for: the writer replaces the file after the current group is durable,
        // without fsync. A stale value only makes openraft re-apply a little less on start.
        self.send(Command::Committed {
            bytes: frame(&payload),
        })?;
        self.committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        // Appending past a deferred purge would leave a hole in the log (the
        // entries a snapshot covers, kept because the snapshot is not durable
        // yet, then the entries after it): wait for the install first.
        let first = entries.first().map(|e| e.log_id.index);
        let next = read_mem(&self.mem).next_index();
        if let (Some(want), Some(first)) = (self.deferred_purge, first) {
            if first > next {
                self.settle_deferred_purge(want).await?;
            }
        }
        self.append_records(entries, Box::new(move |r| callback.log_io_completed(r)))
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let since = log_id.index;
        self.write_record_durably(RecordRef::Truncate { since }, since, None, |mem| {
            mem.truncate(since)
        })
        .await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        // openraft may purge the entries a snapshot covers before the state
        // machine has made that snapshot durable (its install runs on another
        // task); a crash then would leave a gap between the applied index and
        // the log. Never purge past what the state machine has durably applied.
        let log_id = match &self.purge_fence {
            Some(fence) if log_id.index > fence.load(Ordering::Acquire) => {
                self.deferred_purge = self.deferred_purge.max(Some(log_id));
                let limit = fence.load(Ordering::Acquire);
                let clamped = read_mem(&self.mem).entries.get(&limit).map(|e| e.log_id);
                match clamped {
                    Some(id) => id,
                    None => return Ok(()),
                }
            }
            _ => log_id,
        };
        if read_mem(&self.mem).last_purged.is_some_and(|p| p >= log_id) {
            return Ok(());
        }
        let start_index = {
            let mem = read_mem(&self.mem);
            mem.next_index().max(log_id.index.saturating_add(1))
        };
        self.write_record_durably(
            RecordRef::Purge(log_id),
            start_index,
            Some(log_id.index),
            |mem| mem.purge(log_id),
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::fs::OpenOptions;
    use std::io::Write;
    use std::ops::Bound;
    use std::path::PathBuf;
    use std::sync::Mutex;

    use openraft::storage::RaftLogStorageExt;
    use openraft::{CommittedLeaderId, EntryPayload, Membership};

    use super::format::{decode_record, frame, read_frame, Record, HEADER_LEN};
    use super::recovery::{parse_segment_name, VOTE_FILE};
    use super::*;
    use crate::raft::types::Request;

    fn lid(term: u64, index: u64) -> LogId {
        LogId::new(CommittedLeaderId::new(term, 1), index)
    }

    fn ent(term: u64, index: u64) -> Entry {
        let payload = match index % 3 {
            0 => EntryPayload::Blank,
            1 => EntryPayload::Normal(Request::Batch(Vec::new())),
            _ => EntryPayload::Membership(Membership::new(vec![BTreeSet::from([1u64, 2, 3])], ())),
        };
        Entry {
            log_id: lid(term, index),
            payload,
        }
    }

    fn ents(term: u64, range: std::ops::Range<u64>) -> Vec<Entry> {
        range.map(|i| ent(term, i)).collect()
    }

    async fn all(store: &mut LogStore) -> Vec<LogId> {
        store
            .try_get_log_entries(..)
            .await
            .expect("read")
            .into_iter()
            .map(|e| e.log_id)
            .collect()
    }

    fn ids(term: u64, range: std::ops::Range<u64>) -> Vec<LogId> {
        range.map(|i| lid(term, i)).collect()
    }

    fn segment_files(dir: &Path) -> Vec<(u64, PathBuf)> {
        let mut v: Vec<_> = fs::read_dir(dir)
            .expect("list")
            .filter_map(|e| {
                let e = e.expect("entry");
                parse_segment_name(&e.file_name().to_string_lossy()).map(|n| (n, e.path()))
            })
            .collect();
        v.sort();
        v
    }

    #[test]
    fn record_ref_encodes_as_record() {
        let e = ent(2, 7);
        let recs = [
            RecordRef::Entry(&e),
            RecordRef::Truncate { since: 5 },
            RecordRef::Purge(lid(1, 3)),
        ];
        let mut buf = Vec::new();
        for r in &recs {
            encode_record(&mut buf, r).expect("encode");
        }
        let mut off = 0;
        let mut decoded = Vec::new();
        while off < buf.len() {
            let (payload, n) = read_frame(&buf[off..]).expect("frame");
            decoded.push(decode_record(payload, "test").expect("decode"));
            off += n;
        }
        assert!(matches!(&decoded[0], Record::Entry(d) if *d == e));
        assert!(matches!(decoded[1], Record::Truncate { since: 5 }));
        assert!(matches!(decoded[2], Record::Purge(id) if id == lid(1, 3)));
    }

    #[tokio::test]
    async fn append_reopen_keeps_entries_and_vote() {
        let dir = tempfile::tempdir().expect("tempdir");
        let vote = Vote::new_committed(3, 2);
        {
            let mut s = LogStore::open(dir.path()).expect("open");
            assert_eq!(s.read_vote().await.expect("vote"), None);
            s.blocking_append(ents(1, 0..5)).await.expect("append");
            s.save_vote(&vote).await.expect("vote");
            s.blocking_append(ents(3, 5..10)).await.expect("append");
            s.save_committed(Some(lid(3, 8))).await.expect("committed");
        }
        let mut s = LogStore::open(dir.path()).expect("reopen");
        let got = s.try_get_log_entries(0..10).await.expect("read");
        let want: Vec<Entry> = ents(1, 0..5).into_iter().chain(ents(3, 5..10)).collect();
        assert_eq!(got, want, "entries, payloads included, survive a reopen");
        assert_eq!(s.read_vote().await.expect("vote"), Some(vote));
        assert_eq!(
            s.read_committed().await.expect("committed"),
            Some(lid(3, 8))
        );
        let st = s.get_log_state().await.expect("state");
        assert_eq!(st.last_purged_log_id, None);
        assert_eq!(st.last_log_id, Some(lid(3, 9)));
        let mut r = s.get_log_reader().await;
        let part = r.try_get_log_entries(3..6).await.expect("reader");
        assert_eq!(
            part.iter().map(|e| e.log_id).collect::<Vec<_>>(),
            vec![lid(1, 3), lid(1, 4), lid(3, 5)]
        );
        assert!(r.try_get_log_entries(6..6).await.expect("empty").is_empty());
        assert!(r
            .try_get_log_entries((Bound::Included(8), Bound::Excluded(2)))
            .await
            .expect("reversed")
            .is_empty());
    }

    #[tokio::test]
    async fn truncate_then_append_survives_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let mut s = LogStore::open(dir.path()).expect("open");
            s.blocking_append(ents(1, 1..11)).await.expect("append");
            s.truncate(lid(1, 6)).await.expect("truncate");
            assert_eq!(
                all(&mut s).await,
                ids(1, 1..6),
                "truncate is visible at once"
            );
            let st = s.get_log_state().await.expect("state");
            assert_eq!(st.last_log_id, Some(lid(1, 5)));
            s.blocking_append(ents(2, 6..9)).await.expect("append");
        }
        let mut s = LogStore::open(dir.path()).expect("reopen");
        let want: Vec<LogId> = ids(1, 1..6).into_iter().chain(ids(2, 6..9)).collect();
        assert_eq!(all(&mut s).await, want);

        // Truncating everything leaves an empty log with no last log id.
        s.truncate(lid(1, 1)).await.expect("truncate all");
        drop(s);
        let mut s = LogStore::open(dir.path()).expect("reopen");
        assert!(all(&mut s).await.is_empty());
        assert_eq!(s.get_log_state().await.expect("state").last_log_id, None);
    }

    #[tokio::test]
    async fn an_append_past_a_deferred_purge_waits_and_leaves_no_hole() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let mut s = LogStore::open(dir.path()).expect("open");
            let fence = Arc::new(AtomicU64::new(5));
            s.set_purge_fence(fence.clone());
            for i in 1..=10 {
                s.blocking_append([ent(1, i)]).await.expect("append");
            }
            // A snapshot at 30 arrives: its purge is cut back to 5 and deferred.
            s.purge(lid(1, 30)).await.expect("purge");
            let raise = tokio::spawn(async move {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                fence.store(30, Ordering::Release);
            });
            // Entries after the snapshot: the append waits for the install,
            // then purges to 30, so 6..=10 never sit below a hole.
            s.blocking_append([ent(1, 31)]).await.expect("append");
            raise.await.expect("raise");
            assert_eq!(
                s.get_log_state().await.expect("state").last_purged_log_id,
                Some(lid(1, 30))
            );
        }
        let mut s = LogStore::open(dir.path()).expect("reopen");
        let st = s.get_log_state().await.expect("state");
        assert_eq!(st.last_purged_log_id, Some(lid(1, 30)));
        assert_eq!(st.last_log_id, Some(lid(1, 31)));
        assert_eq!(s.try_get_log_entries(31..=31).await.expect("read").len(), 1);
    }

    #[tokio::test]
    async fn purge_stops_at_the_durable_fence() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let mut s = LogStore::open(dir.path()).expect("open");
            let fence = Arc::new(AtomicU64::new(20));
            s.set_purge_fence(fence.clone());
            for i in 1..=50 {
                s.blocking_append([ent(1, i)]).await.expect("append");
            }
            // The state machine has made only index 20 durable: a purge to 40
            // (a snapshot being installed) must keep 21..=40 for replay.
            s.purge(lid(1, 40)).await.expect("purge");
            assert_eq!(
                s.get_log_state().await.expect("state").last_purged_log_id,
                Some(lid(1, 20))
            );
            fence.store(45, Ordering::Release);
            s.purge(lid(1, 40)).await.expect("purge");
            assert_eq!(
                s.get_log_state().await.expect("state").last_purged_log_id,
                Some(lid(1, 40))
            );
        }
        let mut s = LogStore::open(dir.path()).expect("reopen");
        assert_eq!(
            s.get_log_state().await.expect("state").last_purged_log_id,
            Some(lid(1, 40))
        );
        let entries = s.try_get_log_entries(41..=50).await.expect("read");
        assert_eq!(entries.len(), 10);
    }

    #[tokio::test]
    async fn purge_survives_reopen_and_deletes_old_segments() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let mut s = LogStore::open_with_segment_size(dir.path(), 256).expect("open");
            for i in 1..=50 {
                s.blocking_append([ent(1, i)]).await.expect("append");
            }
            let before = segment_files(dir.path());
            assert!(before.len() > 5, "tiny segments roll: {before:?}");
            s.purge(lid(1, 30)).await.expect("purge");
            let after = segment_files(dir.path());
            assert!(after.len() < before.len(), "purge deleted segments");
            assert!(after[0].0 > 1, "the first segment is gone: {after:?}");
            // The oldest kept segment still holds entry 31 (its name is at most 31), and the
            // one after it starts above 31: exactly the fully purged prefix was deleted.
            assert!(after[0].0 <= 31, "{after:?}");
            assert!(after.len() < 2 || after[1].0 > 31, "{after:?}");
            let st = s.get_log_state().await.expect("state");
            assert_eq!(st.last_purged_log_id, Some(lid(1, 30)));
            assert_eq!(st.last_log_id, Some(lid(1, 50)));
        }
        let mut s = LogStore::open_with_segment_size(dir.path(), 256).expect("reopen");
        let st = s.get_log_state().await.expect("state");
        assert_eq!(st.last_purged_log_id, Some(lid(1, 30)));
        assert_eq!(st.last_log_id, Some(lid(1, 50)));
        assert!(s.try_get_log_entries(0..31).await.expect("read").is_empty());
        assert_eq!(all(&mut s).await, ids(1, 31..51));

        // Purging past the end: the purged id becomes the last log id; appends continue.
        s.purge(lid(2, 60)).await.expect("purge all");
        assert_eq!(
            segment_files(dir.path()).len(),
            1,
            "all but the active segment (holding the purge record) were deleted"
        );
        drop(s);
        let mut s = LogStore::open_with_segment_size(dir.path(), 256).expect("reopen");
        let st = s.get_log_state().await.expect("state");
        assert_eq!(st.last_purged_log_id, Some(lid(2, 60)));
        assert_eq!(st.last_log_id, Some(lid(2, 60)));
        assert!(all(&mut s).await.is_empty());
        s.blocking_append(ents(2, 61..63)).await.expect("append");
        drop(s);
        let mut s = LogStore::open_with_segment_size(dir.path(), 256).expect("reopen");
        assert_eq!(all(&mut s).await, ids(2, 61..63));
    }

    #[tokio::test]
    async fn purge_keeps_segments_a_later_truncate_depends_on() {
        // With one segment per write: A = entries 1..=9, B = truncate since 5, C = entries
        // 5..=6 (term 2), D = purge (2,6). B and C hold nothing above 6, but A does: only a
        // prefix may go, so all stay (deleting B alone would resurrect entries 7..=9).
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let mut s = LogStore::open_with_segment_size(dir.path(), 1).expect("open");
            s.blocking_append(ents(1, 1..10)).await.expect("append");
            s.truncate(lid(1, 5)).await.expect("truncate");
            s.blocking_append(ents(2, 5..7)).await.expect("append");
            s.purge(lid(2, 6)).await.expect("purge");
            assert_eq!(segment_files(dir.path()).len(), 4);
        }
        let mut s = LogStore::open_with_segment_size(dir.path(), 1).expect("reopen");
        assert!(all(&mut s).await.is_empty());
        let st = s.get_log_state().await.expect("state");
        assert_eq!(st.last_purged_log_id, Some(lid(2, 6)));
        assert_eq!(st.last_log_id, Some(lid(2, 6)));
    }

    #[tokio::test]
    async fn torn_tail_is_cut_and_earlier_entries_survive() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let mut s = LogStore::open(dir.path()).expect("open");
            for i in 0..4 {
                s.blocking_append(ents(1, i * 5..i * 5 + 5))
                    .await
                    .expect("append");
            }
        }
        let segs = segment_files(dir.path());
        let last = &segs.last().expect("a segment").1;
        let len = fs::metadata(last).expect("meta").len();
        let f = OpenOptions::new().write(true).open(last).expect("open seg");
        f.set_len(len - 3).expect("chop");
        drop(f);

        let mut s = LogStore::open(dir.path()).expect("a torn tail is not an error");
        assert_eq!(
            all(&mut s).await,
            ids(1, 0..19),
            "only the torn record is lost"
        );
        // The file was cut cleanly: appending and reopening works.
        s.blocking_append([ent(2, 19)]).await.expect("append");
        drop(s);
        let mut s = LogStore::open(dir.path()).expect("reopen");
        let mut want = ids(1, 0..19);
        want.push(lid(2, 19));
        assert_eq!(all(&mut s).await, want);

        // A zero-filled tail (a crash after the size grew) is cut too.
        drop(s);
        let mut f = OpenOptions::new()
            .append(true)
            .open(last)
            .expect("open seg");
        f.write_all(&[0u8; 100]).expect("zeros");
        drop(f);
        let mut s = LogStore::open(dir.path()).expect("zero tail is not an error");
        assert_eq!(all(&mut s).await, want);
    }

    /// The bytes of records at the start of `data`: frames read until the
    /// first that does not parse (reserved space reads as a zero length).
    fn records_end(data: &[u8]) -> usize {
        let mut off = 0;
        while let Ok((_, n)) = read_frame(&data[off..]) {
            off += n;
        }
        off
    }

    /// The active segment's space is reserved up front; what a crash leaves
    /// (the directory copied while the store is open) is reserved space after
    /// the last record, possibly with a torn record before it. Both read as
    /// the end of the log; sealed segments never end in reserved space, and a
    /// clean close cuts the reserve.
    #[tokio::test]
    async fn reserved_space_and_a_torn_record_in_it_read_as_the_end_of_the_log() {
        const SEGMENT: u64 = 4096;
        let dir = tempfile::tempdir().expect("tempdir");
        let crash = tempfile::tempdir().expect("tempdir");
        let mut s = LogStore::open_with_segment_size(dir.path(), SEGMENT).expect("open");
        for i in 0..150 {
            s.blocking_append([ent(1, i)]).await.expect("append");
        }
        for (_, path) in segment_files(dir.path()) {
            fs::copy(&path, crash.path().join(path.file_name().expect("name"))).expect("copy");
        }
        let segs = segment_files(crash.path());
        assert!(segs.len() >= 3, "several segments: {segs:?}");
        let active = &segs.last().expect("a segment").1;
        assert_eq!(
            fs::metadata(active).expect("meta").len(),
            SEGMENT,
            "the active segment's space is reserved"
        );
        for (_, sealed) in &segs[..segs.len() - 1] {
            let data = fs::read(sealed).expect("read");
            assert_eq!(
                records_end(&data),
                data.len(),
                "a sealed segment holds records only: {}",
                sealed.display()
            );
        }

        // A record torn by the crash, in the reserved space.
        let data = fs::read(active).expect("read");
        let end = records_end(&data);
        assert!(end > 0 && end < data.len(), "records, then reserve: {end}");
        let mut torn = Vec::new();
        encode_record(&mut torn, &RecordRef::Entry(&ent(1, 150))).expect("encode");
        let f = OpenOptions::new()
            .write(true)
            .open(active)
            .expect("open seg");
        std::os::unix::fs::FileExt::write_all_at(&f, &torn[..torn.len() / 2], end as u64)
            .expect("torn write");
        drop(f);

        let mut c = LogStore::open_with_segment_size(crash.path(), SEGMENT)
            .expect("reserve and a torn record are the end of the log, not corruption");
        assert_eq!(all(&mut c).await, ids(1, 0..150));
        // Appends go where the records end, and survive a crash again.
        c.blocking_append([ent(2, 150), ent(2, 151)])
            .await
            .expect("append");
        let again = tempfile::tempdir().expect("tempdir");
        for (_, path) in segment_files(crash.path()) {
            fs::copy(&path, again.path().join(path.file_name().expect("name"))).expect("copy");
        }
        drop(c);
        let mut want = ids(1, 0..150);
        want.extend([lid(2, 150), lid(2, 151)]);
        let mut a = LogStore::open_with_segment_size(again.path(), SEGMENT).expect("reopen");
        assert_eq!(all(&mut a).await, want);

        // A clean close leaves records only.
        drop(s);
        for dir in [dir.path(), crash.path()] {
            let (_, last) = segment_files(dir).pop().expect("a segment");
            let data = fs::read(&last).expect("read");
            assert_eq!(records_end(&data), data.len(), "no reserve after a close");
        }
    }

    #[tokio::test]
    async fn corruption_in_a_middle_segment_refuses_to_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let mut s = LogStore::open_with_segment_size(dir.path(), 200).expect("open");
            for i in 0..10 {
                s.blocking_append([ent(1, i)]).await.expect("append");
            }
        }
        let segs = segment_files(dir.path());
        assert!(segs.len() >= 2, "{segs:?}");
        let first = &segs[0].1;
        let mut data = fs::read(first).expect("read");
        data[HEADER_LEN + 2] ^= 0x40;
        fs::write(first, &data).expect("write");
        match LogStore::open_with_segment_size(dir.path(), 200) {
            Err(Error::InvalidData(msg)) => {
                let name = first
                    .file_name()
                    .expect("name")
                    .to_string_lossy()
                    .into_owned();
                assert!(msg.contains(&name), "names the file: {msg}");
                assert!(msg.contains("offset 0"), "names the offset: {msg}");
            }
            other => panic!("expected InvalidData, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn bad_record_before_the_end_of_the_last_segment_is_corruption() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let mut s = LogStore::open(dir.path()).expect("open");
            s.blocking_append(ents(1, 0..5)).await.expect("append");
        }
        let segs = segment_files(dir.path());
        assert_eq!(segs.len(), 1);
        let path = &segs[0].1;
        let mut data = fs::read(path).expect("read");
        data[HEADER_LEN + 1] ^= 0x01;
        fs::write(path, &data).expect("write");
        assert!(matches!(
            LogStore::open(dir.path()),
            Err(Error::InvalidData(_))
        ));
    }

    /// A hand-made segment whose record is in format version 2 (a newer one), and a
    /// vote file of version 3: both refused at open, naming both versions.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn records_of_a_newer_format_version_are_refused_naming_both_versions() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let mut s = LogStore::open(dir.path()).expect("open");
            s.blocking_append(ents(1, 0..3)).await.expect("append");
        }
        let segs = segment_files(dir.path());
        let path = &segs[0].1;
        let mut data = fs::read(path).expect("read");
        // The first record's envelope: magic, then the version.
        assert_eq!(&data[HEADER_LEN..HEADER_LEN + 4], b"TRRM");
        let (payload, n) = read_frame(&data).expect("a frame");
        let mut newer = payload.to_vec();
        newer[4..6].copy_from_slice(&2u16.to_le_bytes());
        let mut rewritten = frame(&newer);
        rewritten.extend_from_slice(&data[n..]);
        data = rewritten;
        fs::write(path, &data).expect("write");
        let err = LogStore::open(dir.path())
            .expect_err("a newer record")
            .to_string();
        assert!(
            err.contains("format version 2") && err.contains("version 1, the newest"),
            "{err}"
        );
        assert!(err.contains("offset 0"), "{err}");

        let dir = tempfile::tempdir().expect("tempdir");
        let mut vote = codec::encode(Tag::Vote, &openraft::Vote::new(3u64, 1u64)).expect("vote");
        vote[4..6].copy_from_slice(&3u16.to_le_bytes());
        fs::write(dir.path().join(VOTE_FILE), frame(&vote)).expect("write vote");
        let err = LogStore::open(dir.path())
            .expect_err("a newer vote")
            .to_string();
        assert!(
            err.contains("vote file") && err.contains("format version 3"),
            "{err}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn group_commit_batches_concurrent_appends() {
        const APPENDS: u64 = 200;
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(LogStore::open(dir.path()).expect("open"));
        let next = Arc::new(Mutex::new(0u64));
        let barrier = Arc::new(tokio::sync::Barrier::new(APPENDS as usize));
        let mut tasks = Vec::new();
        for _ in 0..APPENDS {
            let (store, next, barrier) =
                (Arc::clone(&store), Arc::clone(&next), Arc::clone(&barrier));
            tasks.push(tokio::spawn(async move {
                barrier.wait().await;
                let (tx, rx) = oneshot::channel();
                {
                    let mut n = next.lock().expect("lock");
                    store
                        .append_records(
                            [ent(1, *n)],
                            Box::new(move |r| {
                                let _ = tx.send(r);
                            }),
                        )
                        .expect("append");
                    *n += 1;
                }
                rx.await.expect("callback fired").expect("durable");
            }));
        }
        for t in tasks {
            t.await.expect("task");
        }
        let stats = store.stats();
        let fsyncs = stats.fsyncs.load(Ordering::Relaxed);
        let records = stats.records.load(Ordering::Relaxed);
        let bytes = stats.bytes.load(Ordering::Relaxed);
        println!("group commit: {records} records, {fsyncs} fsyncs, {bytes} bytes");
        assert_eq!(records, APPENDS);
        assert!(fsyncs >= 1);
        assert!(
            fsyncs < records / 2,
            "{fsyncs} fsyncs for {records} appends"
        );

        drop(store);
        let mut s = LogStore::open(dir.path()).expect("reopen");
        assert_eq!(all(&mut s).await, ids(1, 0..APPENDS));
    }

    #[tokio::test]
    async fn failed_fsync_is_never_acknowledged_and_poisons_the_store() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = LogStore::open(dir.path()).expect("open");
        s.blocking_append(ents(1, 0..3)).await.expect("append");

        s.shared.inject_sync_error.store(true, Ordering::SeqCst);
        let (tx, rx) = oneshot::channel();
        s.append_records(
            ents(1, 3..5),
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        )
        .expect("queued");
        let res = rx.await.expect("callback fired");
        assert!(res.is_err(), "a failed fdatasync is reported, not acked");

        assert!(s.blocking_append([ent(1, 5)]).await.is_err());
        assert!(s.truncate(lid(1, 2)).await.is_err());
        assert!(s.purge(lid(1, 1)).await.is_err());
        assert!(s.save_vote(&Vote::new(2, 1)).await.is_err());
        assert_eq!(
            s.stats().fsyncs.load(Ordering::Relaxed),
            1,
            "only the first append synced"
        );
    }

    /// The byte count follows appends, truncations (and overwrites) and
    /// purges, and the cut for a byte limit is the shortest prefix to drop.
    #[test]
    fn bytes_follow_the_log_and_the_cut_fits_the_limit() {
        let size = |e: &Entry| bincode::serialized_size(e).expect("size");
        let entries = ents(1, 1..11);
        let sizes: Vec<u64> = entries.iter().map(size).collect();
        let mut mem = Mem::default();
        for e in entries {
            mem.apply_entry(e);
        }
        assert_eq!(mem.bytes(), sizes.iter().sum::<u64>());
        assert_eq!(mem.purge_cut_for_bytes(u64::MAX), None);
        assert_eq!(mem.purge_cut_for_bytes(mem.bytes()), None);
        // Dropping entries 1..=k leaves sum(sizes[k..]); the cut is the
        // smallest k whose remainder fits.
        let limit = sizes[4..].iter().sum::<u64>();
        assert_eq!(mem.purge_cut_for_bytes(limit), Some(4));
        assert_eq!(mem.purge_cut_for_bytes(limit - 1), Some(5));
        assert_eq!(mem.purge_cut_for_bytes(0), Some(10));

        mem.truncate(9);
        assert_eq!(mem.bytes(), sizes[..8].iter().sum::<u64>());
        mem.apply_entry(ent(2, 8)); // overwrites index 8
        assert_eq!(
            mem.bytes(),
            sizes[..7].iter().sum::<u64>() + size(&ent(2, 8))
        );
        mem.purge(lid(1, 3));
        assert_eq!(
            mem.bytes(),
            sizes[3..7].iter().sum::<u64>() + size(&ent(2, 8))
        );
    }

    /// A replication read stops at the byte budget but always holds at least
    /// one entry, in index order, within the requested range.
    #[tokio::test]
    async fn replication_reads_are_bounded_by_bytes() {
        let big = |index: u64, len: usize| Entry {
            log_id: lid(1, index),
            payload: EntryPayload::Normal(Request::Batch(vec![crate::txn::WriteSet::blind(
                1,
                vec![crate::txn::Mutation::Put {
                    key: format!("k{index}").into_bytes(),
                    value: vec![7u8; len],
                    lease: 0,
                }],
            )])),
        };
        let mut mem = Mem::default();
        for (i, len) in [(1, 1000), (2, 1000), (3, 5000), (4, 10), (5, 10)] {
            mem.apply_entry(big(i, len));
        }
        let index = |v: Vec<Entry>| v.iter().map(|e| e.log_id.index).collect::<Vec<_>>();
        assert_eq!(index(mem.range_within_bytes(1, 6, 2500)), vec![1, 2]);
        // The first entry goes even when it alone is over the budget.
        assert_eq!(index(mem.range_within_bytes(3, 6, 100)), vec![3]);
        assert_eq!(index(mem.range_within_bytes(4, 6, 400)), vec![4, 5]);
        assert_eq!(index(mem.range_within_bytes(1, 3, u64::MAX)), vec![1, 2]);
        assert!(mem.range_within_bytes(6, 9, u64::MAX).is_empty());

        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = LogStore::open(dir.path()).expect("open");
        store.set_append_max_bytes(2500);
        store
            .blocking_append((1..6).map(|i| big(i, [1000, 1000, 5000, 10, 10][i as usize - 1])))
            .await
            .expect("append");
        let mut reader = store.get_log_reader().await;
        let got = reader.limited_get_log_entries(1, 6).await.expect("read");
        assert_eq!(index(got), vec![1, 2]);
    }
}
