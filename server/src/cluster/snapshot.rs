//! The cluster as the membership decisions see it: one consistent look at
//! the members, their roles, when each last answered, where each has applied
//! to, the thresholds of the configuration, and the time. The decisions
//! ([`super::decide`], [`super::primary::decide`],
//! [`super::replication::unreplicated`]) are pure functions of these values;
//! the loops gather a [`Snapshot`] from Raft's metrics and the failure
//! detector ([`super::Handle::snapshot`]) and act on what was decided.
//!
//! Nothing here is protobuf: `api` turns [`Member`], [`PingAnswer`],
//! [`NodeState`] and [`Role`] into wire messages at its edge.

use std::collections::BTreeMap;
use std::time::Duration;

// tokio's clock: std's in production, the simulated one under simulation.
use tokio::time::Instant;

use crate::txn::{NodeId, Seqno};

/// A member's role in the membership.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Counts toward the quorum.
    Voter,
    /// Receives the log, does not vote (a joining node catching up).
    Learner,
}

impl Role {
    /// The name on the wire and in `trireme members`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Voter => "voter",
            Role::Learner => "learner",
        }
    }

    /// The role named `name` on the wire (`None`: not a role).
    pub fn parse(name: &str) -> Option<Role> {
        match name {
            "voter" => Some(Role::Voter),
            "learner" => Some(Role::Learner),
            _ => None,
        }
    }
}

/// The Galera-like state a node reports (OPERATIONS.md, "Node states").
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum NodeState {
    /// A voter in the primary component, caught up.
    Synced,
    /// A learner catching up.
    Joining,
    /// Sending a snapshot (state transfer) to another node.
    Donor,
    /// A voter more than `synced_lag_entries` behind its log.
    Joined,
    /// Not in the primary component: refuses writes and linearizable reads.
    NonPrimary,
}

impl NodeState {
    /// Every state, in the order `/metrics` lists them.
    pub const ALL: [NodeState; 5] = [
        NodeState::Synced,
        NodeState::Joining,
        NodeState::Donor,
        NodeState::Joined,
        NodeState::NonPrimary,
    ];

    /// The name in `trireme status` and `trireme_state{state=...}`.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Synced => "SYNCED",
            NodeState::Joining => "JOINING",
            NodeState::Donor => "DONOR",
            NodeState::Joined => "JOINED",
            NodeState::NonPrimary => "NON_PRIMARY",
        }
    }
}

/// The cluster's health as the leader sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClusterHealth {
    /// Every voter is replicated to.
    Healthy,
    /// Some voter is not replicated to (see `unreplicated_voters`).
    Degraded,
}

impl ClusterHealth {
    /// The name in `trireme status`.
    pub fn as_str(self) -> &'static str {
        match self {
            ClusterHealth::Healthy => "HEALTHY",
            ClusterHealth::Degraded => "DEGRADED",
        }
    }
}

/// One member as this node reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// Its node id.
    pub id: NodeId,
    /// Its peer address (what the membership records).
    pub address: String,
    /// Its client address: this node's own, or what the member said in its
    /// last ping answer (empty until it answered once).
    pub client_address: String,
    /// Voter or learner.
    pub role: Role,
    /// Answered within `down_after_ms` (this node always is).
    pub up: bool,
    /// Up, behind, and its apply has not moved for `stall_after_ms`.
    pub stalled: bool,
}

/// A peer's answer to a ping: its progress and its view of the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PingAnswer {
    /// Who answered.
    pub node_id: NodeId,
    /// Its applied seqno.
    pub applied_seqno: Seqno,
    /// The leader it knows (0: none).
    pub leader_id: NodeId,
    /// Its Raft term.
    pub term: u64,
    /// The membership as it sees it.
    pub members: Vec<Member>,
    /// Whether the asking node left the cluster for good (it must not rejoin).
    pub from_departed: bool,
    /// Whether it is the leader and has a quorum.
    pub leader_with_quorum: bool,
    /// Its client address.
    pub client_address: String,
}

