//! [`Client`]: one lazily connected channel per endpoint, failover, and the
//! single-operation API.

use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::SeedableRng;

use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Status};
use trireme_proto::v1 as proto;
use trireme_proto::v1::auth_client::AuthClient;
use trireme_proto::v1::cluster_client::ClusterClient;
use trireme_proto::v1::kv_client::KvClient;

use crate::backoff::Backoff;
use crate::error::{classify, timed_out, Error, OpKind, Result};
use crate::types::{Checksum, KeyRange, Members, NodeStatus, ReadConsistency, ScanSpec, Versioned};

/// Attempts made after one full pass over the endpoints has failed, each
/// after a backoff, to ride out a short election.
const RETRIES_AFTER_PASS: usize = 2;

/// Backoff before attempts that revisit an endpoint.
const FAILOVER_BACKOFF: Backoff = Backoff {
    base: Duration::from_millis(100),
    cap: Duration::from_secs(1),
};

/// Backoff before trying the next endpoint after one refused the request as
/// overloaded, so that refused clients do not turn into a retry storm.
const OVERLOAD_BACKOFF: Backoff = Backoff {
    base: Duration::from_millis(20),
    cap: Duration::from_millis(500),
};

/// Large scans and values: well above tonic's 4 MiB default.
const MAX_DECODING_BYTES: usize = 256 * 1024 * 1024;

/// Tunables of a [`Client`].
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// The deadline of one request, failover attempts included.
    pub timeout: Duration,
    /// How long to wait for a TCP connection before trying the next endpoint.
    pub connect_timeout: Duration,
    /// The interval of HTTP/2 keepalive pings, which detect dead connections.
    pub keepalive_interval: Duration,
    /// How long a keepalive ping may go unanswered before the connection is dropped.
    pub keepalive_timeout: Duration,
    /// The index (modulo the endpoint count) of the first endpoint to use.
    pub start_index: usize,
    /// How many times [`Client::transaction`] runs a transaction that keeps
    /// aborting on conflicts.
    pub txn_max_attempts: u32,
    /// TLS: the CA to verify servers with and an optional client
    /// certificate. With it, endpoints without a scheme use `https://`.
    pub tls: Option<ClientTls>,
    /// A user name and password: the client exchanges them for a token
    /// (`Authenticate`) before its first request, sends the token with every
    /// request, and authenticates again when a node refuses it (expired).
    pub credentials: Option<Credentials>,
}

/// A client's TLS settings, as PEM text (see [`ClientTls::from_files`]).
#[derive(Clone)]
pub struct ClientTls {
    /// CA certificates the server's certificate must chain to.
    pub ca_pem: Vec<u8>,
    /// A client certificate and its key, for servers that ask for one
    /// (`--client-cert-auth`).
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
}

impl std::fmt::Debug for ClientTls {
    // Never prints the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("client_certificate", &self.identity.is_some())
            .finish()
    }
}

impl ClientTls {
    /// Reads the CA file and, when both are given, a client certificate and key.
    pub fn from_files(
        ca: &std::path::Path,
        cert: Option<&std::path::Path>,
        key: Option<&std::path::Path>,
    ) -> Result<ClientTls> {
        let read = |what: &str, p: &std::path::Path| {
            std::fs::read(p).map_err(|e| {
                Error::InvalidInput(format!("cannot read {what} {}: {e}", p.display()))
            })
        };
        let identity = match (cert, key) {
            (Some(c), Some(k)) => Some((read("--cert", c)?, read("--key", k)?)),
            (None, None) => None,
            _ => {
                return Err(Error::InvalidInput(
                    "--cert and --key go together: give both".into(),
                ))
            }
        };
        Ok(ClientTls {
            ca_pem: read("--cacert", ca)?,
            identity,
        })
    }
}

/// A user name and password for a cluster with auth on.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user's name.
    pub user: String,
    /// Its password (never printed: `Debug` shows `***`).
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("password", &"***")
            .finish()
    }
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(2),
            keepalive_interval: Duration::from_secs(3),
            keepalive_timeout: Duration::from_secs(3),
            start_index: 0,
            txn_max_attempts: 10,
            tls: None,
            credentials: None,
        }
    }
}

/// A connection to one endpoint.
#[derive(Debug)]
struct Node {
    /// The endpoint as the caller wrote it.
    endpoint: String,
    /// The lazily connected channel.
    channel: Channel,
}

#[derive(Debug)]
struct Inner {
    /// The endpoints, in the caller's order.
    nodes: Vec<Node>,
    /// Index of the endpoint requests go to first.
    current: AtomicUsize,
    /// The highest seqno this client has committed or read.
    session_seqno: AtomicU64,
    /// Tunables.
    options: ClientOptions,
    /// Makes the channel of an endpoint (see [`Client::with_connector`]).
    connect: Connect,
    /// A seeded jitter RNG (see [`Client::seed_jitter`]); `None`: the thread's RNG.
    jitter: Mutex<Option<StdRng>>,
    /// The token from `Authenticate`, when credentials are set.
    token: Mutex<Option<String>>,
}

/// Makes a channel from a configured endpoint.
#[derive(Clone)]
struct Connect(Arc<dyn Fn(Endpoint) -> Channel + Send + Sync>);

impl std::fmt::Debug for Connect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Connect")
    }
}

