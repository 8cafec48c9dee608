//! TLS on the client and peer ports, and the identity a verified certificate
//! proves.
//!
//! This module owns the `[tls]` settings ([`TlsConfig`]), loading their PEM
//! files into rustls configurations ([`Tls`]), swapping those on SIGHUP
//! ([`Tls::reload`]: certificates rotate without a restart, new connections
//! use the new files), the accept loop of a TLS listener ([`accept`]), the
//! connector of outgoing peer calls ([`connect`]), and what a handler may
//! read from a request about the other end ([`TlsConnInfo`], [`ClientIdentity`],
//! [`peer_node_id`]). `trireme-server certs` ([`certs`]) makes a CA and
//! certificates.
//!
//! The naming convention: a node's certificate is signed by the cluster CA
//! and carries the DNS subject alternative name `node-<ID>.trireme` for its
//! node id ([`node_dns_name`]); the peer port requires mutual TLS whenever
//! peer TLS is configured, and the Raft and Cluster services compare that id
//! with the id a message claims to come from.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};
use tokio_rustls::rustls;

use crate::error::{Error, Result};
use crate::txn::NodeId;

pub mod accept;
pub mod certs;
pub mod connect;

/// The `[tls]` table: PEM file paths. Client-port TLS is on when `cert` and
/// `key` are given; peer TLS (mutual, always) when `peer_cert`, `peer_key`
/// and `peer_ca` are.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// The client port's certificate chain (PEM).
    pub cert: Option<PathBuf>,
    /// The client port's private key (PEM).
    pub key: Option<PathBuf>,
    /// CA certificates (PEM) that client certificates are verified against.
    /// Without `client_cert_auth` a client may still present one (its CN is
    /// then known); with it, every client must.
    pub ca: Option<PathBuf>,
    /// Every client must present a certificate signed by `ca`.
    pub client_cert_auth: bool,
    /// This node's peer certificate (PEM), with SAN `node-<ID>.trireme`;
    /// presented on the peer port and on outgoing peer calls.
    pub peer_cert: Option<PathBuf>,
    /// The private key of `peer_cert` (PEM).
    pub peer_key: Option<PathBuf>,
    /// The cluster CA (PEM) that peers' certificates are verified against.
    pub peer_ca: Option<PathBuf>,
}

impl TlsConfig {
    /// Whether the client port serves TLS.
    pub fn client_enabled(&self) -> bool {
        self.cert.is_some() || self.key.is_some()
    }

    /// Whether the peer port (and outgoing peer calls) use mutual TLS.
    pub fn peer_enabled(&self) -> bool {
        self.peer_cert.is_some() || self.peer_key.is_some() || self.peer_ca.is_some()
    }

    /// Checks that the paths given make complete configurations.
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: &str| Err(Error::InvalidInput(msg.into()));
        if self.cert.is_some() != self.key.is_some() {
            return bad("tls.cert and tls.key (--tls-cert, --tls-key) go together: give both");
        }
        if self.client_cert_auth && (self.ca.is_none() || self.cert.is_none()) {
            return bad("tls.client_cert_auth (--client-cert-auth) needs client TLS on: give \
                 --tls-cert, --tls-key and --tls-ca (the CA client certificates are checked against)");
        }
        if self.ca.is_some() && self.cert.is_none() {
            return bad(
                "tls.ca (--tls-ca) is given without tls.cert and tls.key: client TLS is off",
            );
        }
        if self.peer_enabled()
            && (self.peer_cert.is_none() || self.peer_key.is_none() || self.peer_ca.is_none())
        {
            return bad(
                "peer TLS is mutual: give all of tls.peer_cert, tls.peer_key and tls.peer_ca \
                 (--peer-tls-cert, --peer-tls-key, --peer-tls-ca)",
            );
        }
        Ok(())
    }
}

/// The DNS subject alternative name that names node `id` in a peer certificate.
pub fn node_dns_name(id: NodeId) -> String {
    format!("node-{id}.trireme")
}

/// The node id a DNS name `node-<ID>.trireme` names.
pub fn node_id_of_dns_name(name: &str) -> Option<NodeId> {
    let id = name
        .to_ascii_lowercase()
        .strip_prefix("node-")?
        .strip_suffix(".trireme")?
        .parse()
        .ok()?;
    (id != 0).then_some(id)
}

