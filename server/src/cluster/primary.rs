//! Whether this node is in the primary component: knows a leader that a
//! quorum has acknowledged recently.
//!
//! Raft alone does not tell a follower that its leader lost its quorum: a
//! leader cut off from all but this follower keeps sending heartbeats, the
//! follower's election timer never fires, and it would go on forwarding
//! writes that can never commit. So the rule differs by role:
//!
//! - The leader is primary while a quorum acknowledged it within
//!   `election_timeout_max_ms` (openraft's `millis_since_quorum_ack`).
//! - A follower is primary while it has word, no older than
//!   [`Primary::follower_bound`], that its leader is: the moment it first
//!   sees a leader (which just won a quorum's votes), and then every ping the
//!   leader answers with `leader_with_quorum` (or the same answer attached
//!   to its AppendEntries), every forwarded batch it
//!   committed and every read index it confirmed. A ping answered without it, or
//!   a `Forward`/`ReadIndex` refused with [`PeerError::NonPrimary`], ends that
//!   at once, until a ping sent afterwards confirms the leader again.
//! - A node that knows no leader (a candidate, a node cut off from the
//!   leader's heartbeats) is not primary.
//!
//! Bound: a node that cannot reach a quorum reports NON_PRIMARY within
//! `election_timeout_max_ms` plus one heartbeat (the leader's answer rides on
//! it, see [`super::health`]), and never more than about four pings
//! (`ping_interval_ms`), if it still reaches its leader, and within
//! `election_timeout_max_ms + down_after_ms` if it hears the leader but cannot
//! reach it; a follower cut off from the leader's heartbeats becomes a
//! candidate within `election_timeout_max_ms`.
//!
//! [`PeerError::NonPrimary`]: crate::raft::peer_error::PeerError::NonPrimary

use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::time::Duration;

// tokio's clock: std's in production, the simulated one under simulation.
use tokio::time::Instant;

use crate::error::{Error, Result};
use crate::group::gate::PrimaryCheck;
use crate::raft::types::Raft;
use crate::txn::NodeId;

/// The primary-component check of one node, shared by the client API, the
/// batcher, the read index and the ping loop.
pub struct Primary {
    id: NodeId,
    raft: Raft,
    bounds: Bounds,
    word: Mutex<Word>,
}

/// How long each role may go without word of a quorum.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bounds {
    /// How long a leader may go without a quorum's acknowledgement.
    pub leader: Duration,
    /// How long a follower trusts its last word that the leader is primary.
    pub follower: Duration,
}

/// What a follower last heard about its leader's quorum.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Word {
    /// The leader this is about (`None`: no leader seen yet).
    pub leader: Option<NodeId>,
    /// Last moment the leader was known to have a quorum.
    pub confirmed: Instant,
    /// When and why the leader last said it had none.
    pub refused: Option<(Instant, String)>,
}

impl Word {
    /// No leader seen yet, at `now`.
    pub fn new(now: Instant) -> Self {
        Word {
            leader: None,
            confirmed: now,
            refused: None,
        }
    }

    /// Starts a fresh word when the leader changed: a new leader just won a
    /// quorum's votes, so seeing it (at `now`) counts as confirmation.
    pub fn follow(&mut self, leader: NodeId, now: Instant) {
        if self.leader != Some(leader) {
            *self = Word {
                leader: Some(leader),
                confirmed: now,
                refused: None,
            };
        }
    }

    /// `leader` answered, at `now`, a request sent at `sent`: with a quorum
    /// (confirmed as of `sent`) or without (refused from now on).
    pub fn hear(&mut self, leader: NodeId, sent: Instant, with_quorum: bool, now: Instant) {
        self.follow(leader, now);
        if with_quorum {
            self.confirmed = self.confirmed.max(sent);
        } else {
            self.refused = Some((now, "says it has no quorum".into()));
        }
    }

    /// `leader` refused a request, at `now`, because it is not primary.
    pub fn refuse(&mut self, leader: NodeId, why: &str, now: Instant) {
        self.follow(leader, now);
        self.refused = Some((now, format!("refused: {why}")));
    }
}

