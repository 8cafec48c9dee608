//! The failure detector: periodic pings to every member. What it records per
//! peer is a [`Contact`]; whether a peer is up, down or stalled is decided in
//! [`super::decide`] from a snapshot of these records.
//!
//! A leader and its followers exchange AppendEntries every heartbeat anyway,
//! so they attach the answers a ping would get to those instead (at most
//! every half ping interval) and do not ping each other while the attached
//! answers keep coming:
//!
//! - The follower attaches its answer to its reply, with a fresh *mark*
//!   (a number it remembers with the moment it replied and its applied
//!   seqno). The leader records it as the answer to the call it made.
//! - The leader attaches its answer to a later call, with the latest mark it
//!   has received from that follower. The follower records it as the answer
//!   to a ping sent when it sent that mark: the leader can have judged its
//!   quorum only after the mark arrived, so the follower's word of a quorum
//!   is never newer than a ping's would be (see [`super::primary`]). If the
//!   follower's replies stop arriving, the echoed mark ages and so does the
//!   word, as an unanswered ping's would.
//!
//! Two followers do the same on their pings: the one with the lower id
//! pings, attaching its answer and the latest mark from the other's ping
//! answers; the other takes it as the answer to a ping of its own, and does
//! not ping back.
//!
//! When the attached answers stop (a cut link, a slower heartbeat than the
//! pings), each side pings the other again. Their answers are dated from the
//! mark they echo, so a one-way cut ages them (and the contact, until the
//! peer is down) exactly as it would the answers to pings that no longer
//! come back.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, Weak};
use std::time::Duration;

// tokio's clock: std's in production, the simulated one under simulation.
use tokio::time::Instant;

use super::snapshot::{Contact, PingAnswer};
use super::Handle;
use crate::txn::{NodeId, Seqno};

/// What this node knows about one peer.
#[derive(Clone, Debug)]
struct PeerHealth {
    /// When it answered and where its apply stood.
    contact: Contact,
    /// The peer's last answer.
    view: Option<PingAnswer>,
    /// The moment an attached answer (see the module doc) last told as much
    /// as a ping sent then would have.
    attached: Option<Instant>,
    /// The latest mark this peer attached to a reply or a ping answer.
    mark: u64,
    /// When this node last attached its answer to a call or ping to this peer.
    sent_attached: Option<Instant>,
    /// When this node last made a mark for this peer.
    marked_at: Option<Instant>,
}

/// How many of its marks a node remembers, for all peers together: a peer
/// echoes the latest it received, a heartbeat or a ping old unless the link
/// fails.
const MARKS_KEPT: usize = 64;

/// A mark this node attached to a reply or ping answer.
#[derive(Clone, Copy, Debug)]
struct Mark {
    mark: u64,
    /// The peer it went to: only that peer's echo of it counts.
    to: NodeId,
    at: Instant,
    /// This node's applied seqno then.
    head: Seqno,
}

/// Liveness and progress of every peer, as seen from this node.
#[derive(Debug, Default)]
pub struct Health {
    peers: Mutex<BTreeMap<NodeId, PeerHealth>>,
    /// The marks this node attached to replies and ping answers, the
    /// newest last.
    marks: Mutex<std::collections::VecDeque<Mark>>,
    /// Pings this node sent.
    pings_sent: AtomicU64,
    /// Answers that came attached to AppendEntries replies instead.
    answers_attached: AtomicU64,
}

impl Health {
    /// An empty detector.
    pub fn new() -> Self {
        Health::default()
    }

    /// Every tracked peer's record.
    pub fn contacts(&self) -> BTreeMap<NodeId, Contact> {
        let peers = self.peers.lock().expect("health lock");
        peers.iter().map(|(id, p)| (*id, p.contact)).collect()
    }

    /// The client address `id` advertised in its last answer (empty or
    /// unknown: `None`).
    pub fn client_address(&self, id: NodeId) -> Option<String> {
        let peers = self.peers.lock().expect("health lock");
        peers
            .get(&id)
            .and_then(|p| p.view.as_ref())
            .map(|v| v.client_address.clone())
            .filter(|a| !a.is_empty())
    }

    /// Every tracked peer's last answer.
    pub fn views(&self) -> Vec<PingAnswer> {
        let peers = self.peers.lock().expect("health lock");
        peers.values().filter_map(|p| p.view.clone()).collect()
    }

