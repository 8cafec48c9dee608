//! What the replication service asks of the layer above it, as traits: how
//! long the leader's next batch waits ([`Throttle`], flow control) and
//! whether this node is in the primary component ([`PrimaryCheck`]). The
//! membership layer (`cluster::flow`, `cluster::primary`) implements them;
//! the batcher and the read index hold them as trait objects, so `group`
//! never imports `cluster`.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

// tokio's clock: std's in production, the simulated one under simulation.
use tokio::time::Instant;

use crate::error::{Error, Result};
use crate::txn::NodeId;

/// Flow control, as the batcher sees it.
pub trait Throttle: Send + Sync {
    /// Resolves once the leader's next batch may be appended (at once when
    /// no voter lags too far).
    fn throttle(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>>;
}

/// The primary-component check, as the batcher and the read index see it.
pub trait PrimaryCheck: Send + Sync {
    /// The leader, if this node is in the primary component; otherwise why not.
    fn check(&self) -> Result<NodeId>;

    /// Records `leader`'s answer to a request sent at `sent`: it has a quorum or not.
    fn heard(&self, leader: NodeId, sent: Instant, with_quorum: bool);

    /// Records that `leader` refused a request because it is not primary.
    fn refused(&self, leader: NodeId, why: &str);

    /// Resolves once this node is not primary, with the reason.
    fn lost(&self) -> Pin<Box<dyn Future<Output = Error> + Send + '_>> {
        Box::pin(async move {
            loop {
                if let Err(e) = self.check() {
                    return e;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    }
}
