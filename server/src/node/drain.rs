//! Draining a node that was asked to stop (SIGTERM or SIGINT), so that a
//! rolling restart goes unnoticed by clients that know other endpoints.
//!
//! [`drain`] runs between the signal and the end of serving:
//!
//! 1. The node takes nothing new: client (`Kv`) requests are refused at
//!    admission with UNAVAILABLE "node is shutting down" (nothing ordered: the
//!    client library tries its next endpoint), gRPC health says NOT_SERVING,
//!    and a leader answers new `Forward`s with `NotLeader` (nothing appended:
//!    the follower keeps the batch and sends it again once a new leader is
//!    known).
//! 2. What it already took runs to its end: client requests admitted before
//!    the signal and `Forward`s being ordered here.
//! 3. A leader hands its leadership over: it asks a voter whose log matches
//!    its own to campaign (the `Campaign` RPC) and grants that vote itself.
//!    openraft 0.9 has no transfer-leader call (0.10 adds
//!    `trigger().transfer_leader`), but its vote rules give one: a voter
//!    refuses a candidate while its leader lease (`election_timeout_max_ms`
//!    since it last heard the leader) runs, while the leader's own lease
//!    dates from its election, so the leader grants the vote of a candidate
//!    whose log is at least as long as its own, steps down, and the
//!    candidate wins with two votes of three at once, without an election
//!    timeout. A leader elected less than `election_timeout_max_ms` ago
//!    waits until then first: a refused candidate would depose it anyway
//!    (its higher term) and cost an election. (With five voters or more the
//!    candidate also needs a voter whose lease ran out, so the hand-over
//!    takes about one election timeout.)
//! 4. The node waits until what the hand-over left (a request that was
//!    waiting for its local apply) is done.
//!
//! Its counterpart is [`quiet_start`]: a node that resumes from its data
//! directory does not campaign before it has heard from a leader, so that
//! coming back does not depose the leader.
//!
//! All of it is bounded by `drain_timeout_ms`: when it runs out, the batcher
//! stops sending, every write set it still holds ends (UNAVAILABLE if it can
//! have reached no log, outcome unknown otherwise), and the node stops
//! anyway. Then serving ends and Raft shuts down.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
// tokio's clock: std's in production, the simulated one under simulation.
use tokio::time::Instant;
use trireme_proto::v1 as pb;
use trireme_proto::v1::cluster_client::ClusterClient;

use crate::node::Node;
use crate::txn::NodeId;

/// What a client is told once the node drains.
pub const SHUTTING_DOWN: &str =
    "node is shutting down: the request was not taken and nothing was ordered; try another node";

/// Whether the node drains, and the `Forward`s being ordered here.
#[derive(Debug)]
pub struct Drain {
    draining: watch::Sender<bool>,
    forwards: Arc<AtomicUsize>,
    /// The term this node last led in, and when it was first seen leading it.
    led: std::sync::Mutex<Option<(u64, Instant)>>,
}

impl Default for Drain {
    fn default() -> Self {
        Drain {
            draining: watch::channel(false).0,
            forwards: Arc::default(),
            led: Default::default(),
        }
    }
}

/// A `Forward` being ordered: counted until dropped.
#[derive(Debug)]
pub struct ForwardGuard(Arc<AtomicUsize>);

impl Drop for ForwardGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Drain {
    /// Whether the node was asked to stop.
    pub fn is_draining(&self) -> bool {
        *self.draining.borrow()
    }