/// What the failure detector knows about one peer: when it answered and
/// where its apply stood.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Contact {
    /// When the peer last answered a ping.
    pub last_ok: Option<Instant>,
    /// When this node started pinging it (a peer never heard from is down
    /// after `down_after`).
    pub since: Instant,
    /// The peer's applied seqno at its last answer.
    pub applied: Seqno,
    /// When that applied seqno last moved.
    pub applied_moved: Instant,
    /// How far that applied seqno was behind this node's own when the ping
    /// was sent: the apply lag, free of the ping interval's staleness.
    pub lag: Seqno,
    /// Whether it ever answered.
    pub answered: bool,
}

impl Contact {
    /// A peer first tracked at `now`, not heard from yet.
    pub fn new(now: Instant) -> Self {
        Contact {
            last_ok: None,
            since: now,
            applied: 0,
            applied_moved: now,
            lag: 0,
            answered: false,
        }
    }

    /// Records an answer at `now` saying the peer applied `applied`, to a
    /// ping sent when this node had applied `head`.
    pub fn record(&mut self, applied: Seqno, head: Seqno, now: Instant) {
        self.last_ok = Some(now);
        self.lag = head.saturating_sub(applied);
        if applied != self.applied || !self.answered {
            self.applied = applied;
            self.applied_moved = now;
        }
        self.answered = true;
    }

    /// How long the peer has been silent at `now`.
    pub fn silent(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.last_ok.unwrap_or(self.since))
    }

    /// How long the peer has answered without its apply moving while behind
    /// `head` (zero when it moves, is not behind, or never answered).
    pub fn stalled_for(&self, head: Seqno, now: Instant) -> Duration {
        if self.answered && self.applied < head {
            now.saturating_duration_since(self.applied_moved)
        } else {
            Duration::ZERO
        }
    }
}

/// The thresholds of the configuration the decisions use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// A member silent this long is down (`down_after_ms`).
    pub down_after: Duration,
    /// A member up, behind and not applying this long is stalled (`stall_after_ms`).
    pub stall_after: Duration,
    /// Evict a voter down or stalled this long (`evict_after_ms`; zero: never).
    pub evict_after: Duration,
    /// Promote a learner within this many entries of the leader's log (`promote_lag_entries`).
    pub promote_lag: u64,
    /// Slow writers while an up voter lags by more than this many entries (`fc_limit`).
    pub fc_limit: u64,
    /// A voter further behind its log than this is JOINED, not SYNCED (`synced_lag_entries`).
    pub synced_lag: u64,
}

impl Limits {
    /// The thresholds of `config`.
    pub fn from_config(config: &crate::config::Config) -> Self {
        Limits {
            down_after: Duration::from_millis(config.down_after_ms),
            stall_after: Duration::from_millis(config.stall_after_ms),
            evict_after: Duration::from_millis(config.evict_after_ms),
            promote_lag: config.promote_lag_entries,
            fc_limit: config.fc_limit,
            synced_lag: config.synced_lag_entries,
        }
    }
}

/// One member in a [`Snapshot`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberView {
    /// Voter or learner.
    pub role: Role,
    /// Its address.
    pub address: String,
    /// What the failure detector knows (`None`: not tracked yet, or this
    /// node itself; either counts as up).
    pub contact: Option<Contact>,
}

/// One consistent look at the cluster from one node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// This node.
    pub me: NodeId,
    /// The time the decisions are taken at.
    pub now: Instant,
    /// Raft's state is `Leader`.
    pub leading: bool,
    /// The leader this node knows.
    pub leader: Option<NodeId>,
    /// Every member, this node included.
    pub members: BTreeMap<NodeId, MemberView>,
    /// On the leader, each follower's matched log index (`None`: nothing
    /// matched yet); empty elsewhere.
    pub matched: BTreeMap<NodeId, Option<u64>>,
    /// The last index of this node's log.
    pub last_log: u64,
    /// This node's applied seqno.
    pub applied: Seqno,
    /// The thresholds.
    pub limits: Limits,
}

/// Where a node stands, beyond the membership: what its state also depends on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Standing {
    /// Raft stopped with this fatal error.
    pub stopped: Option<String>,
    /// The primary-component check: the leader, or why not primary.
    pub primary: Result<NodeId, String>,
    /// Sending a snapshot to another node.
    pub donor: bool,
}