    /// Pings this node sent, and answers it took from AppendEntries calls
    /// and replies instead.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.pings_sent.load(Ordering::Relaxed),
            self.answers_attached.load(Ordering::Relaxed),
        )
    }

    /// Whether an attached answer from `id` told within `within` what a ping
    /// would (then pinging it would tell this node nothing new).
    fn attached_within(&self, id: NodeId, within: Duration) -> bool {
        let peers = self.peers.lock().expect("health lock");
        peers
            .get(&id)
            .and_then(|p| p.attached)
            .is_some_and(|at| at.elapsed() < within)
    }

    /// A new mark for the reply to `id` this node is making, if one is due
    /// (at most once every `every` per peer): remembered with now and `head`.
    fn reply_mark(&self, id: NodeId, every: Duration, head: Seqno) -> Option<u64> {
        let now = Instant::now();
        {
            let mut peers = self.peers.lock().expect("health lock");
            let p = peers.get_mut(&id)?;
            if p.marked_at
                .is_some_and(|t| now.saturating_duration_since(t) < every)
            {
                return None;
            }
            p.marked_at = Some(now);
        }
        let mut marks = self.marks.lock().expect("health lock");
        let mark = marks.back().map_or(1, |m| m.mark + 1);
        marks.push_back(Mark {
            mark,
            to: id,
            at: now,
            head,
        });
        if marks.len() > MARKS_KEPT {
            marks.pop_front();
        }
        Some(mark)
    }

    /// When this node attached `mark` to a reply or answer to `from`, and
    /// its applied seqno then. A mark made for another peer is not `from`'s
    /// to echo: `from` never received it, so its echo proves nothing about
    /// when `from` answered.
    fn sent_mark(&self, from: NodeId, mark: u64) -> Option<(Instant, Seqno)> {
        let marks = self.marks.lock().expect("health lock");
        marks
            .iter()
            .find(|m| m.mark == mark && m.to == from)
            .map(|m| (m.at, m.head))
    }

    /// The latest mark `id` attached, if a call or ping to it is due to carry
    /// this node's answer (at most once every `every`).
    fn call_due(&self, id: NodeId, every: Duration) -> Option<u64> {
        let mut peers = self.peers.lock().expect("health lock");
        let p = peers.get_mut(&id)?;
        let now = Instant::now();
        if p.mark == 0
            || p.sent_attached
                .is_some_and(|t| now.saturating_duration_since(t) < every)
        {
            return None;
        }
        p.sent_attached = Some(now);
        Some(p.mark)
    }

    fn track(&self, ids: &[NodeId]) {
        let mut peers = self.peers.lock().expect("health lock");
        peers.retain(|id, _| ids.contains(id));
        for id in ids {
            peers.entry(*id).or_insert_with(|| PeerHealth {
                contact: Contact::new(Instant::now()),
                view: None,
                attached: None,
                mark: 0,
                sent_attached: None,
                marked_at: None,
            });
        }
    }

    /// Records `id`'s answer, with its `mark` (0: none), to a ping sent when
    /// this node had applied `head`.
    fn record(&self, id: NodeId, resp: PingAnswer, head: Seqno, mark: u64) {
        let mut peers = self.peers.lock().expect("health lock");
        if let Some(p) = peers.get_mut(&id) {
            p.contact.record(resp.applied_seqno, head, Instant::now());
            p.view = Some(resp);
            if mark != 0 {
                p.mark = mark;
            }
        }
    }

    /// Records `id`'s attached answer as the answer, come back at `at`, to a
    /// ping sent when this node had applied `head`; `mark`: the mark that
    /// came with it (with a reply). An answer older than the last one
    /// recorded never moves the contact or the view back.
    fn record_attached(
        &self,
        id: NodeId,
        resp: PingAnswer,
        head: Seqno,
        at: Instant,
        mark: Option<u64>,
    ) {
        let mut peers = self.peers.lock().expect("health lock");
        if let Some(p) = peers.get_mut(&id) {
            // This node's own pings to the peer may have heard it later.
            if p.contact.last_ok.is_none_or(|last| at >= last) {
                p.contact.record(resp.applied_seqno, head, at);
                p.view = Some(resp);
            }
            p.attached = Some(p.attached.map_or(at, |a| a.max(at)));
            if let Some(mark) = mark {
                p.mark = mark;
            }
            self.answers_attached.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// On a follower: this node's answer and a new mark to attach to its reply
/// to an AppendEntries call from `leader`, when due (at most every half ping
/// interval).
pub fn reply_attachment(handle: &Handle, leader: NodeId) -> Option<(PingAnswer, u64)> {
    let mark = reply_mark(handle, leader)?;
    Some((answer(handle, leader), mark))
}

/// How often at most an answer is attached to a peer's calls or replies:
/// half a ping interval.
fn attach_every(handle: &Handle) -> Duration {
    Duration::from_millis(handle.config.ping_interval_ms) / 2
}

/// A new mark for this node's reply or ping answer to `to`, when due (at
/// most every half ping interval).
pub fn reply_mark(handle: &Handle, to: NodeId) -> Option<u64> {
    handle
        .health
        .reply_mark(to, attach_every(handle), handle.applied.seqno())
}

/// This node's answer and the latest mark from `follower` to attach to an
/// AppendEntries call (or a ping) to it, when due (at most every half ping
/// interval, and only once the follower has sent a mark).
pub fn call_attachment(handle: &Handle, follower: NodeId) -> Option<(PingAnswer, u64)> {
    let mark = handle.health.call_due(follower, attach_every(handle))?;
    Some((answer(handle, follower), mark))
}

/// On a leader: `follower`'s answer attached to its reply, with its `mark`,
/// to a call made when this node had applied `head`.
pub fn took_reply(handle: &Handle, follower: NodeId, resp: PingAnswer, mark: u64, head: Seqno) {
    // The call went out before the reply came: "asked" now is late by a
    // round trip, as a ping's record is.
    let now = Instant::now();
    handle
        .health
        .record_attached(follower, resp, head, now, Some(mark));
}

/// `leader`'s answer attached to a call (or a ping), echoing `mark`: the
/// answer to a ping sent when this node made that mark. An echo of a mark
/// this node no longer remembers, never made, or made for another peer tells
/// it nothing about when the answer was made, so the answer is dropped.
pub fn took_call(handle: &Handle, leader: NodeId, resp: PingAnswer, mark: u64) {
    let Some((asked, head)) = handle.health.sent_mark(leader, mark) else {
        return;
    };
    if resp.leader_id == leader {
        handle.primary.heard(leader, asked, resp.leader_with_quorum);
    }
    handle
        .health
        .record_attached(leader, resp, head, asked, None);
}

/// Pings every member (and, before this node is a member, the join target)
/// every `ping_interval_ms`, on the node's grid, until the node is dropped.
pub async fn ping_loop(handle: Weak<Handle>) {
    loop {
        let Some(h) = handle.upgrade() else { return };
        let interval = Duration::from_millis(h.config.ping_interval_ms);
        let me = h.id();
        let members: Vec<(NodeId, String)> = {
            let metrics = h.raft.metrics();
            let m = metrics.borrow();
            m.membership_config
                .membership()
                .nodes()
                .filter(|(id, _)| **id != me)
                .map(|(id, node)| (*id, node.addr.clone()))
                .collect()
        };
        h.health
            .track(&members.iter().map(|(id, _)| *id).collect::<Vec<_>>());
        for (id, addr) in members {
            // A leader and its follower attach what a ping would tell to
            // AppendEntries, and a follower with a lower id to its pings
            // (see the module doc): no need to ask as well. Three intervals:
            // an attached answer dates from the mark it echoes, a heartbeat
            // or a ping older than its arrival.
            if h.health.attached_within(id, interval * 3) {
                continue;
            }
            h.health.pings_sent.fetch_add(1, Ordering::Relaxed);
            let h = h.clone();
            tokio::spawn(async move {
                // Comparing the peer's answer with where this node stood
                // when asking, not when the answer came back, keeps a fast
                // write rate from reading as lag.
                let head = h.applied.seqno();
                let sent = Instant::now();
                if let Ok((resp, mark)) = super::rpc::ping(&h, id, &addr, interval * 2).await {
                    if resp.leader_id == id {
                        h.primary.heard(id, sent, resp.leader_with_quorum);
                    }
                    h.health.record(id, resp, head, mark);
                }
            });
        }
        let ticks = h.ticks;
        drop(h);
        ticks.sleep(interval).await;
    }
}

/// This node's answer to a ping from node `from`.
pub fn answer(handle: &Handle, from: NodeId) -> PingAnswer {
    let (leader_id, term) = {
        let metrics = handle.raft.metrics();
        let m = metrics.borrow();
        (m.current_leader.unwrap_or(0), m.current_term)
    };
    PingAnswer {
        node_id: handle.id(),
        applied_seqno: handle.applied.seqno(),
        leader_id,
        term,
        members: super::membership::members(handle),
        from_departed: handle.applied.is_departed(from),
        leader_with_quorum: handle.primary.is_leader_with_quorum(),
        client_address: handle.config.advertise_addr().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer_from(id: NodeId, applied: Seqno) -> PingAnswer {
        PingAnswer {
            node_id: id,
            applied_seqno: applied,
            leader_id: 1,
            term: 1,
            members: Vec::new(),
            from_departed: false,
            leader_with_quorum: true,
            client_address: String::new(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_node_marks_at_most_one_reply_per_peer_and_period_and_remembers_the_latest_marks() {
        let h = Health::new();
        let every = Duration::from_millis(100);
        assert_eq!(h.reply_mark(2, every, 7), None, "an untracked peer");
        h.track(&[2, 3]);
        let first = Instant::now();
        assert_eq!(h.reply_mark(2, every, 7), Some(1));
        assert_eq!(
            h.reply_mark(2, every, 8),
            None,
            "a second mark within the period"
        );
        assert_eq!(
            h.reply_mark(3, every, 8),
            Some(2),
            "another peer has its own period"
        );
        tokio::time::advance(every).await;
        assert_eq!(h.reply_mark(2, every, 9), Some(3));
        assert_eq!(h.sent_mark(2, 1), Some((first, 7)));
        assert_eq!(h.sent_mark(3, 2), Some((first, 8)));
        assert_eq!(h.sent_mark(2, 3), Some((first + every, 9)));
        assert_eq!(h.sent_mark(2, 4), None, "a mark never made");
        assert_eq!(h.sent_mark(3, 1), None, "a mark made for another peer");
        assert_eq!(h.sent_mark(2, 2), None, "a mark made for another peer");
        for _ in 0..MARKS_KEPT {
            tokio::time::advance(every).await;
            assert!(h.reply_mark(2, every, 10).is_some());
        }
        assert_eq!(h.sent_mark(2, 3), None, "the oldest marks are forgotten");
        assert!(h.sent_mark(2, 3 + MARKS_KEPT as u64).is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn a_leader_echoes_a_followers_latest_mark_at_most_once_per_period() {
        let h = Health::new();
        let every = Duration::from_millis(100);
        assert_eq!(h.call_due(2, every), None, "an untracked peer");
        h.track(&[2, 3]);
        assert_eq!(h.call_due(2, every), None, "no mark received yet");
        h.record_attached(2, answer_from(2, 5), 6, Instant::now(), Some(41));
        assert_eq!(h.call_due(2, every), Some(41));
        h.record_attached(2, answer_from(2, 6), 6, Instant::now(), Some(42));
        assert_eq!(h.call_due(2, every), None, "within the period");
        tokio::time::advance(every).await;
        assert_eq!(h.call_due(2, every), Some(42));
        assert_eq!(h.call_due(3, every), None, "marks are per follower");
        assert_eq!(h.counts(), (0, 2));
    }

    #[tokio::test(start_paused = true)]
    async fn attached_answers_replace_pings_only_while_they_are_fresh() {
        let h = Health::new();
        let within = Duration::from_millis(400);
        h.track(&[2]);
        assert!(!h.attached_within(2, within), "nothing attached yet");
        let asked = Instant::now();
        tokio::time::advance(Duration::from_millis(300)).await;
        h.record_attached(2, answer_from(2, 9), 9, asked, None);
        assert!(h.attached_within(2, within));
        // Freshness, and the contact, count from when the answer was asked
        // for (the mark's moment), not from when it arrived: an echo of an
        // old mark (the peer hears this node no more) ages both.
        let contact = h.contacts()[&2];
        assert_eq!(contact.silent(Instant::now()), Duration::from_millis(300));
        tokio::time::advance(Duration::from_millis(100)).await;
        assert!(!h.attached_within(2, within));
        // An older echo never moves either back.
        let newer = Instant::now() - Duration::from_millis(50);
        h.record_attached(2, answer_from(2, 10), 10, newer, None);
        h.record_attached(2, answer_from(2, 9), 9, asked, None);
        assert!(h.attached_within(2, within));
        let contact = h.contacts()[&2];
        assert_eq!(contact.silent(Instant::now()), Duration::from_millis(50));
        assert_eq!(contact.applied, 10);
    }
}
