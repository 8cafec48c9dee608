//! Flow control, Group Replication style: when an up voter's apply lags the
//! leader by more than `fc_limit` entries, the leader delays each batch in
//! proportion to the excess (a quota, never a stop). A stalled or down node
//! does not count: it is reported and, with eviction on, evicted instead of
//! waited for. The delay is decided by [`decide::flow_delay`]; the batcher
//! asks for it through [`Throttle`], so `group` does not import this folder.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::decide;
use super::health::Health;
use super::snapshot::Limits;
use crate::group::applied::Applied;
use crate::group::gate::Throttle;
use crate::raft::types::Raft;
use crate::txn::NodeId;

/// The leader's flow-control state.
pub struct Flow {
    id: NodeId,
    raft: Raft,
    health: Arc<Health>,
    applied: Arc<Applied>,
    limits: Limits,
    /// Total time batches were delayed, in microseconds.
    pub paused_us: AtomicU64,
}

impl Flow {
    /// Flow control for node `id`, with the thresholds of `limits`.
    pub fn new(
        id: NodeId,
        raft: Raft,
        health: Arc<Health>,
        applied: Arc<Applied>,
        limits: Limits,
    ) -> Self {
        Flow {
            id,
            raft,
            health,
            applied,
            limits,
            paused_us: AtomicU64::new(0),
        }
    }

    /// Delays the caller while a voter is too far behind.
    pub async fn throttle(&self) {
        let snapshot = super::gather(
            &self.raft,
            &self.health,
            &self.applied,
            self.id,
            self.limits,
        );
        let (lag, Some(delay)) = decide::flow_delay(&snapshot) else {
            return;
        };
        tracing::debug!(lag, ?delay, "flow control: slowing writers");
        tokio::time::sleep(delay).await;
        self.paused_us
            .fetch_add(delay.as_micros() as u64, Ordering::Relaxed);
    }
}

impl Throttle for Flow {
    fn throttle(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(Flow::throttle(self))
    }
}
