//! The `Cluster` service: status, convergence checks, membership, pings.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use openraft::ServerState;
use tonic::{Request, Response, Status};
use trireme_proto::v1 as pb;
use trireme_proto::v1::cluster_server::Cluster;

use super::convert;
use super::raft::check_peer;
use super::status::to_status;
use crate::cluster::{membership, params};
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
        let st = node.status();
        let m = &st.raft;
        let role = match m.state {
            ServerState::Leader => "leader",
            ServerState::Follower => "follower",
            ServerState::Candidate => "candidate",
            ServerState::Learner => "learner",
            ServerState::Shutdown => "shutdown",
        };
        let stats = st.stats;
        Ok(Response::new(pb::StatusResponse {
            node_id: m.id,
            role: role.into(),
            leader_id: m.current_leader.unwrap_or(0),
            members: convert::members(&st.members),
            applied_seqno: st.applied,
            committed_seqno: st.committed(),
            term: m.current_term,
            state: st.state.as_str().into(),
            commits: stats.commits.load(Ordering::Relaxed),
            cert_failures: stats.cert_failures(),
            server_retries: stats.server_retries.load(Ordering::Relaxed),
            write_sets_applied: stats.commits.load(Ordering::Relaxed) + stats.cert_failures(),
            batches_applied: stats.batches.load(Ordering::Relaxed),
            address: node.config().peer_advertise_addr().to_string(),
            client_address: node.config().advertise_addr().to_string(),
            cert_failures_by_reason: crate::certify::Abort::KINDS
                .iter()
                .zip(&stats.aborts)
                .map(|(k, n)| (k.to_string(), n.load(Ordering::Relaxed)))
                .collect(),
            duplicates: stats.duplicates.load(Ordering::Relaxed),
            cluster_size: m.membership_config.membership().voter_ids().count() as u64,
            apply_lag: st.apply_lag(),
            snapshots_sent: st.snapshots_sent,
            snapshots_received: stats.snapshots_received.load(Ordering::Relaxed),
            log_retained: st.log_retained(),
            flow_control_paused_ms: st.flow_paused_us / 1000,
            evictions: stats.evictions.load(Ordering::Relaxed),
            last_log_index: st.last_log(),
            log_first_index: st.log_first_index(),
            log_retained_bytes: st.log_bytes,
            cluster_health: st.cluster_health.map_or("", |h| h.as_str()).into(),
            state_reason: st.state_reason,
            unreplicated_voters: st.unreplicated_voters,
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

    async fn join(
        &self,
        req: Request<pb::JoinRequest>,
    ) -> Result<Response<pb::JoinResponse>, Status> {
        // A joiner asks for itself; a member may forward another's join.
        let cert_id = crate::tls::peer_node_id(&req)?;
        if cert_id.is_some_and(|id| id != req.get_ref().node_id) {
            check_peer(&self.node, &req, "Join (forwarded)", None, true)?;
        }
        let req = req.into_inner();
        let (leader_id, members) = membership::join(self.node.cluster(), req.node_id, req.address)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::JoinResponse {
            leader_id,
            members: convert::members(&members),
        }))
    }

    async fn leave(
        &self,
        req: Request<pb::LeaveRequest>,
    ) -> Result<Response<pb::LeaveResponse>, Status> {
        // A member forwards a leave to the leader (for itself or another).
        check_peer(&self.node, &req, "Leave", None, true)?;
        let id = match req.into_inner().node_id {
            0 => self.node.id(),
            id => id,
        };
        let members = membership::leave(self.node.cluster(), id)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::LeaveResponse {
            members: convert::members(&members),
        }))
    }

    async fn members(
        &self,
        _req: Request<pb::MembersRequest>,
    ) -> Result<Response<pb::MembersResponse>, Status> {
        let leader_id = self.node.raft_metrics().current_leader.unwrap_or(0);
        Ok(Response::new(pb::MembersResponse {
            leader_id,
            members: convert::members(&membership::members(self.node.cluster())),
        }))
    }

    async fn get_config(
        &self,
        _req: Request<pb::GetConfigRequest>,
    ) -> Result<Response<pb::ClusterConfig>, Status> {
        Ok(Response::new(params::get(self.node.cluster())))
    }

    async fn set_config(
        &self,
        req: Request<pb::SetConfigRequest>,
    ) -> Result<Response<pb::ClusterConfig>, Status> {
        check_peer(&self.node, &req, "SetConfig", None, true)?;
        let req = req.into_inner();
        let resp = params::set(self.node.cluster(), &req.name, &req.value)
            .await
            .map_err(to_status)?;
        Ok(Response::new(resp))
    }

    async fn ping(
        &self,
        req: Request<pb::PingRequest>,
    ) -> Result<Response<pb::PingResponse>, Status> {
        // No membership check: an evicted node learns from ping answers
        // that it must rejoin, and an answer changes nothing here.
        check_peer(&self.node, &req, "Ping", Some(req.get_ref().from), false)?;
        Ok(Response::new(crate::cluster::answer_ping(
            self.node.cluster(),
            req.into_inner(),
        )))
    }

    async fn campaign(
        &self,
        req: Request<pb::CampaignRequest>,
    ) -> Result<Response<pb::CampaignResponse>, Status> {
        check_peer(&self.node, &req, "Campaign", Some(req.get_ref().from), true)?;
        let from = req.into_inner().from;
        Ok(Response::new(
            crate::node::drain::campaign(&self.node, from).await,
        ))
    }
}
