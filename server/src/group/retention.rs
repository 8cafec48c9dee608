//! Which prefix of the Raft log a node may purge (the gcache policy).
//!
//! Two bounds, as Galera's gcache has: `log_retain_entries` keeps that many
//! entries behind the newest snapshot, and `log_retain_bytes` caps the log's
//! size whatever else holds it. On the leader the entry bound also waits for
//! the nodes that are catching up, so that a joiner is never sent a snapshot
//! only to find, when it has installed it, that the entries after it are gone
//! (under a steady write load that loop never ended: every transfer was
//! followed by another). Held back are
//!
//! - everything, while a state transfer is under way or ended a short while
//!   ago (the receiver installs the last chunk before it can ask for more);
//! - the entries after the position of a node whose position moved within
//!   [`ACTIVE`] (a node that stopped is not waited for; the byte bound would
//!   stop it anyway).
//!
//! The decision is a pure function of what openraft reports ([`Inputs`]) and
//! of the positions seen before; the node's retention loop feeds it once a
//! second and asks openraft to purge up to the answer. openraft itself still
//! never purges an entry no snapshot covers or one a replication is reading.

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

use crate::txn::NodeId;

/// A node whose replicated position moved within this long is waited for.
pub const ACTIVE: Duration = Duration::from_secs(10);

/// What the decision needs, read from openraft's metrics and the log.
#[derive(Clone, Debug, Default)]
pub struct Inputs {
    /// Index of the newest snapshot.
    pub snapshot: Option<u64>,
    /// Index of the last purged entry.
    pub purged: Option<u64>,
    /// Entries to keep behind the snapshot (`log_retain_entries`).
    pub retain_entries: u64,
    /// The cut the byte bound asks for (`log_retain_bytes`), if over it.
    pub bytes_cut: Option<u64>,
    /// On the leader: each other node's replicated position (`None`: nothing yet).
    pub replication: Option<Vec<(NodeId, Option<u64>)>>,
    /// A state transfer sent a chunk recently (this node is, or just was, a donor).
    pub transferring: bool,
}

/// The retention decision, with the positions it has seen.
#[derive(Debug, Default)]
pub struct Retention {
    /// Per node: its last position and when it last moved.
    seen: HashMap<NodeId, (Option<u64>, Instant)>,
}

impl Retention {
    /// The index to purge up to (inclusive), if there is anything to purge.
    pub fn cut(&mut self, inputs: &Inputs, now: Instant) -> Option<u64> {
        let by_entries = inputs
            .snapshot
            .and_then(|s| (s + 1).checked_sub(inputs.retain_entries.max(1)));
        let held = match &inputs.replication {
            Some(targets) => self.hold(targets, inputs.transferring, now),
            None => {
                self.seen.clear();
                None
            }
        };
        let by_entries = match (by_entries, held) {
            (Some(cut), Some(hold)) => Some(cut.min(hold)),
            (cut, None) => cut,
            (None, Some(_)) => None,
        };
        let cut = by_entries.max(inputs.bytes_cut)?;
        inputs.purged.is_none_or(|p| cut > p).then_some(cut)
    }

    /// The highest index the leader may purge for the nodes catching up
    /// (`Some(0)` holds everything but entry 0), or `None`: nothing held.
    fn hold(
        &mut self,
        targets: &[(NodeId, Option<u64>)],
        transferring: bool,
        now: Instant,
    ) -> Option<u64> {
        self.seen
            .retain(|id, _| targets.iter().any(|(t, _)| t == id));
        let mut hold: Option<u64> = transferring.then_some(0);
        for (id, position) in targets {
            let entry = self.seen.entry(*id).or_insert((*position, now));
            if entry.0 != *position {
                *entry = (*position, now);
            }
            if now.duration_since(entry.1) < ACTIVE {
                // Everything after `position` is still to be sent to it.
                let keep_after = position.unwrap_or(0);
                hold = Some(hold.map_or(keep_after, |h| h.min(keep_after)));
            }
        }
        hold
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs(snapshot: u64, purged: Option<u64>) -> Inputs {
        Inputs {
            snapshot: Some(snapshot),
            purged,
            retain_entries: 100,
            ..Inputs::default()
        }
    }

    #[tokio::test]
    async fn a_follower_keeps_entries_behind_its_snapshot() {
        let mut r = Retention::default();
        let now = Instant::now();
        assert_eq!(r.cut(&inputs(50, None), now), None, "fewer than retained");
        assert_eq!(r.cut(&inputs(1000, None), now), Some(901));
        assert_eq!(r.cut(&inputs(1000, Some(901)), now), None, "already purged");
    }

    #[tokio::test]
    async fn the_leader_waits_for_a_node_catching_up_but_not_for_a_stopped_one() {
        let mut r = Retention::default();
        let t0 = Instant::now();
        let mut i = inputs(1000, Some(100));
        i.replication = Some(vec![(2, Some(999)), (3, Some(400))]);
        assert_eq!(r.cut(&i, t0), Some(400), "node 3 still needs 401..");
        // Node 3 stops moving: after ACTIVE it is no longer waited for.
        let later = t0 + ACTIVE + Duration::from_secs(1);
        i.replication = Some(vec![(2, Some(1000)), (3, Some(400))]);
        assert_eq!(r.cut(&i, later), Some(901));
        // It moves again: waited for again.
        i.replication = Some(vec![(2, Some(1000)), (3, Some(450))]);
        assert_eq!(r.cut(&i, later), Some(450));
    }

    #[tokio::test]
    async fn nothing_is_purged_by_entries_during_a_transfer_but_the_byte_bound_holds() {
        let mut r = Retention::default();
        let now = Instant::now();
        let mut i = inputs(1000, Some(100));
        i.replication = Some(vec![(2, Some(1000)), (5, None)]);
        i.transferring = true;
        assert_eq!(r.cut(&i, now), None, "a joiner receiving a snapshot");
        i.bytes_cut = Some(700);
        assert_eq!(r.cut(&i, now), Some(700), "the byte bound is never held");
    }
}
