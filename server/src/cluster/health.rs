//! The failure detector: periodic pings to every member.

use std::collections::BTreeMap;
use std::sync::{Mutex, Weak};
use std::time::Duration;

// tokio's clock: std's in production, the simulated one under simulation.
use tokio::time::Instant;
use trireme_proto::v1 as pb;
use trireme_proto::v1::cluster_client::ClusterClient;

use crate::node::Node;
use crate::txn::{NodeId, Seqno};

/// What this node knows about one peer.
#[derive(Clone, Debug)]
pub struct PeerHealth {
    /// When the peer last answered a ping.
    pub last_ok: Option<Instant>,
    /// When this node started pinging it (a peer never heard from is down after `down_after`).
    pub since: Instant,
    /// The peer's applied seqno at its last answer.
    pub applied: Seqno,
    /// When that applied seqno last moved.
    pub applied_moved: Instant,
    /// How far that applied seqno was behind this node's own when the ping
    /// was sent: the apply lag, free of the ping interval's staleness.
    pub lag: Seqno,
    /// The peer's last answer.
    pub view: Option<pb::PingResponse>,
}

/// Liveness and progress of every peer, as seen from this node.
#[derive(Debug)]
pub struct Health {
    peers: Mutex<BTreeMap<NodeId, PeerHealth>>,
    down_after: Duration,
    stall_after: Duration,
}

impl Health {
    /// A detector with these thresholds.
    pub fn new(down_after: Duration, stall_after: Duration) -> Self {
        Health {
            peers: Mutex::new(BTreeMap::new()),
            down_after,
            stall_after,
        }
    }

    /// Whether `id` answered within `down_after` (a peer not yet tracked counts as up).
    pub fn is_up(&self, id: NodeId) -> bool {
        let peers = self.peers.lock().expect("health lock");
        match peers.get(&id) {
            None => true,
            Some(p) => match p.last_ok {
                Some(t) => t.elapsed() < self.down_after,
                None => p.since.elapsed() < self.down_after,
            },
        }
    }

    /// How long `id` has been down (zero when up).
    pub fn down_for(&self, id: NodeId) -> Duration {
        let peers = self.peers.lock().expect("health lock");
        match peers.get(&id) {
            None => Duration::ZERO,
            Some(p) => {
                let silent = p.last_ok.unwrap_or(p.since).elapsed();
                if silent < self.down_after {
                    Duration::ZERO
                } else {
                    silent
                }
            }
        }
    }

    /// Whether `id` is up but its apply has not moved for `stall_after` while behind `head`.
    pub fn is_stalled(&self, id: NodeId, head: Seqno) -> bool {
        self.stalled_for(id, head) > self.stall_after
    }

    /// How long `id` has answered without its apply moving while behind
    /// `head` (zero when it moves, is not behind, or never answered).
    pub fn stalled_for(&self, id: NodeId, head: Seqno) -> Duration {
        let peers = self.peers.lock().expect("health lock");
        match peers.get(&id) {
            Some(p) if p.view.is_some() && p.applied < head => p.applied_moved.elapsed(),
            _ => Duration::ZERO,
        }
    }

    /// How far `id`'s apply was behind this node's at its last answer.
    pub fn lag(&self, id: NodeId) -> Option<Seqno> {
        let peers = self.peers.lock().expect("health lock");
        peers.get(&id).and_then(|p| p.view.as_ref().map(|_| p.lag))
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
    pub fn views(&self) -> Vec<pb::PingResponse> {
        let peers = self.peers.lock().expect("health lock");
        peers.values().filter_map(|p| p.view.clone()).collect()
    }

    fn track(&self, ids: &[NodeId]) {
        let mut peers = self.peers.lock().expect("health lock");
        peers.retain(|id, _| ids.contains(id));
        for id in ids {
            peers.entry(*id).or_insert_with(|| PeerHealth {
                last_ok: None,
                since: Instant::now(),
                applied: 0,
                applied_moved: Instant::now(),
                lag: 0,
                view: None,
            });
        }
    }

    /// Records `id`'s answer to a ping sent when this node had applied `head`.
    fn record(&self, id: NodeId, resp: pb::PingResponse, head: Seqno) {
        let mut peers = self.peers.lock().expect("health lock");
        if let Some(p) = peers.get_mut(&id) {
            let now = Instant::now();
            p.last_ok = Some(now);
            p.lag = head.saturating_sub(resp.applied_seqno);
            if resp.applied_seqno != p.applied || p.view.is_none() {
                p.applied = resp.applied_seqno;
                p.applied_moved = now;
            }
            p.view = Some(resp);
        }
    }
}

/// Pings every member (and, before this node is a member, the join target)
/// every `ping_interval_ms`, until the node is dropped.
pub async fn ping_loop(node: Weak<Node>) {
    loop {
        let Some(n) = node.upgrade() else { return };
        let interval = Duration::from_millis(n.config.ping_interval_ms);
        let me = n.id();
        let members: Vec<(NodeId, String)> = {
            let metrics = n.raft.metrics();
            let m = metrics.borrow();
            m.membership_config
                .membership()
                .nodes()
                .filter(|(id, _)| **id != me)
                .map(|(id, node)| (*id, node.addr.clone()))
                .collect()
        };
        n.health
            .track(&members.iter().map(|(id, _)| *id).collect::<Vec<_>>());
        for (id, addr) in members {
            let n = n.clone();
            tokio::spawn(async move {
                // Comparing the peer's answer with where this node stood
                // when asking, not when the answer came back, keeps a fast
                // write rate from reading as lag.
                let head = n.applied.seqno();
                let sent = Instant::now();
                if let Ok(resp) = ping(&n, &addr, interval * 2).await {
                    if resp.leader_id == id {
                        n.primary.heard(id, sent, resp.leader_with_quorum);
                    }
                    n.health.record(id, resp, head);
                }
            });
        }
        drop(n);
        tokio::time::sleep(interval).await;
    }
}

/// One ping to `addr`.
pub async fn ping(node: &Node, addr: &str, timeout: Duration) -> crate::Result<pb::PingResponse> {
    let channel = node.peers.channel(addr)?;
    let mut client = ClusterClient::new(channel);
    let mut req = tonic::Request::new(pb::PingRequest { from: node.id() });
    req.set_timeout(timeout);
    client
        .ping(req)
        .await
        .map(tonic::Response::into_inner)
        .map_err(|s| crate::Error::Unavailable(format!("ping {addr}: {}", s.message())))
}