/// What a verified certificate of the other end says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerCert {
    /// The subject's common name, if any.
    pub common_name: Option<String>,
    /// The DNS subject alternative names.
    pub dns_names: Vec<String>,
    /// The node id of a `node-<ID>.trireme` name, if exactly one names an id.
    pub node_id: Option<NodeId>,
    /// The serial number, hex.
    pub serial: String,
}

impl PeerCert {
    /// Reads a DER certificate (already verified by rustls).
    pub fn parse(der: &[u8]) -> Result<PeerCert> {
        let (_, cert) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| Error::InvalidInput(format!("unreadable certificate: {e}")))?;
        let common_name = cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(str::to_string);
        let mut dns_names = Vec::new();
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                if let x509_parser::extensions::GeneralName::DNSName(n) = name {
                    dns_names.push(n.to_string());
                }
            }
        }
        let ids: Vec<NodeId> = dns_names
            .iter()
            .filter_map(|n| node_id_of_dns_name(n))
            .collect();
        let node_id = match ids.as_slice() {
            [id] => Some(*id),
            _ => None,
        };
        Ok(PeerCert {
            common_name,
            dns_names,
            node_id,
            serial: cert.raw_serial_as_string(),
        })
    }
}

/// A client's verified certificate identity, in the extensions of every
/// request on the client port whose connection presented one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientIdentity {
    /// The certificate subject's common name.
    pub common_name: Option<String>,
}

/// What tonic puts in every request's extensions for a connection accepted
/// by [`accept::incoming`]: the remote address and, when the other end
/// presented a certificate the CA verified, what it says.
#[derive(Clone, Debug)]
pub struct TlsConnInfo {
    /// The remote address.
    pub remote_addr: Option<SocketAddr>,
    /// The verified client (or peer) certificate.
    pub peer: Option<Arc<PeerCert>>,
    /// Whether the connection came to the peer port.
    pub peer_port: bool,
}

/// The other end of a peer-port request as its certificate names it:
/// `Ok(None)` when the connection is not TLS (peer TLS off); an error
/// naming the problem when it is, and the certificate names no node id.
#[allow(clippy::result_large_err)]
pub fn peer_node_id<T>(
    req: &tonic::Request<T>,
) -> std::result::Result<Option<NodeId>, tonic::Status> {
    let Some(info) = req
        .extensions()
        .get::<TlsConnInfo>()
        .filter(|i| i.peer_port)
    else {
        return Ok(None);
    };
    let Some(cert) = &info.peer else {
        return Err(tonic::Status::permission_denied(
            "the peer port requires a node certificate: none was presented",
        ));
    };
    match cert.node_id {
        Some(id) => Ok(Some(id)),
        None => Err(tonic::Status::permission_denied(format!(
            "the peer certificate (CN {:?}, DNS names {:?}) names no node id: a node's \
             certificate carries exactly one DNS name node-<ID>.trireme",
            cert.common_name.as_deref().unwrap_or(""),
            cert.dns_names
        ))),
    }
}

/// A tower layer for the client port: puts a [`ClientIdentity`] into the
/// extensions of each request whose connection presented a verified
/// certificate.
#[derive(Clone, Copy, Debug, Default)]
pub struct IdentityLayer;

impl<S> tower_layer::Layer<S> for IdentityLayer {
    type Service = Identified<S>;

    fn layer(&self, inner: S) -> Identified<S> {
        Identified { inner }
    }
}

/// The service [`IdentityLayer`] wraps.
#[derive(Clone, Debug)]
pub struct Identified<S> {
    inner: S,
}

impl<S, B> tower_service::Service<http::Request<B>> for Identified<S>
where
    S: tower_service::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::result::Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> S::Future {
        let identity = req
            .extensions()
            .get::<TlsConnInfo>()
            .and_then(|i| i.peer.as_ref())
            .map(|c| ClientIdentity {
                common_name: c.common_name.clone(),
            });
        if let Some(identity) = identity {
            req.extensions_mut().insert(identity);
        }
        self.inner.call(req)
    }
}

/// A configuration that SIGHUP may replace; connections take the current one
/// when they start.
#[derive(Debug)]
pub struct Swap<T>(RwLock<Arc<T>>);

impl<T> Swap<T> {
    fn new(value: T) -> Self {
        Swap(RwLock::new(Arc::new(value)))
    }

    /// The configuration in force.
    pub fn current(&self) -> Arc<T> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set(&self, value: T) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(value);
    }
}

