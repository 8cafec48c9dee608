//! Deduplication of retried write sets: the ids applied since the state
//! machine opened or installed a snapshot, held in memory so that a lookup
//! within the certification window reads storage only for ids older than
//! that.

use std::collections::{HashMap, VecDeque};

use crate::error::Result;
use crate::storage::Mvcc;
use crate::txn::Seqno;

/// Write-set ids applied since the state machine opened or installed a
/// snapshot, so that deduplication does not read storage for every write
/// set. Ids applied before `since` are only in storage; once the
/// certification horizon passes `since`, every id that can still count as
/// a duplicate is here, and storage is never read again.
#[derive(Default)]
pub(super) struct RecentIds {
    pub(super) since: Seqno,
    pub(super) ids: HashMap<crate::txn::TxnId, Seqno>,
    pub(super) order: VecDeque<(Seqno, crate::txn::TxnId)>,
}

impl RecentIds {
    pub(super) fn new(since: Seqno) -> Self {
        RecentIds {
            since,
            ..RecentIds::default()
        }
    }

    /// Where `id` was applied, if it might be at or above `horizon`.
    pub(super) fn lookup(
        &self,
        id: crate::txn::TxnId,
        horizon: Seqno,
        mvcc: &Mvcc,
    ) -> Result<Option<Seqno>> {
        if let Some(s) = self.ids.get(&id) {
            return Ok(Some(*s));
        }
        if horizon >= self.since {
            return Ok(None);
        }
        mvcc.txn_seqno(id)
    }

    pub(super) fn insert(&mut self, id: crate::txn::TxnId, seqno: Seqno) {
        self.ids.insert(id, seqno);
        self.order.push_back((seqno, id));
    }

    /// Forgets ids below `horizon`: they no longer make a duplicate.
    pub(super) fn trim(&mut self, horizon: Seqno) {
        while let Some(&(seqno, id)) = self.order.front() {
            if seqno >= horizon {
                break;
            }
            self.order.pop_front();
            if self.ids.get(&id) == Some(&seqno) {
                self.ids.remove(&id);
            }
        }
    }
}
