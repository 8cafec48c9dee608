//! Submitting write sets to the log: batching (group commit) and forwarding.
//!
//! Every node runs one batcher. Write sets queue up; the batcher waits for a
//! free in-flight slot, then takes everything queued (up to a count and byte
//! bound) as one batch, so the busier the node, the bigger the batches: one
//! log entry, one replication round and one fsync per node cover them all. On
//! the leader a batch becomes a log entry directly; on a follower it travels to
//! the leader in one `Forward` RPC and becomes one entry there. Several batches
//! are in flight at once (pipelined replication).
//!
//! A batch that fails to reach the log (leader changed, leader unreachable)
//! goes back in the queue until its deadline. Resubmission is safe because
//! the state machine ignores a second copy of a write-set id. Outcomes reach
//! the origin's waiter from its own state machine; the batcher only reports
//! write sets it gives up on: `Unavailable` if no attempt could have reached a
//! log, `Indeterminate` otherwise. Whether an attempt could have is decided
//! from types: a [`PeerError`] other than `Indeterminate`, or a call whose
//! connection was never made ([`never_sent`]), proves it did not.
//!
//! The batcher gives up at once, instead of at the deadline, when the node is
//! not in the primary component ([`PrimaryCheck`]): before a batch is sent, and
//! while it is in flight (a `Forward` or the leader's own append that waits
//! on a quorum that is gone).

use std::sync::Arc;
use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError};
use tokio::sync::{mpsc, Semaphore};
// tokio's clock: std's in production, the simulated one under simulation.
use tokio::time::Instant;

use super::applied::Applied;
use super::gate::{PrimaryCheck, Throttle};
use crate::admission::{Limiter, Slot};
use crate::error::Error;
use crate::raft::network::{decode, encode, Peers};
use crate::raft::peer_error::{never_sent, PeerError};
use crate::raft::types::{Raft, Request};
use crate::txn::{NodeId, WriteSet};

/// Batching knobs.
#[derive(Clone, Debug)]
pub struct BatchConfig {
    /// Most write sets in one log entry.
    pub max_write_sets: usize,
    /// Most bytes in one log entry (a single larger write set still goes alone).
    pub max_bytes: usize,
    /// Batches in flight at once.
    pub max_in_flight: usize,
}

/// A write set waiting to be ordered.
pub struct Pending {
    /// The write set.
    pub ws: WriteSet,
    /// When to give up.
    pub deadline: Instant,
    /// Whether an attempt may have reached a log (then giving up is indeterminate).
    pub maybe_sent: bool,
    /// Its place under `max_pending_write_sets`, given back when it is dropped.
    _slot: Slot,
}

/// The batcher's shared context.
pub struct Submitter {
    id: NodeId,
    raft: Raft,
    peers: Peers,
    primary: Arc<dyn PrimaryCheck>,
    applied: Arc<Applied>,
    queue_tx: mpsc::UnboundedSender<Pending>,
    config: BatchConfig,
    flow: Arc<dyn Throttle>,
    limiter: Limiter,
    /// Set when a drain runs out of time: nothing more is sent for ordering.
    closing: std::sync::atomic::AtomicBool,
}

