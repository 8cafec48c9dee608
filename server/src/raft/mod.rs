//! The openraft adapter: the Raft log on disk and in memory, the peer wire,
//! and the types openraft is configured with.
//!
//! - [`types`]: openraft's configuration and what a log entry carries.
//! - [`log_store`]: the Raft log in fdatasync'd segment files, with group commit.
//! - [`mem_log`]: the same log in memory (simulation and tests).
//! - [`network`]: openraft's RPCs (and the peer calls of the replication
//!   service) over tonic.
//! - [`peer_error`]: typed errors of the peer wire; what a failed call proves.
//!
//! What it owns: the log's format on disk and its durability contract (an
//! entry is acknowledged only once `fdatasync` covers it), the peer wire's
//! channels and the errors a peer call can end with, and openraft's storage
//! and network traits. It knows nothing of what the entries mean: certifying
//! and applying them, batching write sets into them and serving reads from
//! them are the replication service's, in [`crate::group`].
//!
//! What it may import: `codec` (every record and message it writes is a
//! codec envelope), `txn` (the write sets an entry carries), `config` (the
//! bulk transfer's settings), `error`, `failpoints`. What it must never import: the replication service
//! (`group`), except the one payload type a log entry names
//! (`group::params::ParamsChange`, a variant of [`types::Request`]);
//! `cluster`, `node`, `api`, `metrics`, or protobuf types beyond the one
//! envelope message the peer wire carries (`RaftMessage`).

pub mod log_store;
pub mod mem_log;
pub mod network;
pub mod peer_error;
pub mod types;
