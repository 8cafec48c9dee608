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
//! - [`peer_error`]: typed errors of the peer wire; what a failed call proves.
//! - [`submit`]: batching write sets into log entries, forwarding from followers.
//! - [`reads`]: linearizable read indexes, coalesced.
//! - [`replay`]: arbitrary bytes through decode, certify and apply (fuzzing).

pub mod applied;
pub mod log_store;
pub mod mem_log;
pub mod network;
pub mod params;
pub mod peer_error;
pub mod reads;
pub mod replay;
pub mod state_machine;
pub mod submit;
pub mod types;

#[cfg(test)]
mod suite_tests;
