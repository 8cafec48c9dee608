//! Outgoing TLS connections: the connector of peer channels
//! ([`peer_connector`], presenting this node's certificate from the
//! configuration in force when the connection is made, so a rotated
//! certificate is used by new connections), and small helpers that tools and
//! tests use to speak TLS to a node ([`client_config`], [`channel`],
//! [`served_certificate`]).

use std::future::Future;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_rustls::rustls;
use tonic::transport::{Channel, Endpoint};

use super::{PeerCert, Swap};
use crate::error::{Error, Result};
use crate::group::network::Connector;

/// How long a TLS handshake to a peer may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the client configuration comes from.
#[derive(Clone)]
enum Source {
    Swap(Arc<Swap<rustls::ClientConfig>>),
    Fixed(Arc<rustls::ClientConfig>),
}

/// A tower connector making TLS connections for tonic: TCP to the URI's
/// host and port, then a handshake verifying the server's certificate for
/// that host against the configured CA.
#[derive(Clone)]
pub struct TlsConnector {
    source: Source,
}

impl TlsConnector {
    fn config(&self) -> Arc<rustls::ClientConfig> {
        match &self.source {
            Source::Swap(s) => s.current(),
            Source::Fixed(c) => c.clone(),
        }
    }
}

type Connecting = Pin<
    Box<
        dyn Future<Output = io::Result<TokioIo<tokio_rustls::client::TlsStream<TcpStream>>>> + Send,
    >,
>;

impl tower_service::Service<http::Uri> for TlsConnector {
    type Response = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;
    type Error = io::Error;
    type Future = Connecting;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Connecting {
        let config = self.config();
        Box::pin(async move {
            let invalid = |m: String| io::Error::new(io::ErrorKind::InvalidInput, m);
            let host = uri
                .host()
                .ok_or_else(|| invalid(format!("peer address {uri} has no host")))?
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string();
            let port = uri
                .port_u16()
                .ok_or_else(|| invalid(format!("peer address {uri} has no port")))?;
            let tcp = TcpStream::connect((host.as_str(), port)).await?;
            tcp.set_nodelay(true)?;
            let name = rustls_pki_types::ServerName::try_from(host.clone())
                .map_err(|e| invalid(format!("{host:?} is not a name to verify: {e}")))?;
            let connector = tokio_rustls::TlsConnector::from(config);
            let stream = tokio::time::timeout(HANDSHAKE_TIMEOUT, connector.connect(name, tcp))
                .await
                .map_err(|_| {
                    io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("TLS handshake with {host}:{port} timed out"),
                    )
                })??;
            Ok(TokioIo::new(stream))
        })
    }
}

/// The connector of this node's peer channels: each new connection takes
/// the client configuration in force (SIGHUP may have replaced it).
pub fn peer_connector(config: Arc<Swap<rustls::ClientConfig>>) -> Connector {
    Arc::new(move |endpoint: Endpoint| {
        endpoint.connect_with_connector_lazy(TlsConnector {
            source: Source::Swap(config.clone()),
        })
    })
}

/// A client configuration trusting the CA certificates in `ca`, presenting
/// the certificate and key of `identity` when given (ALPN h2).
pub fn client_config(ca: &Path, identity: Option<(&Path, &Path)>) -> Result<rustls::ClientConfig> {
    let builder = rustls::ClientConfig::builder_with_provider(super::provider())
        .with_safe_default_protocol_versions()
        .map_err(super::tls_error("client"))?
        .with_root_certificates(super::roots("CA", ca)?);
    let mut config = match identity {
        Some((cert, key)) => builder
            .with_client_auth_cert(super::chain("cert", cert)?, super::private_key("key", key)?)
            .map_err(super::tls_error("client certificate"))?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// A lazily connected channel to `addr` (HOST:PORT) over TLS with `config`.
pub fn channel(addr: &str, config: rustls::ClientConfig) -> Result<Channel> {
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| Error::InvalidInput(format!("bad address {addr:?}: {e}")))?
        .connect_timeout(Duration::from_secs(2));
    Ok(endpoint.connect_with_connector_lazy(TlsConnector {
        source: Source::Fixed(Arc::new(config)),
    }))
}

/// Connects to `addr` (HOST:PORT) with `config` and returns the certificate
/// the server presented (to check which one a node serves).
pub async fn served_certificate(addr: &str, config: rustls::ClientConfig) -> Result<PeerCert> {
    let uri: http::Uri = format!("http://{addr}")
        .parse()
        .map_err(|e| Error::InvalidInput(format!("bad address {addr:?}: {e}")))?;
    let mut connector = TlsConnector {
        source: Source::Fixed(Arc::new(config)),
    };
    let io = tower_service::Service::call(&mut connector, uri)
        .await
        .map_err(|e| Error::Unavailable(format!("TLS connection to {addr}: {e}")))?;
    let stream = io.into_inner();
    match stream.get_ref().1.peer_certificates() {
        Some([leaf, ..]) => PeerCert::parse(leaf),
        _ => Err(Error::Unavailable(format!(
            "{addr} presented no certificate"
        ))),
    }
}