/// The rustls configurations of a node, built from [`TlsConfig`]'s files.
#[derive(Debug)]
pub struct Tls {
    settings: TlsConfig,
    /// The client port's server side; `None`: plaintext.
    pub client: Option<Arc<Swap<ServerSide>>>,
    /// The peer port's server side; `None`: plaintext.
    pub peer: Option<Arc<Swap<ServerSide>>>,
    /// Outgoing peer calls; `None`: plaintext.
    pub peer_client: Option<Arc<Swap<rustls::ClientConfig>>>,
}

/// The three configurations one load of the files makes.
type Built = (
    Option<ServerSide>,
    Option<ServerSide>,
    Option<rustls::ClientConfig>,
);

/// One listener's server side: the rustls configuration, and on the client
/// port the check of a client certificate that runs once the handshake is
/// done.
///
/// Why after: under TLS 1.3 a server's refusal of a client certificate
/// arrives after the client's side of the handshake has finished, so the
/// client only sees its connection closed. On the client port the handshake
/// therefore takes any certificate whose holder proves its key, and
/// [`accept`] verifies the chain against the CA right after; a refused one
/// is answered on that connection with a gRPC UNAUTHENTICATED error naming
/// the reason, and the connection never reaches a service. The peer port
/// refuses inside the handshake: its clients are nodes, whose logs say why.
#[derive(Debug)]
pub struct ServerSide {
    /// The rustls configuration new connections use.
    pub config: Arc<rustls::ServerConfig>,
    /// The client port's certificate check; `None` on the peer port, or
    /// without a CA (no client certificates asked for).
    pub clients: Option<ClientCheck>,
}

/// How a client port checks a client's certificate after the handshake.
#[derive(Debug)]
pub struct ClientCheck {
    /// The strict verifier (chain to the CA, validity, key usage).
    verifier: Arc<dyn rustls::server::danger::ClientCertVerifier>,
    /// Whether a client must present a certificate (`client_cert_auth`).
    required: bool,
}

