//! The membership decisions, as pure functions of a [`Snapshot`]: who is up,
//! down or stalled; which learner the leader promotes and which voter it
//! evicts; how long flow control delays a batch; what state a node reports.
//! No clock, no lock, no Raft: the loops in [`super::manage`],
//! [`super::flow`], [`super::state`] and [`super::membership`] gather the
//! snapshot and act on the answer. `cluster/testscripts/*.txt` drive every
//! decision through the cases OPERATIONS.md lists.

use std::time::Duration;

use super::snapshot::{Member, NodeState, Role, Snapshot, Standing};
use crate::txn::NodeId;

/// Longest delay flow control imposes on one batch.
pub const MAX_FLOW_DELAY: Duration = Duration::from_millis(50);

/// Whether `id` answered within `down_after` (this node, and a member not
/// tracked yet, count as up).
pub fn is_up(s: &Snapshot, id: NodeId) -> bool {
    if id == s.me {
        return true;
    }
    match s.members.get(&id).and_then(|m| m.contact) {
        None => true,
        Some(c) => c.silent(s.now) < s.limits.down_after,
    }
}

/// How long `id` has been down (zero while up).
pub fn down_for(s: &Snapshot, id: NodeId) -> Duration {
    if id == s.me {
        return Duration::ZERO;
    }
    match s.members.get(&id).and_then(|m| m.contact) {
        None => Duration::ZERO,
        Some(c) => {
            let silent = c.silent(s.now);
            if silent < s.limits.down_after {
                Duration::ZERO
            } else {
                silent
            }
        }
    }
}

/// How long `id` has answered without its apply moving while behind this
/// node's applied seqno (zero for this node, and for a member never heard).
pub fn stalled_for(s: &Snapshot, id: NodeId) -> Duration {
    if id == s.me {
        return Duration::ZERO;
    }
    s.members
        .get(&id)
        .and_then(|m| m.contact)
        .map_or(Duration::ZERO, |c| c.stalled_for(s.applied, s.now))
}

/// Whether `id` is stalled: not applying, while behind, for over `stall_after`.
pub fn is_stalled(s: &Snapshot, id: NodeId) -> bool {
    stalled_for(s, id) > s.limits.stall_after
}

/// The voters, in id order.
pub fn voters(s: &Snapshot) -> impl Iterator<Item = NodeId> + '_ {
    s.members
        .iter()
        .filter(|(_, m)| m.role == Role::Voter)
        .map(|(id, _)| *id)
}

/// The membership as this node reports it (`trireme members`).
pub fn members(s: &Snapshot) -> Vec<Member> {
    s.members
        .iter()
        .map(|(id, m)| Member {
            id: *id,
            address: m.address.clone(),
            // Not a decision: filled in by `membership::members`.
            client_address: String::new(),
            role: m.role,
            up: is_up(s, *id),
            stalled: is_stalled(s, *id),
        })
        .collect()
}

/// The largest apply lag among up, non-stalled voters other than this node,
/// as of each one's last answer; 0 unless this node is the leader.
pub fn flow_lag(s: &Snapshot) -> u64 {
    if s.leader != Some(s.me) {
        return 0;
    }
    voters(s)
        .filter(|v| *v != s.me && is_up(s, *v) && !is_stalled(s, *v))
        .filter_map(|v| s.members.get(&v).and_then(|m| m.contact))
        .filter(|c| c.answered)
        .map(|c| c.lag)
        .max()
        .unwrap_or(0)
}

/// How long the leader delays its next batch, with the lag that decided it:
/// none while the lag is within `fc_limit`; beyond it, in proportion to the
/// excess (a full `fc_limit` over is [`MAX_FLOW_DELAY`]), at least 1 ms.
pub fn flow_delay(s: &Snapshot) -> (u64, Option<Duration>) {
    let lag = flow_lag(s);
    let limit = s.limits.fc_limit;
    if lag <= limit {
        return (lag, None);
    }
    let excess = (lag - limit) as f64 / limit.max(1) as f64;
    let delay = MAX_FLOW_DELAY
        .mul_f64(excess.min(1.0))
        .max(Duration::from_millis(1));
    (lag, Some(delay))
}

