//! openraft's RPCs over tonic: the client side. The server side is
//! `api::raft`. Payloads are openraft types inside a `RaftMessage`, in a
//! `crate::codec` envelope (magic, format version, the message's tag);
//! replies carry `Result<Response, RaftError>` the same way.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::BasicNode;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::transport::{Channel, Endpoint};
use trireme_proto::v1::raft_client::RaftClient;
use trireme_proto::v1::RaftMessage;

use super::types::TypeConfig;
use crate::codec::{self, PeerMessage};
use crate::error::{Error, Result};

mod bulk;
pub use bulk::BulkSettings;

/// Per peer address: Raft calls failed in a row, and when its channel was last dropped.
type Failures = HashMap<String, (u32, Option<tokio::time::Instant>)>;

/// Lazily connected gRPC channels to peers, by address, shared by Raft
/// replication, write-set forwarding and read-index requests.
#[derive(Clone, Default)]
pub struct Peers {
    channels: Arc<Mutex<HashMap<String, Channel>>>,
    /// Per address: Raft calls failed in a row, and when its channel was last dropped.
    failures: Arc<Mutex<Failures>>,
    /// State transfers this node sent (it is a donor while sending).
    pub transfers: Arc<Transfers>,
    /// Makes a channel from a configured endpoint; `None`: tonic's TCP connector.
    connector: Option<Connector>,
    /// What the failure detector attaches to AppendEntries and takes from
    /// the replies (set once the failure detector exists).
    health: Arc<OnceLock<Arc<dyn HealthHook>>>,
}

/// What the failure detector sends and takes along with AppendEntries: a
/// leader that hears from a follower through its heartbeats need not also
/// ping it, nor the follower the leader (see `cluster::health`).
pub trait HealthHook: Send + Sync {
    /// Attaches to an AppendEntries call to `target` what the failure
    /// detector has for it; returns a token that comes back to
    /// [`HealthHook::answered`] with the reply.
    fn outgoing(&self, target: u64, msg: &mut RaftMessage) -> u64;
    /// Takes what `target` attached to its reply to the call `outgoing`
    /// returned `token` for. Unchecked peer input.
    fn answered(&self, target: u64, reply: &mut RaftMessage, token: u64);
}

/// Raft calls to a peer that fail or time out in a row before its channel is replaced.
pub const REBUILD_AFTER_FAILURES: u32 = 3;
/// The shortest time between two replacements of a peer's channel: a
/// replaced channel may leave a name lookup running for seconds.
pub const REBUILD_EVERY: Duration = Duration::from_secs(1);

/// Turns a configured peer [`Endpoint`] into a lazily connected [`Channel`],
/// e.g. with `Endpoint::connect_with_connector_lazy` over another transport
/// (the simulation's network). It must not block or fail.
pub type Connector = Arc<dyn Fn(Endpoint) -> Channel + Send + Sync>;

/// Counts snapshots sent to other nodes.
#[derive(Debug, Default)]
pub struct Transfers {
    /// Snapshots sent completely.
    pub sent: std::sync::atomic::AtomicU64,
    /// When the last snapshot chunk went out.
    last_chunk: Mutex<Option<tokio::time::Instant>>,
}

impl Transfers {
    /// Whether a snapshot chunk went out within the last two seconds.
    pub fn is_donor(&self) -> bool {
        self.last_chunk
            .lock()
            .expect("transfers lock")
            .is_some_and(|t| t.elapsed() < Duration::from_secs(2))
    }

    /// Whether a snapshot chunk went out within `window` (a receiver may
    /// still be installing the last one).
    pub fn sent_within(&self, window: Duration) -> bool {
        self.last_chunk
            .lock()
            .expect("transfers lock")
            .is_some_and(|t| t.elapsed() < window)
    }

