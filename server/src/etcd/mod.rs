//! etcd's v3 gRPC API on its own listener (`--etcd-listen`), so that
//! etcdctl and etcd's client libraries work against any node.
//!
//! What it owns: the etcd services (`kv`: `etcdserverpb.KV`; `watch`:
//! `Watch`; `lease`: `Lease`, over the node's leases; `cluster`:
//! `Cluster.MemberList` and `Maintenance.Status`), the
//! conversions between etcd's messages and the node's types (`convert`),
//! per-key metadata as etcd presents it (`meta`), and [`serve`]. Like
//! `api`, it decodes, calls the node's operations and encodes; it reads and
//! writes only through [`Node`]'s methods, so every write is ordered and
//! certified like any other. It may import `node`, `txn`, `watch`, `error`,
//! `admission` and `api::to_status`; nothing imports it but `main.rs`.
//!
//! # Revisions are seqnos
//!
//! etcd's revision is Trireme's seqno: the index of the Raft log entry that
//! carried a write. A key's `mod_revision` is the seqno of its newest write;
//! a response header's `revision` is the seqno the answer reflects (the read
//! seqno of a read, the commit seqno of a write). Trireme batches several
//! write sets into one log entry, and they share its seqno: two `Put`s from
//! different clients may answer with the same revision, and a watch
//! delivers their events in one response, in key order (the last write of
//! a key within one seqno is the one stored and delivered). Revisions
//! therefore increase with every entry, not with every write, and skip the
//! seqnos of entries that carried no client write (membership, parameters).
//! A client that needs "one revision per write" sees the order it needs:
//! revisions never go backwards and a later commit never gets a smaller one.
//!
//! # Response headers
//!
//! `member_id` is the node id, `raft_term` the node's current Raft term and
//! `revision` as above. `cluster_id` is 0: Trireme has no cluster identity
//! yet (etcd clients do not check it).
//!
//! # Transactions
//!
//! A `Txn` (and a `Put` or `DeleteRange` that needs to know what was there:
//! `prev_kv`, a range delete) runs like one of Trireme's own transactions:
//! it reads at a linearizable snapshot `S`, evaluates its compares at `S`
//! and picks the success or failure branch, runs that branch's reads at `S`,
//! and commits the branch's writes as one SERIALIZABLE write set whose read
//! set holds every key and range the compares and reads touched. A
//! concurrent write to any of them, from any node, aborts it in
//! certification, and the whole `Txn` runs again from a new snapshot, up to
//! [`TXN_ATTEMPTS`] times (then ABORTED, which etcd never returns: the
//! cluster is too contended for this transaction). So a `Txn` that succeeds
//! behaves as if it ran alone at its commit seqno, on every node, which is
//! what etcd's single-leader `Txn` gives. A `Txn` that writes nothing
//! commits nothing and answers with revision `S`. A `Put` without `prev_kv`
//! is a blind write (no read set), as in etcd it always succeeds.
//!
//! Differences from etcd inside a `Txn`: a `Range` reads the snapshot `S`,
//! not the same `Txn`'s earlier writes; writing one key twice is refused
//! (etcd's "duplicate key given in txn request"), as is a `Txn` over the
//! write-set limits (`max_ops`, `max_write_set_bytes`, `max_reads`).
//!
//! # Ranges, revisions and Compact
//!
//! `Range` follows etcd's key conventions: an empty `range_end` is one key,
//! `range_end = "\0"` is every key from `key` on, and `key = range_end =
//! "\0"` every key. A `revision` reads at that seqno: above the node's
//! newest it is etcd's "required revision is a future revision"; below the
//! node's history horizon it is etcd's "required revision has been
//! compacted" (OUT_OF_RANGE in both cases). The horizon is per node: each
//! node garbage-collects versions older than the certification window
//! (`cert_window`) by itself, so how far back a read or watch reaches can
//! differ between nodes by a little. `Compact` therefore removes nothing: it
//! checks the revision (future or already compacted fail as in etcd) and
//! answers; history goes as `cert_window` says. A `Range` returns at most
//! `max_scan_limit` keys; `count` is exact when the range holds at most that
//! many, and a range holding more is refused unless the request sets a
//! `limit` (then `count` is a lower bound and `more` is set). Sorting by
//! key, mod revision or value is done here on what was read (so within that
//! bound).
//!
//! # Limits and errors
//!
//! Trireme's key and value limits apply; a key in Trireme's reserved range
//! (`0xFF 0xFF`) is refused and ranges are clipped below it. Errors keep
//! etcd's codes and, where etcd has one, its message (clients match on
//! them): an empty key is INVALID_ARGUMENT "etcdserver: key is not
//! provided", a limit is INVALID_ARGUMENT naming the limit, no quorum is
//! UNAVAILABLE, overload RESOURCE_EXHAUSTED.
//!
//! # Not served
//!
//! Auth, member changes, and the rest of Maintenance are UNIMPLEMENTED: a
//! client calling them learns so at once.

