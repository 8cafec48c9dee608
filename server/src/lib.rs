//! Trireme: a multi-master replicated key-value server.
//!
//! The write path is the module list: [`api`] decodes requests; [`txn`] holds
//! write sets; [`group`] batches them into entries of a Raft log ([`raft`]:
//! openraft's log store and network); [`certify`] decides each one,
//! identically on every node; the state machine in [`group`] applies
//! committed write sets to [`storage`] (MVCC on sled). [`node`] wires a
//! node together and [`server`] serves it. See ARCHITECTURE.md at the
//! repository root for the walk-through.

pub mod admission;
pub mod api;
pub mod auth;
pub mod blocking;
pub mod certify;
pub mod cluster;
pub mod codec;
pub mod config;
pub mod error;
pub mod etcd;
pub mod failpoints;
pub mod group;
pub mod guard;
pub mod lease;
pub mod metrics;
pub mod node;
pub mod ports;
pub mod raft;
pub mod request_metrics;
pub mod server;
pub mod storage;
pub mod ticks;
pub mod tls;
pub mod txn;
pub mod watch;

pub use config::Config;
pub use error::{Error, Result};
pub use node::Node;