/// Whether node `me` is in the primary component at `now`: the leader, or
/// why not. `leader` and `quorum_ack_ms` are Raft's (the leader it knows,
/// and on a leader the time since a quorum acknowledged it); `word` is what
/// this node last heard of its leader's quorum, already following `leader`
/// (see [`Word::follow`]).
pub fn decide(
    me: NodeId,
    leader: Option<NodeId>,
    quorum_ack_ms: Option<u64>,
    word: &Word,
    bounds: Bounds,
    now: Instant,
) -> std::result::Result<NodeId, String> {
    match leader {
        None => Err(
            "not in the primary component: no leader (this node cannot reach a quorum, or an election is under way)"
                .into(),
        ),
        Some(l) if l == me => match quorum_ack_ms {
            Some(ms) if ms > bounds.leader.as_millis() as u64 => Err(format!(
                "not in the primary component: this leader has not heard from a quorum for {ms} ms"
            )),
            _ => Ok(l),
        },
        Some(l) => {
            if let Some((at, why)) = &word.refused {
                if *at >= word.confirmed {
                    return Err(format!("not in the primary component: leader {l} {why}"));
                }
            }
            let silent = now.saturating_duration_since(word.confirmed);
            if silent > bounds.follower {
                return Err(format!(
                    "not in the primary component: no word for {} ms that leader {l} has a quorum",
                    silent.as_millis()
                ));
            }
            Ok(l)
        }
    }
}

impl Primary {
    /// The check for node `id` with these bounds (see the module doc).
    pub fn new(id: NodeId, raft: Raft, leader_bound: Duration, follower_bound: Duration) -> Self {
        Primary {
            id,
            raft,
            bounds: Bounds {
                leader: leader_bound,
                follower: follower_bound,
            },
            word: Mutex::new(Word::new(Instant::now())),
        }
    }

    /// How long a follower trusts its last word that its leader is primary.
    pub fn follower_bound(&self) -> Duration {
        self.bounds.follower
    }

    /// The leader, if this node is in the primary component; otherwise why not.
    pub fn check(&self) -> Result<NodeId> {
        let (leader, quorum_ack_ms) = {
            let metrics = self.raft.metrics();
            let m = metrics.borrow();
            (m.current_leader, m.millis_since_quorum_ack)
        };
        let mut word = self.word.lock().expect("primary lock");
        if let Some(l) = leader.filter(|l| *l != self.id) {
            word.follow(l, Instant::now());
        }
        decide(
            self.id,
            leader,
            quorum_ack_ms,
            &word,
            self.bounds,
            Instant::now(),
        )
        .map_err(Error::Unavailable)
    }

    /// Whether this node is the leader and has a quorum (what it answers pings with).
    pub fn is_leader_with_quorum(&self) -> bool {
        self.check().is_ok_and(|l| l == self.id)
    }

    /// Records `leader`'s answer to a ping sent at `sent`: it has a quorum or not.
    pub fn heard(&self, leader: NodeId, sent: Instant, with_quorum: bool) {
        let current = self.raft.metrics().borrow().current_leader;
        if current != Some(leader) || leader == self.id {
            return;
        }
        let mut word = self.word.lock().expect("primary lock");
        word.hear(leader, sent, with_quorum, Instant::now());
    }

    /// Records that `leader` refused a request because it is not primary.
    pub fn refused(&self, leader: NodeId, why: &str) {
        if self.raft.metrics().borrow().current_leader != Some(leader) {
            return;
        }
        let mut word = self.word.lock().expect("primary lock");
        word.refuse(leader, why, Instant::now());
    }

    /// Resolves once this node is not primary, with the reason.
    pub async fn lost(&self) -> Error {
        loop {
            if let Err(e) = self.check() {
                return e;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl PrimaryCheck for Primary {
    fn check(&self) -> Result<NodeId> {
        Primary::check(self)
    }

    fn heard(&self, leader: NodeId, sent: Instant, with_quorum: bool) {
        Primary::heard(self, leader, sent, with_quorum)
    }

    fn refused(&self, leader: NodeId, why: &str) {
        Primary::refused(self, leader, why)
    }

    fn lost(&self) -> Pin<Box<dyn Future<Output = Error> + Send + '_>> {
        Box::pin(Primary::lost(self))
    }
}
