//! Serving a node over gRPC on its client and peer listeners (or any stream
//! of accepted connections) until shutdown. Which methods each port serves
//! is in [`crate::ports`].

use std::future::Future;
use std::sync::Arc;

use futures::FutureExt;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_stream::Stream;
use tonic::transport::server::Connected;
use tonic::transport::Server;
use tower::Layer;
use trireme_proto::v1::auth_server::AuthServer;
use trireme_proto::v1::backup_server::BackupServer;
use trireme_proto::v1::cluster_server::ClusterServer;
use trireme_proto::v1::kv_server::KvServer;
use trireme_proto::v1::raft_server::RaftServer;

use crate::admission::AdmissionLayer;
use crate::api::auth::AuthService;
use crate::api::auth_layer::{AuthGate, AuthLayer};
use crate::api::backup::BackupService;
use crate::api::cluster::ClusterService;
use crate::api::kv::KvService;
use crate::api::latency::LatencyLayer;
use crate::api::raft::RaftService;
use crate::error::{Error, Result};
use crate::node::Node;
use crate::ports::{Port, PortGuardLayer};

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

/// Serves the client and admin services (and gRPC health) for `node` on
/// `client`, and the peer services on `peer`, until `shutdown` resolves; then
/// both stop accepting and drain.
pub async fn serve(
    node: Arc<Node>,
    client: TcpListener,
    peer: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<()> {
    serve_tls(node, client, peer, None, shutdown).await
}

/// [`serve`] with TLS where `tls` configures it: each port whose
/// configuration is present accepts only TLS connections (the peer port
/// mutual TLS), through [`crate::tls::accept::incoming`].
pub async fn serve_tls(
    node: Arc<Node>,
    client: TcpListener,
    peer: TcpListener,
    tls: Option<Arc<crate::tls::Tls>>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<()> {
    use crate::tls::accept;
    let shutdown = shutdown.shared();
    let client_tls = tls.as_ref().and_then(|t| t.client.clone());
    let peer_tls = tls.as_ref().and_then(|t| t.peer.clone());
    let client = async {
        match client_tls {
            Some(config) => {
                let incoming = accept::incoming(client, config, Port::Client);
                serve_port(node.clone(), Port::Client, incoming, shutdown.clone()).await
            }
            None => {
                serve_port(
                    node.clone(),
                    Port::Client,
                    incoming(client),
                    shutdown.clone(),
                )
                .await
            }
        }
    };
    let peer = async {
        match peer_tls {
            Some(config) => {
                let incoming = accept::incoming(peer, config, Port::Peer);
                serve_port(node.clone(), Port::Peer, incoming, shutdown.clone()).await
            }
            None => serve_port(node.clone(), Port::Peer, incoming(peer), shutdown.clone()).await,
        }
    };
    tokio::try_join!(client, peer)?;
    Ok(())
}

/// Every service (client and peer) on one stream of accepted connections:
/// for a simulated network's listener wrapped to implement tonic's
/// [`Connected`], where one address per host is simpler. Real nodes use
/// [`serve`], which keeps the two apart.
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
    serve_port(node, Port::Both, incoming, shutdown).await
}

/// The services of `port` on a stream of accepted connections; a method of
/// the other port is refused by name ([`PortGuardLayer`]).
pub async fn serve_port<I, IO, IE>(
    node: Arc<Node>,
    port: Port,
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
    // A draining node says NOT_SERVING, for load balancers and probes.
    let mut draining = node.drain_state().subscribe();
    let reporter = health.clone();
    tokio::spawn(async move {
        if draining.wait_for(|d| *d).await.is_ok() {
            reporter.set_not_serving::<KvServer<KvService>>().await;
            reporter
                .set_service_status("", tonic_health::ServingStatus::NotServing)
                .await;
        }
    });
    let client_message_bytes = node.config().max_client_message_bytes();
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
    let auth = crate::auth::Auth::new(node.clone());
    // Users and roles are checked on the client port only: peers are not
    // users (the peer port's own authentication is TLS).
    let auth_layer = match port {
        Port::Peer => AuthLayer::new(AuthGate::none()),
        _ => AuthLayer::new(AuthGate::new(auth.clone())),
    };
    let mut router = Server::builder()
        .layer(PortGuardLayer::new(port))
        .layer(AdmissionLayer::new(node.admission().clone()))
        .layer(crate::tls::IdentityLayer)
        .layer(auth_layer)
        .tcp_nodelay(true)
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(10)))
        .add_service(ClusterServer::new(ClusterService::new(node.clone())));
    if port != Port::Peer {
        router = router
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(BackupServer::new(BackupService::new(node.clone())))
            .add_service(AuthServer::new(AuthService::new(auth)))
            .add_service(
                LatencyLayer::new(move |method, elapsed, ok| {
                    timed.requests().observe(method, elapsed, ok)
                })
                .layer(
                    KvServer::new(KvService::new(node.clone()))
                        .max_decoding_message_size(client_message_bytes)
                        .max_encoding_message_size(MAX_MESSAGE_BYTES),
                ),
            );
    }
    if port != Port::Client {
        router = router.add_service(
            RaftServer::new(RaftService::new(node.clone()))
                .max_decoding_message_size(MAX_MESSAGE_BYTES * 4)
                .max_encoding_message_size(MAX_MESSAGE_BYTES * 4),
        );
    }
    router
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
        .map_err(|e| Error::Internal(format!("gRPC server: {e}")))
}
