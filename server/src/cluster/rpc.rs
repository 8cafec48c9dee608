//! The outbound side of the `Cluster` gRPC service, as this folder uses it:
//! a ping, and the join, leave and parameter changes forwarded to the
//! leader. The one file of `cluster/` that speaks protobuf: answers become
//! [`PingAnswer`] and [`Member`] here, as soon as they arrive; the serving
//! side's conversions are at the `api` edge (`api/convert.rs`).

use std::time::Duration;

use trireme_proto::v1 as pb;
use trireme_proto::v1::cluster_client::ClusterClient;

use super::snapshot::{Member, PingAnswer, Role};
use super::Handle;
use crate::error::{Error, Result};
use crate::txn::NodeId;

/// One ping to `addr`.
pub async fn ping(handle: &Handle, addr: &str, timeout: Duration) -> Result<PingAnswer> {
    let channel = handle.peers.channel(addr)?;
    let mut client = ClusterClient::new(channel);
    let mut req = tonic::Request::new(pb::PingRequest { from: handle.id() });
    req.set_timeout(timeout);
    let resp = client
        .ping(req)
        .await
        .map(tonic::Response::into_inner)
        .map_err(|s| Error::Unavailable(format!("ping {addr}: {}", s.message())))?;
    ping_answer(resp).map_err(|e| Error::Unavailable(format!("ping {addr}: {e}")))
}

/// A peer's ping answer; a member with a role this node does not know is bad input.
fn ping_answer(resp: pb::PingResponse) -> std::result::Result<PingAnswer, String> {
    Ok(PingAnswer {
        node_id: resp.node_id,
        applied_seqno: resp.applied_seqno,
        leader_id: resp.leader_id,
        term: resp.term,
        members: members(resp.members)?,
        from_departed: resp.from_departed,
        leader_with_quorum: resp.leader_with_quorum,
        client_address: resp.client_address,
    })
}

/// Members received from a peer.
pub fn members(members: Vec<pb::Member>) -> std::result::Result<Vec<Member>, String> {
    members
        .into_iter()
        .map(|m| {
            let role = Role::parse(&m.role).ok_or_else(|| {
                format!(
                    "member {} has role {:?} (known: voter, learner)",
                    m.id, m.role
                )
            })?;
            Ok(Member {
                id: m.id,
                address: m.address,
                client_address: m.client_address,
                role,
                up: m.up,
                stalled: m.stalled,
            })
        })
        .collect()
}

/// The error of a call forwarded to the leader: its refusals of bad input
/// stay bad input; anything else is the leader being unavailable.
pub fn forward_err(s: tonic::Status) -> Error {
    match s.code() {
        tonic::Code::InvalidArgument => Error::InvalidInput(s.message().to_string()),
        _ => Error::Unavailable(format!("leader: {}", s.message())),
    }
}

/// Asks the node at peer address `addr` to add node `id` at peer address
/// `address` (client address `client_address`, empty if unknown) as a
/// learner; returns the leader it names and the membership it reports.
pub async fn join(
    handle: &Handle,
    addr: &str,
    id: NodeId,
    address: String,
    client_address: String,
) -> Result<(NodeId, Vec<Member>)> {
    let mut client = ClusterClient::new(handle.peers.channel(addr)?);
    let resp = client
        .join(pb::JoinRequest {
            node_id: id,
            address,
            client_address,
        })
        .await
        .map_err(forward_err)?
        .into_inner();
    let members = members(resp.members)
        .map_err(|e| Error::Unavailable(format!("join answer from {addr}: {e}")))?;
    Ok((resp.leader_id, members))
}

/// Asks the node at `addr` to remove node `id`; returns the membership it reports.
pub async fn leave(handle: &Handle, addr: &str, id: NodeId) -> Result<Vec<Member>> {
    let mut client = ClusterClient::new(handle.peers.channel(addr)?);
    let resp = client
        .leave(pb::LeaveRequest { node_id: id })
        .await
        .map_err(forward_err)?
        .into_inner();
    members(resp.members).map_err(|e| Error::Unavailable(format!("leave answer from {addr}: {e}")))
}
