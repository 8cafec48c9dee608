//! Membership and node state: who is up, who joins and leaves, who is
//! evicted, how writers are slowed, and the Galera-like state a node reports.
//!
//! - [`snapshot`]: the cluster as the decisions see it (members, roles, last
//!   contact, applied positions, thresholds, now), and the vocabulary:
//!   [`Role`], [`NodeState`](snapshot::NodeState),
//!   [`Member`](snapshot::Member), [`PingAnswer`](snapshot::PingAnswer).
//! - [`decide`]: the membership decisions as pure functions of a snapshot:
//!   up, down, stalled; promote, evict; the flow-control delay; the node
//!   state. Golden scripts in `testscripts/` drive them.
//! - [`health`]: the failure detector. Every node pings every member every
//!   `ping_interval_ms` and records when each answered and where its apply
//!   stood (for flow control, stall detection, and automatic rejoin); a
//!   leader and its followers attach those answers to AppendEntries instead.
//! - [`manage`]: the leader's reconciliation loop, acting on
//!   [`decide::reconcile`] through a [`manage::ClusterView`] (the snapshot and
//!   the membership changes: [`Handle`] over openraft, or a fake in unit
//!   tests); on other nodes, rejoin after an eviction.
//! - [`membership`]: join, leave and rejoin, forwarded to the leader.
//! - [`params`]: the replicated parameters' bootstrap and `trireme config set`.
//! - [`flow`]: flow control on the leader, reaching the batcher as
//!   `group::gate::Throttle`.
//! - [`primary`]: whether this node is in the primary component (a leader
//!   with a quorum, or a follower with recent word that its leader has one),
//!   reaching the batcher and the read index as `group::gate::PrimaryCheck`.
//! - [`state`]: SYNCED / JOINING / DONOR / JOINED / NON_PRIMARY.
//! - [`replication`]: the leader's report of voters it cannot replicate to.
//! - `rpc`: the outbound calls to peers (ping, forwarded join and leave).
//!
//! CAVEATS: liveness is judged by each node on its own (no gossip); eviction
//! and promotion are decided by the current leader only.
//!
//! What it owns: every decision about the membership and the node's health
//! as the cluster sees it, and the loops that act on them (spawned by the
//! node at start on a [`Handle`], which the node owns: the loops hold it
//! weakly and end when the node is dropped). It reaches Raft only through
//! openraft's public API (metrics, `change_membership`) and its peers only
//! through the `Cluster` gRPC service (`rpc`).
//!
//! What it must never import: `node` (the node imports this folder and hands
//! it a [`Handle`]; the reverse would close an import cycle, which
//! `server/tests/module_cycles.rs` rejects), `api` (protobuf stays at the
//! edge: `rpc` and `params` are the only files here that name `pb::` types),
//! `metrics`, `storage` or `certify`, and the replication internals of
//! `group` beyond the applied watermark, the peer channels and the log
//! types. `group` never imports this folder: flow control and the primary
//! check reach it through the traits of `group::gate`.

pub mod decide;
pub mod flow;
pub mod health;
pub mod manage;
pub mod membership;
pub mod params;
pub mod primary;
pub mod replication;
mod rpc;
pub use rpc::{answer_ping, attached_to_call, member_messages, ping_response};
pub mod snapshot;
pub mod state;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::sync::Arc;

use openraft::ServerState;
// tokio's clock: std's in production, the simulated one under simulation.
use tokio::time::Instant;

use self::flow::Flow;
use self::health::Health;
use self::primary::Primary;
use self::replication::ReplicationWatch;
use self::snapshot::{Limits, MemberView, Role, Snapshot};
use crate::config::Config;
use crate::group::applied::Applied;
use crate::raft::network::Peers;
use crate::raft::types::Raft;
use crate::txn::NodeId;

/// What the membership loops and operations need of a node: its
/// configuration, Raft, the applied watermark, the peer channels, and this
/// folder's own state. The node builds it at start and owns it.
pub struct Handle {
    /// The configuration the node started with.
    pub config: Config,
    /// The openraft handle.
    pub raft: Raft,
    /// The applied watermark (and departures, parameters, apply counters).
    pub applied: Arc<Applied>,
    /// Channels to peers (and the state transfers in progress).
    pub peers: Peers,
    /// The failure detector's records.
    pub health: Arc<Health>,
    /// Flow control (on the leader).
    pub flow: Arc<Flow>,
    /// Whether this node is in the primary component.
    pub primary: Arc<Primary>,
    /// Voters the leader cannot replicate to.
    pub replication: Arc<ReplicationWatch>,
    /// The grid this node's periodic loops sleep on.
    pub ticks: crate::ticks::Ticks,
}

impl Handle {
    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.config.node_id
    }

    /// The cluster as it stands now: Raft's metrics, the failure detector's
    /// records and the applied seqno, read once.
    pub fn snapshot(&self) -> Snapshot {
        gather(
            &self.raft,
            &self.health,
            &self.applied,
            self.id(),
            Limits::from_config(&self.config),
        )
    }

    /// Spawns the membership loops; they end when the handle is dropped.
    /// `join_target`: the member to ask to join through (a fresh node started
    /// with `--join`).
    pub fn spawn_loops(self: &Arc<Self>, join_target: Option<String>) {
        self.peers
            .set_health_hook(Arc::new(rpc::AttachedAnswers(Arc::downgrade(self))));
        tokio::spawn(health::ping_loop(Arc::downgrade(self)));
        tokio::spawn(manage::manage_loop(Arc::downgrade(self)));
        tokio::spawn(replication::watch_loop(Arc::downgrade(self)));
        tokio::spawn(params::bootstrap_loop(Arc::downgrade(self)));
        if let Some(target) = join_target {
            tracing::info!(%target, "joining an existing cluster");
            tokio::spawn(membership::join_at_start(Arc::downgrade(self), target));
        }
    }
}

/// Reads a [`Snapshot`] from Raft's metrics and the failure detector.
pub(crate) fn gather(
    raft: &Raft,
    health: &Health,
    applied: &Applied,
    me: NodeId,
    limits: Limits,
) -> Snapshot {
    let (leading, leader, mut members, matched, last_log) = {
        let metrics = raft.metrics();
        let m = metrics.borrow();
        let membership = m.membership_config.membership();
        let members: BTreeMap<NodeId, MemberView> = membership
            .nodes()
            .map(|(id, n)| {
                let role = if membership.voter_ids().any(|v| v == *id) {
                    Role::Voter
                } else {
                    Role::Learner
                };
                (
                    *id,
                    MemberView {
                        role,
                        address: n.addr.clone(),
                        contact: None,
                    },
                )
            })
            .collect();
        let matched: BTreeMap<NodeId, Option<u64>> = m
            .replication
            .as_ref()
            .map(|r| r.iter().map(|(id, l)| (*id, l.map(|l| l.index))).collect())
            .unwrap_or_default();
        (
            m.state == ServerState::Leader,
            m.current_leader,
            members,
            matched,
            m.last_log_index.unwrap_or(0),
        )
    };
    let applied = applied.seqno();
    for (id, contact) in health.contacts() {
        if let Some(m) = members.get_mut(&id) {
            if id != me {
                m.contact = Some(contact);
            }
        }
    }
    Snapshot {
        me,
        now: Instant::now(),
        leading,
        leader,
        members,
        matched,
        last_log,
        applied,
        limits,
    }
}
