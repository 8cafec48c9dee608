//! The `Kv` service: reads, writes and transactions on any node.

use std::sync::Arc;

use tonic::{Request, Response, Status};
use trireme_proto::v1 as pb;
use trireme_proto::v1::kv_server::Kv;

use super::convert;
use super::status::to_status;
use crate::auth::{Access, Kind};
use crate::node::Node;
use crate::txn::{reserved, KeyRange, Mutation, Seqno, Value};
use crate::watch::Selector;

/// The client API.
pub struct KvService {
    node: Arc<Node>,
}

impl KvService {
    /// Serves `node`.
    pub fn new(node: Arc<Node>) -> Self {
        KvService { node }
    }
}

/// Each call is timed by [`super::latency`], wrapped around the whole service.
/// The stream of a `Watch` call.
pub type WatchStream =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<pb::WatchResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Kv for KvService {
    type WatchStream = WatchStream;

    async fn watch(
        &self,
        req: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let access = Access::of(req.extensions()).map_err(to_status)?;
        let mut spec = convert::watch_spec(req.into_inner()).map_err(to_status)?;
        spec.selector = user_selector(spec.selector).map_err(to_status)?;
        // Checked when the watch starts (as etcd does): a permission
        // revoked later does not end a running watch.
        match &spec.selector {
            Selector::Key(key) => access.check_key(Kind::Read, key),
            Selector::Prefix(prefix) => access.check_range(Kind::Read, &KeyRange::prefix(prefix)),
            Selector::Range(range) => access.check_range(Kind::Read, range),
        }
        .map_err(to_status)?;
        let mut rx = self.node.watch(spec);
        // A draining node ends its watches (UNAVAILABLE, "shutting down"):
        // the client resumes on another node from the last seqno it saw, and
        // the server's graceful stop does not wait on streams that never end.
        let draining = drained(self.node.drain_state().subscribe());
        let (tx, out) = tokio::sync::mpsc::channel(16);
        tokio::spawn(async move {
            tokio::pin!(draining);
            loop {
                let item = tokio::select! {
                    item = rx.recv() => match item {
                        Some(item) => item,
                        None => return,
                    },
                    () = &mut draining => {
                        let stop = Status::unavailable(crate::node::drain::SHUTTING_DOWN);
                        let _ = tx.send(Err(stop)).await;
                        return;
                    }
                };
                let item = match item {
                    Ok(msg) => Ok(convert::watch_response(msg)),
                    Err(crate::watch::WatchError::Compacted { horizon }) => {
                        Err(Status::out_of_range(
                            crate::watch::WatchError::Compacted { horizon }.to_string(),
                        ))
                    }
                    Err(crate::watch::WatchError::Other(e)) => Err(to_status(e)),
                };
                if tx.send(item).await.is_err() {
                    return;
                }
            }
        });
        let stream = tokio_stream::wrappers::ReceiverStream::new(out);
        Ok(Response::new(Box::pin(stream)))
    }

    async fn begin(
        &self,
        req: Request<pb::BeginRequest>,
    ) -> Result<Response<pb::BeginResponse>, Status> {
        Access::of(req.extensions()).map_err(to_status)?;
        let opts = convert::read_options(req.into_inner().read).map_err(to_status)?;
        let snapshot = self.node.begin(opts.consistency).await.map_err(to_status)?;
        Ok(Response::new(pb::BeginResponse { snapshot }))
    }

    async fn get(&self, req: Request<pb::GetRequest>) -> Result<Response<pb::GetResponse>, Status> {
        let access = Access::of(req.extensions()).map_err(to_status)?;
        let req = req.into_inner();
        reserved::check_client_key(&req.key).map_err(to_status)?;
        access.check_key(Kind::Read, &req.key).map_err(to_status)?;
        let opts = convert::read_options(req.read).map_err(to_status)?;
        let (found, seqno) = self.node.get(&req.key, opts).await.map_err(to_status)?;
        Ok(Response::new(get_response(found, seqno)))
    }

    async fn get_many(
        &self,
        req: Request<pb::GetManyRequest>,
    ) -> Result<Response<pb::GetManyResponse>, Status> {
        let access = Access::of(req.extensions()).map_err(to_status)?;
        let req = req.into_inner();
        for key in &req.keys {
            reserved::check_client_key(key).map_err(to_status)?;
            access.check_key(Kind::Read, key).map_err(to_status)?;
        }
        let opts = convert::read_options(req.read).map_err(to_status)?;
        let (found, seqno) = self
            .node
            .get_many(req.keys, opts)
            .await
            .map_err(to_status)?;
        let results = found
            .into_iter()
            .map(|found| get_response(found, seqno))
            .collect();
        Ok(Response::new(pb::GetManyResponse { results, seqno }))
    }

    async fn scan(
        &self,
        req: Request<pb::ScanRequest>,
    ) -> Result<Response<pb::ScanResponse>, Status> {
        let access = Access::of(req.extensions()).map_err(to_status)?;
        let req = req.into_inner();
        let range = convert::scan_range(&req)
            .and_then(reserved::clip_client_range)
            .map_err(to_status)?;
        access.check_range(Kind::Read, &range).map_err(to_status)?;
        let opts = convert::read_options(req.read).map_err(to_status)?;
        let (pairs, more, seqno) = self
            .node
            .scan(range, req.limit as usize, req.keys_only, opts)
            .await
            .map_err(to_status)?;
        let kvs = pairs
            .into_iter()
            .map(|v| pb::KeyValue {
                key: v.key,
                value: v.value,
                version: v.version,
                create_seqno: v.create_seqno,
                modifications: v.modifications,
                lease: v.lease,
            })
            .collect();
        Ok(Response::new(pb::ScanResponse { kvs, seqno, more }))
    }

    async fn put(&self, req: Request<pb::PutRequest>) -> Result<Response<pb::PutResponse>, Status> {
        let access = Access::of(req.extensions()).map_err(to_status)?;
        let req = req.into_inner();
        let mut ws = convert::single(
            Mutation::Put {
                key: req.key,
                value: req.value,
                lease: req.lease,
            },
            req.if_version,
        );
        reserved::check_client_write_set(&mut ws).map_err(to_status)?;
        access.check_write_set(&ws).map_err(to_status)?;
        self.node
            .leases()
            .attach(&mut ws)
            .await
            .map_err(to_status)?;
        let seqno = self.node.commit(ws, false).await.map_err(to_status)?;
        Ok(Response::new(pb::PutResponse { seqno }))
    }

    async fn delete(
        &self,
        req: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        let access = Access::of(req.extensions()).map_err(to_status)?;
        let req = req.into_inner();
        let mut ws = convert::single(Mutation::Delete { key: req.key }, req.if_version);
        reserved::check_client_write_set(&mut ws).map_err(to_status)?;
        access.check_write_set(&ws).map_err(to_status)?;
        let seqno = self.node.commit(ws, false).await.map_err(to_status)?;
        Ok(Response::new(pb::DeleteResponse { seqno }))
    }

    async fn commit(
        &self,
        req: Request<pb::CommitRequest>,
    ) -> Result<Response<pb::CommitResponse>, Status> {
        let access = Access::of(req.extensions()).map_err(to_status)?;
        let req = req.into_inner();
        let server_retry = req.server_retry;
        let mut ws = convert::write_set(req).map_err(to_status)?;
        reserved::check_client_write_set(&mut ws).map_err(to_status)?;
        access.check_write_set(&ws).map_err(to_status)?;
        self.node
            .leases()
            .attach(&mut ws)
            .await
            .map_err(to_status)?;
        let seqno = self
            .node
            .commit(ws, server_retry)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::CommitResponse { seqno }))
    }

    async fn lease_grant(
        &self,
        req: Request<pb::LeaseGrantRequest>,
    ) -> Result<Response<pb::LeaseGrantResponse>, Status> {
        let req = req.into_inner();
        let grant = self
            .node
            .leases()
            .grant(req.id, req.ttl)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::LeaseGrantResponse {
            id: grant.id,
            ttl: grant.ttl,
        }))
    }

    async fn lease_revoke(
        &self,
        req: Request<pb::LeaseRevokeRequest>,
    ) -> Result<Response<pb::LeaseRevokeResponse>, Status> {
        let id = req.into_inner().id;
        let seqno = self.node.leases().revoke(id).await.map_err(to_status)?;
        Ok(Response::new(pb::LeaseRevokeResponse { seqno }))
    }

    async fn lease_keep_alive(
        &self,
        req: Request<pb::LeaseKeepAliveRequest>,
    ) -> Result<Response<pb::LeaseKeepAliveResponse>, Status> {
        let id = req.into_inner().id;
        let ttl = self.node.leases().keep_alive(id).await.map_err(to_status)?;
        Ok(Response::new(pb::LeaseKeepAliveResponse { id, ttl }))
    }

    async fn lease_time_to_live(
        &self,
        req: Request<pb::LeaseTimeToLiveRequest>,
    ) -> Result<Response<pb::LeaseTimeToLiveResponse>, Status> {
        let req = req.into_inner();
        let info = self
            .node
            .leases()
            .time_to_live(req.id, req.keys)
            .await
            .map_err(to_status)?;
        Ok(Response::new(match info {
            Some(info) => pb::LeaseTimeToLiveResponse {
                id: info.id,
                found: true,
                granted_ttl: info.granted_ttl,
                remaining_ttl: info.remaining_ttl,
                keys: info.keys,
            },
            None => pb::LeaseTimeToLiveResponse {
                id: req.id,
                ..Default::default()
            },
        }))
    }

    async fn lease_list(
        &self,
        _req: Request<pb::LeaseListRequest>,
    ) -> Result<Response<pb::LeaseListResponse>, Status> {
        let ids = self.node.leases().list().await.map_err(to_status)?;
        Ok(Response::new(pb::LeaseListResponse { ids }))
    }
}

