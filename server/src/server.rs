//! Serving a node over gRPC on a bound listener (or any stream of accepted
//! connections) until shutdown.

use std::future::Future;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_stream::Stream;
use tonic::transport::server::Connected;
use tonic::transport::Server;
use tower::Layer;
use trireme_proto::v1::backup_server::BackupServer;
use trireme_proto::v1::cluster_server::ClusterServer;
use trireme_proto::v1::kv_server::KvServer;
use trireme_proto::v1::raft_server::RaftServer;

use crate::admission::AdmissionLayer;
use crate::api::backup::BackupService;
use crate::api::cluster::ClusterService;
use crate::api::kv::KvService;
use crate::api::latency::LatencyLayer;
use crate::api::raft::RaftService;
use crate::error::{Error, Result};
use crate::node::Node;

/// Largest gRPC message sent to clients (a scan's answer), and the base of the
/// peer limit; what a client may send follows `limits` (see
/// [`crate::Config::max_client_message_bytes`]).
const MAX_MESSAGE_BYTES: usize = 80 << 20;

/// Accepted connections with Nagle's algorithm off: tonic's own `tcp_nodelay`
/// applies only to listeners it binds, and a delayed small response (a read
/// index, a verdict) costs a 40 ms delayed-ACK round.
fn incoming(
    listener: TcpListener,
) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use tokio_stream::StreamExt;
    TcpListenerStream::new(listener).map(|conn| {
        conn.inspect(|stream| {
            if let Err(e) = stream.set_nodelay(true) {
                tracing::warn!(error = %e, "cannot set TCP_NODELAY on a connection");
            }
        })
    })
}

/// Serves the client, admin and peer services (and gRPC health) for `node` on
/// `listener` until `shutdown` resolves; then stops accepting and drains.
pub async fn serve(
    node: Arc<Node>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<()> {
    serve_incoming(node, incoming(listener), shutdown).await
}

/// [`serve`] on any stream of accepted connections, e.g. a simulated
/// network's listener wrapped to implement tonic's [`Connected`].
pub async fn serve_incoming<I, IO, IE>(
    node: Arc<Node>,
    incoming: I,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<()>
where
    I: Stream<Item = std::result::Result<IO, IE>>,
    IO: AsyncRead + AsyncWrite + Connected + Unpin + Send + 'static,
    IE: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (health, health_service) = tonic_health::server::health_reporter();
    let timed = node.clone();
    health.set_serving::<KvServer<KvService>>().await;
    let client_message_bytes = node.config.max_client_message_bytes();
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(trireme_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection()
        .build_v1()
        .map_err(|e| Error::Internal(format!("gRPC reflection: {e}")))?;
    // grpcurl and older tools still ask the v1alpha service.
    let reflection_v1alpha = reflection()
        .build_v1alpha()
        .map_err(|e| Error::Internal(format!("gRPC reflection: {e}")))?;
    Server::builder()
        .layer(AdmissionLayer::new(node.admission.clone()))
        .tcp_nodelay(true)
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(10)))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(
            LatencyLayer::new(move |method, elapsed, ok| {
                timed.requests.observe(method, elapsed, ok)
            })
            .layer(
                KvServer::new(KvService::new(node.clone()))
                    .max_decoding_message_size(client_message_bytes)
                    .max_encoding_message_size(MAX_MESSAGE_BYTES),
            ),
        )
        .add_service(ClusterServer::new(ClusterService::new(node.clone())))
        .add_service(BackupServer::new(BackupService::new(node.clone())))
        .add_service(
            RaftServer::new(RaftService::new(node.clone()))
                .max_decoding_message_size(MAX_MESSAGE_BYTES * 4)
                .max_encoding_message_size(MAX_MESSAGE_BYTES * 4),
        )
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
        .map_err(|e| Error::Internal(format!("gRPC server: {e}")))
}
