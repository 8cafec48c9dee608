//! Linearizable reads: the read index, coalesced.
//!
//! A LINEARIZABLE read needs a seqno that covers every write committed before
//! the read began: the leader's read index, confirmed by a heartbeat round to a
//! quorum (openraft's `get_read_log_id`). One round serves every read that
//! arrived before it started: reads queue while a round is in flight and share
//! the next one, so the cost per read falls as load rises. A follower asks the
//! leader for the index over `ReadIndex`, then waits until it has applied it.
//! A leader without a quorum refuses `ReadIndex` with a typed
//! [`PeerError::NonPrimary`]; a round in flight ends as soon as this node is
//! not in the primary component ([`PrimaryCheck`]).

use std::sync::Arc;
use std::time::Duration;

use openraft::error::{CheckIsLeaderError, RaftError};
use tokio::sync::{mpsc, oneshot};

use super::gate::PrimaryCheck;
use crate::admission::Limiter;
use crate::error::{Error, Result};
use crate::raft::network::{decode, encode, Peers};
use crate::raft::peer_error::PeerError;
use crate::raft::types::Raft;
use crate::txn::{NodeId, Seqno};

type Waiter = oneshot::Sender<Result<Seqno, String>>;

/// Hands out read indexes, one quorum round for every group of waiting reads.
pub struct ReadIndex {
    queue_tx: mpsc::UnboundedSender<Waiter>,
    /// Bounds the waiting reads (`max_pending_reads`).
    limiter: Limiter,
}

impl ReadIndex {
    /// Starts the coalescing task.
    pub fn start(
        id: NodeId,
        raft: Raft,
        peers: Peers,
        primary: Arc<dyn PrimaryCheck>,
        timeout: Duration,
        limiter: Limiter,
    ) -> ReadIndex {
        let (queue_tx, queue_rx) = mpsc::unbounded_channel();
        tokio::spawn(run(id, raft, peers, primary, timeout, queue_rx));
        ReadIndex { queue_tx, limiter }
    }

    /// A seqno that, once applied here, makes a read linearizable. Refused at
    /// once with [`Error::Overloaded`] when `max_pending_reads` already wait.
    pub async fn read_index(&self) -> Result<Seqno> {
        // Held until the answer, or dropped with this future if the client goes.
        let _slot = self.limiter.try_take()?;
        let (tx, rx) = oneshot::channel();
        self.queue_tx
            .send(tx)
            .map_err(|_| Error::Unavailable("node is shutting down".into()))?;
        match rx.await {
            Ok(Ok(s)) => Ok(s),
            Ok(Err(msg)) => Err(Error::Unavailable(msg)),
            Err(_) => Err(Error::Unavailable("node is shutting down".into())),
        }
    }
}

async fn run(
    id: NodeId,
    raft: Raft,
    peers: Peers,
    primary: Arc<dyn PrimaryCheck>,
    timeout: Duration,
    mut queue_rx: mpsc::UnboundedReceiver<Waiter>,
) {
    while let Some(first) = queue_rx.recv().await {
        let mut waiters = vec![first];
        while let Ok(w) = queue_rx.try_recv() {
            waiters.push(w);
        }
        // Reads whose clients went away need no round.
        waiters.retain(|w| !w.is_closed());
        if waiters.is_empty() {
            continue;
        }
        let started = std::time::Instant::now();
        let round = tokio::time::timeout(timeout, fetch(id, &raft, &peers, &*primary));
        let result = tokio::select! {
            r = round => match r {
                Ok(r) => r,
                Err(_) => Err(format!(
                    "not in the primary component: no quorum confirmed a read index within {timeout:?}"
                )),
            },
            e = primary.lost() => Err(e.to_string()),
        };
        tracing::debug!(
            reads = waiters.len(),
            elapsed_us = started.elapsed().as_micros() as u64,
            ?result,
            "read index round"
        );
        for w in waiters {
            let _ = w.send(result.clone());
        }
    }
}

async fn fetch(
    id: NodeId,
    raft: &Raft,
    peers: &Peers,
    primary: &dyn PrimaryCheck,
) -> Result<Seqno, String> {
    let leader = raft.metrics().borrow().current_leader;
    match leader {
        Some(l) if l == id => leader_read_index(raft, primary)
            .await
            .map_err(|e| e.to_string()),
        Some(l) => {
            let addr = raft
                .metrics()
                .borrow()
                .membership_config
                .membership()
                .get_node(&l)
                .map(|n| n.addr.clone())
                .ok_or_else(|| format!("leader {l} has no address"))?;
            let mut client = peers.raft_client(&addr).map_err(|e| e.to_string())?;
            let request = encode(&()).map_err(|e| e.to_string())?;
            let sent = tokio::time::Instant::now();
            let reply = client.read_index(request).await.map_err(|s| {
                format!(
                    "not in the primary component: leader {l} at {addr} unreachable: {}",
                    s.message()
                )
            })?;
            let result: Result<Seqno, PeerError> =
                decode(reply.get_ref()).map_err(|e| e.to_string())?;
            if result.is_ok() {
                // The leader confirmed its quorum after `sent`.
                primary.heard(l, sent, true);
            }
            result.map_err(|e| {
                if let PeerError::NonPrimary(why) = &e {
                    primary.refused(l, why);
                }
                e.to_string()
            })
        }
        None => Err("not in the primary component: no leader is known".into()),
    }
}

/// The leader's read index (also served to followers over `ReadIndex`).
///
/// The index is at least the leader's last log index when the read arrived,
/// not only openraft's `max(committed, first entry of the term)`: a leader
/// SIGKILLed and restarted within the election timeout resumes leadership of
/// the same term with a commit index restored from a possibly stale hint, and
/// would otherwise serve reads that miss acknowledged writes. Every committed
/// entry is in the leader's log, so its last index covers them all.
///
/// A leader without a quorum refuses at once ([`PeerError::NonPrimary`]).
pub async fn leader_read_index(
    raft: &Raft,
    primary: &dyn PrimaryCheck,
) -> Result<Seqno, PeerError> {
    let (me, last_log) = {
        let metrics = raft.metrics();
        let m = metrics.borrow();
        (m.id, m.last_log_index.unwrap_or(0))
    };
    super::submit::refuse_unless_primary_leader(raft, primary, me)?;
    match raft.get_read_log_id().await {
        Ok((read, _applied)) => Ok(read.map_or(0, |l| l.index).max(last_log)),
        Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f))) => {
            Err(PeerError::NotLeader {
                leader: f.leader_id,
            })
        }
        Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(q))) => {
            Err(PeerError::NonPrimary(q.to_string()))
        }
        Err(e) => Err(PeerError::NonPrimary(format!("raft: {e}"))),
    }
}