/// A Trireme client: cheap to clone; clones share connections, the current
/// endpoint and the session seqno.
#[derive(Debug, Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl Client {
    /// A client for these endpoints (`host:port` or URIs), starting at the first.
    ///
    /// Connections are made lazily, on the first request; this must be called
    /// inside a tokio runtime.
    pub fn new(endpoints: Vec<String>) -> Result<Client> {
        Client::with_options(endpoints, ClientOptions::default())
    }

    /// A client that sends its requests to `endpoints[start_index % n]` first.
    pub fn pinned(endpoints: Vec<String>, start_index: usize) -> Result<Client> {
        Client::with_options(
            endpoints,
            ClientOptions {
                start_index,
                ..ClientOptions::default()
            },
        )
    }

    /// A client with explicit options.
    pub fn with_options(endpoints: Vec<String>, options: ClientOptions) -> Result<Client> {
        Client::with_connector(endpoints, options, |e: Endpoint| e.connect_lazy())
    }

    /// A client whose channels `connect` makes from each endpoint, already
    /// configured from `options` (timeouts, keepalive): for another transport,
    /// e.g. a simulated network through `Endpoint::connect_with_connector_lazy`.
    /// `connect` must not block; it is also used for [`Client::status_of`] and
    /// [`Client::checksum_of`] on endpoints not in the list.
    pub fn with_connector(
        endpoints: Vec<String>,
        options: ClientOptions,
        connect: impl Fn(Endpoint) -> Channel + Send + Sync + 'static,
    ) -> Result<Client> {
        let connect = Connect(Arc::new(connect));
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(Error::Other(
                "a Client must be created inside a tokio runtime".into(),
            ));
        }
        let nodes = endpoints
            .iter()
            .map(|e| e.trim())
            .filter(|e| !e.is_empty())
            .map(|endpoint| {
                Ok(Node {
                    endpoint: endpoint.to_string(),
                    channel: (connect.0)(configure(endpoint, &options)?),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        if nodes.is_empty() {
            return Err(Error::InvalidInput("no endpoints given".into()));
        }
        let start = options.start_index % nodes.len();
        Ok(Client {
            inner: Arc::new(Inner {
                nodes,
                current: AtomicUsize::new(start),
                session_seqno: AtomicU64::new(0),
                options,
                connect,
                jitter: Mutex::new(None),
                token: Mutex::new(None),
            }),
        })
    }

    /// Draws backoff jitter (failover and [`Client::transaction`] retries)
    /// from an RNG seeded with `seed` instead of the thread's RNG, so that a
    /// deterministic simulation replays exactly. Clones share it.
    pub fn seed_jitter(&self, seed: u64) {
        *self.inner.jitter.lock().expect("jitter lock") = Some(StdRng::seed_from_u64(seed));
    }

    /// The jittered delay before retry number `retry` of `backoff`.
    pub(crate) fn backoff_delay(&self, backoff: &Backoff, retry: u32) -> Duration {
        match &mut *self.inner.jitter.lock().expect("jitter lock") {
            Some(rng) => backoff.delay_with(retry, rng),
            None => backoff.delay_with(retry, &mut rand::thread_rng()),
        }
    }

    /// The endpoints, in the order given.
    pub fn endpoints(&self) -> Vec<String> {
        self.inner
            .nodes
            .iter()
            .map(|n| n.endpoint.clone())
            .collect()
    }

    /// The endpoint the next request goes to first.
    pub fn current_endpoint(&self) -> &str {
        let i = self.inner.current.load(Ordering::Relaxed) % self.inner.nodes.len();
        &self.inner.nodes[i].endpoint
    }

    /// The options the client was built with.
    pub fn options(&self) -> &ClientOptions {
        &self.inner.options
    }

    /// The highest seqno this client has committed or read: its session token.
    pub fn session_seqno(&self) -> u64 {
        self.inner.session_seqno.load(Ordering::Relaxed)
    }

    /// Raises the session seqno to at least `seqno` (e.g. a token handed over
    /// from another client), so that session reads see that far.
    pub fn advance_session(&self, seqno: u64) {
        self.inner.session_seqno.fetch_max(seqno, Ordering::Relaxed);
    }

    /// Reads `key`; `None` when it does not exist.
    pub async fn get(
        &self,
        key: impl AsRef<[u8]>,
        consistency: ReadConsistency,
    ) -> Result<Option<Versioned>> {
        let request = proto::GetRequest {
            key: key.as_ref().to_vec(),
            read: Some(self.read_options(consistency)),
        };
        self.get_request(request).await
    }

    /// Reads several keys at one seqno in one round trip: for each key, in
    /// the order given, its value and version, or `None` when it does not
    /// exist. Returns the seqno they were read at. At most the server's
    /// `max_scan_limit` keys (10,000 by default).
    pub async fn get_many<K: AsRef<[u8]>>(
        &self,
        keys: &[K],
        consistency: ReadConsistency,
    ) -> Result<(Vec<Option<Versioned>>, u64)> {
        let request = proto::GetManyRequest {
            keys: keys.iter().map(|k| k.as_ref().to_vec()).collect(),
            read: Some(self.read_options(consistency)),
        };
        self.get_many_request(request).await
    }

    /// Writes `value` under `key` unconditionally; returns the commit seqno.
    pub async fn put(&self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Result<u64> {
        self.put_request(proto::PutRequest {
            key: key.into(),
            value: value.into(),
            if_version: None,
            lease: 0,
        })
        .await
    }

    /// Writes `value` under `key` attached to lease `lease` (0: none): the
    /// key is deleted when the lease expires or is revoked. A lease that does
    /// not exist is refused with an error naming it.
    pub async fn put_with_lease(
        &self,
        key: impl Into<Vec<u8>>,
        value: impl Into<Vec<u8>>,
        lease: i64,
    ) -> Result<u64> {
        self.put_request(proto::PutRequest {
            key: key.into(),
            value: value.into(),
            if_version: None,
            lease,
        })
        .await
    }

    /// Grants a lease of `ttl` seconds with id `id` (0: the server picks one);
    /// returns the id and the TTL granted.
    pub async fn lease_grant(&self, ttl: i64, id: i64) -> Result<(i64, i64)> {
        let response = self
            .call(OpKind::Write, move |channel, timeout| {
                let request = self.with_timeout(proto::LeaseGrantRequest { ttl, id }, timeout);
                async move { Ok(kv(channel).lease_grant(request).await?.into_inner()) }
            })
            .await?;
        Ok((response.id, response.ttl))
    }

    /// Revokes lease `id`, deleting the keys attached to it; returns the seqno
    /// of that deletion. An unknown lease is refused with an error naming it.
    pub async fn lease_revoke(&self, id: i64) -> Result<u64> {
        let seqno = self
            .call(OpKind::Write, move |channel, timeout| {
                let request = self.with_timeout(proto::LeaseRevokeRequest { id }, timeout);
                async move { Ok(kv(channel).lease_revoke(request).await?.into_inner().seqno) }
            })
            .await?;
        self.advance_session(seqno);
        Ok(seqno)
    }

    /// Restarts lease `id`'s TTL; returns the TTL, 0 if the lease does not
    /// exist (or already expired). Safe to send again.
    pub async fn lease_keep_alive(&self, id: i64) -> Result<i64> {
        self.call(OpKind::Read, move |channel, timeout| {
            let request = self.with_timeout(proto::LeaseKeepAliveRequest { id }, timeout);
            async move {
                Ok(kv(channel)
                    .lease_keep_alive(request)
                    .await?
                    .into_inner()
                    .ttl)
            }
        })
        .await
    }

    /// Lease `id`'s granted and remaining TTL, and its keys when `keys`;
    /// `None` if it does not exist.
    pub async fn lease_time_to_live(
        &self,
        id: i64,
        keys: bool,
    ) -> Result<Option<proto::LeaseTimeToLiveResponse>> {
        let response = self
            .call(OpKind::Read, move |channel, timeout| {
                let request =
                    self.with_timeout(proto::LeaseTimeToLiveRequest { id, keys }, timeout);
                async move { Ok(kv(channel).lease_time_to_live(request).await?.into_inner()) }
            })
            .await?;
        Ok(response.found.then_some(response))
    }

    /// The ids of every lease, in id order.
    pub async fn lease_list(&self) -> Result<Vec<i64>> {
        self.call(OpKind::Read, move |channel, timeout| {
            let request = self.with_timeout(proto::LeaseListRequest {}, timeout);
            async move { Ok(kv(channel).lease_list(request).await?.into_inner().ids) }
        })
        .await
    }

    /// Writes many independent key-value pairs, each as its own write (not
    /// one transaction: some may commit and others fail), with up to
    /// `in_flight` requests outstanding at once on this client's connections.
    /// Returns one outcome per pair, in the order given.
    ///
    /// For a caller with many writes this costs one round trip per
    /// `in_flight` writes instead of one per write, and lets the node batch
    /// them into fewer log entries and fsyncs. `in_flight` 0 is taken as 1.
    pub async fn put_many<K, V>(
        &self,
        pairs: impl IntoIterator<Item = (K, V)>,
        in_flight: usize,
    ) -> Vec<Result<u64>>
    where
        K: Into<Vec<u8>>,
        V: Into<Vec<u8>>,
    {
        use futures::stream::{self, StreamExt};
        stream::iter(pairs)
            .map(|(key, value)| self.put(key, value))
            .buffered(in_flight.max(1))
            .collect()
            .await
    }

    /// Writes `value` under `key` only if the key's version is `version` (0:
    /// only if absent); a mismatch is [`Error::Aborted`] with `compare_failed`.
    pub async fn put_if_version(
        &self,
        key: impl Into<Vec<u8>>,
        value: impl Into<Vec<u8>>,
        version: u64,
    ) -> Result<u64> {
        self.put_request(proto::PutRequest {
            key: key.into(),
            value: value.into(),
            if_version: Some(version),
            lease: 0,
        })
        .await
    }

    /// Deletes `key` (if its version is `if_version`, when given); returns the
    /// commit seqno. Deleting an absent key succeeds.
    pub async fn delete(&self, key: impl Into<Vec<u8>>, if_version: Option<u64>) -> Result<u64> {
        let request = proto::DeleteRequest {
            key: key.into(),
            if_version,
        };
        let seqno = self
            .call(OpKind::Write, move |channel, timeout| {
                let request = self.with_timeout(request.clone(), timeout);
                async move { Ok(kv(channel).delete(request).await?.into_inner().seqno) }
            })
            .await?;
        self.advance_session(seqno);
        Ok(seqno)
    }

    /// Scans a range: returns the pairs in key order, whether the limit cut the
    /// result short, and the seqno the scan was served at.
    pub async fn scan(
        &self,
        spec: &ScanSpec,
        consistency: ReadConsistency,
    ) -> Result<(Vec<Versioned>, bool, u64)> {
        self.scan_pinned(spec, consistency, None).await
    }

    /// [`Client::scan`] at snapshot seqno `snapshot` when given (e.g. the
    /// seqno of a first page, so that every page reads the same state).
    pub async fn scan_pinned(
        &self,
        spec: &ScanSpec,
        consistency: ReadConsistency,
        snapshot: Option<u64>,
    ) -> Result<(Vec<Versioned>, bool, u64)> {
        let (start, end, prefix) = match &spec.range {
            KeyRange::All => (Vec::new(), Vec::new(), Vec::new()),
            KeyRange::Prefix(p) => (Vec::new(), Vec::new(), p.clone()),
            KeyRange::Range { start, end } => (start.clone(), end.clone(), Vec::new()),
        };
        let request = proto::ScanRequest {
            start,
            end,
            prefix,
            limit: spec.limit,
            read: Some(proto::ReadOptions {
                snapshot,
                ..self.read_options(consistency)
            }),
            keys_only: spec.keys_only,
        };
        let response = self.scan_request(request).await?;
        self.advance_session(response.seqno);
        Ok((
            response.kvs.into_iter().map(Versioned::from).collect(),
            response.more,
            response.seqno,
        ))
    }

    /// Sends a raw write set; returns its commit seqno.
    pub async fn commit(&self, request: proto::CommitRequest) -> Result<u64> {
        let seqno = self
            .call(OpKind::Write, move |channel, timeout| {
                let request = self.with_timeout(request.clone(), timeout);
                async move { Ok(kv(channel).commit(request).await?.into_inner().seqno) }
            })
            .await?;
        self.advance_session(seqno);
        Ok(seqno)
    }

    /// The status of the node in use (or of the next one that answers).
    pub async fn status(&self) -> Result<NodeStatus> {
        self.call(OpKind::Read, |channel, timeout| async move {
            let request = self.with_timeout(proto::StatusRequest {}, timeout);
            Ok(cluster(channel).status(request).await?.into_inner().into())
        })
        .await
    }

    /// The membership as the node in use sees it.
    pub async fn members(&self) -> Result<Members> {
        self.call(OpKind::Read, |channel, timeout| async move {
            let request = self.with_timeout(proto::MembersRequest {}, timeout);
            let r = cluster(channel).members(request).await?.into_inner();
            Ok(Members::from_proto(r.leader_id, r.members))
        })
        .await
    }

    /// Adds node `node_id` at peer address `address` to the cluster (as a learner; the
    /// leader promotes it to voter once it has caught up).
    pub async fn join(&self, node_id: u64, address: impl Into<String>) -> Result<Members> {
        let address = address.into();
        self.call(OpKind::Write, |channel, timeout| {
            let address = address.clone();
            async move {
                let request = self.with_timeout(
                    proto::JoinRequest {
                        node_id,
                        address,
                        client_address: String::new(),
                    },
                    timeout,
                );
                let r = cluster(channel).join(request).await?.into_inner();
                Ok(Members::from_proto(r.leader_id, r.members))
            }
        })
        .await
    }

    /// Removes node `node_id` for good (0: the node in use).
    pub async fn leave(&self, node_id: u64) -> Result<Members> {
        self.call(OpKind::Write, |channel, timeout| async move {
            let request = self.with_timeout(proto::LeaveRequest { node_id }, timeout);
            let r = cluster(channel).leave(request).await?.into_inner();
            Ok(Members::from_proto(0, r.members))
        })
        .await
    }

    /// The cluster parameters as one endpoint has applied them, without failover.
    pub async fn config_of(&self, endpoint: &str) -> Result<crate::ClusterConfig> {
        self.call_one(endpoint, |channel, timeout| async move {
            let request = self.with_timeout(proto::GetConfigRequest {}, timeout);
            Ok(cluster(channel)
                .get_config(request)
                .await?
                .into_inner()
                .into())
        })
        .await
    }

    /// Sets cluster parameter `name` to `value` through the log (every node
    /// applies it at the same seqno); returns it as the answering node applied it.
    pub async fn set_config(&self, name: &str, value: &str) -> Result<crate::ClusterConfig> {
        self.call(OpKind::Write, |channel, timeout| {
            let request = proto::SetConfigRequest {
                name: name.to_string(),
                value: value.to_string(),
            };
            async move {
                let request = self.with_timeout(request, timeout);
                Ok(cluster(channel)
                    .set_config(request)
                    .await?
                    .into_inner()
                    .into())
            }
        })
        .await
    }

    /// The status of one endpoint (configured or not), without failover.
    pub async fn status_of(&self, endpoint: &str) -> Result<NodeStatus> {
        self.call_one(endpoint, |channel, timeout| async move {
            let request = self.with_timeout(proto::StatusRequest {}, timeout);
            Ok(cluster(channel).status(request).await?.into_inner().into())
        })
        .await
    }

    /// The data checksum of the node in use (or of the next one that answers).
    pub async fn checksum(&self) -> Result<Checksum> {
        self.call(OpKind::Read, |channel, timeout| async move {
            let request = self.with_timeout(proto::ChecksumRequest {}, timeout);
            Ok(cluster(channel)
                .checksum(request)
                .await?
                .into_inner()
                .into())
        })
        .await
    }

    /// The data checksum of one endpoint (configured or not), without failover.
    pub async fn checksum_of(&self, endpoint: &str) -> Result<Checksum> {
        self.call_one(endpoint, |channel, timeout| async move {
            let request = self.with_timeout(proto::ChecksumRequest {}, timeout);
            Ok(cluster(channel)
                .checksum(request)
                .await?
                .into_inner()
                .into())
        })
        .await
    }

    /// Streams a backup of the store of `endpoint` (default: the first
    /// configured endpoint, without failover: a backup is one node's store at
    /// one seqno) into `out`, which receives the bytes of a backup file (see
    /// `trireme snapshot`). The transfer as a whole has no deadline; each
    /// chunk must arrive within the client's timeout. Returns the bytes written.
    pub async fn save_backup(
        &self,
        endpoint: Option<&str>,
        out: &mut (dyn std::io::Write + Send),
    ) -> Result<u64> {
        let wanted = match endpoint {
            Some(e) => e.trim().to_string(),
            None => self
                .inner
                .nodes
                .first()
                .map(|n| n.endpoint.clone())
                .ok_or_else(|| Error::InvalidInput("no endpoint to back up".into()))?,
        };
        let channel = match self.inner.nodes.iter().find(|n| n.endpoint == wanted) {
            Some(node) => node.channel.clone(),
            None => (self.inner.connect.0)(configure(&wanted, &self.inner.options)?),
        };
        self.ensure_token().await?;
        let timeout = self.inner.options.timeout;
        let failed = |status: Status| classify(&status, OpKind::Read, &wanted).error;
        let mut request = Request::new(proto::SaveBackupRequest { chunk_bytes: 0 });
        self.authorize(&mut request);
        let mut backup = trireme_proto::v1::backup_client::BackupClient::new(channel)
            .max_decoding_message_size(MAX_DECODING_BYTES);
        let mut stream = match tokio::time::timeout(timeout, backup.save(request)).await {
            Ok(Ok(response)) => response.into_inner(),
            Ok(Err(status)) => return Err(failed(status)),
            Err(_) => return Err(timed_out(OpKind::Read, &wanted, timeout)),
        };
        let mut written = 0u64;
        loop {
            match tokio::time::timeout(timeout, stream.message()).await {
                Ok(Ok(Some(chunk))) => {
                    out.write_all(&chunk.data)
                        .map_err(|e| Error::Other(format!("writing the backup: {e}")))?;
                    written += chunk.data.len() as u64;
                }
                Ok(Ok(None)) => return Ok(written),
                Ok(Err(status)) => return Err(failed(status)),
                Err(_) => return Err(timed_out(OpKind::Read, &wanted, timeout)),
            }
        }
    }

    /// Starts a transaction: returns the snapshot seqno its reads use.
    pub(crate) async fn begin_snapshot(&self, consistency: ReadConsistency) -> Result<u64> {
        let request = proto::BeginRequest {
            read: Some(self.read_options(consistency)),
        };
        let snapshot = self
            .call(OpKind::Read, move |channel, timeout| {
                let request = self.with_timeout(request, timeout);
                async move { Ok(kv(channel).begin(request).await?.into_inner().snapshot) }
            })
            .await?;
        self.advance_session(snapshot);
        Ok(snapshot)
    }

    /// Reads `key` at a transaction's snapshot.
    pub(crate) async fn get_at(&self, key: &[u8], snapshot: u64) -> Result<Option<Versioned>> {
        self.get_request(proto::GetRequest {
            key: key.to_vec(),
            read: Some(snapshot_read(snapshot)),
        })
        .await
    }

    /// Reads `key` with `consistency` and no snapshot: what a deferred
    /// transaction's first read does; the seqno served at becomes its snapshot.
    pub(crate) async fn get_fresh(
        &self,
        key: &[u8],
        consistency: ReadConsistency,
    ) -> Result<(Option<Versioned>, u64)> {
        self.get_request_seqno(proto::GetRequest {
            key: key.to_vec(),
            read: Some(self.read_options(consistency)),
        })
        .await
    }

    /// [`Client::get_fresh`] for several keys.
    pub(crate) async fn get_many_fresh(
        &self,
        keys: Vec<Vec<u8>>,
        consistency: ReadConsistency,
    ) -> Result<(Vec<Option<Versioned>>, u64)> {
        let request = proto::GetManyRequest {
            keys,
            read: Some(self.read_options(consistency)),
        };
        self.get_many_request(request).await
    }

    /// Reads `keys` at a transaction's snapshot.
    pub(crate) async fn get_many_at(
        &self,
        keys: Vec<Vec<u8>>,
        snapshot: u64,
    ) -> Result<Vec<Option<Versioned>>> {
        let request = proto::GetManyRequest {
            keys,
            read: Some(snapshot_read(snapshot)),
        };
        Ok(self.get_many_request(request).await?.0)
    }

    /// Scans `[start, end)` at a transaction's snapshot, one page.
    pub(crate) async fn scan_at(
        &self,
        start: Vec<u8>,
        end: Vec<u8>,
        snapshot: u64,
    ) -> Result<proto::ScanResponse> {
        self.scan_request(proto::ScanRequest {
            start,
            end,
            prefix: Vec::new(),
            limit: 0,
            read: Some(snapshot_read(snapshot)),
            keys_only: false,
        })
        .await
    }

    async fn get_request(&self, request: proto::GetRequest) -> Result<Option<Versioned>> {
        Ok(self.get_request_seqno(request).await?.0)
    }

    /// A get, and the seqno it was served at.
    async fn get_request_seqno(
        &self,
        request: proto::GetRequest,
    ) -> Result<(Option<Versioned>, u64)> {
        let key = request.key.clone();
        let response = self
            .call(OpKind::Read, move |channel, timeout| {
                let request = self.with_timeout(request.clone(), timeout);
                async move { Ok(kv(channel).get(request).await?.into_inner()) }
            })
            .await?;
        self.advance_session(response.seqno);
        let found = response.found.then_some(Versioned {
            key,
            value: response.value,
            version: response.version,
        });
        Ok((found, response.seqno))
    }

    async fn get_many_request(
        &self,
        request: proto::GetManyRequest,
    ) -> Result<(Vec<Option<Versioned>>, u64)> {
        let keys = request.keys.clone();
        let response = self
            .call(OpKind::Read, move |channel, timeout| {
                let request = self.with_timeout(request.clone(), timeout);
                async move { Ok(kv(channel).get_many(request).await?.into_inner()) }
            })
            .await?;
        if response.results.len() != keys.len() {
            return Err(Error::Other(format!(
                "protocol error: get_many of {} keys answered with {} results",
                keys.len(),
                response.results.len()
            )));
        }
        self.advance_session(response.seqno);
        let found = keys
            .into_iter()
            .zip(response.results)
            .map(|(key, r)| {
                r.found.then_some(Versioned {
                    key,
                    value: r.value,
                    version: r.version,
                })
            })
            .collect();
        Ok((found, response.seqno))
    }

    async fn scan_request(&self, request: proto::ScanRequest) -> Result<proto::ScanResponse> {
        self.call(OpKind::Read, move |channel, timeout| {
            let request = self.with_timeout(request.clone(), timeout);
            async move { Ok(kv(channel).scan(request).await?.into_inner()) }
        })
        .await
    }

    async fn put_request(&self, request: proto::PutRequest) -> Result<u64> {
        let seqno = self
            .call(OpKind::Write, move |channel, timeout| {
                let request = self.with_timeout(request.clone(), timeout);
                async move { Ok(kv(channel).put(request).await?.into_inner().seqno) }
            })
            .await?;
        self.advance_session(seqno);
        Ok(seqno)
    }

    fn read_options(&self, consistency: ReadConsistency) -> proto::ReadOptions {
        proto::ReadOptions {
            consistency: consistency.to_proto() as i32,
            min_seqno: match consistency {
                ReadConsistency::Session => self.session_seqno(),
                _ => 0,
            },
            snapshot: None,
        }
    }

    /// Runs one request with failover: the current endpoint first, then the
    /// others in order, then a couple of backed-off retries, all within the
    /// request timeout. Only failures that certainly did not take effect move
    /// on; the first other failure is returned as is.
    ///
    /// With credentials, a token is fetched first, and once more when a node
    /// refuses it (expired, or the password changed).
    pub(crate) async fn call<T, F, Fut>(&self, op: OpKind, mut attempt: F) -> Result<T>
    where
        F: FnMut(Channel, Duration) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let had_token = self.ensure_token().await?;
        match self.call_once(op, &mut attempt).await {
            Err(Error::Unauthenticated(_)) if had_token => {
                self.clear_token();
                self.ensure_token().await?;
                self.call_once(op, &mut attempt).await
            }
            other => other,
        }
    }

    /// A request carrying the remaining deadline, so the server gives up
    /// too, and the token when there is one.
    pub(crate) fn with_timeout<T>(&self, message: T, timeout: Duration) -> Request<T> {
        let mut request = Request::new(message);
        request.set_timeout(timeout);
        self.authorize(&mut request);
        request
    }

    /// Adds the token (if any) to `request`'s `authorization` metadata.
    pub(crate) fn authorize<T>(&self, request: &mut Request<T>) {
        let token = self.inner.token.lock().expect("token lock").clone();
        if let Some(value) = token.and_then(|t| t.parse().ok()) {
            request.metadata_mut().insert("authorization", value);
        }
    }

    fn clear_token(&self) {
        *self.inner.token.lock().expect("token lock") = None;
    }

    /// With credentials and no token yet, authenticates on the endpoints
    /// in turn (the first that answers decides). Returns whether a token is
    /// in use.
    pub(crate) async fn ensure_token(&self) -> Result<bool> {
        let Some(creds) = self.inner.options.credentials.clone() else {
            return Ok(false);
        };
        if self.inner.token.lock().expect("token lock").is_some() {
            return Ok(true);
        }
        let request = proto::AuthenticateRequest {
            name: creds.user,
            password: creds.password,
        };
        let token = self
            .call_once(OpKind::Read, &mut |channel, timeout| {
                let mut message = Request::new(request.clone());
                message.set_timeout(timeout);
                async move {
                    Ok(auth(channel)
                        .authenticate(message)
                        .await?
                        .into_inner()
                        .token)
                }
            })
            .await?;
        *self.inner.token.lock().expect("token lock") = Some(token);
        Ok(true)
    }

    async fn call_once<T, F, Fut>(&self, op: OpKind, attempt: &mut F) -> Result<T>
    where
        F: FnMut(Channel, Duration) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let inner = &*self.inner;
        let timeout = inner.options.timeout;
        let deadline = Instant::now() + timeout;
        let n = inner.nodes.len();
        let first = inner.current.load(Ordering::Relaxed) % n;
        // The last failure of each endpoint tried, for the final message.
        let mut failures: Vec<(usize, String)> = Vec::new();
        let mut overloads = 0u32;
        for i in 0..n + RETRIES_AFTER_PASS {
            if i >= n {
                let delay = self.backoff_delay(&FAILOVER_BACKOFF, (i - n) as u32);
                let remaining = deadline.saturating_duration_since(Instant::now());
                tokio::time::sleep(delay.min(remaining)).await;
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                break;
            }
            let idx = (first + i) % n;
            let node = &inner.nodes[idx];
            let outcome =
                tokio::time::timeout(remaining, attempt(node.channel.clone(), remaining)).await;
            match outcome {
                Ok(Ok(value)) => {
                    inner.current.store(idx, Ordering::Relaxed);
                    return Ok(value);
                }
                Ok(Err(status)) => {
                    let failure = classify(&status, op, &node.endpoint);
                    if !failure.retryable {
                        return Err(failure.error);
                    }
                    tracing::debug!(endpoint = %node.endpoint, error = %failure.error, "failing over");
                    if status.code() == tonic::Code::ResourceExhausted {
                        let delay = self.backoff_delay(&OVERLOAD_BACKOFF, overloads);
                        overloads += 1;
                        let remaining = deadline.saturating_duration_since(Instant::now());
                        tokio::time::sleep(delay.min(remaining)).await;
                    }
                    // Move on, unless a concurrent request already did.
                    let _ = inner.current.compare_exchange(
                        idx,
                        (idx + 1) % n,
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                    );
                    let text = match failure.error {
                        Error::Unavailable(m) => m,
                        other => other.to_string(),
                    };
                    failures.retain(|(i, _)| *i != idx);
                    failures.push((idx, text));
                }
                Err(_elapsed) => return Err(timed_out(op, &node.endpoint, timeout)),
            }
        }
        let tried = failures
            .into_iter()
            .map(|(_, m)| m)
            .collect::<Vec<_>>()
            .join("; ");
        Err(Error::Unavailable(if tried.is_empty() {
            format!("no endpoint answered within {timeout:?}")
        } else {
            format!("no endpoint took the request ({tried})")
        }))
    }

    /// How many endpoints the client has.
    pub(crate) fn endpoint_count(&self) -> usize {
        self.inner.nodes.len()
    }

    /// The index of the endpoint requests go to first.
    pub(crate) fn current_index(&self) -> usize {
        self.inner.current.load(Ordering::Relaxed) % self.inner.nodes.len()
    }

    /// Endpoint `i` (modulo the count): its name and channel.
    pub(crate) fn endpoint_at(&self, i: usize) -> (String, Channel) {
        let node = &self.inner.nodes[i % self.inner.nodes.len()];
        (node.endpoint.clone(), node.channel.clone())
    }

    /// Runs one request against one endpoint, without failover.
    async fn call_one<T, F, Fut>(&self, endpoint: &str, attempt: F) -> Result<T>
    where
        F: FnOnce(Channel, Duration) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        self.ensure_token().await?;
        let wanted = endpoint.trim();
        let channel = match self.inner.nodes.iter().find(|n| n.endpoint == wanted) {
            Some(node) => node.channel.clone(),
            None => (self.inner.connect.0)(configure(wanted, &self.inner.options)?),
        };
        let timeout = self.inner.options.timeout;
        match tokio::time::timeout(timeout, attempt(channel, timeout)).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(status)) => Err(classify(&status, OpKind::Read, wanted).error),
            Err(_elapsed) => Err(timed_out(OpKind::Read, wanted, timeout)),
        }
    }
}

