//! The replicated cluster parameters' admin side: a new cluster's first
//! leader proposes its configuration, and `trireme config set` changes them
//! through the log. The parameters themselves are in `group::params`.

use std::sync::Weak;
use std::time::Duration;

use openraft::ServerState;
use trireme_proto::v1 as pb;
use trireme_proto::v1::cluster_client::ClusterClient;

use super::Handle;
use crate::error::{Error, Result};
use crate::group::params::ParamsChange;
use crate::raft::types::Request;

/// The parameters `trireme config set` accepts.
pub const NAMES: &[&str] = &["cert_window"];

/// Until the cluster has parameters: whenever this node leads, propose its own
/// configured values as the bootstrap (the first one applied wins).
pub async fn bootstrap_loop(node: Weak<Handle>) {
    loop {
        let Some(n) = node.upgrade() else { return };
        if n.applied.params().is_some() {
            return;
        }
        let mut metrics = n.raft.server_metrics();
        let leads = {
            let m = metrics.borrow_and_update();
            m.state == ServerState::Leader && m.current_leader == Some(n.id())
        };
        if leads {
            let change = ParamsChange {
                cert_window: n.config.cert_window,
                bootstrap: true,
            };
            match n.raft.client_write(Request::Params(change)).await {
                Ok(_) => tracing::info!(
                    cert_window = change.cert_window,
                    "proposed this node's configuration as the new cluster's parameters"
                ),
                Err(e) => tracing::debug!(error = %e, "proposing the cluster parameters failed"),
            }
        }
        drop(n);
        // Wake on a role change, or retry after a while.
        let _ = tokio::time::timeout(Duration::from_millis(500), metrics.changed()).await;
    }
}

/// The parameters as this node has applied them.
pub fn get(node: &Handle) -> pb::ClusterConfig {
    let params = node.applied.params();
    pb::ClusterConfig {
        cert_window: node.applied.certifier().window,
        since_seqno: params.map_or(0, |p| p.since),
        node_cert_window: node.config.cert_window,
        node_id: node.id(),
    }
}

/// Sets parameter `name` to `value` through the log (on the leader; forwarded
/// there from any other node). Returns the parameters once applied here.
pub async fn set(node: &Handle, name: &str, value: &str) -> Result<pb::ClusterConfig> {
    let change = match name {
        "cert_window" => ParamsChange {
            cert_window: value.trim().parse().map_err(|_| {
                Error::InvalidInput(format!("cert_window {value:?} is not a whole number"))
            })?,
            bootstrap: false,
        },
        other => {
            return Err(Error::InvalidInput(format!(
                "unknown cluster parameter {other:?}; known: {}",
                NAMES.join(", ")
            )))
        }
    };
    change.validate().map_err(Error::InvalidInput)?;
    let (leader, addr) = {
        let metrics = node.raft.metrics();
        let m = metrics.borrow();
        let leader = m.current_leader.ok_or_else(|| {
            Error::Unavailable(
                "not in the primary component: no leader to change the configuration".into(),
            )
        })?;
        let addr = m
            .membership_config
            .membership()
            .get_node(&leader)
            .map(|n| n.addr.clone())
            .ok_or_else(|| Error::Unavailable(format!("leader {leader} has no address")))?;
        (leader, addr)
    };
    if leader != node.id() {
        let mut client = ClusterClient::new(node.peers.channel(&addr)?);
        let resp = client
            .set_config(pb::SetConfigRequest {
                name: name.to_string(),
                value: value.to_string(),
            })
            .await
            .map_err(|s| match s.code() {
                tonic::Code::InvalidArgument => Error::InvalidInput(s.message().to_string()),
                _ => Error::Unavailable(format!("leader {leader}: {}", s.message())),
            })?
            .into_inner();
        // Answer once this node has applied the change too.
        node.applied
            .wait_for(resp.since_seqno, node.config.read_timeout())
            .await?;
        return Ok(get(node));
    }
    tracing::info!(
        cert_window = change.cert_window,
        "changing the cluster parameters"
    );
    node.raft
        .client_write(Request::Params(change))
        .await
        .map_err(|e| Error::Unavailable(format!("changing the cluster parameters: {e}")))?;
    Ok(get(node))
}
