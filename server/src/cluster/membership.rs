//! Join, leave and rejoin. Each is decided by the leader; any node forwards.

use std::collections::BTreeSet;
use std::time::Duration;

use openraft::{BasicNode, ChangeMembers};
use trireme_proto::v1 as pb;
use trireme_proto::v1::cluster_client::ClusterClient;

use crate::error::{Error, Result};
use crate::group::types::Request;
use crate::node::Node;
use crate::txn::NodeId;

/// The membership as `Member`s (role, and `up` from this node's failure
/// detector). `address` is the peer address the membership records; the
/// client address is this node's own, or what a peer said in its last ping
/// answer (empty until it answered once).
pub fn members(node: &Node) -> Vec<pb::Member> {
    let metrics = node.raft.metrics();
    let m = metrics.borrow();
    let membership = m.membership_config.membership();
    let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
    let head = node.applied.seqno();
    membership
        .nodes()
        .map(|(id, n)| {
            let me = *id == node.id();
            pb::Member {
                id: *id,
                address: n.addr.clone(),
                client_address: if me {
                    node.config.advertise_addr().to_string()
                } else {
                    node.health.client_address(*id).unwrap_or_default()
                },
                role: if voters.contains(id) {
                    "voter"
                } else {
                    "learner"
                }
                .into(),
                up: me || node.health.is_up(*id),
                stalled: !me && node.health.is_stalled(*id, head),
            }
        })
        .collect()
}

fn leader_addr(node: &Node) -> Result<(NodeId, String)> {
    let metrics = node.raft.metrics();
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

fn forward_err(s: tonic::Status) -> Error {
    match s.code() {
        tonic::Code::InvalidArgument => Error::InvalidInput(s.message().to_string()),
        _ => Error::Unavailable(format!("leader: {}", s.message())),
    }
}

/// Adds node `id` at peer address `addr` as a learner (the leader promotes it once caught up).
/// Idempotent for a node already a member at the same address.
pub async fn join(node: &Node, id: NodeId, addr: String) -> Result<pb::JoinResponse> {
    if id == 0 {
        return Err(Error::InvalidInput("node id 0 is not valid".into()));
    }
    if addr.parse::<std::net::SocketAddr>().is_err() {
        return Err(Error::InvalidInput(format!(
            "join address {addr:?} is not IP:PORT"
        )));
    }
    if node.applied.is_departed(id) {
        return Err(Error::InvalidInput(format!(
            "node id {id} left the cluster for good; start a new node with a fresh data directory and a new id"
        )));
    }
    let (leader, leader_addr) = leader_addr(node)?;
    if leader != node.id() {
        let mut client = ClusterClient::new(node.peers.channel(&leader_addr)?);
        let resp = client
            .join(pb::JoinRequest {
                node_id: id,
                address: addr,
                client_address: String::new(),
            })
            .await
            .map_err(forward_err)?;
        return Ok(resp.into_inner());
    }
    let existing = {
        let metrics = node.raft.metrics();
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
            node.raft
                .add_learner(id, BasicNode::new(&addr), false)
                .await
                .map_err(|e| Error::Unavailable(format!("adding node {id}: {e}")))?;
        }
    }
    Ok(pb::JoinResponse {
        leader_id: leader,
        members: members(node),
    })
}

/// Removes node `id` for good: records its departure (so it can never
/// rejoin), then removes it from the membership.
pub async fn leave(node: &Node, id: NodeId) -> Result<pb::LeaveResponse> {
    let (leader, leader_addr) = leader_addr(node)?;
    if leader != node.id() {
        let mut client = ClusterClient::new(node.peers.channel(&leader_addr)?);
        let resp = client
            .leave(pb::LeaveRequest { node_id: id })
            .await
            .map_err(forward_err)?;
        return Ok(resp.into_inner());
    }
    let (is_member, voters) = {
        let metrics = node.raft.metrics();
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
    node.raft
        .client_write(Request::Depart(id))
        .await
        .map_err(|e| Error::Unavailable(format!("recording the departure of node {id}: {e}")))?;
    let change = if voters.contains(&id) {
        ChangeMembers::RemoveVoters(BTreeSet::from([id]))
    } else {
        ChangeMembers::RemoveNodes(BTreeSet::from([id]))
    };
    node.raft
        .change_membership(change, false)
        .await
        .map_err(|e| Error::Unavailable(format!("removing node {id}: {e}")))?;
    Ok(pb::LeaveResponse {
        members: members(node),
    })
}

/// For a node started with `--join` on a fresh data directory: asks `target`
/// (a member's peer address) to add it, retrying until it is added (or the node is dropped).
pub async fn join_at_start(node: std::sync::Weak<Node>, target: String) {
    let mut logged = false;
    loop {
        let Some(n) = node.upgrade() else { return };
        let req = pb::JoinRequest {
            node_id: n.id(),
            address: n.config.peer_advertise_addr().to_string(),
            client_address: n.config.advertise_addr().to_string(),
        };
        let result = async {
            let mut client = ClusterClient::new(n.peers.channel(&target)?);
            client
                .join(req)
                .await
                .map_err(|s| Error::Unavailable(s.message().to_string()))
        }
        .await;
        match result {
            Ok(resp) => {
                tracing::info!(%target, leader = resp.get_ref().leader_id, "joined the cluster as a learner");
                return;
            }
            Err(e) => {
                if !logged {
                    tracing::warn!(%target, error = %e, "join failed; retrying");
                    logged = true;
                }
            }
        }
        drop(n);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Rejoins automatically after an eviction: when a peer that knows a leader
/// no longer lists this node, ask it to add this node back as a learner.
pub async fn rejoin_if_evicted(node: &Node) {
    let me = node.id();
    let candidates: Vec<pb::PingResponse> = node
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
    let req = pb::JoinRequest {
        node_id: me,
        address: node.config.peer_advertise_addr().to_string(),
        client_address: node.config.advertise_addr().to_string(),
    };
    if let Ok(channel) = node.peers.channel(&addr) {
        if let Err(s) = ClusterClient::new(channel).join(req).await {
            tracing::warn!(error = %s.message(), "rejoin failed; will retry");
        }
    }
}