impl Submitter {
    /// Starts the batcher task; returns the handle used to submit.
    // Its collaborators are wired here one by one until `Node` is split into
    // narrow handles (the architecture issue); a struct of them would only
    // rename the list.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        id: NodeId,
        raft: Raft,
        peers: Peers,
        primary: Arc<dyn PrimaryCheck>,
        applied: Arc<Applied>,
        config: BatchConfig,
        flow: Arc<dyn Throttle>,
        limiter: Limiter,
    ) -> Arc<Submitter> {
        let (queue_tx, queue_rx) = mpsc::unbounded_channel();
        let submitter = Arc::new(Submitter {
            id,
            raft,
            peers,
            primary,
            applied,
            queue_tx,
            config,
            flow,
            limiter,
            closing: Default::default(),
        });
        tokio::spawn(submitter.clone().run(queue_rx));
        submitter
    }

    /// Queues a write set. Its outcome arrives through the `Applied` waiter
    /// registered for its id. Refused at once with [`Error::Overloaded`] when
    /// the batcher already holds `max_pending_write_sets`.
    pub fn submit(&self, ws: WriteSet, deadline: Instant) -> Result<(), Error> {
        let pending = Pending {
            ws,
            deadline,
            maybe_sent: false,
            _slot: self.limiter.try_take()?,
        };
        if let Err(mpsc::error::SendError(p)) = self.queue_tx.send(pending) {
            self.applied.resolve(
                p.ws.id,
                Err(Error::Unavailable("node is shutting down".into())),
            );
        }
        Ok(())
    }

    async fn run(self: Arc<Self>, mut queue_rx: mpsc::UnboundedReceiver<Pending>) {
        let slots = Arc::new(Semaphore::new(self.config.max_in_flight));
        while let Some(first) = queue_rx.recv().await {
            // Waiting for a slot first lets the batch grow while all are busy.
            let Ok(permit) = slots.clone().acquire_owned().await else {
                return;
            };
            let mut bytes = first.ws.size_bytes();
            let mut batch = vec![first];
            while batch.len() < self.config.max_write_sets && bytes < self.config.max_bytes {
                match queue_rx.try_recv() {
                    Ok(p) => {
                        bytes += p.ws.size_bytes();
                        batch.push(p);
                    }
                    Err(_) => break,
                }
            }
            let this = self.clone();
            tokio::spawn(async move {
                this.dispatch(batch).await;
                drop(permit);
            });
        }
    }

    /// Stops sending write sets for ordering (a drain that ran out of time):
    /// each one still held ends at its next turn, with UNAVAILABLE if no
    /// attempt can have reached a log and outcome unknown otherwise.
    pub fn close(&self) {
        self.closing
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    async fn dispatch(&self, batch: Vec<Pending>) {
        if self.closing.load(std::sync::atomic::Ordering::SeqCst) {
            let why = Error::Unavailable("node is shutting down and its drain timed out".into());
            return self.give_up_all(batch, &why);
        }
        let now = Instant::now();
        let (live, expired): (Vec<_>, Vec<_>) = batch.into_iter().partition(|p| p.deadline > now);
        for p in expired {
            self.give_up(p);
        }
        // Drop write sets whose clients stopped waiting (and that never left this node).
        let mut live: Vec<Pending> = live
            .into_iter()
            .filter(|p| p.maybe_sent || self.applied.is_waiting(p.ws.id))
            .collect();
        if live.is_empty() {
            return;
        }
        let leader = match self.primary.check() {
            Ok(l) => l,
            Err(e) => return self.give_up_all(live, &e),
        };
        let outcome = if leader == self.id {
            let wss: Vec<WriteSet> = live.iter().map(|p| p.ws.clone()).collect();
            live.iter_mut().for_each(|p| p.maybe_sent = true);
            let append = async {
                self.flow.throttle().await;
                self.raft.client_write(Request::Batch(wss)).await
            };
            tokio::select! {
                r = append => r.map(|_| ()).map_err(|e| e.to_string()),
                e = self.primary.lost() => return self.give_up_all(live, &e),
            }
        } else {
            tokio::select! {
                r = self.forward(leader, &mut live) => r,
                // The only batch slot must not wait on a leader that is gone
                // (a dead peer's reconnect can hang in a name lookup for
                // seconds): resend to the new one. The write set may be in
                // the old leader's log already; ids deduplicate it.
                new = self.leader_moved_from(leader) => {
                    live.iter_mut().for_each(|p| p.maybe_sent = true);
                    Err(format!("leader changed from {leader} to {new} while forwarding"))
                }
                e = self.primary.lost() => {
                    // The request may be at the leader already.
                    live.iter_mut().for_each(|p| p.maybe_sent = true);
                    return self.give_up_all(live, &e);
                }
            }
        };
        if let Err(reason) = outcome {
            if let Err(e) = self.primary.check() {
                return self.give_up_all(live, &e);
            }
            tracing::debug!(count = live.len(), %reason, "batch not ordered; requeueing");
            // Give an election time to settle before the next try.
            tokio::time::sleep(Duration::from_millis(50)).await;
            for p in live {
                if p.deadline <= Instant::now() {
                    self.give_up(p);
                } else if let Err(mpsc::error::SendError(p)) = self.queue_tx.send(p) {
                    self.give_up(p);
                }
            }
        }
    }

    /// Ends every write set of a batch now that the node is not primary (or
    /// is shutting down: `why` says which).
    fn give_up_all(&self, live: Vec<Pending>, why: &Error) {
        tracing::debug!(count = live.len(), %why, "giving up on a batch");
        for p in live {
            let err = if p.maybe_sent {
                Error::Indeterminate(format!(
                    "write set {} was sent for ordering, then this node gave up on it ({why})",
                    p.ws.id
                ))
            } else {
                Error::Unavailable(format!("write set {} never reached a log: {why}", p.ws.id))
            };
            self.applied.resolve(p.ws.id, Err(err));
        }
    }

    /// Resolves with the new leader once one other than `leader` is known.
    /// It watches the server metrics, which change with the leader, not the
    /// full metrics, which change on every pass of the core's loop.
    async fn leader_moved_from(&self, leader: NodeId) -> NodeId {
        let mut metrics = self.raft.server_metrics();
        loop {
            if let Some(now) = metrics.borrow_and_update().current_leader {
                if now != leader {
                    return now;
                }
            }
            if metrics.changed().await.is_err() {
                // Raft is shutting down: the other arms decide.
                std::future::pending::<()>().await;
            }
        }
    }

    async fn forward(&self, leader: NodeId, live: &mut [Pending]) -> Result<(), String> {
        let addr = {
            let metrics = self.raft.metrics();
            let m = metrics.borrow();
            m.membership_config
                .membership()
                .get_node(&leader)
                .map(|n| n.addr.clone())
        };
        let addr = addr.ok_or_else(|| format!("leader {leader} has no address"))?;
        let mut client = self.peers.raft_client(&addr).map_err(|e| e.to_string())?;
        let wss: Vec<&WriteSet> = live.iter().map(|p| &p.ws).collect();
        let mut request = tonic::Request::new(encode(&wss).map_err(|e| e.to_string())?);
        let timeout = live
            .iter()
            .map(|p| p.deadline)
            .max()
            .map_or(Duration::from_secs(1), |d| {
                d.saturating_duration_since(Instant::now())
                    .max(Duration::from_millis(100))
            });
        request.set_timeout(timeout);
        let sent = Instant::now();
        // grpc-timeout is only a header: bound the call here too, name
        // lookup and connect included.
        let reply = match tokio::time::timeout(timeout, client.forward(request)).await {
            Ok(reply) => reply,
            Err(_) => {
                live.iter_mut().for_each(|p| p.maybe_sent = true);
                return Err(format!(
                    "forward to leader {leader} at {addr}: no answer within {timeout:?}"
                ));
            }
        };
        let reply = match reply {
            Ok(r) => r,
            Err(status) => {
                // A connection never made delivered nothing; anything else may have.
                if !never_sent(&status) {
                    live.iter_mut().for_each(|p| p.maybe_sent = true);
                }
                return Err(format!("forward to leader {leader} at {addr}: {status}"));
            }
        };
        let result: Result<(), PeerError> = match decode(reply.get_ref()) {
            Ok(r) => r,
            Err(e) => {
                live.iter_mut().for_each(|p| p.maybe_sent = true);
                return Err(format!(
                    "undecodable forward reply from leader {leader}: {e}"
                ));
            }
        };
        match result {
            Ok(()) => {
                live.iter_mut().for_each(|p| p.maybe_sent = true);
                // Committed: a quorum acknowledged the leader after `sent`.
                self.primary.heard(leader, sent, true);
                Ok(())
            }
            Err(e) => {
                if !e.never_appended() {
                    live.iter_mut().for_each(|p| p.maybe_sent = true);
                }
                if let PeerError::NonPrimary(why) = &e {
                    self.primary.refused(leader, why);
                }
                Err(format!("leader {leader} refused the batch: {e}"))
            }
        }
    }

    fn give_up(&self, p: Pending) {
        let err = if p.maybe_sent {
            Error::Indeterminate(
                "the write set was sent for ordering but no outcome arrived before the deadline"
                    .into(),
            )
        } else {
            Error::Unavailable(
                "not in the primary component: no leader could take the write before the deadline"
                    .into(),
            )
        };
        self.applied.resolve(p.ws.id, Err(err));
    }
}

