//! The leader's reconciliation loop: promote learners that caught up, evict
//! voters that stayed down (or stalled) past `evict_after_ms` when a quorum of
//! up voters remains ([`decide::reconcile`] decides; this loop acts); on every
//! node, rejoin after an eviction.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::Weak;
use std::time::Duration;

use openraft::{ChangeMembers, ServerState};

use super::decide::{self, Action};
use super::{membership, Handle};

/// Runs every 500 ms until the node is dropped.
pub async fn manage_loop(handle: Weak<Handle>) {
    let mut ticks: u64 = 0;
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let Some(h) = handle.upgrade() else { return };
        ticks += 1;
        let (state, leader) = {
            let metrics = h.raft.metrics();
            let m = metrics.borrow();
            (m.state, m.current_leader)
        };
        if state == ServerState::Leader {
            reconcile(&h).await;
        } else if ticks.is_multiple_of(2) && leader.is_none_or(|l| l != h.id()) {
            membership::rejoin_if_evicted(&h).await;
        }
    }
}

async fn reconcile(handle: &Handle) {
    let plan = decide::reconcile(&handle.snapshot());
    for held in &plan.held {
        tracing::warn!(
            node = held.id,
            up = held.up,
            remaining = held.remaining,
            "not evicting: it would leave no quorum of up voters"
        );
    }
    match plan.action {
        None => {}
        Some(Action::Promote(l)) => {
            tracing::info!(node = l, "learner caught up: promoting to voter");
            match handle
                .raft
                .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([l])), true)
                .await
            {
                Ok(_) => tracing::info!(node = l, "promoted to voter"),
                Err(e) => tracing::warn!(node = l, error = %e, "promotion failed; will retry"),
            }
        }
        Some(Action::Evict { id, down, stalled }) => {
            tracing::warn!(node = id, down, stalled, "evicting a voter");
            match handle
                .raft
                .change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([id])), false)
                .await
            {
                Ok(_) => {
                    handle
                        .applied
                        .stats
                        .evictions
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(node = id, "evicted");
                }
                Err(e) => tracing::warn!(node = id, error = %e, "eviction failed; will retry"),
            }
        }
    }
}
