//! An in-memory Raft log with the semantics of [`LogStore`](super::log_store::LogStore),
//! for the deterministic simulation and for tests: no files, no threads, every
//! write completes inline (an append's callback fires before `append` returns).
//!
//! The whole durable state (entries, purge point, vote, committed id) lives
//! behind one `Arc<Mutex<..>>`. Clones share it: a simulation keeps a clone as
//! the node's "disk" across a crash and hands it to the restarted node, which
//! then finds everything that was acknowledged, exactly as after a real crash
//! of a node whose writes were all fdatasync'd.

use std::fmt::Debug;
use std::ops::RangeBounds;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{OptionalSend, RaftLogReader, Vote};

use super::log_store::Mem;
use super::types::{Entry, LogId, StorageError, TypeConfig};

/// The durable state of a [`MemLogStore`].
#[derive(Debug, Default)]
struct State {
    log: Mem,
    vote: Option<Vote<u64>>,
    committed: Option<LogId>,
}

/// An in-memory Raft log; clones share one state (see the module docs).
#[derive(Clone, Debug, Default)]
pub struct MemLogStore {
    state: Arc<Mutex<State>>,
    /// As `LogStore`'s: purges stop at the state machine's durable index.
    purge_fence: Option<Arc<AtomicU64>>,
    /// As `LogStore`'s: a purge cut back by the fence, done once it is reached.
    deferred_purge: Option<LogId>,
}

impl MemLogStore {
    /// An empty log.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .expect("memory log lock poisoned: a holder panicked")
    }

    /// Limits purges to the index in `fence`, as `LogStore::set_purge_fence`
    /// does (for a simulation whose store can lose unsynced batches).
    pub fn set_purge_fence(&mut self, fence: Arc<AtomicU64>) {
        self.purge_fence = Some(fence);
    }

    /// The last log id (`None` when empty and nothing was purged).
    pub fn last_log_id(&self) -> Option<LogId> {
        self.lock().log.last_log_id()
    }

    /// The saved vote.
    pub fn vote(&self) -> Option<Vote<u64>> {
        self.lock().vote
    }
}

impl RaftLogReader<TypeConfig> for MemLogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        Ok(self.lock().log.range(&range))
    }
}

impl RaftLogStorage<TypeConfig> for MemLogStore {
    type LogReader = MemLogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let state = self.lock();
        Ok(LogState {
            last_purged_log_id: state.log.last_purged,
            last_log_id: state.log.last_log_id(),
        })
    }

    async fn get_log_reader(&mut self) -> MemLogStore {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> Result<(), StorageError> {
        self.lock().vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<u64>>, StorageError> {
        Ok(self.lock().vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        self.lock().committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.lock().committed)
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
        let first = entries.first().map(|e| e.log_id.index);
        let next = self.lock().log.last_log_id().map_or(0, |l| l.index + 1);
        if let (Some(want), Some(first), Some(fence)) =
            (self.deferred_purge, first, self.purge_fence.clone())
        {
            if first > next {
                // As in `LogStore::append`: no hole in the log.
                while fence.load(Ordering::Acquire) < want.index {
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                }
                self.deferred_purge = None;
                self.lock().log.purge(want);
            }
        }
        {
            let mut state = self.lock();
            for e in entries {
                state.log.apply_entry(e);
            }
        }
        // "Durable" at once: the state outlives a simulated crash.
        callback.log_io_completed(Ok(()));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.lock().log.truncate(log_id.index);
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        if self
            .purge_fence
            .as_ref()
            .is_some_and(|f| log_id.index > f.load(Ordering::Acquire))
        {
            self.deferred_purge = self.deferred_purge.max(Some(log_id));
        }
        let mut state = self.lock();
        let log_id = match &self.purge_fence {
            Some(fence) if log_id.index > fence.load(Ordering::Acquire) => {
                let limit = fence.load(Ordering::Acquire);
                match state.log.range(&(limit..=limit)).first() {
                    Some(e) => e.log_id,
                    None => return Ok(()),
                }
            }
            _ => log_id,
        };
        state.log.purge(log_id);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use openraft::storage::RaftLogStorageExt;
    use openraft::{CommittedLeaderId, EntryPayload};

    use super::*;

    fn ent(term: u64, index: u64) -> Entry {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(term, 1), index),
            payload: EntryPayload::Blank,
        }
    }

    #[tokio::test]
    async fn clones_share_the_durable_state_across_a_restart() {
        let disk = MemLogStore::new();
        {
            let mut s = disk.clone();
            for i in 1..=5 {
                s.blocking_append([ent(1, i)]).await.expect("append");
            }
            s.save_vote(&Vote::new_committed(2, 3)).await.expect("vote");
            s.truncate(ent(1, 4).log_id).await.expect("truncate");
            s.purge(ent(1, 1).log_id).await.expect("purge");
            s.save_committed(Some(ent(1, 2).log_id))
                .await
                .expect("committed");
        }
        // The "restarted" node opens the same disk.
        let mut s = disk.clone();
        let st = s.get_log_state().await.expect("state");
        assert_eq!(st.last_purged_log_id, Some(ent(1, 1).log_id));
        assert_eq!(st.last_log_id, Some(ent(1, 3).log_id));
        let got: Vec<u64> = s
            .try_get_log_entries(..)
            .await
            .expect("read")
            .iter()
            .map(|e| e.log_id.index)
            .collect();
        assert_eq!(got, vec![2, 3]);
        assert_eq!(
            s.read_vote().await.expect("vote"),
            Some(Vote::new_committed(2, 3))
        );
        assert_eq!(
            s.read_committed().await.expect("committed"),
            Some(ent(1, 2).log_id)
        );
    }

    #[tokio::test]
    async fn purge_stops_at_the_fence() {
        let mut s = MemLogStore::new();
        let fence = Arc::new(AtomicU64::new(3));
        s.set_purge_fence(fence.clone());
        for i in 1..=6 {
            s.blocking_append([ent(1, i)]).await.expect("append");
        }
        s.purge(ent(1, 5).log_id).await.expect("purge");
        let st = s.get_log_state().await.expect("state");
        assert_eq!(st.last_purged_log_id, Some(ent(1, 3).log_id), "clamped");
        fence.store(5, Ordering::Release);
        s.purge(ent(1, 5).log_id).await.expect("purge");
        let st = s.get_log_state().await.expect("state");
        assert_eq!(st.last_purged_log_id, Some(ent(1, 5).log_id));
    }
}
