//! The gRPC services: decode, call the node, encode. No business logic here;
//! every error becomes a `tonic::Status` in [`to_status`], one place.

pub mod cluster;
mod convert;
pub mod kv;
pub mod latency;
pub mod raft;
mod status;

pub use status::to_status;