    fn chunk_sent(&self, done: bool) {
        *self.last_chunk.lock().expect("transfers lock") = Some(tokio::time::Instant::now());
        if done {
            self.sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

impl Peers {
    /// Peers whose channels `connector` makes (instead of tonic's TCP connector).
    pub fn with_connector(connector: Connector) -> Self {
        Peers {
            connector: Some(connector),
            ..Peers::default()
        }
    }

    /// The channel to `addr` (created on first use; never fails: it connects lazily).
    pub fn channel(&self, addr: &str) -> Result<Channel> {
        let mut map = self.channels.lock().expect("peers lock");
        if let Some(c) = map.get(addr) {
            return Ok(c.clone());
        }
        let endpoint = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| Error::InvalidInput(format!("bad peer address {addr:?}: {e}")))?
            .connect_timeout(Duration::from_millis(500))
            .tcp_nodelay(true)
            // Without HTTP/2 keepalive a tonic channel stayed stuck on a dead connection after a partition healed.
            .http2_keep_alive_interval(Duration::from_millis(500))
            .keep_alive_timeout(Duration::from_secs(1))
            .keep_alive_while_idle(true);
        let channel = match &self.connector {
            Some(connect) => connect(endpoint),
            None => endpoint.connect_lazy(),
        };
        map.insert(addr.to_string(), channel.clone());
        Ok(channel)
    }

    /// Records how a Raft call to `addr` ended: an answer (`ok`), or a
    /// transport error or timeout. After [`REBUILD_AFTER_FAILURES`] in a row
    /// the cached channel is dropped, at most once per [`REBUILD_EVERY`], and
    /// the next call makes a new one. A channel can stay stuck where its own
    /// reconnection never gets it out in time: a name lookup started while
    /// the peer's container was gone went on for 5 to 10 s after it came
    /// back (Docker's resolver on an internal network), and every call queued
    /// behind it timed out at openraft's 100 ms.
    pub fn record(&self, addr: &str, ok: bool) {
        let mut failures = self.failures.lock().expect("peers lock");
        if ok {
            if let Some(f) = failures.get_mut(addr) {
                f.0 = 0;
            }
            return;
        }
        let f = failures.entry(addr.to_string()).or_default();
        f.0 += 1;
        let due = f.1.is_none_or(|t| t.elapsed() >= REBUILD_EVERY);
        if f.0 >= REBUILD_AFTER_FAILURES && due {
            *f = (0, Some(tokio::time::Instant::now()));
            if self
                .channels
                .lock()
                .expect("peers lock")
                .remove(addr)
                .is_some()
            {
                tracing::info!(peer = addr, "calls to this peer keep failing: new channel");
            }
        }
    }

    /// Routes the answers peers attach to AppendEntries replies to `hook`;
    /// only the first hook set counts.
    pub fn set_health_hook(&self, hook: Arc<dyn HealthHook>) {
        let _ = self.health.set(hook);
    }

    /// A Raft-service client for `addr`.
    pub fn raft_client(&self, addr: &str) -> Result<RaftClient<Channel>> {
        Ok(RaftClient::new(self.channel(addr)?)
            .max_decoding_message_size(256 << 20)
            .max_encoding_message_size(256 << 20))
    }
}

/// Encodes a peer message for the wire, under its tag.
pub fn encode<T: Serialize + PeerMessage>(value: &T) -> Result<RaftMessage> {
    Ok(RaftMessage {
        payload: codec::encode(T::TAG, value)?,
        data: Vec::new(),
        health: None,
        mark: 0,
    })
}

/// Decodes a peer message from the wire; a newer format version or another
/// message's tag is refused with an error that names both.
pub fn decode<T: DeserializeOwned + PeerMessage>(msg: &RaftMessage) -> Result<T> {
    codec::decode(&msg.payload, T::TAG, "peer message")
}

/// Creates [`PeerNetwork`]s for openraft.
#[derive(Clone)]
pub struct NetworkFactory {
    peers: Peers,
    bulk: BulkSettings,
}

impl NetworkFactory {
    /// A factory sharing these peer channels.
    pub fn new(peers: Peers) -> Self {
        NetworkFactory {
            peers,
            bulk: BulkSettings::default(),
        }
    }

    /// The same factory, sending large AppendEntries as `bulk` says.
    pub fn with_bulk(self, bulk: BulkSettings) -> Self {
        NetworkFactory { bulk, ..self }
    }
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = PeerNetwork;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> PeerNetwork {
        PeerNetwork {
            target,
            addr: node.addr.clone(),
            peers: self.peers.clone(),
            bulk: self.bulk,
            in_flight: None,
        }
    }
}

/// The RPC client to one peer.
pub struct PeerNetwork {
    target: u64,
    addr: String,
    peers: Peers,
    bulk: BulkSettings,
    /// The large AppendEntries being sent in the background, if any.
    in_flight: Option<bulk::InFlight>,
}

type RpcResult<T, E> = std::result::Result<T, RPCError<u64, BasicNode, E>>;

impl PeerNetwork {
    async fn call<Req, Resp, E>(
        &self,
        kind: Kind,
        req: &Req,
        data: Vec<u8>,
        option: &RPCOption,
    ) -> RpcResult<Resp, E>
    where
        Req: Serialize + PeerMessage,
        Resp: DeserializeOwned,
        std::result::Result<Resp, E>: PeerMessage,
        E: std::error::Error + DeserializeOwned,
    {
        let unreachable = |e: &dyn std::fmt::Display| {
            RPCError::Unreachable(Unreachable::new(&std::io::Error::other(e.to_string())))
        };
        let mut client = self
            .peers
            .raft_client(&self.addr)
            .map_err(|e| unreachable(&e))?;
        let mut msg = encode(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        msg.data = data;
        let health = match kind {
            Kind::Append => self
                .peers
                .health
                .get()
                .map(|hook| (hook, hook.outgoing(self.target, &mut msg))),
            Kind::Vote | Kind::Snapshot => None,
        };
        let mut request = tonic::Request::new(msg);
        request.set_timeout(option.hard_ttl());
        // Dropped unanswered (openraft's own timeout) counts as a failure.
        let mut outcome = Outcome {
            peers: &self.peers,
            addr: &self.addr,
            ok: false,
        };
        let reply = match kind {
            Kind::Append => client.append_entries(request).await,
            Kind::Vote => client.vote(request).await,
            Kind::Snapshot => client.install_snapshot(request).await,
        };
        outcome.ok = reply
            .as_ref()
            .map_or_else(|status| !transport_failure(status.code()), |_| true);
        drop(outcome);
        let reply = reply.map_err(|status| match status.code() {
            tonic::Code::Unavailable | tonic::Code::Cancelled | tonic::Code::Unknown => {
                unreachable(&status)
            }
            _ => RPCError::Network(NetworkError::new(&std::io::Error::other(
                status.to_string(),
            ))),
        })?;
        let mut reply = reply.into_inner();
        if let Some((hook, token)) = health {
            hook.answered(self.target, &mut reply, token);
        }
        let result: std::result::Result<Resp, E> =
            decode(&reply).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| {
            RPCError::RemoteError(RemoteError::new_with_node(
                self.target,
                BasicNode::new(&self.addr),
                e,
            ))
        })
    }
}

/// Whether a call's status says the peer was not reached or did not answer
/// in time (as opposed to an answer, even a refusal).
fn transport_failure(code: tonic::Code) -> bool {
    matches!(
        code,
        tonic::Code::Unavailable
            | tonic::Code::Cancelled
            | tonic::Code::Unknown
            | tonic::Code::DeadlineExceeded
    )
}

/// Reports a Raft call's outcome to [`Peers::record`] when dropped, also
/// when the call is dropped before it ends.
struct Outcome<'a> {
    peers: &'a Peers,
    addr: &'a str,
    ok: bool,
}

impl Drop for Outcome<'_> {
    fn drop(&mut self) {
        self.peers.record(self.addr, self.ok);
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Append,
    Vote,
    Snapshot,
}

impl RaftNetwork<TypeConfig> for PeerNetwork {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<u64>, RaftError<u64>> {
        self.append(rpc, option).await
    }