    /// Changes to [`Drain::is_draining`] (for the health service).
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.draining.subscribe()
    }

    /// Counts a `Forward` to order here; `None` when the node drains (refuse it).
    pub fn forward(&self) -> Option<ForwardGuard> {
        // Counted before the check: a drain that sees no forward in flight
        // after setting the flag cannot miss one that passed the check.
        self.forwards.fetch_add(1, Ordering::SeqCst);
        let guard = ForwardGuard(self.forwards.clone());
        (!self.is_draining()).then_some(guard)
    }

    /// Records that this node leads in `term` (the node's leader watch calls
    /// it on every change of openraft's server metrics: vote, state, leader,
    /// membership).
    pub fn leading(&self, term: u64) {
        let mut led = self.led.lock().expect("drain lock");
        if led.is_none_or(|(t, _)| t != term) {
            *led = Some((term, Instant::now()));
        }
    }

    /// When this node started leading in its current term (at the latest).
    fn leading_since(&self) -> Option<Instant> {
        self.led.lock().expect("drain lock").map(|(_, at)| at)
    }

    fn start(&self) {
        self.draining.send_replace(true);
    }

    fn forwards(&self) -> usize {
        self.forwards.load(Ordering::SeqCst)
    }
}

/// How a drain went, for the log.
#[derive(Debug)]
pub struct DrainReport {
    /// The leader this node handed over to (it was the leader).
    pub handed_to: Option<NodeId>,
    /// Whether this node was the leader but could not hand over in time.
    pub hand_over_failed: bool,
    /// Whether everything in flight finished before the drain timeout.
    pub finished: bool,
    /// How long it took.
    pub took: Duration,
}

/// Drains `node` (see the module doc) within `timeout`.
pub async fn drain(node: &Node, timeout: Duration) -> DrainReport {
    let start = Instant::now();
    let deadline = start + timeout;
    node.admission.close(SHUTTING_DOWN);
    node.drain.start();
    let idle = || node.admission.in_use() == 0 && node.drain.forwards() == 0;
    let mut finished = wait_until(deadline, idle).await;
    let mut handed_to = None;
    let mut hand_over_failed = false;
    if is_leader(node) {
        handed_to = hand_over(node, deadline).await;
        hand_over_failed = handed_to.is_none();
        finished = wait_until(deadline, idle).await;
    }
    if !finished {
        // Out of time: end what is still held, then give the answers a moment to leave.
        node.submitter().close();
        wait_until(Instant::now() + Duration::from_secs(1), idle).await;
    }
    DrainReport {
        handed_to,
        hand_over_failed,
        finished,
        took: start.elapsed(),
    }
}

fn is_leader(node: &Node) -> bool {
    node.raft.metrics().borrow().current_leader == Some(node.id())
}

