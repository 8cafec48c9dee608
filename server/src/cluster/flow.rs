//! Flow control, Group Replication style: when an up voter's apply lags the
//! leader by more than `fc_limit` entries, the leader delays each batch in
//! proportion to the excess (a quota, never a stop). A stalled or down node
//! does not count: it is reported and, with eviction on, evicted instead of
//! waited for.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::health::Health;
use crate::group::applied::Applied;
use crate::group::types::Raft;
use crate::txn::NodeId;

/// Longest delay imposed on one batch.
const MAX_DELAY: Duration = Duration::from_millis(50);

/// The leader's flow-control state.
pub struct Flow {
    id: NodeId,
    raft: Raft,
    health: Arc<Health>,
    applied: Arc<Applied>,
    fc_limit: u64,
    /// Total time batches were delayed, in microseconds.
    pub paused_us: AtomicU64,
}

impl Flow {
    /// Flow control for node `id`.
    pub fn new(
        id: NodeId,
        raft: Raft,
        health: Arc<Health>,
        applied: Arc<Applied>,
        fc_limit: u64,
    ) -> Self {
        Flow {
            id,
            raft,
            health,
            applied,
            fc_limit,
            paused_us: AtomicU64::new(0),
        }
    }

    /// The largest apply lag among up, non-stalled voters (0 when not
    /// leader), as of each voter's last ping answer.
    pub fn lag(&self) -> u64 {
        let voters: Vec<NodeId> = {
            let metrics = self.raft.metrics();
            let m = metrics.borrow();
            if m.current_leader != Some(self.id) {
                return 0;
            }
            m.membership_config.membership().voter_ids().collect()
        };
        let head = self.applied.seqno();
        voters
            .into_iter()
            .filter(|v| *v != self.id && self.health.is_up(*v) && !self.health.is_stalled(*v, head))
            .filter_map(|v| self.health.lag(v))
            .max()
            .unwrap_or(0)
    }

    /// Delays the caller while a voter is too far behind.
    pub async fn throttle(&self) {
        let lag = self.lag();
        if lag <= self.fc_limit {
            return;
        }
        let excess = (lag - self.fc_limit) as f64 / self.fc_limit.max(1) as f64;
        let delay = MAX_DELAY
            .mul_f64(excess.min(1.0))
            .max(Duration::from_millis(1));
        tracing::debug!(lag, ?delay, "flow control: slowing writers");
        tokio::time::sleep(delay).await;
        self.paused_us
            .fetch_add(delay.as_micros() as u64, Ordering::Relaxed);
    }
}
