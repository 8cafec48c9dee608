//! Join, leave and rejoin. Each is decided by the leader; any node forwards.

use std::collections::BTreeSet;
use std::time::Duration;

use openraft::{BasicNode, ChangeMembers};

use super::snapshot::{Member, PingAnswer};
use super::{decide, rpc, Handle};
use crate::error::{Error, Result};
use crate::raft::types::Request;
use crate::txn::NodeId;

/// The membership as `Member`s (role, and `up` from this node's failure
/// detector). `address` is the peer address the membership records; the
/// client address is this node's own, or what a peer said in its last ping
/// answer (empty until it answered once).
pub fn members(handle: &Handle) -> Vec<Member> {
    let mut members = decide::members(&handle.snapshot());
    for m in &mut members {
        m.client_address = if m.id == handle.id() {
            handle.config.advertise_addr().to_string()
        } else {
            handle.health.client_address(m.id).unwrap_or_default()
        };
    }
    members
}

fn leader_addr(handle: &Handle) -> Result<(NodeId, String)> {
    let metrics = handle.raft.metrics();
    let m = metrics.borrow();
    let leader = m.current_leader.ok_or_else(|| {
        Error::Unavailable(
            "not in the primary component: no leader to change the membership".into(),
        )
    })?;
    let addr = m
        .membership_config
        .membership()
        .get_node(&leader)
        .map(|n| n.addr.clone())
        .ok_or_else(|| Error::Unavailable(format!("leader {leader} has no address")))?;
    Ok((leader, addr))
}

/// Adds node `id` at peer address `addr` as a learner (the leader promotes it once caught
/// up); returns the leader and the membership. Idempotent for a node already
/// a member at the same address.
pub async fn join(handle: &Handle, id: NodeId, addr: String) -> Result<(NodeId, Vec<Member>)> {
    if id == 0 {
        return Err(Error::InvalidInput("node id 0 is not valid".into()));
    }
    if addr.parse::<std::net::SocketAddr>().is_err() {
        return Err(Error::InvalidInput(format!(
            "join address {addr:?} is not IP:PORT"
        )));
    }
    if handle.applied.is_departed(id) {
        return Err(Error::InvalidInput(format!(
            "node id {id} left the cluster for good; start a new node with a fresh data directory and a new id"
        )));
    }
    let (leader, leader_addr) = leader_addr(handle)?;
    if leader != handle.id() {
        return rpc::join(handle, &leader_addr, id, addr, String::new()).await;
    }
    let existing = {
        let metrics = handle.raft.metrics();
        let m = metrics.borrow();
        m.membership_config
            .membership()
            .get_node(&id)
            .map(|n| n.addr.clone())
    };
    match existing {
        Some(a) if a != addr => {
            return Err(Error::InvalidInput(format!(
                "node id {id} is already a member at {a}; ids are never reused"
            )))
        }
        Some(_) => {}
        None => {
            tracing::info!(node = id, %addr, "adding a node as a learner");
            handle
                .raft
                .add_learner(id, BasicNode::new(&addr), false)
                .await
                .map_err(|e| Error::Unavailable(format!("adding node {id}: {e}")))?;
        }
    }
    Ok((leader, members(handle)))
}

/// Removes node `id` for good: records its departure (so it can never
/// rejoin), then removes it from the membership. Returns the membership.
pub async fn leave(handle: &Handle, id: NodeId) -> Result<Vec<Member>> {
    let (leader, leader_addr) = leader_addr(handle)?;
    if leader != handle.id() {
        return rpc::leave(handle, &leader_addr, id).await;
    }
    let (is_member, voters) = {
        let metrics = handle.raft.metrics();
        let m = metrics.borrow();
        let membership = m.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        (membership.get_node(&id).is_some(), voters)
    };
    if !is_member {
        return Err(Error::InvalidInput(format!("node {id} is not a member")));
    }
    if voters.len() == 1 && voters.contains(&id) {
        return Err(Error::InvalidInput(format!(
            "node {id} is the last voter: a cluster cannot leave itself"
        )));
    }
    tracing::info!(node = id, "node leaving the cluster");
    handle
        .raft
        .client_write(Request::Depart(id))
        .await
        .map_err(|e| Error::Unavailable(format!("recording the departure of node {id}: {e}")))?;
    let change = if voters.contains(&id) {
        ChangeMembers::RemoveVoters(BTreeSet::from([id]))
    } else {
        ChangeMembers::RemoveNodes(BTreeSet::from([id]))
    };
    handle
        .raft
        .change_membership(change, false)
        .await
        .map_err(|e| Error::Unavailable(format!("removing node {id}: {e}")))?;
    Ok(members(handle))
}

/// For a node started with `--join` on a fresh data directory: asks `target`
/// (a member's peer address) to add it, retrying until it is added (or the node is dropped).
pub async fn join_at_start(handle: std::sync::Weak<Handle>, target: String) {
    let mut logged = false;
    loop {
        let Some(h) = handle.upgrade() else { return };
        let address = h.config.peer_advertise_addr().to_string();
        let client_address = h.config.advertise_addr().to_string();
        match rpc::join(&h, &target, h.id(), address, client_address).await {
            Ok((leader, _)) => {
                tracing::info!(%target, leader, "joined the cluster as a learner");
                return;
            }
            Err(e) => {
                if !logged {
                    tracing::warn!(%target, error = %e, "join failed; retrying");
                    logged = true;
                }
            }
        }
        drop(h);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Rejoins automatically after an eviction: when a peer that knows a leader
/// no longer lists this node, ask it to add this node back as a learner.
pub async fn rejoin_if_evicted(handle: &Handle) {
    let me = handle.id();
    let candidates: Vec<PingAnswer> = handle
        .health
        .views()
        .into_iter()
        .filter(|v| v.leader_id != 0 && !v.members.iter().any(|m| m.id == me))
        .collect();
    let Some(view) = candidates.first() else {
        return;
    };
    if view.from_departed {
        tracing::error!("this node left the cluster for good (trireme leave); it will not rejoin");
        return;
    }
    let Some(addr) = view
        .members
        .iter()
        .find(|m| m.id == view.leader_id)
        .map(|m| m.address.clone())
    else {
        return;
    };
    tracing::info!(
        leader = view.leader_id,
        "no longer a member (evicted?): asking to rejoin"
    );
    let address = handle.config.peer_advertise_addr().to_string();
    let client_address = handle.config.advertise_addr().to_string();
    if let Err(e) = rpc::join(handle, &addr, me, address, client_address).await {
        tracing::warn!(error = %e, "rejoin failed; will retry");
    }
}