/// What the leader's reconciliation decided to do this round.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Promote this caught-up, up learner to voter.
    Promote(NodeId),
    /// Remove this voter: down for `evict_after`, or stalled that long.
    Evict {
        /// The voter.
        id: NodeId,
        /// It is down (silent) for `evict_after`.
        down: bool,
        /// It is up but has not applied, while behind, for `evict_after`
        /// (and `stall_after`).
        stalled: bool,
    },
}

/// An eviction held back because it would leave no quorum of up voters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Held {
    /// The voter that would be evicted.
    pub id: NodeId,
    /// Up, non-stalled voters that would remain.
    pub up: usize,
    /// Voters that would remain.
    pub remaining: usize,
}

/// One round of the leader's reconciliation: at most one change.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Evictions considered and held back, in voter order.
    pub held: Vec<Held>,
    /// The change to make, if any.
    pub action: Option<Action>,
}

/// The leader's reconciliation (nothing unless Raft says this node leads):
///
/// 1. promote the first learner (by id) that is up and whose matched index
///    is within `promote_lag` of the leader's log;
/// 2. otherwise, with `evict_after` set, evict the first voter (by id, never
///    this node) down for `evict_after`, or up but stalled for the larger of
///    `evict_after` and `stall_after`, unless the voters that would remain
///    are empty or fewer than a majority of them are up and not stalled.
pub fn reconcile(s: &Snapshot) -> Plan {
    let mut plan = Plan::default();
    if !s.leading {
        return plan;
    }
    for (id, m) in &s.members {
        if m.role != Role::Learner {
            continue;
        }
        let caught_up = s
            .matched
            .get(id)
            .is_some_and(|idx| idx.unwrap_or(0) + s.limits.promote_lag >= s.last_log);
        if caught_up && is_up(s, *id) {
            plan.action = Some(Action::Promote(*id));
            return plan;
        }
    }
    let evict_after = s.limits.evict_after;
    if evict_after.is_zero() {
        return plan;
    }
    let healthy = |v: NodeId| is_up(s, v) && !is_stalled(s, v);
    let all: Vec<NodeId> = voters(s).collect();
    for &v in all.iter().filter(|v| **v != s.me) {
        let down = down_for(s, v) >= evict_after;
        let stalled = is_up(s, v) && stalled_for(s, v) > evict_after.max(s.limits.stall_after);
        if !(down || stalled) {
            continue;
        }
        let remaining: Vec<NodeId> = all.iter().copied().filter(|x| *x != v).collect();
        let up = remaining.iter().filter(|x| healthy(**x)).count();
        // Never evict into a configuration whose up voters are not a majority.
        if remaining.is_empty() || up < remaining.len() / 2 + 1 {
            plan.held.push(Held {
                id: v,
                up,
                remaining: remaining.len(),
            });
            continue;
        }
        plan.action = Some(Action::Evict {
            id: v,
            down,
            stalled,
        });
        return plan;
    }
    plan
}

/// The state a node reports, and for NON_PRIMARY why: NON_PRIMARY when Raft
/// stopped or the node is not in the primary component; then JOINING for a
/// learner (or a node not in the membership yet), DONOR while sending a
/// snapshot, JOINED for a voter more than `synced_lag` entries behind its
/// log, and SYNCED.
pub fn node_state(s: &Snapshot, standing: &Standing) -> (NodeState, String) {
    if let Some(fatal) = &standing.stopped {
        return (NodeState::NonPrimary, format!("raft stopped: {fatal}"));
    }
    if let Err(why) = &standing.primary {
        return (NodeState::NonPrimary, why.clone());
    }
    let is_voter = s.members.get(&s.me).is_some_and(|m| m.role == Role::Voter);
    if !is_voter {
        return (NodeState::Joining, String::new());
    }
    if standing.donor {
        return (NodeState::Donor, String::new());
    }
    if s.last_log.saturating_sub(s.applied) > s.limits.synced_lag {
        return (NodeState::Joined, String::new());
    }
    (NodeState::Synced, String::new())
}
