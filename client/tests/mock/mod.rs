//! An in-memory stand-in for a Trireme cluster, for testing the client
//! without the server: every mock node serves the same MVCC store (as if
//! replication were instant), certifies commits first-committer-wins against
//! their snapshot, and follows the server's error contract. A node can be
//! told to answer UNAVAILABLE, and records the requests it was sent.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::metadata::{BinaryMetadataValue, MetadataValue};
use tonic::transport::Server;
use tonic::{Request, Response, Status};
use trireme_client::proto;
use trireme_client::proto::cluster_server::{Cluster, ClusterServer};
use trireme_client::proto::kv_server::{Kv, KvServer};

/// Versions of one key, oldest first: `(seqno, value)`, `None` a tombstone.
pub type Versions = Vec<(u64, Option<Vec<u8>>)>;

/// The shared data: every version of every key, and the last seqno.
#[derive(Debug, Default)]
pub struct Store {
    /// The last committed seqno.
    pub seqno: u64,
    /// Versions of each key, oldest first; `None` is a tombstone.
    pub data: BTreeMap<Vec<u8>, Versions>,
    /// Commits to abort with a write conflict before certifying normally.
    pub force_conflicts: u32,
}

impl Store {
    /// The live value of `key` at `at`, with its version.
    fn read(&self, key: &[u8], at: u64) -> Option<(u64, Vec<u8>)> {
        let versions = self.data.get(key)?;
        let (seqno, value) = versions.iter().rev().find(|(s, _)| *s <= at)?;
        value.clone().map(|v| (*seqno, v))
    }

    /// Seqno of the last write of `key`, tombstones included (0: never).
    fn last_write(&self, key: &[u8]) -> u64 {
        self.data
            .get(key)
            .and_then(|v| v.last())
            .map_or(0, |(s, _)| *s)
    }

    fn apply(&mut self, mutations: &[proto::Mutation]) -> u64 {
        self.seqno += 1;
        for m in mutations {
            let value = (!m.delete).then(|| m.value.clone());
            self.data
                .entry(m.key.clone())
                .or_default()
                .push((self.seqno, value));
        }
        self.seqno
    }

    /// First-committer-wins certification, like the real certifier.
    fn certify(&mut self, req: &proto::CommitRequest) -> Result<(), Status> {
        if self.force_conflicts > 0 {
            self.force_conflicts -= 1;
            let key = req
                .mutations
                .first()
                .map(|m| m.key.clone())
                .unwrap_or_default();
            return Err(aborted("write_conflict", Some(&key), Some(self.seqno)));
        }
        for c in &req.compares {
            let version = self.read(&c.key, self.seqno).map_or(0, |(v, _)| v);
            if let Some(proto::compare::Target::Version(want)) = c.target {
                if want != version {
                    return Err(aborted("compare_failed", Some(&c.key), None));
                }
            }
        }
        let Some(snapshot) = req.snapshot else {
            return Ok(());
        };
        for m in &req.mutations {
            let last = self.last_write(&m.key);
            if last > snapshot {
                return Err(aborted("write_conflict", Some(&m.key), Some(last)));
            }
        }
        if req.isolation == proto::Isolation::Serializable as i32 {
            for r in &req.reads {
                let last = self.last_write(&r.key);
                if last > snapshot {
                    return Err(aborted("read_conflict", Some(&r.key), Some(last)));
                }
            }
            for range in &req.ranges {
                for (key, versions) in &self.data {
                    let inside = key.as_slice() >= range.start.as_slice()
                        && (range.end.is_empty() || key.as_slice() < range.end.as_slice());
                    let last = versions.last().map_or(0, |(s, _)| *s);
                    if inside && last > snapshot {
                        return Err(aborted("range_conflict", Some(key), Some(last)));
                    }
                }
            }
        }
        Ok(())
    }
}

/// An ABORTED status carrying the server's metadata.
pub fn aborted(kind: &'static str, key: Option<&[u8]>, seqno: Option<u64>) -> Status {
    let mut status = Status::aborted(format!("aborted: {kind} (mock)"));
    let md = status.metadata_mut();
    md.insert("trireme-abort", MetadataValue::from_static(kind));
    if let Some(key) = key {
        md.insert_bin(
            "trireme-conflict-key-bin",
            BinaryMetadataValue::from_bytes(key),
        );
    }
    if let Some(seqno) = seqno {
        md.insert("trireme-conflict-seqno", MetadataValue::from(seqno));
    }
    status
}

