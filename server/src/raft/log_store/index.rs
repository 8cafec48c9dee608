//! The live log in memory: the entries by index, what was purged, and the
//! encoded size of each entry, so that retention can be decided by bytes
//! (which prefix to purge to fit a budget) and replication reads bounded by
//! bytes. Shared by the durable store, its readers and the in-memory log
//! store (`mem_log`), so that all follow the same rules.

use std::collections::BTreeMap;
use std::ops::{Bound, RangeBounds};

use super::format::Record;
use crate::raft::types::{Entry, LogId};

/// The live log in memory, shared by the store and its readers (and, whole, the state of
/// the in-memory log store `mem_log::MemLogStore`, so both follow the same rules).
#[derive(Debug, Default)]
pub(in crate::raft) struct Mem {
    pub(super) entries: BTreeMap<u64, Entry>,
    pub(in crate::raft) last_purged: Option<LogId>,
    /// Encoded size of each entry held, for retention by bytes.
    sizes: BTreeMap<u64, u64>,
    /// Sum of `sizes`.
    bytes: u64,
}

impl Mem {
    pub(in crate::raft) fn last_log_id(&self) -> Option<LogId> {
        self.entries
            .last_key_value()
            .map(|(_, e)| e.log_id)
            .or(self.last_purged)
    }

    pub(super) fn next_index(&self) -> u64 {
        self.last_log_id()
            .map_or(0, |id| id.index.saturating_add(1))
    }

    /// Adds one entry; anything at or after its index is replaced (openraft truncates
    /// before appending a conflicting entry, so this is only a defensive rule, applied the
    /// same way live and on replay).
    pub(in crate::raft) fn apply_entry(&mut self, entry: Entry) {
        let size = bincode::serialized_size(&entry).unwrap_or(0);
        self.apply_sized_entry(entry, size);
    }

    /// [`Mem::apply_entry`] when the entry's encoded size is already known
    /// (the append path has just framed it).
    pub(super) fn apply_sized_entry(&mut self, entry: Entry, size: u64) {
        let index = entry.log_id.index;
        if self
            .entries
            .last_key_value()
            .is_some_and(|(&last, _)| last >= index)
        {
            drop(self.entries.split_off(&index));
            self.drop_sizes_from(index);
        }
        self.sizes.insert(index, size);
        self.bytes += size;
        self.entries.insert(index, entry);
    }

    pub(in crate::raft) fn truncate(&mut self, since: u64) {
        drop(self.entries.split_off(&since));
        self.drop_sizes_from(since);
    }

    fn drop_sizes_from(&mut self, since: u64) {
        let gone = self.sizes.split_off(&since);
        self.bytes -= gone.values().sum::<u64>();
    }

    /// The bytes of the entries held.
    pub(in crate::raft) fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The greatest index whose purge (with everything before it) leaves at
    /// most `limit` bytes of entries, or `None` when they already fit.
    pub(in crate::raft) fn purge_cut_for_bytes(&self, limit: u64) -> Option<u64> {
        let mut excess = self.bytes.checked_sub(limit).filter(|e| *e > 0)?;
        for (index, size) in &self.sizes {
            if *size >= excess {
                return Some(*index);
            }
            excess -= size;
        }
        self.sizes.last_key_value().map(|(i, _)| *i)
    }

    pub(in crate::raft) fn purge(&mut self, log_id: LogId) {
        if self.last_purged.is_some_and(|p| p >= log_id) {
            return;
        }
        self.last_purged = Some(log_id);
        self.entries = match log_id.index.checked_add(1) {
            Some(keep_from) => self.entries.split_off(&keep_from),
            None => BTreeMap::new(),
        };
        let kept = match log_id.index.checked_add(1) {
            Some(keep_from) => self.sizes.split_off(&keep_from),
            None => BTreeMap::new(),
        };
        self.bytes = kept.values().sum();
        self.sizes = kept;
    }

    pub(super) fn apply(&mut self, record: Record) {
        match record {
            Record::Entry(e) => self.apply_entry(e),
            Record::Truncate { since } => self.truncate(since),
            Record::Purge(log_id) => self.purge(log_id),
        }
    }

    pub(in crate::raft) fn range(&self, range: &impl RangeBounds<u64>) -> Vec<Entry> {
        let start = match range.start_bound() {
            Bound::Included(&s) => s,
            Bound::Excluded(&s) => match s.checked_add(1) {
                Some(s) => s,
                None => return Vec::new(),
            },
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(&e) => e,
            Bound::Excluded(&e) => match e.checked_sub(1) {
                Some(e) => e,
                None => return Vec::new(),
            },
            Bound::Unbounded => u64::MAX,
        };
        if start > end {
            return Vec::new();
        }
        self.entries
            .range(start..=end)
            .map(|(_, e)| e.clone())
            .collect()
    }

    /// The entries of `[start, end)`, stopping before the one that would take
    /// their encoded size past `max_bytes` (the first one is always included,
    /// so a range that holds entries never reads as empty).
    pub(in crate::raft) fn range_within_bytes(
        &self,
        start: u64,
        end: u64,
        max_bytes: u64,
    ) -> Vec<Entry> {
        let mut out = Vec::new();
        let mut bytes = 0u64;
        for (index, entry) in self.entries.range(start..end) {
            let size = self.sizes.get(index).copied().unwrap_or(0);
            if !out.is_empty() && bytes.saturating_add(size) > max_bytes {
                break;
            }
            bytes = bytes.saturating_add(size);
            out.push(entry.clone());
        }
        out
    }
}
