//! What a node reports about itself, read once: `trireme status` (the
//! `Cluster.Status` call) and `/metrics` both read a [`NodeStatus`] instead
//! of reaching into the node's parts, so the two always agree on what each
//! figure means.

use std::sync::atomic::Ordering;

use openraft::BasicNode;

use super::Node;
use crate::cluster::snapshot::{ClusterHealth, Member, NodeState, Role};
use crate::group::applied::ApplyStats;
use crate::txn::{NodeId, Seqno};

/// A node's figures at one moment.
pub struct NodeStatus<'a> {
    /// Raft's view: role, term, leader, log positions, membership.
    pub raft: openraft::RaftMetrics<NodeId, BasicNode>,
    /// The highest seqno applied here.
    pub applied: Seqno,
    /// The Galera-like state, and why.
    pub state: NodeState,
    /// Why the node is in `state` (empty when SYNCED for no special reason).
    pub state_reason: String,
    /// The members as this node sees them.
    pub members: Vec<Member>,
    /// The apply counters (commits, aborts by reason, batches, ...).
    pub stats: &'a ApplyStats,
    /// State transfers sent.
    pub snapshots_sent: u64,
    /// Time writers were slowed by flow control, in microseconds.
    pub flow_paused_us: u64,
    /// Voters this leader has not replicated to for `down_after_ms`.
    pub unreplicated_voters: Vec<NodeId>,
    /// The leader's judgement of the cluster (`None` on a follower).
    pub cluster_health: Option<ClusterHealth>,
    /// Bytes of log entries held.
    pub log_bytes: u64,
    /// Leader changes seen.
    pub leader_changes: u64,
}

impl NodeStatus<'_> {
    /// The last log index this node holds.
    pub fn last_log(&self) -> u64 {
        self.raft.last_log_index.unwrap_or(0)
    }

    /// The highest seqno known committed: exact on the leader; elsewhere the
    /// log this node holds bounds it.
    pub fn committed(&self) -> Seqno {
        self.last_log().max(self.applied)
    }

    /// Log entries held but not yet applied.
    pub fn apply_lag(&self) -> u64 {
        self.last_log().saturating_sub(self.applied)
    }

    /// The first log index still held.
    pub fn log_first_index(&self) -> u64 {
        self.raft.purged.map_or(0, |p| p.index) + 1
    }

    /// Log entries held.
    pub fn log_retained(&self) -> u64 {
        self.last_log()
            .saturating_sub(self.raft.purged.map_or(0, |p| p.index))
    }

    /// Voters in the membership.
    pub fn voters(&self) -> u64 {
        self.members
            .iter()
            .filter(|m| m.role == Role::Voter)
            .count() as u64
    }
}

impl Node {
    /// This node's figures now.
    pub fn status(&self) -> NodeStatus<'_> {
        let (state, state_reason) = crate::cluster::state::node_state(&self.cluster);
        NodeStatus {
            raft: self.raft_metrics(),
            applied: self.applied.seqno(),
            state,
            state_reason,
            members: crate::cluster::membership::members(&self.cluster),
            stats: &self.applied.stats,
            snapshots_sent: self.peers.transfers.sent.load(Ordering::Relaxed),
            flow_paused_us: self.cluster.flow.paused_us.load(Ordering::Relaxed),
            unreplicated_voters: self.cluster.replication.unreplicated(),
            cluster_health: self.cluster.replication.cluster_health(),
            log_bytes: self.log_bytes(),
            leader_changes: self.leader_changes(),
        }
    }
}