/// One mock node.
#[derive(Clone)]
pub struct MockNode {
    /// This node's id.
    pub id: u64,
    /// The address it listens on.
    pub addr: String,
    /// The data, shared by all nodes.
    pub store: Arc<Mutex<Store>>,
    /// Answer every request with UNAVAILABLE.
    pub unavailable: Arc<AtomicBool>,
    /// Refuse every request with RESOURCE_EXHAUSTED, as an overloaded node does.
    pub overloaded: Arc<AtomicBool>,
    /// Every request received, as `"rpc"` names.
    pub calls: Arc<Mutex<Vec<String>>>,
    /// The read options of every read received.
    pub reads: Arc<Mutex<Vec<proto::ReadOptions>>>,
    /// Every commit request received.
    pub commits: Arc<Mutex<Vec<proto::CommitRequest>>>,
}

impl MockNode {
    fn enter(&self, rpc: &str) -> Result<(), Status> {
        self.calls.lock().expect("lock").push(rpc.to_string());
        if self.overloaded.load(Ordering::SeqCst) {
            return Err(Status::resource_exhausted(format!(
                "overloaded: node {} already holds 1024 client requests in flight (max_requests_in_flight)",
                self.id
            )));
        }
        if self.unavailable.load(Ordering::SeqCst) {
            return Err(Status::unavailable(format!(
                "node {} is not in the primary component",
                self.id
            )));
        }
        Ok(())
    }

    /// How many requests of `rpc` this node received.
    pub fn count(&self, rpc: &str) -> usize {
        self.calls
            .lock()
            .expect("lock")
            .iter()
            .filter(|c| *c == rpc)
            .count()
    }

    fn read_at(&self, read: Option<proto::ReadOptions>, store: &Store) -> Result<u64, Status> {
        let read = read.unwrap_or_default();
        self.reads.lock().expect("lock").push(read);
        if read.min_seqno > store.seqno {
            return Err(Status::unavailable("min_seqno not applied (mock)"));
        }
        Ok(read.snapshot.unwrap_or(store.seqno))
    }
}

#[tonic::async_trait]
impl Kv for MockNode {
    type WatchStream = tokio_stream::Empty<Result<proto::WatchResponse, Status>>;

    async fn watch(
        &self,
        _request: Request<proto::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        Err(Status::unimplemented("the mock node does not watch"))
    }

    async fn lease_grant(
        &self,
        _request: Request<proto::LeaseGrantRequest>,
    ) -> Result<Response<proto::LeaseGrantResponse>, Status> {
        Err(Status::unimplemented("the mock node has no leases"))
    }

    async fn lease_revoke(
        &self,
        _request: Request<proto::LeaseRevokeRequest>,
    ) -> Result<Response<proto::LeaseRevokeResponse>, Status> {
        Err(Status::unimplemented("the mock node has no leases"))
    }

    async fn lease_keep_alive(
        &self,
        _request: Request<proto::LeaseKeepAliveRequest>,
    ) -> Result<Response<proto::LeaseKeepAliveResponse>, Status> {
        Err(Status::unimplemented("the mock node has no leases"))
    }

    async fn lease_time_to_live(
        &self,
        _request: Request<proto::LeaseTimeToLiveRequest>,
    ) -> Result<Response<proto::LeaseTimeToLiveResponse>, Status> {
        Err(Status::unimplemented("the mock node has no leases"))
    }

    async fn lease_list(
        &self,
        _request: Request<proto::LeaseListRequest>,
    ) -> Result<Response<proto::LeaseListResponse>, Status> {
        Err(Status::unimplemented("the mock node has no leases"))
    }

    async fn begin(
        &self,
        request: Request<proto::BeginRequest>,
    ) -> Result<Response<proto::BeginResponse>, Status> {
        self.enter("begin")?;
        let store = self.store.lock().expect("lock");
        let snapshot = self.read_at(request.into_inner().read, &store)?;
        Ok(Response::new(proto::BeginResponse { snapshot }))
    }

    async fn get(
        &self,
        request: Request<proto::GetRequest>,
    ) -> Result<Response<proto::GetResponse>, Status> {
        self.enter("get")?;
        let req = request.into_inner();
        let store = self.store.lock().expect("lock");
        let at = self.read_at(req.read, &store)?;
        let found = store.read(&req.key, at);
        Ok(Response::new(proto::GetResponse {
            found: found.is_some(),
            version: found.as_ref().map_or(0, |(v, _)| *v),
            value: found.map(|(_, v)| v).unwrap_or_default(),
            seqno: at,
        }))
    }

