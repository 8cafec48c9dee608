//! The group channel: a totally ordered, durable log of write-set batches on
//! openraft, and the state machine that certifies and applies it.
//!
//! - [`types`]: what the log carries (batches of write sets) and what applying returns.
//! - `log_store`: the Raft log in fdatasync'd segment files, with group commit.
//! - [`mem_log`]: the same log in memory (simulation and tests).
//! - [`state_machine`]: certify-then-apply, in log order, onto MVCC storage.
//! - [`applied`]: the applied watermark and the origin's verdict waiters.
//! - [`network`]: openraft's RPCs over tonic.
//! - [`params`]: the replicated parameters that decide verdicts (`cert_window`).
//! - [`gate`]: what the batcher and the read index ask of the membership
//!   layer (flow control, the primary check), as traits it implements.
//! - [`peer_error`]: typed errors of the peer wire; what a failed call proves.
//! - [`submit`]: batching write sets into log entries, forwarding from followers.
//! - [`reads`]: linearizable read indexes, coalesced.
//! - [`replay`]: arbitrary bytes through decode, certify and apply (fuzzing).
//! - [`retention`]: which prefix of the log may be purged (the gcache policy).
//! - [`snapshot`]: the snapshot stream format (state transfer and backups).
//!
//! What it owns: two things, to be split into two folders. The openraft
//! adapter (`types`, `log_store`, `mem_log`, `network`): the log's format on
//! disk and on the wire, its durability contract (an entry is acknowledged
//! only once `fdatasync` covers it) and openraft's storage and network
//! traits. The replication service (`submit`, `reads`, `applied`,
//! `state_machine`): batching write sets into entries, read indexes, the
//! applied watermark with the origin's waiters, and certify-then-apply.
//!
//! What it may import: `txn`, `certify`, `storage`, `error`, `blocking`.
//! What it must never import: `api` or protobuf types (the log carries
//! bincode records of the crate's own types, so the wire API can change
//! apart from the log), `node`, and `cluster`: flow control and the
//! primary check reach the batcher and the read index as the traits of
//! [`gate`] (`Throttle`, `PrimaryCheck`), which `cluster` implements, so
//! this folder depends on nothing above it.

pub mod applied;
pub mod gate;
pub mod log_store;
pub mod mem_log;
pub mod network;
pub mod params;
pub mod peer_error;
pub mod reads;
pub mod replay;
pub mod retention;
pub mod snapshot;
pub mod state_machine;
pub mod submit;
pub mod types;

#[cfg(test)]
mod suite_tests;
