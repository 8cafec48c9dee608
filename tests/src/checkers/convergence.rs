//! Convergence and verdict chains: after the faults heal, every node must
//! report the same applied seqno, the same data checksum and the same
//! verdict hash chain (every node reached the same verdict for every seqno).
//!
//! Collect the states with [`crate::workloads::node_states`] (or from
//! `Client::checksum_of` yourself), once the cluster is quiet, and call
//! [`check`]. Anomaly: `diverged`. Unknown: no state at all.

use serde::Serialize;

use super::CheckResult;

/// One node's `Checksum` answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct NodeState {
    /// The node id.
    pub node: u64,
    /// Applied seqno the digest was taken at.
    pub seqno: u64,
    /// Data checksum at `seqno`.
    pub checksum: u64,
    /// Hash chain over every verdict up to `seqno`.
    pub verdict_chain: u64,
}

impl NodeState {
    /// From a node id and its `Checksum` RPC answer.
    pub fn from_checksum(node: u64, c: &trireme_client::Checksum) -> NodeState {
        NodeState {
            node,
            seqno: c.seqno,
            checksum: c.checksum,
            verdict_chain: c.verdict_chain,
        }
    }
}

/// Checks that every node's `(seqno, checksum, verdict_chain)` is the same.
pub fn check(states: &[NodeState]) -> CheckResult {
    let mut r = CheckResult::new();
    r.stat("nodes", states.len() as u64);
    let Some(first) = states.first() else {
        r.unknown("no node state to compare");
        return r;
    };
    r.stat("seqno", first.seqno);
    for s in &states[1..] {
        let mut diffs = Vec::new();
        if s.seqno != first.seqno {
            diffs.push(format!("seqno {} vs {}", s.seqno, first.seqno));
        }
        if s.checksum != first.checksum {
            diffs.push(format!(
                "checksum {:#x} vs {:#x}",
                s.checksum, first.checksum
            ));
        }
        if s.verdict_chain != first.verdict_chain {
            diffs.push(format!(
                "verdict chain {:#x} vs {:#x}",
                s.verdict_chain, first.verdict_chain
            ));
        }
        if !diffs.is_empty() {
            r.anomaly(
                "diverged",
                format!(
                    "node {} differs from node {}: {}",
                    s.node,
                    first.node,
                    diffs.join(", ")
                ),
            );
        }
    }
    r
}
