//! Serving a node over gRPC on a bound listener until shutdown.

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::Server;
use trireme_proto::v1::cluster_server::ClusterServer;
use trireme_proto::v1::kv_server::KvServer;
use trireme_proto::v1::raft_server::RaftServer;

use crate::api::cluster::ClusterService;
use crate::api::kv::KvService;
use crate::api::raft::RaftService;
use crate::error::{Error, Result};
use crate::node::Node;

/// Largest gRPC message accepted: a write set at its limit plus framing.
const MAX_MESSAGE_BYTES: usize = 80 << 20;

/// Serves the client, admin and peer services (and gRPC health) for `node` on
/// `listener` until `shutdown` resolves; then stops accepting and drains.
pub async fn serve(
    node: Arc<Node>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<()> {
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<KvServer<KvService>>().await;
    Server::builder()
        .tcp_nodelay(true)
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(10)))
        .add_service(health_service)
        .add_service(
            KvServer::new(KvService::new(node.clone()))
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
        )
        .add_service(ClusterServer::new(ClusterService::new(node.clone())))
        .add_service(
            RaftServer::new(RaftService::new(node.clone()))
                .max_decoding_message_size(MAX_MESSAGE_BYTES * 4)
                .max_encoding_message_size(MAX_MESSAGE_BYTES * 4),
        )
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
        .await
        .map_err(|e| Error::Internal(format!("gRPC server: {e}")))
}
