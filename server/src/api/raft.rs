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
use crate::txn::WriteSet;

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
        req: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        let rpc = decode(req.get_ref()).map_err(bad)?;
        reply(&self.node.raft.append_entries(rpc).await)
    }

    async fn vote(&self, req: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let rpc = decode(req.get_ref()).map_err(bad)?;
        reply(&self.node.raft.vote(rpc).await)
    }

    async fn install_snapshot(
        &self,
        req: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        let mut msg = req.into_inner();
        let mut rpc: openraft::raft::InstallSnapshotRequest<crate::raft::types::TypeConfig> =
            decode(&msg).map_err(bad)?;
        rpc.data = std::mem::take(&mut msg.data);
        reply(&self.node.raft.install_snapshot(rpc).await)
    }

    async fn forward(&self, req: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let wss: Vec<WriteSet> = decode(req.get_ref()).map_err(bad)?;
        let node = &self.node;
        // The same check as a client's commit: a peer is not trusted more.
        if let Err(e) = node.config.limits.check_forwarded(&wss) {
            return reply(&Err::<(), PeerError>(PeerError::Invalid(e.to_string())));
        }
        // A draining leader takes no new batch; the follower keeps it and
        // sends it to the next leader (nothing was appended).
        let Some(_counted) = node.drain.forward() else {
            return reply(&Err::<(), PeerError>(PeerError::NotLeader { leader: None }));
        };
        reply(&submit::order_forwarded(&node.raft, &*node.primary, &*node.cluster.flow, wss).await)
    }

    async fn read_index(
        &self,
        _req: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        reply(&reads::leader_read_index(&self.node.raft, &*self.node.primary).await)
    }
}