/// Reads at a transaction's snapshot: SESSION with `min_seqno` = the snapshot
/// makes any node (after a failover, too) wait until it has applied the
/// snapshot before reading at it.
fn snapshot_read(snapshot: u64) -> proto::ReadOptions {
    proto::ReadOptions {
        consistency: proto::ReadConsistency::Session as i32,
        min_seqno: snapshot,
        snapshot: Some(snapshot),
    }
}

/// The configured (not yet connected) endpoint; `http://` is added when no
/// scheme is given.
fn configure(endpoint: &str, options: &ClientOptions) -> Result<Endpoint> {
    let name = endpoint;
    let uri = if endpoint.contains("://") {
        endpoint.to_string()
    } else if options.tls.is_some() {
        format!("https://{endpoint}")
    } else {
        format!("http://{endpoint}")
    };
    let https = uri.starts_with("https://");
    let mut endpoint = Endpoint::from_shared(uri)
        .map_err(|e| Error::InvalidInput(format!("bad endpoint {endpoint:?}: {e}")))?
        .connect_timeout(options.connect_timeout)
        .http2_keep_alive_interval(options.keepalive_interval)
        .keep_alive_timeout(options.keepalive_timeout)
        .keep_alive_while_idle(true)
        .tcp_nodelay(true);
    if https {
        let tls = options.tls.as_ref().ok_or_else(|| {
            Error::InvalidInput(format!(
                "{name:?} is https:// but no CA certificate is given (--cacert, TRIREME_CACERT)"
            ))
        })?;
        let mut config = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(&tls.ca_pem));
        if let Some((cert, key)) = &tls.identity {
            config = config.identity(tonic::transport::Identity::from_pem(cert, key));
        }
        endpoint = endpoint
            .tls_config(config)
            .map_err(|e| Error::InvalidInput(format!("TLS settings for {name:?}: {e}")))?;
    }
    Ok(endpoint)
}

