//! The `Raft` service: the server side of openraft's RPCs, write-set
//! forwarding and read indexes. Payloads are `crate::codec` envelopes (see `raft::network`).

use std::sync::Arc;

use tonic::{Request, Response, Status};
use trireme_proto::v1::raft_server::Raft as RaftRpc;
use trireme_proto::v1::RaftMessage;

use crate::group::{reads, submit};
use crate::node::Node;
use crate::raft::network::{decode, encode};
use crate::raft::peer_error::PeerError;
use crate::txn::{NodeId, WriteSet};

/// Node-to-node messages.
pub struct RaftService {
    node: Arc<Node>,
}

impl RaftService {
    /// Serves `node`.
    pub fn new(node: Arc<Node>) -> Self {
        RaftService { node }
    }
}

/// Whether `id` is in this node's membership (voter or learner: a joiner
/// the leader admitted is a learner). A node that knows no membership yet (a
/// fresh joiner before its first entries) cannot tell, and says yes: the CA
/// and the id check still apply.
pub(crate) fn is_member(node: &Node, id: NodeId) -> bool {
    let metrics = node.raft().metrics();
    let m = metrics.borrow();
    let membership = m.membership_config.membership();
    membership.nodes().next().is_none() || membership.get_node(&id).is_some()
}

/// The identity check of a peer request over mutual TLS: the node id the
/// certificate names must be `claimed` (the id the message says it comes
/// from, when it says one) and, with `member`, a member. Without peer TLS
/// there is no certificate and nothing to check.
#[allow(clippy::result_large_err)]
pub(crate) fn check_peer<T>(
    node: &Node,
    req: &Request<T>,
    what: &str,
    claimed: Option<NodeId>,
    member: bool,
) -> Result<(), Status> {
    let Some(cert_id) = crate::tls::peer_node_id(req)? else {
        return Ok(());
    };
    if let Some(claimed) = claimed {
        if claimed != cert_id {
            tracing::warn!(
                certificate = cert_id,
                claimed,
                what,
                "peer refused: its certificate names another node"
            );
            return Err(Status::permission_denied(format!(
                "{what} claims to come from node {claimed} but the peer certificate names node {cert_id}"
            )));
        }
    }
    if member && !is_member(node, cert_id) {
        tracing::warn!(certificate = cert_id, what, "peer refused: not a member");
        return Err(Status::permission_denied(format!(
            "{what} from node {cert_id} (its peer certificate's id) refused: node {cert_id} is not a \
             member of this cluster (this node is {})",
            node.id()
        )));
    }
    Ok(())
}

/// The node id in a Raft vote (the leader's or the candidate's).
fn vote_node(vote: &openraft::Vote<NodeId>) -> Option<NodeId> {
    vote.leader_id().voted_for()
}

fn bad(e: crate::Error) -> Status {
    Status::invalid_argument(format!("undecodable raft message: {e}"))
}

fn reply<T: serde::Serialize + crate::codec::PeerMessage>(
    value: &T,
) -> Result<Response<RaftMessage>, Status> {
    encode(value)
        .map(Response::new)
        .map_err(|e| Status::internal(e.to_string()))
}

#[tonic::async_trait]
impl RaftRpc for RaftService {
    async fn append_entries(
        &self,
        mut req: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        let rpc: openraft::raft::AppendEntriesRequest<crate::group::types::TypeConfig> =
            decode(req.get_ref()).map_err(bad)?;
        let leader = vote_node(&rpc.vote);
        check_peer(&self.node, &req, "AppendEntries", leader, true)?;
        let mut answer = reply(&self.node.raft().append_entries(rpc).await)?;
        if let Some(leader) = leader {
            crate::cluster::attached_to_call(
                self.node.cluster(),
                leader,
                req.get_mut(),
                answer.get_mut(),
            );
        }
        Ok(answer)
    }

    async fn vote(&self, req: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let rpc: openraft::raft::VoteRequest<NodeId> = decode(req.get_ref()).map_err(bad)?;
        check_peer(&self.node, &req, "Vote", vote_node(&rpc.vote), true)?;
        reply(&self.node.raft().vote(rpc).await)
    }

    async fn install_snapshot(
        &self,
        req: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        let mut rpc: openraft::raft::InstallSnapshotRequest<crate::raft::types::TypeConfig> =
            decode(req.get_ref()).map_err(bad)?;
        check_peer(
            &self.node,
            &req,
            "InstallSnapshot",
            vote_node(&rpc.vote),
            true,
        )?;
        let mut msg = req.into_inner();
        rpc.data = std::mem::take(&mut msg.data);
        reply(&self.node.raft().install_snapshot(rpc).await)
    }

    async fn forward(&self, req: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let wss: Vec<WriteSet> = decode(req.get_ref()).map_err(bad)?;
        let node = &self.node;
        // Every write set names its origin, which waits for the verdict.
        let origin = wss.first().map(|ws| ws.origin);
        if let Some(other) = wss.iter().find(|ws| Some(ws.origin) != origin) {
            check_peer(node, &req, "Forward", Some(other.origin), true)?;
        }
        check_peer(node, &req, "Forward", origin, true)?;
        // The same check as a client's commit: a peer is not trusted more.
        if let Err(e) = node.config().limits.check_forwarded(&wss) {
            return reply(&Err::<(), PeerError>(PeerError::Invalid(e.to_string())));
        }
        // A draining leader takes no new batch; the follower keeps it and
        // sends it to the next leader (nothing was appended).
        let Some(_counted) = node.drain_state().forward() else {
            return reply(&Err::<(), PeerError>(PeerError::NotLeader { leader: None }));
        };
        reply(
            &submit::order_forwarded(node.raft(), node.primary(), &*node.cluster().flow, wss).await,
        )
    }

    async fn read_index(&self, req: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        check_peer(&self.node, &req, "ReadIndex", None, true)?;
        reply(&reads::leader_read_index(self.node.raft(), self.node.primary()).await)
    }

    async fn lease(&self, req: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        check_peer(&self.node, &req, "Lease", None, true)?;
        let call: crate::lease::LeaderCall = decode(req.get_ref()).map_err(bad)?;
        reply(&crate::node::lease::answer_peer(&self.node, call).await)
    }
}
