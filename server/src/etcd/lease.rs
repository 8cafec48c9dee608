//! `etcdserverpb.Lease` over the node's leases ([`crate::lease`]): grant,
//! revoke, keep-alive (a stream), time-to-live and the lease list, as etcd
//! answers them, so that `etcdctl lease ...` and etcd's client libraries work.
//!
//! What etcd clients see:
//! - A grant with a TTL below one second gets one second (etcd raises a
//!   short TTL to its minimum too); above etcd's maximum it is
//!   OUT_OF_RANGE "etcdserver: too large lease TTL". An id already in use
//!   is FAILED_PRECONDITION "etcdserver: lease already exists"; id 0 asks
//!   the server to pick one.
//! - Revoking a lease that does not exist is NOT_FOUND "etcdserver:
//!   requested lease not found".
//! - A keep-alive answers the lease's granted TTL, or TTL 0 when the lease
//!   does not exist or its deadline passed (etcd's answer); it restarts the
//!   deadline on the leader (a follower forwards it) and writes nothing.
//! - Time-to-live of a lease that does not exist answers TTL -1, as etcd.
//!
//! Header revisions: a revoke's is the seqno that deleted the lease and its
//! keys; the others carry the seqno the node had applied when it answered.

use std::sync::Arc;

use tokio::sync::mpsc;
use tonic::{Request, Response, Status, Streaming};
use trireme_proto::etcd::etcdserverpb as epb;

use super::convert::{status, LEASE_NOT_FOUND};
use super::header;
use crate::error::Error;
use crate::lease::{self, MAX_TTL_SECS};
use crate::node::Node;

/// etcd's message for a TTL above its maximum.
pub const TTL_TOO_LARGE: &str = "etcdserver: too large lease TTL";
/// etcd's message for granting an id already in use.
pub const LEASE_EXISTS: &str = "etcdserver: lease already exists";

/// The etcd Lease service.
pub struct LeaseService {
    node: Arc<Node>,
}

impl LeaseService {
    /// Serves `node`.
    pub fn new(node: Arc<Node>) -> Self {
        LeaseService { node }
    }
}

/// The stream of a `LeaseKeepAlive` call.
pub type KeepAliveStream = std::pin::Pin<
    Box<dyn futures::Stream<Item = Result<epb::LeaseKeepAliveResponse, Status>> + Send>,
>;

#[tonic::async_trait]
impl epb::lease_server::Lease for LeaseService {
    async fn lease_grant(
        &self,
        req: Request<epb::LeaseGrantRequest>,
    ) -> Result<Response<epb::LeaseGrantResponse>, Status> {
        let req = req.into_inner();
        if req.ttl > MAX_TTL_SECS {
            return Err(Status::out_of_range(TTL_TOO_LARGE));
        }
        if req.id < 0 {
            return Err(Status::invalid_argument(format!(
                "lease id {} is negative: ids are positive (0 asks the server to pick one)",
                req.id
            )));
        }
        let ttl = req.ttl.max(1);
        let node = &self.node;
        match node.leases().grant(req.id, ttl).await {
            Ok(granted) => Ok(Response::new(epb::LeaseGrantResponse {
                header: Some(header(node, node.applied().seqno())),
                id: granted.id,
                ttl: granted.ttl,
                error: String::new(),
            })),
            // A grant whose id was taken fails its compare; the node has
            // applied the seqno that decided it, so the record is visible.
            Err(e @ Error::InvalidInput(_)) if req.id != 0 => {
                match lease::record(node.mvcc(), req.id, node.applied().seqno()) {
                    Ok(Some(_)) => Err(Status::failed_precondition(LEASE_EXISTS)),
                    _ => Err(status(e)),
                }
            }
            Err(e) => Err(status(e)),
        }
    }

    async fn lease_revoke(
        &self,
        req: Request<epb::LeaseRevokeRequest>,
    ) -> Result<Response<epb::LeaseRevokeResponse>, Status> {
        let id = req.into_inner().id;
        match self.node.leases().revoke(id).await {
            Ok(seqno) => Ok(Response::new(epb::LeaseRevokeResponse {
                header: Some(header(&self.node, seqno)),
            })),
            Err(Error::NotFound(_)) => Err(Status::not_found(LEASE_NOT_FOUND)),
            Err(e) => Err(status(e)),
        }
    }

    type LeaseKeepAliveStream = KeepAliveStream;

    async fn lease_keep_alive(
        &self,
        req: Request<Streaming<epb::LeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        let inbound = req.into_inner();
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(keep_alive_session(self.node.clone(), inbound, tx));
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn lease_time_to_live(
        &self,
        req: Request<epb::LeaseTimeToLiveRequest>,
    ) -> Result<Response<epb::LeaseTimeToLiveResponse>, Status> {
        let req = req.into_inner();
        let node = &self.node;
        let info = node
            .leases()
            .time_to_live(req.id, req.keys)
            .await
            .map_err(status)?;
        let header = Some(header(node, node.applied().seqno()));
        Ok(Response::new(match info {
            Some(info) => epb::LeaseTimeToLiveResponse {
                header,
                id: info.id,
                ttl: info.remaining_ttl,
                granted_ttl: info.granted_ttl,
                keys: info.keys,
            },
            None => epb::LeaseTimeToLiveResponse {
                header,
                id: req.id,
                ttl: -1,
                granted_ttl: 0,
                keys: Vec::new(),
            },
        }))
    }

    async fn lease_leases(
        &self,
        _req: Request<epb::LeaseLeasesRequest>,
    ) -> Result<Response<epb::LeaseLeasesResponse>, Status> {
        let node = &self.node;
        let ids = node.leases().list().await.map_err(status)?;
        Ok(Response::new(epb::LeaseLeasesResponse {
            header: Some(header(node, node.applied().seqno())),
            leases: ids.into_iter().map(|id| epb::LeaseStatus { id }).collect(),
        }))
    }
}

/// Answers each keep-alive of one stream in turn until the client closes it
/// (or goes away). A keep-alive that cannot reach the leader ends the stream
/// with that error, and the client opens another (etcd's clients retry).
async fn keep_alive_session(
    node: Arc<Node>,
    mut inbound: Streaming<epb::LeaseKeepAliveRequest>,
    tx: mpsc::Sender<Result<epb::LeaseKeepAliveResponse, Status>>,
) {
    loop {
        let req = tokio::select! {
            msg = inbound.message() => match msg {
                Ok(Some(req)) => req,
                Ok(None) | Err(_) => return,
            },
            _ = tx.closed() => return,
        };
        let answer = match node.leases().keep_alive(req.id).await {
            Ok(ttl) => Ok(epb::LeaseKeepAliveResponse {
                header: Some(header(&node, node.applied().seqno())),
                id: req.id,
                ttl,
            }),
            Err(e) => Err(status(e)),
        };
        let failed = answer.is_err();
        if tx.send(answer).await.is_err() || failed {
            return;
        }
    }
}