/// Polls `done` every few milliseconds until it holds (true) or `deadline` passes (false).
async fn wait_until(deadline: Instant, done: impl Fn() -> bool) -> bool {
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Moves leadership to an up-to-date voter; returns the new leader, or
/// `None` if none took over before `deadline`.
async fn hand_over(node: &Node, deadline: Instant) -> Option<NodeId> {
    let me = node.id();
    let lease = Duration::from_millis(node.config.election_timeout_max_ms);
    let settle = lease;
    let mut asked = Vec::new();
    loop {
        let m = node.raft.metrics().borrow().clone();
        match m.current_leader {
            Some(l) if l == me => {}
            Some(l) => {
                tracing::info!(leader = l, "handed leadership over");
                return Some(l);
            }
            // Stepped down; the candidate has not won yet.
            None => {
                if !wait_until(deadline, || {
                    node.raft.metrics().borrow().current_leader.is_some()
                })
                .await
                {
                    return None;
                }
                continue;
            }
        }
        if Instant::now() >= deadline {
            tracing::warn!("drain timed out before leadership was handed over");
            return None;
        }
        // The leader grants a vote only once its own lease, which runs
        // `election_timeout_max_ms` from its election, is over; a candidate
        // refused would only depose it (its higher term ends the leader's
        // appends) and cost an election.
        if let Some(since) = node.drain.leading_since() {
            let lease_over = since + lease + Duration::from_millis(50);
            if Instant::now() < lease_over {
                tokio::time::sleep_until(lease_over.min(deadline)).await;
                continue;
            }
        }
        // A voter whose log matches the leader's: its vote request is granted.
        let last = m.last_log_index;
        let matched = m.replication.clone().unwrap_or_default();
        let membership = m.membership_config.membership().clone();
        let mut up_to_date: Vec<NodeId> = membership
            .voter_ids()
            .filter(|id| *id != me)
            .filter(|id| matched.get(id).and_then(|l| l.map(|l| l.index)) == last)
            .collect();
        // Try the ones not asked yet first.
        up_to_date.sort_by_key(|id| asked.iter().filter(|a| *a == id).count());
        let Some(target) = up_to_date.first().copied() else {
            // Replication catches up within a heartbeat or two.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        asked.push(target);
        let Some(addr) = membership.get_node(&target).map(|n| n.addr.clone()) else {
            continue;
        };
        match ask_to_campaign(node, &addr).await {
            Ok(()) => {
                tracing::info!(target, "asked an up-to-date voter to campaign");
                let until = deadline.min(Instant::now() + settle);
                wait_until(until, || !is_leader(node)).await;
            }
            Err(e) => {
                tracing::info!(target, error = %e, "a voter would not campaign");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn ask_to_campaign(node: &Node, addr: &str) -> Result<(), String> {
    let channel = node.peers.channel(addr).map_err(|e| e.to_string())?;
    let mut req = tonic::Request::new(pb::CampaignRequest { from: node.id() });
    req.set_timeout(Duration::from_secs(1));
    let r = ClusterClient::new(channel)
        .campaign(req)
        .await
        .map_err(|s| s.message().to_string())?
        .into_inner();
    if r.started {
        Ok(())
    } else {
        Err(r.reason)
    }
}

/// The receiver's side of `Campaign`: starts an election unless this node
/// drains itself, leads already or is not a voter.
pub async fn campaign(node: &Node, from: NodeId) -> pb::CampaignResponse {
    let refuse = |reason: &str| pb::CampaignResponse {
        started: false,
        reason: reason.to_string(),
    };
    if node.drain.is_draining() {
        return refuse("this node is shutting down");
    }
    let (leader, voter) = {
        let metrics = node.raft.metrics();
        let m = metrics.borrow();
        (
            m.current_leader,
            m.membership_config
                .membership()
                .voter_ids()
                .any(|id| id == node.id()),
        )
    };
    if leader == Some(node.id()) {
        return refuse("this node is the leader already");
    }
    if !voter {
        return refuse("this node is not a voter");
    }
    tracing::info!(from, "campaigning at the leader's request");
    match node.raft.trigger().elect().await {
        Ok(()) => pb::CampaignResponse {
            started: true,
            reason: String::new(),
        },
        Err(e) => refuse(&format!("raft: {e}")),
    }
}

/// Holds a resuming node's elections (started with `enable_elect` off) until
/// it has seen a leader, or until `grace` passes without one, or at once when
/// it is the only voter; then turns them on for good.
///
/// Why: openraft 0.9 has no pre-vote, and a node that starts knows no leader,
/// so it campaigns on its first tick, before the leader's next append (whose
/// retries back off to 500 ms while it was down) reaches it. Its vote is
/// refused (the others' leader lease runs, and its log is behind), but its
/// term is now higher than the leader's: it rejects the leader's appends and
/// the leader steps down, and every write in flight on the cluster waits for
/// an election, or ends "outcome unknown" (seen: 8 of 4,332 writes of a
/// rolling restart). A whole cluster restarting waits `grace` once, then
/// elects as before.
pub async fn quiet_start(raft: crate::raft::types::Raft, me: NodeId, grace: Duration) {
    let mut metrics = raft.server_metrics();
    let until = Instant::now() + grace;
    loop {
        let why = {
            let m = metrics.borrow_and_update();
            let voters: Vec<NodeId> = m.membership_config.membership().voter_ids().collect();
            if m.current_leader.is_some() {
                Some("a leader was seen")
            } else if voters == [me] {
                Some("this node is the only voter")
            } else {
                None
            }
        };
        if let Some(why) = why {
            tracing::debug!(why, "elections on");
            break;
        }
        tokio::select! {
            changed = metrics.changed() => if changed.is_err() { return },
            _ = tokio::time::sleep_until(until) => {
                tracing::info!(grace_ms = grace.as_millis() as u64, "no leader seen since the start: elections on");
                break;
            }
        }
    }
    raft.runtime_config().elect(true);
}
