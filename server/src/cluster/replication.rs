//! The leader's watch on its own replication: a voter whose matched log
//! index has not moved for `down_after_ms` while it is behind the leader's
//! log is *unreplicated*. The cluster then has less fault tolerance than its
//! size suggests even though every node that answers may be SYNCED, so the
//! leader says so: in `unreplicated_voters` and `cluster_health = DEGRADED`
//! of its status, and in `/metrics`.

use std::collections::BTreeMap;
use std::sync::{Mutex, Weak};
use std::time::Duration;

use openraft::ServerState;
// tokio's clock: std's in production, the simulated one under simulation.
use tokio::time::Instant;

use crate::node::Node;
use crate::txn::NodeId;

/// The cluster's health as the leader sees it: every voter is replicated to.
pub const HEALTHY: &str = "HEALTHY";
/// The cluster's health as the leader sees it: some voter is not replicated to.
pub const DEGRADED: &str = "DEGRADED";

/// Where replication to one voter stood, and since when.
#[derive(Clone, Copy, Debug)]
struct Progress {
    matched: Option<u64>,
    moved: Instant,
    /// Behind the leader's log at the last sample.
    behind: bool,
}

/// Replication progress per voter, sampled on the leader.
#[derive(Debug)]
pub struct ReplicationWatch {
    voters: Mutex<BTreeMap<NodeId, Progress>>,
    /// Only meaningful while this node leads.
    leading: std::sync::atomic::AtomicBool,
    after: Duration,
}

impl ReplicationWatch {
    /// A watch that reports a voter unreplicated after `after` without progress.
    pub fn new(after: Duration) -> Self {
        ReplicationWatch {
            voters: Mutex::new(BTreeMap::new()),
            leading: std::sync::atomic::AtomicBool::new(false),
            after,
        }
    }

    /// Records one sample of the leader's replication state: each voter's
    /// matched index against the leader's `last_log` (`None`: not leading).
    fn observe(&self, sample: Option<(u64, BTreeMap<NodeId, Option<u64>>)>, now: Instant) {
        let mut voters = self.voters.lock().expect("replication watch lock");
        let Some((last_log, matched)) = sample else {
            self.leading
                .store(false, std::sync::atomic::Ordering::Relaxed);
            voters.clear();
            return;
        };
        self.leading
            .store(true, std::sync::atomic::Ordering::Relaxed);
        voters.retain(|id, _| matched.contains_key(id));
        for (id, m) in matched {
            let p = voters.entry(id).or_insert(Progress {
                matched: m,
                moved: now,
                behind: false,
            });
            p.behind = m.unwrap_or(0) < last_log;
            if p.matched != m || !p.behind {
                p.matched = m;
                p.moved = now;
            }
        }
    }

    /// The voters this leader has not replicated to for `after` (empty when
    /// not leading).
    pub fn unreplicated(&self) -> Vec<NodeId> {
        self.unreplicated_at(Instant::now())
    }

    fn unreplicated_at(&self, now: Instant) -> Vec<NodeId> {
        let voters = self.voters.lock().expect("replication watch lock");
        voters
            .iter()
            .filter(|(_, p)| p.behind && now.saturating_duration_since(p.moved) >= self.after)
            .map(|(id, _)| *id)
            .collect()
    }

    /// `HEALTHY` or `DEGRADED` on the leader; empty elsewhere (ask the leader).
    pub fn cluster_health(&self) -> &'static str {
        self.cluster_health_at(Instant::now())
    }

    fn cluster_health_at(&self, now: Instant) -> &'static str {
        if !self.leading.load(std::sync::atomic::Ordering::Relaxed) {
            ""
        } else if self.unreplicated_at(now).is_empty() {
            HEALTHY
        } else {
            DEGRADED
        }
    }
}

/// Samples the leader's replication every `ping_interval_ms` until the node
/// is dropped, and logs when a voter becomes (or stops being) unreplicated.
pub async fn watch_loop(node: Weak<Node>) {
    let mut reported: Vec<NodeId> = Vec::new();
    loop {
        let Some(n) = node.upgrade() else { return };
        let interval = Duration::from_millis(n.config.ping_interval_ms);
        let sample = {
            let metrics = n.raft.metrics();
            let m = metrics.borrow();
            if m.state != ServerState::Leader {
                None
            } else {
                let voters: Vec<NodeId> = m
                    .membership_config
                    .membership()
                    .voter_ids()
                    .filter(|v| *v != n.id())
                    .collect();
                let replication = m.replication.clone().unwrap_or_default();
                let matched = voters
                    .into_iter()
                    .map(|v| (v, replication.get(&v).copied().flatten().map(|l| l.index)))
                    .collect();
                Some((m.last_log_index.unwrap_or(0), matched))
            }
        };
        n.replication.observe(sample, Instant::now());
        let now = n.replication.unreplicated();
        if now != reported {
            if now.is_empty() {
                tracing::info!("replication reaches every voter again");
            } else {
                tracing::warn!(voters = ?now, after = ?n.replication.after,
                    "no replication progress to these voters: the cluster is DEGRADED");
            }
            reported = now;
        }
        drop(n);
        tokio::time::sleep(interval).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_voter_behind_without_progress_is_reported_and_cleared() {
        let w = ReplicationWatch::new(Duration::from_secs(1));
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        assert_eq!(w.cluster_health_at(at(0)), "");
        let sample = |m2: u64, m3: u64| Some((100, BTreeMap::from([(2, Some(m2)), (3, Some(m3))])));
        w.observe(sample(100, 40), at(0));
        assert_eq!(w.cluster_health_at(at(0)), HEALTHY);
        // Node 2 stays caught up; node 3 moves once, then stops.
        w.observe(sample(100, 50), at(600));
        w.observe(sample(100, 50), at(1200));
        assert!(
            w.unreplicated_at(at(1200)).is_empty(),
            "50 moved 600 ms ago"
        );
        w.observe(sample(100, 50), at(1700));
        assert_eq!(w.unreplicated_at(at(1700)), vec![3]);
        assert_eq!(w.cluster_health_at(at(1700)), DEGRADED);
        // It catches up: healthy again at once; losing the lead clears it all.
        w.observe(sample(100, 100), at(1800));
        assert_eq!(w.cluster_health_at(at(5000)), HEALTHY);
        w.observe(None, at(5000));
        assert_eq!(w.cluster_health_at(at(5000)), "");
        assert!(w.unreplicated_at(at(9000)).is_empty());
    }
}
