//! The node's side of leases: [`LeaseBackend`] for [`Node`] (commits, reads,
//! leadership, and keep-alives and deadline questions sent to the leader
//! over the peer port), `Node::leases`, and the leader's expiry loop.

use std::sync::Arc;
use std::time::Duration;

use super::{Consistency, Node, ReadOptions};
use crate::error::{Error, Result};
use crate::lease::{LeaderAnswer, LeaderCall, LeaseBackend, Leases};
use crate::raft::network::{decode, encode};
use crate::raft::peer_error::PeerError;
use crate::storage::Mvcc;
use crate::txn::{NodeId, Seqno, WriteSet};

/// How often the leader looks for leases whose deadline passed. A lease
/// outlives its TTL by at most this much (and never falls short of it).
/// A divisor of a second and equal to the default `ping_interval_ms`, so
/// that on the node's grid ([`crate::ticks`]) it wakes with the pings.
pub const EXPIRY_TICK: Duration = Duration::from_millis(200);

#[tonic::async_trait]
impl LeaseBackend for Node {
    fn node_id(&self) -> NodeId {
        self.config.node_id
    }

    fn mvcc(&self) -> &Mvcc {
        &self.mvcc
    }

    fn applied(&self) -> Seqno {
        self.applied.seqno()
    }

    fn leading(&self) -> Option<u64> {
        let (leader, term, me) = {
            let metrics = self.raft.metrics();
            let m = metrics.borrow();
            (m.current_leader, m.current_term, m.id)
        };
        (leader == Some(me) && self.check_primary().ok() == Some(me)).then_some(term)
    }

    async fn commit(&self, ws: WriteSet) -> Result<Seqno> {
        Node::commit(self, ws, false).await
    }

    async fn read_seqno(&self) -> Result<Seqno> {
        Node::read_seqno(
            self,
            ReadOptions {
                consistency: Consistency::Linearizable,
                snapshot: None,
            },
        )
        .await
    }

    async fn wait_applied(&self, seqno: Seqno) -> Result<()> {
        self.applied
            .wait_for(seqno, self.config.read_timeout())
            .await
            .map(|_| ())
    }

    async fn call_leader(&self, call: LeaderCall) -> Result<LeaderAnswer> {
        let (leader, addr) = {
            let metrics = self.raft.metrics();
            let m = metrics.borrow();
            let leader = m.current_leader.ok_or_else(|| {
                Error::Unavailable("no leader is known: lease deadlines are the leader's".into())
            })?;
            let addr = m
                .membership_config
                .membership()
                .get_node(&leader)
                .map(|n| n.addr.clone())
                .ok_or_else(|| Error::Unavailable(format!("leader {leader} has no address")))?;
            (leader, addr)
        };
        let mut client = self.peers.raft_client(&addr)?;
        let request = encode(&call)?;
        let reply = tokio::time::timeout(self.config.read_timeout(), client.lease(request))
            .await
            .map_err(|_| {
                Error::Unavailable(format!("leader {leader} at {addr} did not answer in time"))
            })?
            .map_err(|s| {
                Error::Unavailable(format!(
                    "leader {leader} at {addr} unreachable: {}",
                    s.message()
                ))
            })?;
        let answer: std::result::Result<LeaderAnswer, PeerError> = decode(reply.get_ref())?;
        answer.map_err(|e| Error::Unavailable(format!("leader {leader}: {e}")))
    }
}

impl Node {
    /// The lease API of this node (see [`crate::lease::Leases`]).
    pub fn leases(self: &Arc<Self>) -> Leases {
        Leases::new(self.clone(), self.lease_deadlines.clone())
    }
}

/// The leader's expiry: every [`EXPIRY_TICK`] (on the node's grid, so it
/// wakes with the failure detector's pings), removes the leases whose
/// deadline passed (a follower only forgets its deadlines). Ends with the node.
pub(super) async fn expiry_loop(node: std::sync::Weak<Node>) {
    let Some(grid) = node.upgrade().map(|n| n.cluster.ticks) else {
        return;
    };
    loop {
        grid.sleep(EXPIRY_TICK).await;
        let Some(n) = node.upgrade() else { return };
        if let Err(e) = n.leases().expire_due().await {
            tracing::warn!(error = %e, "lease expiry pass failed; trying again");
        }
    }
}

/// The leader's answer to a follower's [`LeaderCall`], as the peer reply.
pub async fn answer_peer(
    node: &Arc<Node>,
    call: LeaderCall,
) -> std::result::Result<LeaderAnswer, PeerError> {
    if node.leading().is_none() {
        return Err(PeerError::NotLeader {
            leader: node.raft.metrics().borrow().current_leader,
        });
    }
    node.leases()
        .answer(call)
        .await
        .map_err(|e| PeerError::NonPrimary(e.to_string()))
}