/// The leader's side of `Forward`: order a follower's batch as one entry.
/// Refused at once when this node is not a leader with a quorum; ended as
/// soon as it loses the quorum while the entry is replicating.
pub async fn order_forwarded(
    raft: &Raft,
    primary: &dyn PrimaryCheck,
    flow: &dyn Throttle,
    wss: Vec<WriteSet>,
) -> Result<(), PeerError> {
    let me = raft.metrics().borrow().id;
    refuse_unless_primary_leader(raft, primary, me)?;
    let append = async {
        flow.throttle().await;
        raft.client_write(Request::Batch(wss)).await
    };
    tokio::select! {
        r = append => match r {
            Ok(_) => Ok(()),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                Err(PeerError::NotLeader { leader: f.leader_id })
            }
            Err(e) => Err(PeerError::Indeterminate(e.to_string())),
        },
        e = primary.lost() => Err(PeerError::Indeterminate(format!(
            "the leader left the primary component while the batch was replicating ({e})"
        ))),
    }
}

/// `Ok` when `me` is the leader and in the primary component; otherwise the
/// typed refusal a peer gets: `NotLeader` (naming the leader it knows) or
/// `NonPrimary` (this leader has lost its quorum). Nothing is appended.
pub(crate) fn refuse_unless_primary_leader(
    raft: &Raft,
    primary: &dyn PrimaryCheck,
    me: NodeId,
) -> Result<(), PeerError> {
    match primary.check() {
        Ok(l) if l == me => Ok(()),
        Ok(l) => Err(PeerError::NotLeader { leader: Some(l) }),
        Err(e) => {
            let leader = raft.metrics().borrow().current_leader;
            Err(match leader {
                Some(l) if l == me => PeerError::NonPrimary(e.to_string()),
                other => PeerError::NotLeader { leader: other },
            })
        }
    }
}
