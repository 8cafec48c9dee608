//! The leader's reconciliation loop: promote learners that caught up, evict
//! voters that stayed down (or stalled) past `evict_after_ms` when a quorum of
//! up voters remains ([`decide::reconcile`] decides; this loop acts); on every
//! node, rejoin after an eviction.

use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Weak;
use std::time::Duration;

use openraft::{ChangeMembers, ServerState};

use super::decide::{self, Action};
use super::snapshot::Snapshot;
use super::{membership, Handle};
use crate::txn::NodeId;

/// A membership change the reconciliation makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// Make a learner a voter.
    Promote(NodeId),
    /// Remove a voter.
    Evict(NodeId),
}

/// What the reconciliation sees of the node and may do to it: the cluster
/// as it stands (Raft's metrics and the failure detector, read once) and
/// the two membership changes. [`Handle`] implements it over openraft; the
/// unit tests below drive [`reconcile`] with a fake.
pub trait ClusterView: Send + Sync {
    /// The cluster now.
    fn snapshot(&self) -> Snapshot;

    /// Makes `change` through Raft; the error in words.
    fn change(
        &self,
        change: Change,
    ) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + '_>>;
}

impl ClusterView for Handle {
    fn snapshot(&self) -> Snapshot {
        Handle::snapshot(self)
    }

    fn change(
        &self,
        change: Change,
    ) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + '_>> {
        Box::pin(async move {
            let r = match change {
                Change::Promote(id) => {
                    self.raft
                        .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), true)
                        .await
                }
                Change::Evict(id) => {
                    self.raft
                        .change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([id])), false)
                        .await
                }
            };
            match r {
                Ok(_) => {
                    if let Change::Evict(_) = change {
                        self.applied.stats.evictions.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(())
                }
                Err(e) => Err(e.to_string()),
            }
        })
    }
}

/// Runs every 500 ms (on the node's grid) until the node is dropped.
pub async fn manage_loop(handle: Weak<Handle>) {
    let Some(grid) = handle.upgrade().map(|h| h.ticks) else {
        return;
    };
    let mut ticks: u64 = 0;
    loop {
        grid.sleep(Duration::from_millis(500)).await;
        let Some(h) = handle.upgrade() else { return };
        ticks += 1;
        let (state, leader) = {
            let metrics = h.raft.metrics();
            let m = metrics.borrow();
            (m.state, m.current_leader)
        };
        if state == ServerState::Leader {
            reconcile(&*h).await;
        } else if ticks.is_multiple_of(2) && leader.is_none_or(|l| l != h.id()) {
            membership::rejoin_if_evicted(&h).await;
        }
    }
}

