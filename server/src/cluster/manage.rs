//! The leader's reconciliation loop: promote learners that caught up, evict
//! voters that stayed down (or stalled) past `evict_after_ms` when a quorum of
//! up voters remains; on every node, rejoin after an eviction.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::Weak;
use std::time::Duration;

use openraft::{ChangeMembers, ServerState};

use super::membership;
use crate::node::Node;
use crate::txn::NodeId;

/// Runs every 500 ms until the node is dropped.
pub async fn manage_loop(node: Weak<Node>) {
    let mut ticks: u64 = 0;
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let Some(n) = node.upgrade() else { return };
        ticks += 1;
        let (state, leader) = {
            let metrics = n.raft.metrics();
            let m = metrics.borrow();
            (m.state, m.current_leader)
        };
        if state == ServerState::Leader {
            reconcile(&n).await;
        } else if ticks.is_multiple_of(2) && leader.is_none_or(|l| l != n.id()) {
            membership::rejoin_if_evicted(&n).await;
        }
    }
}

async fn reconcile(node: &Node) {
    let (voters, learners, matched, last_log) = {
        let metrics = node.raft.metrics();
        let m = metrics.borrow();
        let membership = m.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let learners: BTreeSet<NodeId> = membership.learner_ids().collect();
        let matched: Vec<(NodeId, u64)> = m
            .replication
            .as_ref()
            .map(|r| {
                r.iter()
                    .map(|(id, l)| (*id, l.map_or(0, |l| l.index)))
                    .collect()
            })
            .unwrap_or_default();
        (voters, learners, matched, m.last_log_index.unwrap_or(0))
    };
    // Promote one caught-up learner at a time.
    for l in &learners {
        let caught_up = matched
            .iter()
            .any(|(id, idx)| id == l && idx + node.config.promote_lag_entries >= last_log);
        if caught_up && node.health.is_up(*l) {
            tracing::info!(node = l, "learner caught up: promoting to voter");
            match node
                .raft
                .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([*l])), true)
                .await
            {
                Ok(_) => tracing::info!(node = l, "promoted to voter"),
                Err(e) => tracing::warn!(node = l, error = %e, "promotion failed; will retry"),
            }
            return;
        }
    }
    if node.config.evict_after_ms == 0 {
        return;
    }
    let evict_after = Duration::from_millis(node.config.evict_after_ms);
    let head = node.applied.seqno();
    let me = node.id();
    let is_up =
        |v: &NodeId| *v == me || (node.health.is_up(*v) && !node.health.is_stalled(*v, head));
    for v in voters.iter().filter(|v| **v != me) {
        let down = node.health.down_for(*v) >= evict_after;
        // Stalled (reported from `stall_after` on) and still not applying
        // after `evict_after`.
        let stall_after = Duration::from_millis(node.config.stall_after_ms);
        let stalled = node.health.is_up(*v)
            && node.health.stalled_for(*v, head) > evict_after.max(stall_after);
        if !(down || stalled) {
            continue;
        }
        let remaining: Vec<NodeId> = voters.iter().copied().filter(|x| x != v).collect();
        let up = remaining.iter().filter(|x| is_up(x)).count();
        // Never evict into a configuration whose up voters are not a majority.
        if remaining.is_empty() || up < remaining.len() / 2 + 1 {
            tracing::warn!(
                node = v,
                up,
                remaining = remaining.len(),
                "not evicting: it would leave no quorum of up voters"
            );
            continue;
        }
        tracing::warn!(node = v, down, stalled, "evicting a voter");
        match node
            .raft
            .change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([*v])), false)
            .await
        {
            Ok(_) => {
                node.applied.stats.evictions.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(node = v, "evicted");
            }
            Err(e) => tracing::warn!(node = v, error = %e, "eviction failed; will retry"),
        }
        return;
    }
}