/// A client's watch selector kept to the user key space: a key in the
/// reserved range is refused; a prefix or range reaching into it is clipped
/// (`txn::reserved`).
fn user_selector(selector: Selector) -> crate::error::Result<Selector> {
    match selector {
        Selector::Key(key) => {
            reserved::check_client_key(&key)?;
            Ok(Selector::Key(key))
        }
        Selector::Prefix(prefix) => {
            let range = KeyRange::prefix(&prefix);
            if range
                .end
                .as_deref()
                .is_some_and(|end| end <= reserved::PREFIX)
            {
                Ok(Selector::Prefix(prefix))
            } else {
                Ok(Selector::Range(reserved::clip_client_range(range)?))
            }
        }
        Selector::Range(range) => Ok(Selector::Range(reserved::clip_client_range(range)?)),
    }
}

/// Resolves once the node drains (never, if the node is dropped first).
async fn drained(mut draining: tokio::sync::watch::Receiver<bool>) {
    while !*draining.borrow_and_update() {
        if draining.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// One key's answer, read at `seqno`: its newest version there, if any.
fn get_response(found: Option<(Seqno, Value)>, seqno: Seqno) -> pb::GetResponse {
    match found {
        Some((version, value)) => pb::GetResponse {
            found: true,
            value,
            version,
            seqno,
        },
        None => pb::GetResponse {
            seqno,
            ..Default::default()
        },
    }
}