/// One round on the leader: decide ([`decide::reconcile`]), then act.
/// Returns the change made, if one was made.
pub async fn reconcile(view: &dyn ClusterView) -> Option<Change> {
    let plan = decide::reconcile(&view.snapshot());
    for held in &plan.held {
        tracing::warn!(
            node = held.id,
            up = held.up,
            remaining = held.remaining,
            "not evicting: it would leave no quorum of up voters"
        );
    }
    let change = match plan.action? {
        Action::Promote(l) => {
            tracing::info!(node = l, "learner caught up: promoting to voter");
            Change::Promote(l)
        }
        Action::Evict { id, down, stalled } => {
            tracing::warn!(node = id, down, stalled, "evicting a voter");
            Change::Evict(id)
        }
    };
    match (view.change(change).await, change) {
        (Ok(()), Change::Promote(id)) => tracing::info!(node = id, "promoted to voter"),
        (Ok(()), Change::Evict(id)) => tracing::warn!(node = id, "evicted"),
        (Err(e), Change::Promote(id)) => {
            tracing::warn!(node = id, error = %e, "promotion failed; will retry");
            return None;
        }
        (Err(e), Change::Evict(id)) => {
            tracing::warn!(node = id, error = %e, "eviction failed; will retry");
            return None;
        }
    }
    Some(change)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Mutex;
    use std::time::Duration;

    use tokio::time::Instant;

    use super::*;
    use crate::cluster::snapshot::{Contact, Limits, MemberView, Role};

    /// A cluster seen by node 1, leading; changes are recorded, and fail
    /// when told to.
    struct Fake {
        snapshot: Snapshot,
        fail: bool,
        made: Mutex<Vec<Change>>,
    }

    impl ClusterView for Fake {
        fn snapshot(&self) -> Snapshot {
            self.snapshot.clone()
        }

        fn change(
            &self,
            change: Change,
        ) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + '_>> {
            self.made.lock().unwrap().push(change);
            let fail = self.fail;
            Box::pin(async move {
                if fail {
                    Err("no quorum".into())
                } else {
                    Ok(())
                }
            })
        }
    }

    /// Voters 1-3 (node 3 silent for `silent_ms`), learner 4 matched at
    /// `learner_matched`, last log 100.
    fn cluster(silent_ms: u64, learner_matched: u64, evict_after_ms: u64) -> Snapshot {
        let now = Instant::now();
        let contact = |ago: u64| Contact {
            last_ok: Some(now - Duration::from_millis(ago)),
            since: now - Duration::from_millis(10_000),
            applied: 100,
            applied_moved: now - Duration::from_millis(ago),
            lag: 0,
            answered: true,
        };
        let mut members = BTreeMap::new();
        for (id, role, c) in [
            (1, Role::Voter, None),
            (2, Role::Voter, Some(contact(0))),
            (3, Role::Voter, Some(contact(silent_ms))),
            (4, Role::Learner, Some(contact(0))),
        ] {
            members.insert(
                id,
                MemberView {
                    role,
                    address: format!("127.0.0.1:{id}"),
                    contact: c,
                },
            );
        }
        Snapshot {
            me: 1,
            now,
            leading: true,
            leader: Some(1),
            members,
            matched: BTreeMap::from([(2, Some(100)), (3, Some(40)), (4, Some(learner_matched))]),
            last_log: 100,
            applied: 100,
            limits: Limits {
                down_after: Duration::from_millis(1_000),
                stall_after: Duration::from_millis(60_000),
                evict_after: Duration::from_millis(evict_after_ms),
                promote_lag: 10,
                fc_limit: 1_000,
                synced_lag: 100,
            },
        }
    }

    fn fake(snapshot: Snapshot, fail: bool) -> Fake {
        Fake {
            snapshot,
            fail,
            made: Mutex::new(Vec::new()),
        }
    }

    #[tokio::test]
    async fn the_loop_makes_the_change_the_decision_names() {
        // A learner within promote_lag of the log is promoted first.
        let f = fake(cluster(5_000, 95, 3_000), false);
        assert_eq!(reconcile(&f).await, Some(Change::Promote(4)));
        assert_eq!(*f.made.lock().unwrap(), [Change::Promote(4)]);
        // A learner far behind is not; the voter down past evict_after is.
        let f = fake(cluster(5_000, 10, 3_000), false);
        assert_eq!(reconcile(&f).await, Some(Change::Evict(3)));
        assert_eq!(*f.made.lock().unwrap(), [Change::Evict(3)]);
        // Down, but not yet for evict_after; or eviction off: nothing.
        for snapshot in [cluster(2_000, 10, 3_000), cluster(5_000, 10, 0)] {
            let f = fake(snapshot, false);
            assert_eq!(reconcile(&f).await, None);
            assert!(f.made.lock().unwrap().is_empty());
        }
    }

    #[tokio::test]
    async fn a_failed_change_is_reported_as_not_made() {
        let f = fake(cluster(5_000, 10, 3_000), true);
        assert_eq!(reconcile(&f).await, None);
        assert_eq!(*f.made.lock().unwrap(), [Change::Evict(3)], "it was tried");
    }

    #[tokio::test]
    async fn a_follower_changes_nothing() {
        let mut s = cluster(5_000, 95, 3_000);
        s.leading = false;
        s.leader = Some(2);
        let f = fake(s, false);
        assert_eq!(reconcile(&f).await, None);
        assert!(f.made.lock().unwrap().is_empty());
    }
}
