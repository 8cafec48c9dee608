//! The failure detector: periodic pings to every member. What it records per
//! peer is a [`Contact`]; whether a peer is up, down or stalled is decided in
//! [`super::decide`] from a snapshot of these records.

use std::collections::BTreeMap;
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
}

/// Liveness and progress of every peer, as seen from this node.
#[derive(Debug, Default)]
pub struct Health {
    peers: Mutex<BTreeMap<NodeId, PeerHealth>>,
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

    fn track(&self, ids: &[NodeId]) {
        let mut peers = self.peers.lock().expect("health lock");
        peers.retain(|id, _| ids.contains(id));
        for id in ids {
            peers.entry(*id).or_insert_with(|| PeerHealth {
                contact: Contact::new(Instant::now()),
                view: None,
            });
        }
    }

    /// Records `id`'s answer to a ping sent when this node had applied `head`.
    fn record(&self, id: NodeId, resp: PingAnswer, head: Seqno) {
        let mut peers = self.peers.lock().expect("health lock");
        if let Some(p) = peers.get_mut(&id) {
            p.contact.record(resp.applied_seqno, head, Instant::now());
            p.view = Some(resp);
        }
    }
}

/// Pings every member (and, before this node is a member, the join target)
/// every `ping_interval_ms`, until the node is dropped.
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
            let h = h.clone();
            tokio::spawn(async move {
                // Comparing the peer's answer with where this node stood
                // when asking, not when the answer came back, keeps a fast
                // write rate from reading as lag.
                let head = h.applied.seqno();
                let sent = Instant::now();
                if let Ok(resp) = super::rpc::ping(&h, &addr, interval * 2).await {
                    if resp.leader_id == id {
                        h.primary.heard(id, sent, resp.leader_with_quorum);
                    }
                    h.health.record(id, resp, head);
                }
            });
        }
        drop(h);
        tokio::time::sleep(interval).await;
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
