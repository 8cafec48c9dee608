//! Trireme: a multi-master replicated key-value server.
//!
//! The write path is the module list: [`api`] decodes requests; [`txn`] holds
//! write sets; [`group`] orders them through a Raft log (openraft); [`certify`]
//! decides each one, identically on every node; the state machine in [`group`]
//! applies committed write sets to [`storage`] (MVCC on sled). [`cluster`]
//! holds node state and status; [`node`] wires a node together. See
//! ARCHITECTURE.md at the repository root for the walk-through.

pub mod certify;
pub mod error;
pub mod group;
pub mod storage;
pub mod txn;

pub use error::{Error, Result};
