//! `Cluster.MemberList` and `Maintenance.Status`: enough of etcd's admin
//! services for `etcdctl member list` and `etcdctl endpoint status`.
//!
//! Members are the Raft membership: etcd's member id is the node id, the
//! name `node<ID>`, the peer URL the peer address. A node knows only its
//! own etcd listener, so only its own entry lists a client URL.

use std::sync::Arc;

use openraft::ServerState;
use tonic::{Request, Response, Status};
use trireme_proto::etcd::etcdserverpb as epb;

use super::convert::status;
use super::header;
use crate::cluster::membership;
use crate::cluster::snapshot::Role;
use crate::node::Node;

/// The etcd API version this listener presents (what `endpoint status`
/// shows): the etcd release whose API the served subset follows.
pub const VERSION: &str = "3.4.0";

/// `Cluster.MemberList`.
pub struct ClusterService {
    node: Arc<Node>,
    /// This node's etcd client URL.
    url: String,
}

impl ClusterService {
    /// Serves `node`, whose etcd listener clients reach at `url`.
    pub fn new(node: Arc<Node>, url: String) -> Self {
        ClusterService { node, url }
    }
}

#[tonic::async_trait]
impl epb::cluster_server::Cluster for ClusterService {
    async fn member_list(
        &self,
        req: Request<epb::MemberListRequest>,
    ) -> Result<Response<epb::MemberListResponse>, Status> {
        let node = &self.node;
        let rev = if req.into_inner().linearizable {
            node.begin(crate::node::Consistency::Linearizable)
                .await
                .map_err(status)?
        } else {
            node.applied().seqno()
        };
        let members = membership::members(node.cluster())
            .into_iter()
            .map(|m| epb::Member {
                id: m.id,
                name: format!("node{}", m.id),
                peer_ur_ls: vec![format!("http://{}", m.address)],
                client_ur_ls: if m.id == node.id() {
                    vec![self.url.clone()]
                } else {
                    Vec::new()
                },
                is_learner: m.role == Role::Learner,
            })
            .collect();
        Ok(Response::new(epb::MemberListResponse {
            header: Some(header(node, rev)),
            members,
        }))
    }
}

/// `Maintenance.Status`.
pub struct MaintenanceService {
    node: Arc<Node>,
}

impl MaintenanceService {
    /// Serves `node`.
    pub fn new(node: Arc<Node>) -> Self {
        MaintenanceService { node }
    }
}

#[tonic::async_trait]
impl epb::maintenance_server::Maintenance for MaintenanceService {
    async fn status(
        &self,
        _req: Request<epb::StatusRequest>,
    ) -> Result<Response<epb::StatusResponse>, Status> {
        let node = &self.node;
        let m = node.raft_metrics();
        let applied = node.applied().seqno();
        let engine = node.mvcc().engine().clone();
        let db_size = tokio::task::spawn_blocking(move || engine.size_on_disk())
            .await
            .unwrap_or(0);
        Ok(Response::new(epb::StatusResponse {
            header: Some(header(node, applied)),
            version: VERSION.into(),
            db_size: db_size as i64,
            leader: m.current_leader.unwrap_or(0),
            raft_index: m.last_log_index.unwrap_or(0).max(applied),
            raft_term: m.current_term,
            raft_applied_index: applied,
            errors: Vec::new(),
            db_size_in_use: db_size as i64,
            is_learner: m.state == ServerState::Learner,
        }))
    }
}