    async fn get_many(
        &self,
        request: Request<proto::GetManyRequest>,
    ) -> Result<Response<proto::GetManyResponse>, Status> {
        self.enter("get_many")?;
        let req = request.into_inner();
        let store = self.store.lock().expect("lock");
        let at = self.read_at(req.read, &store)?;
        let results = req
            .keys
            .iter()
            .map(|key| {
                let found = store.read(key, at);
                proto::GetResponse {
                    found: found.is_some(),
                    version: found.as_ref().map_or(0, |(v, _)| *v),
                    value: found.map(|(_, v)| v).unwrap_or_default(),
                    seqno: at,
                }
            })
            .collect();
        Ok(Response::new(proto::GetManyResponse { results, seqno: at }))
    }

    async fn scan(
        &self,
        request: Request<proto::ScanRequest>,
    ) -> Result<Response<proto::ScanResponse>, Status> {
        self.enter("scan")?;
        let req = request.into_inner();
        let store = self.store.lock().expect("lock");
        let at = self.read_at(req.read, &store)?;
        // A small page size exercises the client's paging.
        let limit = if req.limit == 0 {
            2
        } else {
            req.limit as usize
        };
        let mut kvs = Vec::new();
        let mut more = false;
        for key in store.data.keys() {
            let inside = if req.prefix.is_empty() {
                key.as_slice() >= req.start.as_slice()
                    && (req.end.is_empty() || key.as_slice() < req.end.as_slice())
            } else {
                key.starts_with(&req.prefix)
            };
            if !inside {
                continue;
            }
            if let Some((version, value)) = store.read(key, at) {
                if kvs.len() == limit {
                    more = true;
                    break;
                }
                kvs.push(proto::KeyValue {
                    key: key.clone(),
                    value: if req.keys_only { Vec::new() } else { value },
                    version,
                    ..Default::default()
                });
            }
        }
        Ok(Response::new(proto::ScanResponse {
            kvs,
            seqno: at,
            more,
        }))
    }

    async fn put(
        &self,
        request: Request<proto::PutRequest>,
    ) -> Result<Response<proto::PutResponse>, Status> {
        self.enter("put")?;
        let req = request.into_inner();
        if req.key.len() > 16 {
            return Err(Status::invalid_argument(format!(
                "key is {} bytes, over the limit of 16 bytes (max_key_bytes)",
                req.key.len()
            )));
        }
        let commit = proto::CommitRequest {
            mutations: vec![proto::Mutation {
                key: req.key.clone(),
                value: req.value,
                delete: false,
                lease: 0,
            }],
            compares: req
                .if_version
                .map(|v| proto::Compare {
                    key: req.key,
                    target: Some(proto::compare::Target::Version(v)),
                })
                .into_iter()
                .collect(),
            ..Default::default()
        };
        let mut store = self.store.lock().expect("lock");
        store.certify(&commit)?;
        let seqno = store.apply(&commit.mutations);
        Ok(Response::new(proto::PutResponse { seqno }))
    }

    async fn delete(
        &self,
        request: Request<proto::DeleteRequest>,
    ) -> Result<Response<proto::DeleteResponse>, Status> {
        self.enter("delete")?;
        let req = request.into_inner();
        let commit = proto::CommitRequest {
            mutations: vec![proto::Mutation {
                key: req.key.clone(),
                value: Vec::new(),
                delete: true,
                lease: 0,
            }],
            compares: req
                .if_version
                .map(|v| proto::Compare {
                    key: req.key,
                    target: Some(proto::compare::Target::Version(v)),
                })
                .into_iter()
                .collect(),
            ..Default::default()
        };
        let mut store = self.store.lock().expect("lock");
        store.certify(&commit)?;
        let seqno = store.apply(&commit.mutations);
        Ok(Response::new(proto::DeleteResponse { seqno }))
    }

    async fn commit(
        &self,
        request: Request<proto::CommitRequest>,
    ) -> Result<Response<proto::CommitResponse>, Status> {
        self.enter("commit")?;
        let req = request.into_inner();
        self.commits.lock().expect("lock").push(req.clone());
        let mut store = self.store.lock().expect("lock");
        store.certify(&req)?;
        let seqno = store.apply(&req.mutations);
        Ok(Response::new(proto::CommitResponse { seqno }))
    }
}