impl ClientCheck {
    /// `Ok` for a connection that may proceed; the reason a client is
    /// refused otherwise, in words meant for the client.
    pub fn check(
        &self,
        presented: Option<&[rustls_pki_types::CertificateDer<'_>]>,
    ) -> std::result::Result<(), String> {
        match presented {
            Some([leaf, intermediates @ ..]) => self
                .verifier
                .verify_client_cert(leaf, intermediates, rustls_pki_types::UnixTime::now())
                .map(|_| ())
                .map_err(|e| {
                    format!(
                        "client certificate refused: {e}; this node accepts client \
                         certificates signed by its CA (tls.ca) and valid now"
                    )
                }),
            _ if self.required => Err("client certificate required: this node runs with \
                 --client-cert-auth; connect with --cert and --key signed by the cluster CA"
                .to_string()),
            _ => Ok(()),
        }
    }
}

/// The client port's handshake verifier: it asks for a client certificate,
/// checks that the client holds its key (the handshake signature), and
/// leaves the chain to [`ClientCheck`] after the handshake.
#[derive(Debug)]
struct Deferred(Arc<dyn rustls::server::danger::ClientCertVerifier>);

impl rustls::server::danger::ClientCertVerifier for Deferred {
    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        self.0.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        _end_entity: &rustls_pki_types::CertificateDer<'_>,
        _intermediates: &[rustls_pki_types::CertificateDer<'_>],
        _now: rustls_pki_types::UnixTime,
    ) -> std::result::Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        // Checked by `ClientCheck` before the connection reaches a service.
        Ok(rustls::server::danger::ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

impl Tls {
    /// Reads every file `settings` names; `None` when TLS is off on both ports.
    pub fn load(settings: &TlsConfig) -> Result<Option<Arc<Tls>>> {
        settings.validate()?;
        if !settings.client_enabled() && !settings.peer_enabled() {
            return Ok(None);
        }
        let (client, peer, peer_client) = build(settings)?;
        Ok(Some(Arc::new(Tls {
            settings: settings.clone(),
            client: client.map(|c| Arc::new(Swap::new(c))),
            peer: peer.map(|c| Arc::new(Swap::new(c))),
            peer_client: peer_client.map(|c| Arc::new(Swap::new(c))),
        })))
    }

    /// Peer channels for a node: over mutual TLS when peer TLS is on.
    pub fn peers(tls: Option<&Tls>) -> crate::group::network::Peers {
        match tls.and_then(|t| t.peer_client.clone()) {
            Some(config) => {
                crate::group::network::Peers::with_connector(connect::peer_connector(config))
            }
            None => crate::group::network::Peers::default(),
        }
    }

    /// Reads the files again (SIGHUP) and, if all of them load, replaces the
    /// configurations: connections made from now on present the new
    /// certificates and trust the new CAs; open ones are left alone. On an
    /// error nothing is replaced.
    pub fn reload(&self) -> Result<()> {
        let (client, peer, peer_client) = build(&self.settings)?;
        if let (Some(swap), Some(c)) = (&self.client, client) {
            swap.set(c);
        }
        if let (Some(swap), Some(c)) = (&self.peer, peer) {
            swap.set(c);
        }
        if let (Some(swap), Some(c)) = (&self.peer_client, peer_client) {
            swap.set(c);
        }
        Ok(())
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn build(s: &TlsConfig) -> Result<Built> {
    let client = match (&s.cert, &s.key) {
        (Some(cert), Some(key)) => {
            let roots = s.ca.as_deref().map(|ca| roots("tls.ca", ca)).transpose()?;
            Some(server_config(
                ("tls.cert", cert),
                ("tls.key", key),
                roots.map(|r| Clients::Deferred(r, s.client_cert_auth)),
            )?)
        }
        _ => None,
    };
    let (peer, peer_client) = match (&s.peer_cert, &s.peer_key, &s.peer_ca) {
        (Some(cert), Some(key), Some(ca)) => {
            let roots = roots("tls.peer_ca", ca)?;
            let server = server_config(
                ("tls.peer_cert", cert),
                ("tls.peer_key", key),
                Some(Clients::Required(roots.clone())),
            )?;
            let mut client = rustls::ClientConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .map_err(tls_error("peer client"))?
                .with_root_certificates(roots)
                .with_client_auth_cert(
                    chain("tls.peer_cert", cert)?,
                    private_key("tls.peer_key", key)?,
                )
                .map_err(tls_error("tls.peer_cert and tls.peer_key"))?;
            client.alpn_protocols = vec![b"h2".to_vec()];
            (Some(server), Some(client))
        }
        _ => (None, None),
    };
    Ok((client, peer, peer_client))
}

fn tls_error(what: &'static str) -> impl Fn(rustls::Error) -> Error {
    move |e| Error::InvalidInput(format!("{what}: {e}"))
}

/// Which client certificates a server configuration asks for.
enum Clients {
    /// Verified in the handshake, required (the peer port).
    Required(rustls::RootCertStore),
    /// Verified after the handshake by [`ClientCheck`] (the client port);
    /// required when the flag says so.
    Deferred(rustls::RootCertStore, bool),
}

/// A server configuration presenting `cert` with `key`; with `clients`,
/// client certificates are verified against those roots.
fn server_config(
    cert: (&str, &Path),
    key: (&str, &Path),
    clients: Option<Clients>,
) -> Result<ServerSide> {
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(tls_error("server"))?;
    let strict = |roots: rustls::RootCertStore| {
        rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .map_err(|e| Error::InvalidInput(format!("client certificate verifier: {e}")))
    };
    let (builder, check) = match clients {
        None => (builder.with_no_client_auth(), None),
        Some(Clients::Required(roots)) => (builder.with_client_cert_verifier(strict(roots)?), None),
        Some(Clients::Deferred(roots, required)) => {
            let verifier = strict(roots)?;
            (
                builder.with_client_cert_verifier(Arc::new(Deferred(verifier.clone()))),
                Some(ClientCheck { verifier, required }),
            )
        }
    };
    let mut config = builder
        .with_single_cert(chain(cert.0, cert.1)?, private_key(key.0, key.1)?)
        .map_err(|e| {
            Error::InvalidInput(format!(
                "{} {} and {} {} do not make a usable certificate: {e}",
                cert.0,
                cert.1.display(),
                key.0,
                key.1.display()
            ))
        })?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(ServerSide {
        config: Arc::new(config),
        clients: check,
    })
}

/// The certificates of a PEM file (at least one).
pub fn chain(what: &str, path: &Path) -> Result<Vec<rustls_pki_types::CertificateDer<'static>>> {
    use rustls_pki_types::pem::PemObject;
    let certs = rustls_pki_types::CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<std::result::Result<Vec<_>, _>>())
        .map_err(|e| {
            Error::InvalidInput(format!(
                "{what} {}: cannot read PEM certificates: {e}",
                path.display()
            ))
        })?;
    if certs.is_empty() {
        return Err(Error::InvalidInput(format!(
            "{what} {}: no PEM certificate in the file",
            path.display()
        )));
    }
    Ok(certs)
}

/// The private key of a PEM file. The error never quotes the file's content.
pub fn private_key(what: &str, path: &Path) -> Result<rustls_pki_types::PrivateKeyDer<'static>> {
    use rustls_pki_types::pem::PemObject;
    rustls_pki_types::PrivateKeyDer::from_pem_file(path).map_err(|e| {
        Error::InvalidInput(format!(
            "{what} {}: cannot read a PEM private key: {e}",
            path.display()
        ))
    })
}

/// A root store of the CA certificates in a PEM file.
pub fn roots(what: &str, path: &Path) -> Result<rustls::RootCertStore> {
    let mut store = rustls::RootCertStore::empty();
    for cert in chain(what, path)? {
        store.add(cert).map_err(|e| {
            Error::InvalidInput(format!(
                "{what} {}: not a usable CA certificate: {e}",
                path.display()
            ))
        })?;
    }
    Ok(store)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_names_round_trip() {
        assert_eq!(node_dns_name(7), "node-7.trireme");
        assert_eq!(node_id_of_dns_name("node-7.trireme"), Some(7));
        assert_eq!(node_id_of_dns_name("NODE-12.Trireme"), Some(12));
        assert_eq!(node_id_of_dns_name("node-0.trireme"), None);
        assert_eq!(node_id_of_dns_name("node-x.trireme"), None);
        assert_eq!(node_id_of_dns_name("node-7.trireme.evil"), None);
        assert_eq!(node_id_of_dns_name("localhost"), None);
    }

    /// The client port's check after the handshake: with the certificate
    /// required or optional, what passes and what is refused, and why.
    #[test]
    fn the_client_check_refuses_bad_certificates_in_both_modes() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca");
        let other = dir.path().join("other");
        certs::init(&ca, certs::Validity::days(1)).unwrap();
        certs::init(&other, certs::Validity::days(1)).unwrap();
        let der = |path: &Path| chain("test", path).unwrap();
        let good = der(&certs::client(&ca, "alice", certs::Validity::days(1))
            .unwrap()
            .0);
        let expired = der(&certs::client(&ca, "old", certs::Validity::expired())
            .unwrap()
            .0);
        let foreign = der(&certs::client(&other, "mallory", certs::Validity::days(1))
            .unwrap()
            .0);
        let garbage = vec![rustls_pki_types::CertificateDer::from(vec![
            0x30, 0x03, 1, 2, 3,
        ])];
        for required in [true, false] {
            let settings = TlsConfig {
                cert: Some(certs::node_paths(&ca, 1).0),
                key: Some(certs::node_paths(&ca, 1).1),
                ca: Some(certs::ca_cert_path(&ca)),
                client_cert_auth: required,
                ..TlsConfig::default()
            };
            certs::node(&ca, 1, &[], certs::Validity::days(1)).unwrap();
            let (client, _, _) = build(&settings).unwrap();
            let check = client.unwrap().clients.expect("a client check");
            assert!(check.check(Some(&good)).is_ok());
            match check.check(None) {
                Err(e) if required => assert!(e.contains("client certificate required"), "{e}"),
                Err(e) => panic!("optional certificate, none presented: refused: {e}"),
                Ok(()) => assert!(!required, "no certificate accepted while required"),
            }
            for (name, presented, reason) in [
                ("expired", &expired, "expired"),
                ("another CA's", &foreign, "UnknownIssuer"),
                ("garbage", &garbage, "client certificate refused"),
            ] {
                let e = check.check(Some(presented)).expect_err(&format!(
                    "{name} certificate accepted (required: {required})"
                ));
                assert!(
                    e.contains("client certificate refused") && e.contains(reason),
                    "{name}: {e}"
                );
            }
        }
    }

    #[test]
    fn incomplete_settings_are_refused_by_name() {
        let peer_only_cert = TlsConfig {
            peer_cert: Some("a".into()),
            ..TlsConfig::default()
        };
        let e = peer_only_cert.validate().unwrap_err().to_string();
        assert!(e.contains("tls.peer_ca"), "{e}");
        let auth_without_ca = TlsConfig {
            cert: Some("a".into()),
            key: Some("b".into()),
            client_cert_auth: true,
            ..TlsConfig::default()
        };
        let e = auth_without_ca.validate().unwrap_err().to_string();
        assert!(e.contains("--tls-ca"), "{e}");
        assert!(TlsConfig::default().validate().is_ok());
    }
}