mod cluster;
mod convert;
mod kv;
mod lease;
mod meta;
mod watch;

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Server;
use trireme_proto::etcd::etcdserverpb as epb;

use crate::admission::AdmissionLayer;
use crate::error::{Error, Result};
use crate::node::Node;

/// How many times a `Txn` (or a read-modify-write `Put`/`DeleteRange`)
/// runs again after a certification conflict before it gives up (ABORTED).
pub const TXN_ATTEMPTS: usize = 8;

/// Largest gRPC message sent to etcd clients (a large `Range`).
const MAX_MESSAGE_BYTES: usize = 80 << 20;

/// Serves etcd's KV, Watch, Lease, Cluster (MemberList) and Maintenance (Status)
/// services for `node` on `listener` until `shutdown` resolves. Client
/// requests share the node's admission bound with its own API.
pub async fn serve(
    node: Arc<Node>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<()> {
    let decode = node.config().max_client_message_bytes();
    let url = format!("http://{}", listener.local_addr()?);
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    let guard = auth_guard(crate::auth::Auth::new(node.clone()));
    Server::builder()
        .layer(AdmissionLayer::new(node.admission().clone()))
        .tcp_nodelay(true)
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(10)))
        .add_service(InterceptedService::new(
            epb::kv_server::KvServer::new(kv::KvService::new(node.clone()))
                .max_decoding_message_size(decode)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
            guard.clone(),
        ))
        .add_service(InterceptedService::new(
            epb::watch_server::WatchServer::new(watch::WatchService::new(node.clone()))
                .max_decoding_message_size(decode)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
            guard.clone(),
        ))
        .add_service(InterceptedService::new(
            epb::lease_server::LeaseServer::new(lease::LeaseService::new(node.clone()))
                .max_decoding_message_size(decode)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
            guard,
        ))
        .add_service(epb::cluster_server::ClusterServer::new(
            cluster::ClusterService::new(node.clone(), url),
        ))
        .add_service(epb::maintenance_server::MaintenanceServer::new(
            cluster::MaintenanceService::new(node),
        ))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
        .map_err(|e| Error::Internal(format!("etcd gRPC server: {e}")))
}

/// Refuses every KV, Watch and Lease call while users and roles are on: this
/// listener does not authenticate (etcd's `Auth` service is not served), so
/// it must not become a way around the client port's permission checks.
/// MemberList and Status stay open, as `Cluster.Status` does.
fn auth_guard(
    auth: Arc<crate::auth::Auth>,
) -> impl FnMut(tonic::Request<()>) -> std::result::Result<tonic::Request<()>, tonic::Status> + Clone
{
    move |req| match auth.state() {
        Ok(state) if !state.enabled => Ok(req),
        Ok(_) => Err(tonic::Status::unauthenticated(
            "users and roles are on in this cluster and the etcd listener does not \
             authenticate: use Trireme's client port (trireme --user)",
        )),
        Err(e) => Err(tonic::Status::unavailable(format!(
            "cannot read the cluster's auth state: {e}"
        ))),
    }
}

/// The header of an answer reflecting `revision`.
fn header(node: &Node, revision: u64) -> epb::ResponseHeader {
    let term = node.raft().metrics().borrow().current_term;
    epb::ResponseHeader {
        cluster_id: 0,
        member_id: node.id(),
        revision: revision as i64,
        raft_term: term,
    }
}
