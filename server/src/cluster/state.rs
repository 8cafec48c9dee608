//! The Galera-like state a node reports: gathered here, decided by
//! [`decide::node_state`].

use super::decide;
use super::snapshot::{NodeState, Standing};
use super::Handle;

/// The node's state and, for NON_PRIMARY, why.
pub fn node_state(handle: &Handle) -> (NodeState, String) {
    let stopped = handle
        .raft
        .metrics()
        .borrow()
        .running_state
        .as_ref()
        .err()
        .map(|fatal| fatal.to_string());
    let standing = Standing {
        // Raft stopped decides alone: the primary check is not asked then.
        primary: match stopped {
            Some(_) => Err(String::new()),
            None => handle.primary.check().map_err(|e| e.to_string()),
        },
        stopped,
        donor: handle.peers.transfers.is_donor(),
    };
    decide::node_state(&handle.snapshot(), &standing)
}