#[tonic::async_trait]
impl Cluster for MockNode {
    async fn status(
        &self,
        _request: Request<proto::StatusRequest>,
    ) -> Result<Response<proto::StatusResponse>, Status> {
        self.enter("status")?;
        let seqno = self.store.lock().expect("lock").seqno;
        Ok(Response::new(proto::StatusResponse {
            node_id: self.id,
            role: if self.id == 1 { "leader" } else { "follower" }.into(),
            leader_id: 1,
            members: vec![proto::Member {
                id: 1,
                address: "leader:7420".into(),
                role: "voter".into(),
                up: true,
                stalled: false,
                client_address: String::new(),
            }],
            applied_seqno: seqno,
            committed_seqno: seqno,
            term: 2,
            state: "SYNCED".into(),
            address: self.addr.clone(),
            ..Default::default()
        }))
    }

    async fn checksum(
        &self,
        _request: Request<proto::ChecksumRequest>,
    ) -> Result<Response<proto::ChecksumResponse>, Status> {
        self.enter("checksum")?;
        let store = self.store.lock().expect("lock");
        let keys = store
            .data
            .keys()
            .filter(|k| store.read(k, store.seqno).is_some())
            .count() as u64;
        Ok(Response::new(proto::ChecksumResponse {
            seqno: store.seqno,
            checksum: 0xfeed_0000 + store.seqno,
            keys,
            verdict_chain: store.seqno,
        }))
    }

    async fn join(
        &self,
        request: Request<proto::JoinRequest>,
    ) -> Result<Response<proto::JoinResponse>, Status> {
        self.enter("join")?;
        let req = request.into_inner();
        Ok(Response::new(proto::JoinResponse {
            leader_id: 1,
            members: vec![proto::Member {
                id: req.node_id,
                address: req.address,
                role: "learner".into(),
                up: true,
                stalled: false,
                client_address: String::new(),
            }],
        }))
    }

    async fn leave(
        &self,
        _request: Request<proto::LeaveRequest>,
    ) -> Result<Response<proto::LeaveResponse>, Status> {
        self.enter("leave")?;
        Ok(Response::new(proto::LeaveResponse::default()))
    }

    async fn members(
        &self,
        _request: Request<proto::MembersRequest>,
    ) -> Result<Response<proto::MembersResponse>, Status> {
        self.enter("members")?;
        Ok(Response::new(proto::MembersResponse::default()))
    }

    async fn get_config(
        &self,
        _request: Request<proto::GetConfigRequest>,
    ) -> Result<Response<proto::ClusterConfig>, Status> {
        self.enter("get_config")?;
        Ok(Response::new(proto::ClusterConfig {
            node_id: self.id,
            ..Default::default()
        }))
    }

    async fn set_config(
        &self,
        _request: Request<proto::SetConfigRequest>,
    ) -> Result<Response<proto::ClusterConfig>, Status> {
        self.enter("set_config")?;
        Err(Status::unimplemented("the mock has no cluster parameters"))
    }

    async fn ping(
        &self,
        _request: Request<proto::PingRequest>,
    ) -> Result<Response<proto::PingResponse>, Status> {
        self.enter("ping")?;
        Ok(Response::new(proto::PingResponse {
            node_id: self.id,
            ..Default::default()
        }))
    }

    async fn campaign(
        &self,
        _request: Request<proto::CampaignRequest>,
    ) -> Result<Response<proto::CampaignResponse>, Status> {
        self.enter("campaign")?;
        Err(Status::unimplemented("the mock has no elections"))
    }
}

/// A set of mock nodes sharing one store.
pub struct MockCluster {
    /// The nodes, in order.
    pub nodes: Vec<MockNode>,
    /// The shared store.
    pub store: Arc<Mutex<Store>>,
}

impl MockCluster {
    /// Starts `n` nodes on port-0 listeners in the current runtime.
    pub async fn start(n: usize) -> std::io::Result<MockCluster> {
        let store = Arc::new(Mutex::new(Store::default()));
        let mut nodes = Vec::new();
        for i in 0..n {
            let listener = TcpListener::bind("127.0.0.1:0").await?;
            let node = MockNode {
                id: i as u64 + 1,
                addr: listener.local_addr()?.to_string(),
                store: store.clone(),
                unavailable: Arc::new(AtomicBool::new(false)),
                overloaded: Arc::new(AtomicBool::new(false)),
                calls: Arc::default(),
                reads: Arc::default(),
                commits: Arc::default(),
            };
            let router = Server::builder()
                .add_service(KvServer::new(node.clone()))
                .add_service(ClusterServer::new(node.clone()));
            tokio::spawn(router.serve_with_incoming(TcpListenerStream::new(listener)));
            nodes.push(node);
        }
        Ok(MockCluster { nodes, store })
    }

    /// The nodes' addresses.
    pub fn endpoints(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.addr.clone()).collect()
    }
}
