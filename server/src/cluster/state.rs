//! The Galera-like state a node reports.

use std::collections::BTreeSet;

use crate::node::Node;
use crate::txn::NodeId;

/// The node's state name and, for NON_PRIMARY, why.
pub fn node_state(node: &Node) -> (&'static str, String) {
    let stopped = node.raft.metrics().borrow().running_state.clone();
    if let Err(fatal) = stopped {
        return ("NON_PRIMARY", format!("raft stopped: {fatal}"));
    }
    if let Err(e) = node.check_primary() {
        return ("NON_PRIMARY", e.to_string());
    }
    let (is_voter, last_log) = {
        let metrics = node.raft.metrics();
        let m = metrics.borrow();
        let voters: BTreeSet<NodeId> = m.membership_config.membership().voter_ids().collect();
        (voters.contains(&node.id()), m.last_log_index.unwrap_or(0))
    };
    if !is_voter {
        return ("JOINING", String::new());
    }
    if node.peers.transfers.is_donor() {
        return ("DONOR", String::new());
    }
    if last_log.saturating_sub(node.applied.seqno()) > node.config.synced_lag_entries {
        return ("JOINED", String::new());
    }
    ("SYNCED", String::new())
}
