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
//!
//! CAVEATS: liveness is judged by each node on its own (no gossip); eviction
//! and promotion are decided by the current leader only.

pub mod flow;
pub mod health;
pub mod manage;
pub mod membership;
pub mod params;
pub mod primary;
pub mod replication;
pub mod state;
