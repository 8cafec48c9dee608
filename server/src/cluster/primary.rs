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
//!   leader answers with `leader_with_quorum`, every forwarded batch it
//!   committed and every read index it confirmed. A ping answered without it, or
//!   a `Forward`/`ReadIndex` refused with [`PeerError::NonPrimary`], ends that
//!   at once, until a ping sent afterwards confirms the leader again.
//! - A node that knows no leader (a candidate, a node cut off from the
//!   leader's heartbeats) is not primary.
//!
//! Bound: a node that cannot reach a quorum reports NON_PRIMARY within
//! `election_timeout_max_ms` plus one ping (`ping_interval_ms` and its round
//! trip) if it still reaches its leader, and within
//! `election_timeout_max_ms + down_after_ms` if it hears the leader but cannot
//! reach it; a follower cut off from the leader's heartbeats becomes a
//! candidate within `election_timeout_max_ms`.
//!
//! [`PeerError::NonPrimary`]: crate::group::peer_error::PeerError::NonPrimary

use std::sync::Mutex;
use std::time::Duration;

// tokio's clock: std's in production, the simulated one under simulation.
use tokio::time::Instant;

use crate::error::{Error, Result};
use crate::group::types::Raft;
use crate::txn::NodeId;

/// The primary-component check of one node, shared by the client API, the
/// batcher, the read index and the ping loop.
pub struct Primary {
    id: NodeId,
    raft: Raft,
    /// How long a leader may go without a quorum's acknowledgement.
    leader_bound: Duration,
    /// How long a follower trusts its last word that the leader is primary.
    follower_bound: Duration,
    word: Mutex<Word>,
}

/// What a follower last heard about its leader's quorum.
#[derive(Debug)]
struct Word {
    /// The leader this is about (`None`: no leader seen yet).
    leader: Option<NodeId>,
    /// Last moment the leader was known to have a quorum.
    confirmed: Instant,
    /// When and why the leader last said it had none.
    refused: Option<(Instant, String)>,
}

impl Primary {
    /// The check for node `id` with these bounds (see the module doc).
    pub fn new(id: NodeId, raft: Raft, leader_bound: Duration, follower_bound: Duration) -> Self {
        Primary {
            id,
            raft,
            leader_bound,
            follower_bound,
            word: Mutex::new(Word {
                leader: None,
                confirmed: Instant::now(),
                refused: None,
            }),
        }
    }

    /// How long a follower trusts its last word that its leader is primary.
    pub fn follower_bound(&self) -> Duration {
        self.follower_bound
    }

    /// The leader, if this node is in the primary component; otherwise why not.
    pub fn check(&self) -> Result<NodeId> {
        let (leader, quorum_ack_ms) = {
            let metrics = self.raft.metrics();
            let m = metrics.borrow();
            (m.current_leader, m.millis_since_quorum_ack)
        };
        match leader {
            None => Err(Error::Unavailable(
                "not in the primary component: no leader (this node cannot reach a quorum, or an election is under way)"
                    .into(),
            )),
            Some(l) if l == self.id => match quorum_ack_ms {
                Some(ms) if ms > self.leader_bound.as_millis() as u64 => {
                    Err(Error::Unavailable(format!(
                        "not in the primary component: this leader has not heard from a quorum for {ms} ms"
                    )))
                }
                _ => Ok(l),
            },
            Some(l) => {
                let mut word = self.word.lock().expect("primary lock");
                follow(&mut word, l);
                if let Some((at, why)) = &word.refused {
                    if *at >= word.confirmed {
                        return Err(Error::Unavailable(format!(
                            "not in the primary component: leader {l} {why}"
                        )));
                    }
                }
                let silent = word.confirmed.elapsed();
                if silent > self.follower_bound {
                    return Err(Error::Unavailable(format!(
                        "not in the primary component: no word for {} ms that leader {l} has a quorum",
                        silent.as_millis()
                    )));
                }
                Ok(l)
            }
        }
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
        follow(&mut word, leader);
        if with_quorum {
            word.confirmed = word.confirmed.max(sent);
        } else {
            word.refused = Some((Instant::now(), "says it has no quorum".into()));
        }
    }

    /// Records that `leader` refused a request because it is not primary.
    pub fn refused(&self, leader: NodeId, why: &str) {
        if self.raft.metrics().borrow().current_leader != Some(leader) {
            return;
        }
        let mut word = self.word.lock().expect("primary lock");
        follow(&mut word, leader);
        word.refused = Some((Instant::now(), format!("refused: {why}")));
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

/// Starts a fresh word when the leader changed: a new leader just won a
/// quorum's votes, so seeing it counts as confirmation.
fn follow(word: &mut Word, leader: NodeId) {
    if word.leader != Some(leader) {
        *word = Word {
            leader: Some(leader),
            confirmed: Instant::now(),
            refused: None,
        };
    }
}
