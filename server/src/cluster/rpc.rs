//! The outbound side of the `Cluster` gRPC service, as this folder uses it:
//! a ping, and the join, leave and parameter changes forwarded to the
//! leader. The one file of `cluster/` that speaks protobuf: answers become
//! [`PingAnswer`] and [`Member`] here, as soon as they arrive, and are made
//! into messages here (the serving side at the `api` edge uses the same);
//! also the answers attached to AppendEntries calls and replies (see
//! [`super::health`]).

use std::sync::Weak;
use std::time::Duration;

use trireme_proto::v1 as pb;
use trireme_proto::v1::cluster_client::ClusterClient;

use super::snapshot::{Member, PingAnswer, Role};
use super::{health, Handle};
use crate::error::{Error, Result};
use crate::raft::network::HealthHook;
use crate::txn::NodeId;

/// One ping to `to` at `addr`; the answer, and the mark that came with it
/// (0: none). A ping to a node with a higher id carries this node's own
/// answer when one is due (see [`super::health`]): then that node need not
/// ping this one.
pub async fn ping(
    handle: &Handle,
    to: NodeId,
    addr: &str,
    timeout: Duration,
) -> Result<(PingAnswer, u64)> {
    let channel = handle.peers.channel(addr)?;
    let mut client = ClusterClient::new(channel);
    let mut ping = pb::PingRequest {
        from: handle.id(),
        ..Default::default()
    };
    if handle.id() < to {
        if let Some((answer, mark)) = health::call_attachment(handle, to) {
            ping.health = Some(ping_response(answer));
            ping.mark = mark;
        }
    }
    let mut req = tonic::Request::new(ping);
    req.set_timeout(timeout);
    let resp = client
        .ping(req)
        .await
        .map(tonic::Response::into_inner)
        .map_err(|s| Error::Unavailable(format!("ping {addr}: {}", s.message())))?;
    let mark = resp.mark;
    let answer = ping_answer(resp).map_err(|e| Error::Unavailable(format!("ping {addr}: {e}")))?;
    Ok((answer, mark))
}

/// The answer to a ping from `from`, and what the ping carried: a node with
/// a lower id attaches its own answer (taken here as the answer to a ping
/// this node sent when it made the echoed mark), and gets a mark with the
/// answer to echo next time. From a higher id, attachments are ignored: of
/// two followers, only the lower id pings.
pub fn answer_ping(handle: &Handle, mut ping: pb::PingRequest) -> pb::PingResponse {
    let from = ping.from;
    let mut answer = ping_response(health::answer(handle, from));
    if from < handle.id() {
        if let Some(attached) = ping.health.take() {
            match attached_answer(from, attached, ping.mark) {
                Ok(attached) => health::took_call(handle, from, attached, ping.mark),
                Err(e) => tracing::debug!(peer = from, error = %e, "attached answer ignored"),
            }
        }
        answer.mark = health::reply_mark(handle, from).unwrap_or(0);
    }
    answer
}

/// The leader's side of the answers attached to AppendEntries (see
/// [`super::health`]): attaches its own to calls and takes its followers'
/// from their replies.
pub struct AttachedAnswers(pub Weak<Handle>);

impl HealthHook for AttachedAnswers {
    fn outgoing(&self, target: NodeId, msg: &mut pb::RaftMessage) -> u64 {
        let Some(h) = self.0.upgrade() else { return 0 };
        if let Some((answer, mark)) = health::call_attachment(&h, target) {
            msg.health = Some(ping_response(answer));
            msg.mark = mark;
        }
        h.applied.seqno()
    }

    fn answered(&self, target: NodeId, reply: &mut pb::RaftMessage, head: u64) {
        let Some(answer) = reply.health.take() else {
            return;
        };
        let Some(h) = self.0.upgrade() else { return };
        match attached_answer(target, answer, reply.mark) {
            Ok(answer) => health::took_reply(&h, target, answer, reply.mark, head),
            Err(e) => tracing::debug!(peer = target, error = %e, "attached answer ignored"),
        }
    }
}

/// The follower's side: takes what `leader` attached to its AppendEntries
/// call `msg` (once the call is handled), and attaches this node's answer to
/// the reply `reply` when one is due.
pub fn attached_to_call(
    handle: &Handle,
    leader: NodeId,
    msg: &mut pb::RaftMessage,
    reply: &mut pb::RaftMessage,
) {
    if let Some(answer) = msg.health.take() {
        match attached_answer(leader, answer, msg.mark) {
            Ok(answer) => health::took_call(handle, leader, answer, msg.mark),
            Err(e) => tracing::debug!(peer = leader, error = %e, "attached answer ignored"),
        }
    }
    if let Some((answer, mark)) = health::reply_attachment(handle, leader) {
        reply.health = Some(ping_response(answer));
        reply.mark = mark;
    }
}

/// The answer `from` attached to an AppendEntries call or reply, with its
/// `mark`. Bad input: an answer in another node's name, no mark, or what
/// [`ping_answer`] refuses.
fn attached_answer(
    from: NodeId,
    answer: pb::PingResponse,
    mark: u64,
) -> std::result::Result<PingAnswer, String> {
    if answer.node_id != from {
        return Err(format!(
            "node {from} attached an answer in node {}'s name",
            answer.node_id
        ));
    }
    if mark == 0 {
        return Err(format!("node {from} attached an answer without a mark"));
    }
    ping_answer(answer)
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

/// Members as the wire lists them (`role` is "voter" or "learner").
pub fn member_messages(members: &[Member]) -> Vec<pb::Member> {
    members
        .iter()
        .map(|m| pb::Member {
            id: m.id,
            address: m.address.clone(),
            client_address: m.client_address.clone(),
            role: m.role.as_str().into(),
            up: m.up,
            stalled: m.stalled,
        })
        .collect()
}

/// A ping answer as the wire carries it.
pub fn ping_response(a: PingAnswer) -> pb::PingResponse {
    pb::PingResponse {
        node_id: a.node_id,
        applied_seqno: a.applied_seqno,
        leader_id: a.leader_id,
        term: a.term,
        members: member_messages(&a.members),
        from_departed: a.from_departed,
        leader_with_quorum: a.leader_with_quorum,
        client_address: a.client_address,
        mark: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(node_id: NodeId, role: &str) -> pb::PingResponse {
        pb::PingResponse {
            node_id,
            applied_seqno: 3,
            leader_id: 1,
            term: 2,
            members: vec![pb::Member {
                id: 1,
                address: "127.0.0.1:1".into(),
                client_address: String::new(),
                role: role.into(),
                up: true,
                stalled: false,
            }],
            from_departed: false,
            leader_with_quorum: true,
            client_address: "127.0.0.1:2".into(),
            mark: 0,
        }
    }

    #[test]
    fn an_attached_answer_must_come_in_its_senders_name_with_a_mark() {
        let ok = attached_answer(2, response(2, "voter"), 7).expect("a good answer");
        assert_eq!((ok.node_id, ok.applied_seqno, ok.term), (2, 3, 2));
        assert_eq!(ok.client_address, "127.0.0.1:2");
        let e = attached_answer(2, response(3, "voter"), 7).unwrap_err();
        assert!(e.contains("node 2") && e.contains("node 3's name"), "{e}");
        let e = attached_answer(2, response(2, "voter"), 0).unwrap_err();
        assert!(e.contains("without a mark"), "{e}");
        let e = attached_answer(2, response(2, "boss"), 7).unwrap_err();
        assert!(
            e.contains("\"boss\"") && e.contains("voter, learner"),
            "{e}"
        );
    }
}
