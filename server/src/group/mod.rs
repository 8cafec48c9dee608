//! The replication service: write sets batched into Raft log entries,
//! certified and applied in log order, read indexes, and the applied
//! watermark the origin waits on. The log itself, the peer wire and
//! openraft's types are the openraft adapter's, in [`crate::raft`].
//!
//! - [`submit`]: batching write sets into log entries, forwarding from followers.
//! - [`reads`]: linearizable read indexes, coalesced.
//! - [`applied`]: the applied watermark and the origin's verdict waiters.
//! - [`state_machine`]: certify-then-apply, in log order, onto MVCC storage;
//!   snapshot build and install; deduplication of retried write sets.
//! - [`params`]: the replicated parameters that decide verdicts (`cert_window`).
//! - [`gate`]: what the batcher and the read index ask of the membership
//!   layer (flow control, the primary check), as traits it implements.
//! - [`replay`]: arbitrary bytes through decode, certify and apply (fuzzing).
//! - [`retention`]: which prefix of the log may be purged (the gcache policy).
//! - [`snapshot`]: the snapshot stream format (state transfer and backups).
//!
//! What it owns: what the log's entries mean. Every node applies the same
//! entries in the same order and reaches the same verdicts and the same
//! store; the origin of a write set learns its verdict from the applied
//! watermark; a read index is served only once this node has applied up to
//! it. It drives openraft through the adapter's types ([`crate::raft::types`])
//! and talks to peers through the adapter's network ([`crate::raft::network`]).
//!
//! What it may import: `raft`, `txn`, `certify`, `storage`, `codec`,
//! `admission`, `watch`, `error`, `blocking`. What it must never import: `api`
//! or protobuf types (the log carries records of the crate's own types, so
//! the wire API can change apart from the log), `node`, `metrics` and
//! `cluster`: flow control and the primary check reach the batcher and the
//! read index as the traits of [`gate`] (`Throttle`, `PrimaryCheck`), which
//! `cluster` implements, so this folder depends on nothing above it.

pub mod applied;
pub mod gate;
pub mod params;
pub mod reads;
pub mod replay;
pub mod retention;
pub mod snapshot;
pub mod state_machine;
pub mod submit;

/// The modules that moved to [`crate::raft`], under their old paths, so code
/// written against `group::network` or `group::types` still builds; new code
/// names `crate::raft`.
pub use crate::raft::{log_store, mem_log, network, peer_error, types};

#[cfg(test)]
mod suite_tests;
