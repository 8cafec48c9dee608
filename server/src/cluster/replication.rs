//! The leader's watch on its own replication: a voter whose matched log
//! index has not moved for `down_after_ms` while it is behind the leader's
//! log is *unreplicated*. The cluster then has less fault tolerance than its
//! size suggests even though every node that answers may be SYNCED, so the
//! leader says so: in `unreplicated_voters` and `cluster_health = DEGRADED`
//! of its status, and in `/metrics`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, Weak};
use std::time::Duration;

// tokio's clock: std's in production, the simulated one under simulation.
use tokio::time::Instant;

use super::snapshot::{ClusterHealth, Role, Snapshot};
use super::Handle;
use crate::txn::NodeId;

/// Where replication to one voter stood, and since when.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    /// Its matched log index at the last sample.
    pub matched: Option<u64>,
    /// When that index last moved (or was last caught up).
    pub moved: Instant,
    /// Behind the leader's log at the last sample.
    pub behind: bool,
}

/// One sample of the leader's replication: the leader's last log index and
/// each other voter's matched index (`None`: not leading).
pub type Sample = Option<(u64, BTreeMap<NodeId, Option<u64>>)>;

/// The sample a snapshot holds.
pub fn sample(s: &Snapshot) -> Sample {
    if !s.leading {
        return None;
    }
    let matched = s
        .members
        .iter()
        .filter(|(id, m)| m.role == Role::Voter && **id != s.me)
        .map(|(id, _)| (*id, s.matched.get(id).copied().flatten()))
        .collect();
    Some((s.last_log, matched))
}

/// Folds one sample taken at `now` into the progress of every voter: a
/// voter's clock restarts when its matched index moves or it is caught up;
/// losing the lead forgets everything.
pub fn observe(voters: &mut BTreeMap<NodeId, Progress>, sample: Sample, now: Instant) {
    let Some((last_log, matched)) = sample else {
        voters.clear();
        return;
    };
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

/// The voters behind without progress for `after`, at `now`.
pub fn unreplicated(
    voters: &BTreeMap<NodeId, Progress>,
    after: Duration,
    now: Instant,
) -> Vec<NodeId> {
    voters
        .iter()
        .filter(|(_, p)| p.behind && now.saturating_duration_since(p.moved) >= after)
        .map(|(id, _)| *id)
        .collect()
}

/// Replication progress per voter, sampled on the leader.
#[derive(Debug)]
pub struct ReplicationWatch {
    voters: Mutex<BTreeMap<NodeId, Progress>>,
    /// Only meaningful while this node leads.
    leading: AtomicBool,
    after: Duration,
}

impl ReplicationWatch {
    /// A watch that reports a voter unreplicated after `after` without progress.
    pub fn new(after: Duration) -> Self {
        ReplicationWatch {
            voters: Mutex::new(BTreeMap::new()),
            leading: AtomicBool::new(false),
            after,
        }
    }

    /// Records one sample of the leader's replication state.
    fn observe(&self, sample: Sample, now: Instant) {
        let mut voters = self.voters.lock().expect("replication watch lock");
        self.leading.store(sample.is_some(), Ordering::Relaxed);
        observe(&mut voters, sample, now);
    }

    /// The voters this leader has not replicated to for `after` (empty when
    /// not leading).
    pub fn unreplicated(&self) -> Vec<NodeId> {
        self.unreplicated_at(Instant::now())
    }

    fn unreplicated_at(&self, now: Instant) -> Vec<NodeId> {
        let voters = self.voters.lock().expect("replication watch lock");
        unreplicated(&voters, self.after, now)
    }

    /// Healthy or degraded on the leader; `None` elsewhere (ask the leader).
    pub fn cluster_health(&self) -> Option<ClusterHealth> {
        self.cluster_health_at(Instant::now())
    }

    fn cluster_health_at(&self, now: Instant) -> Option<ClusterHealth> {
        if !self.leading.load(Ordering::Relaxed) {
            None
        } else if self.unreplicated_at(now).is_empty() {
            Some(ClusterHealth::Healthy)
        } else {
            Some(ClusterHealth::Degraded)
        }
    }
}

/// Samples the leader's replication every `ping_interval_ms` (on the node's
/// grid, with the pings) until the node is dropped, and logs when a voter becomes (or stops being) unreplicated.
pub async fn watch_loop(handle: Weak<Handle>) {
    let mut reported: Vec<NodeId> = Vec::new();
    loop {
        let Some(h) = handle.upgrade() else { return };
        let interval = Duration::from_millis(h.config.ping_interval_ms);
        let snapshot = h.snapshot();
        h.replication.observe(sample(&snapshot), snapshot.now);
        let now = h.replication.unreplicated();
        if now != reported {
            if now.is_empty() {
                tracing::info!("replication reaches every voter again");
            } else {
                tracing::warn!(voters = ?now, after = ?h.replication.after,
                    "no replication progress to these voters: the cluster is DEGRADED");
            }
            reported = now;
        }
        let ticks = h.ticks;
        drop(h);
        ticks.sleep(interval).await;
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
        assert_eq!(w.cluster_health_at(at(0)), None);
        let sample = |m2: u64, m3: u64| Some((100, BTreeMap::from([(2, Some(m2)), (3, Some(m3))])));
        w.observe(sample(100, 40), at(0));
        assert_eq!(w.cluster_health_at(at(0)), Some(ClusterHealth::Healthy));
        // Node 2 stays caught up; node 3 moves once, then stops.
        w.observe(sample(100, 50), at(600));
        w.observe(sample(100, 50), at(1200));
        assert!(
            w.unreplicated_at(at(1200)).is_empty(),
            "50 moved 600 ms ago"
        );
        w.observe(sample(100, 50), at(1700));
        assert_eq!(w.unreplicated_at(at(1700)), vec![3]);
        assert_eq!(w.cluster_health_at(at(1700)), Some(ClusterHealth::Degraded));
        // It catches up: healthy again at once; losing the lead clears it all.
        w.observe(sample(100, 100), at(1800));
        assert_eq!(w.cluster_health_at(at(5000)), Some(ClusterHealth::Healthy));
        w.observe(None, at(5000));
        assert_eq!(w.cluster_health_at(at(5000)), None);
        assert!(w.unreplicated_at(at(9000)).is_empty());
    }
}
