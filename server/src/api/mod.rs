//! The gRPC services: decode, call the node, encode. No business logic here;
//! every error becomes a `tonic::Status` in [`to_status`], one place.
//!
//! What it owns: the three gRPC services a node serves ([`kv`] for clients,
//! [`cluster`] for operators, [`raft`] for peers), the conversion between
//! protobuf messages and the crate's own types (`convert`, so `pb::` types
//! stop at this folder's edge), the mapping of every [`crate::Error`] to a
//! gRPC status, and the [`latency`] layer that times every client call.
//! A handler reads its request, checks it, calls one operation of the node
//! and encodes the answer; retries, waits and decisions live behind that call.
//!
//! What it may import: the node it serves (`node`), the write-set types
//! (`txn`), `error`, `metrics` for the latency layer, and (for the peer
//! service) the replication types of `group`. What it must never import:
//! `storage` or `certify` internals (a handler that reads sled or decides a
//! verdict bypasses ordering), and nothing under `server/src` may import
//! `api`: it is the outermost ring, reached only from `server.rs`. `api::cluster`
//! calls `cluster::membership`, `cluster::state` and `cluster::params` on the
//! node's `cluster::Handle` and turns their `Member`, `PingAnswer`,
//! `NodeState` and `Role` into protobuf here (`convert`); the narrower node
//! handle of issue 10 is still to come.

pub mod auth;
pub mod auth_layer;
pub mod backup;
pub mod cluster;
mod convert;
pub mod kv;
pub mod latency;
pub mod raft;
mod status;

pub use status::to_status;