    async fn install_snapshot(
        &mut self,
        mut rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<u64>, RaftError<u64, InstallSnapshotError>> {
        let done = rpc.done;
        // The chunk travels as raw bytes, not through bincode's per-byte encoding.
        let data = std::mem::take(&mut rpc.data);
        let result = self.call(Kind::Snapshot, &rpc, data, &option).await;
        if result.is_ok() {
            self.peers.transfers.chunk_sent(done);
        }
        result
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<u64>, RaftError<u64>> {
        self.call(Kind::Vote, &rpc, Vec::new(), &option).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// A channel that failed calls in a row is replaced (not more than once
    /// per `REBUILD_EVERY`); an answer in between resets the count.
    #[tokio::test]
    async fn a_peer_channel_is_replaced_after_failures_in_a_row() {
        let made = Arc::new(AtomicUsize::new(0));
        let counter = made.clone();
        let peers = Peers::with_connector(Arc::new(move |endpoint: Endpoint| {
            counter.fetch_add(1, Ordering::SeqCst);
            endpoint.connect_lazy()
        }));
        let addr = "127.0.0.1:9";
        peers.channel(addr).unwrap();
        assert_eq!(made.load(Ordering::SeqCst), 1);
        for _ in 0..REBUILD_AFTER_FAILURES - 1 {
            peers.record(addr, false);
        }
        peers.record(addr, true);
        peers.record(addr, false);
        peers.channel(addr).unwrap();
        assert_eq!(made.load(Ordering::SeqCst), 1, "an answer resets the count");
        for _ in 1..REBUILD_AFTER_FAILURES {
            peers.record(addr, false);
        }
        peers.channel(addr).unwrap();
        assert_eq!(
            made.load(Ordering::SeqCst),
            2,
            "replaced after failures in a row"
        );
        for _ in 0..REBUILD_AFTER_FAILURES * 2 {
            peers.record(addr, false);
        }
        peers.channel(addr).unwrap();
        assert_eq!(
            made.load(Ordering::SeqCst),
            2,
            "at most once per REBUILD_EVERY"
        );
    }
}
