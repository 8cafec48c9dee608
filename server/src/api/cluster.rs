//! The `Cluster` service: status and convergence checks.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use openraft::ServerState;
use tonic::{Request, Response, Status};
use trireme_proto::v1 as pb;
use trireme_proto::v1::cluster_server::Cluster;

use super::status::to_status;
use crate::node::Node;

/// The admin API.
pub struct ClusterService {
    node: Arc<Node>,
}

impl ClusterService {
    /// Serves `node`.
    pub fn new(node: Arc<Node>) -> Self {
        ClusterService { node }
    }
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn status(
        &self,
        _req: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let node = &self.node;
        let m = node.raft.metrics().borrow().clone();
        let role = match m.state {
            ServerState::Leader => "leader",
            ServerState::Follower => "follower",
            ServerState::Candidate => "candidate",
            ServerState::Learner => "learner",
            ServerState::Shutdown => "shutdown",
        };
        let membership = m.membership_config.membership();
        let voters: std::collections::BTreeSet<u64> = membership.voter_ids().collect();
        let replication = m.replication.clone();
        let members = membership
            .nodes()
            .map(|(id, n)| {
                // The leader knows who answers; elsewhere a member is up if it is us
                // or the leader we hear from.
                let up = match &replication {
                    Some(r) => *id == m.id || r.get(id).is_some_and(|matched| matched.is_some()),
                    None => *id == m.id || Some(*id) == m.current_leader,
                };
                pb::Member {
                    id: *id,
                    address: n.addr.clone(),
                    role: if voters.contains(id) {
                        "voter"
                    } else {
                        "learner"
                    }
                    .into(),
                    up,
                }
            })
            .collect();
        let applied = node.applied.seqno();
        // Committed is known exactly on the leader; elsewhere applied is the best lower bound.
        let committed = m.last_log_index.unwrap_or(0).max(applied);
        let state = if m.current_leader.is_none() {
            "NON_PRIMARY"
        } else if m.state == ServerState::Learner {
            "JOINING"
        } else {
            "SYNCED"
        };
        let stats = &node.applied.stats;
        Ok(Response::new(pb::StatusResponse {
            node_id: m.id,
            role: role.into(),
            leader_id: m.current_leader.unwrap_or(0),
            members,
            applied_seqno: applied,
            committed_seqno: committed,
            term: m.current_term,
            state: state.into(),
            commits: stats.commits.load(Ordering::Relaxed),
            cert_failures: stats.cert_failures(),
            server_retries: stats.server_retries.load(Ordering::Relaxed),
            write_sets_applied: stats.commits.load(Ordering::Relaxed) + stats.cert_failures(),
            cert_failures_by_reason: crate::certify::Abort::KINDS
                .iter()
                .zip(&stats.aborts)
                .map(|(k, n)| (k.to_string(), n.load(Ordering::Relaxed)))
                .collect(),
            duplicates: stats.duplicates.load(Ordering::Relaxed),
            batches_applied: stats.batches.load(Ordering::Relaxed),
            address: node.config.advertise_addr().to_string(),
        }))
    }

    async fn checksum(
        &self,
        _req: Request<pb::ChecksumRequest>,
    ) -> Result<Response<pb::ChecksumResponse>, Status> {
        let c = self.node.checksum().await.map_err(to_status)?;
        Ok(Response::new(pb::ChecksumResponse {
            seqno: c.seqno,
            checksum: c.checksum,
            keys: c.keys,
            verdict_chain: c.verdict_chain,
        }))
    }
}
