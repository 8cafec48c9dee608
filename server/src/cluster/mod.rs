//! Membership and node state: who is up, who joins and leaves, who is
//! evicted, how writers are slowed, and the Galera-like state a node reports.
//!
//! - [`health`]: the failure detector. Every node pings every member every
//!   `ping_interval_ms`; a member silent for `down_after_ms` is down. Pings
//!   also carry each member's applied seqno (for flow control and stall
//!   detection) and its view of the membership (for automatic rejoin).
//! - [`manage`]: the leader's reconciliation loop: promote caught-up learners,
//!   evict voters down (or stalled) for `evict_after_ms` when that keeps a
//!   quorum of up voters.
//! - [`membership`]: join, leave and rejoin, forwarded to the leader.
//! - [`params`]: the replicated parameters' bootstrap and `trireme config set`.
//! - [`flow`]: quota-based flow control on the leader.
//! - [`primary`]: whether this node is in the primary component (a leader
//!   with a quorum, or a follower with recent word that its leader has one).
//! - [`state`]: SYNCED / JOINING / DONOR / JOINED / NON_PRIMARY.
//! - [`replication`]: the leader's report of voters it cannot replicate to.
//! - [`drain`]: a node asked to stop takes nothing new, finishes what it
//!   took and, as leader, hands its leadership over before it exits.
//!
//! CAVEATS: liveness is judged by each node on its own (no gossip); eviction
//! and promotion are decided by the current leader only.
//!
//! What it owns: every decision about the membership and the node's health
//! as the cluster sees it, and the loops that act on them (spawned by the
//! node at start). It reaches Raft only through openraft's public API
//! (metrics, `change_membership`) and its peers only through the `Cluster`
//! gRPC service's ping.
//!
//! What it must never import: `api` (protobuf stays at the edge: a `pb::`
//! type here is a debt, not a pattern), `storage` or `certify`, and the
//! replication internals of `group` beyond the applied watermark and the log
//! types. Today it takes `&Node` and reads its fields, and `node` spawns it:
//! the one import cycle left in `server/src` (see
//! `server/tests/module_cycles.rs`). The decisions are to become pure
//! functions over a snapshot of the cluster with a fake-able view of Raft,
//! so that `node` imports `cluster` and never the reverse.

pub mod drain;
pub mod flow;
pub mod health;
pub mod manage;
pub mod membership;
pub mod params;
pub mod primary;
pub mod replication;
pub mod state;