pub(crate) fn kv(channel: Channel) -> KvClient<Channel> {
    KvClient::new(channel).max_decoding_message_size(MAX_DECODING_BYTES)
}

pub(crate) fn auth(channel: Channel) -> AuthClient<Channel> {
    AuthClient::new(channel).max_decoding_message_size(MAX_DECODING_BYTES)
}

fn cluster(channel: Channel) -> ClusterClient<Channel> {
    ClusterClient::new(channel).max_decoding_message_size(MAX_DECODING_BYTES)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An address nothing listens on.
    async fn closed_port() -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        drop(listener);
        addr.to_string()
    }

    fn quick() -> ClientOptions {
        ClientOptions {
            timeout: Duration::from_millis(1500),
            ..ClientOptions::default()
        }
    }

    #[test]
    fn new_outside_a_runtime_is_an_error() {
        let err = Client::new(vec!["127.0.0.1:1".into()]).expect_err("no runtime");
        assert!(matches!(err, Error::Other(_)));
    }

    #[tokio::test]
    async fn endpoints_are_validated_and_pinned() -> Result<()> {
        assert!(matches!(
            Client::new(vec![" ".into()]),
            Err(Error::InvalidInput(_))
        ));
        let c = Client::pinned(vec!["a:1".into(), "http://b:2".into(), "c:3".into()], 4)?;
        assert_eq!(c.current_endpoint(), "http://b:2");
        assert_eq!(c.endpoints().len(), 3);
        Ok(())
    }

    #[tokio::test]
    async fn writes_fail_over_past_refused_connections() -> Result<()> {
        let (a, b) = (closed_port().await, closed_port().await);
        let client = Client::with_options(vec![a.clone(), b.clone()], quick())?;
        let err = client.put("k", "v").await.expect_err("nothing listens");
        match err {
            Error::Unavailable(m) => {
                assert!(m.contains(&a) && m.contains(&b), "{m}");
            }
            other => panic!("expected Unavailable, got {other:?}"),
        }
        Ok(())
    }

    #[tokio::test]
    async fn a_silent_node_makes_writes_indeterminate_and_reads_unavailable() -> Result<()> {
        // Accepts connections and never answers.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let hold = tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                open.push(socket);
            }
        });
        let options = ClientOptions {
            timeout: Duration::from_millis(300),
            ..ClientOptions::default()
        };
        let client = Client::with_options(vec![addr], options)?;
        let write = client.put("k", "v").await.expect_err("silent");
        assert!(matches!(write, Error::Indeterminate(_)), "{write:?}");
        let read = client
            .get("k", ReadConsistency::Local)
            .await
            .expect_err("silent");
        assert!(matches!(read, Error::Unavailable(_)), "{read:?}");
        hold.abort();
        Ok(())
    }

    /// A raw HTTP/2 server that resets every stream it gets with `reason`.
    async fn resetting_server(reason: h2::Reason) -> (String, tokio::task::JoinHandle<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let task = tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let Ok(mut conn) = h2::server::handshake(socket).await else {
                        return;
                    };
                    while let Some(Ok((_request, mut respond))) = conn.accept().await {
                        respond.send_reset(reason);
                    }
                });
            }
        });
        (addr, task)
    }

    #[tokio::test]
    async fn a_write_refused_unprocessed_moves_on_but_a_reset_one_is_unknown() -> Result<()> {
        let closed = closed_port().await;
        // REFUSED_STREAM: the server did not process it; the next endpoint is tried.
        let (refusing, task) = resetting_server(h2::Reason::REFUSED_STREAM).await;
        let client = Client::with_options(vec![refusing.clone(), closed.clone()], quick())?;
        match client.put("k", "v").await.expect_err("nobody takes it") {
            Error::Unavailable(m) => {
                assert!(m.contains("refused the request unprocessed"), "{m}");
                assert!(m.contains(&closed), "the next endpoint was tried: {m}");
            }
            other => panic!("expected Unavailable, got {other:?}"),
        }
        task.abort();
        // Any other reset after the request was sent: the outcome is unknown.
        let (resetting, task) = resetting_server(h2::Reason::INTERNAL_ERROR).await;
        let client = Client::with_options(vec![resetting, closed], quick())?;
        let err = client.put("k", "v").await.expect_err("reset");
        assert!(matches!(err, Error::Indeterminate(_)), "{err:?}");
        task.abort();
        Ok(())
    }

    #[tokio::test]
    async fn session_reads_carry_the_session_seqno() -> Result<()> {
        let client = Client::new(vec!["127.0.0.1:1".into()])?;
        assert_eq!(client.read_options(ReadConsistency::Session).min_seqno, 0);
        client.advance_session(17);
        client.advance_session(5);
        assert_eq!(client.session_seqno(), 17);
        assert_eq!(client.read_options(ReadConsistency::Session).min_seqno, 17);
        assert_eq!(client.read_options(ReadConsistency::Local).min_seqno, 0);
        Ok(())
    }
}
