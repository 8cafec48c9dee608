//! Admission control: a node takes on only as much work as it has room for.
//!
//! Three bounds, each a counted set of slots taken without waiting: client
//! requests in flight (taken before the request body is even decoded, by
//! [`AdmissionLayer`]), write sets held by the batcher (queued or being
//! ordered) and reads waiting for a read index. A request that finds its
//! bound full is refused at once with [`Error::Overloaded`]
//! (RESOURCE_EXHAUSTED), naming the bound, instead of queueing without limit:
//! the client backs off and tries another node. A slot is held by a guard, so
//! a request dropped half-way (its client went away, its deadline passed)
//! gives its slot back at once.
//!
//! Peer and admin traffic is not limited here: replication, heartbeats and
//! `Status` must keep flowing when clients overload a node, or the overload
//! would cost the node its place in the cluster. A follower's `Forward`s are
//! bounded by its own batcher (`batch_in_flight` batches at a time).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::api::to_status;
use crate::error::{Error, Result};

/// A bound on how many of something a node holds at once.
#[derive(Clone, Debug)]
pub struct Limiter {
    slots: Arc<Semaphore>,
    limit: usize,
    /// What is counted and the setting that bounds it, for the refusal.
    what: &'static str,
    refused: Arc<AtomicU64>,
    /// Set once the node drains: every new request is refused with this.
    closed: Arc<std::sync::OnceLock<String>>,
}

/// A taken slot; dropping it gives the slot back.
#[derive(Debug)]
pub struct Slot(#[allow(dead_code)] OwnedSemaphorePermit);

impl Limiter {
    /// `limit` slots of `what` (e.g. "client requests in flight (max_requests_in_flight)").
    pub fn new(limit: usize, what: &'static str) -> Limiter {
        Limiter {
            slots: Arc::new(Semaphore::new(limit)),
            limit,
            what,
            refused: Arc::default(),
            closed: Arc::default(),
        }
    }

    /// Refuses every later [`Limiter::try_take`] with [`Error::Unavailable`]
    /// and `why` (a draining node takes nothing new); slots already taken
    /// stay until dropped, so [`Limiter::in_use`] counts what is left to finish.
    pub fn close(&self, why: &str) {
        let _ = self.closed.set(why.to_string());
    }

    /// Takes a slot at once, or refuses with [`Error::Overloaded`] naming the
    /// bound ([`Error::Unavailable`] once closed).
    pub fn try_take(&self) -> Result<Slot> {
        if let Some(why) = self.closed.get() {
            return Err(Error::Unavailable(why.clone()));
        }
        match self.slots.clone().try_acquire_owned() {
            Ok(permit) => Ok(Slot(permit)),
            Err(_) => {
                self.refused.fetch_add(1, Ordering::Relaxed);
                Err(Error::Overloaded(format!(
                    "this node already holds {} {}; retry later or on another node",
                    self.limit, self.what
                )))
            }
        }
    }

    /// Slots taken now.
    pub fn in_use(&self) -> usize {
        self.limit - self.slots.available_permits()
    }

    /// The bound.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Requests refused so far.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}

/// The gRPC path prefix of the client service, the one [`AdmissionLayer`] limits.
const KV_PATH: &str = "/trireme.v1.Kv/";

/// A tower layer that admits client (`Kv`) requests up to a [`Limiter`]'s
/// bound before anything else happens to them, and refuses the rest with
/// RESOURCE_EXHAUSTED; other services pass through.
pub type AdmissionLayer = crate::guard::GateLayer<Limiter>;

impl crate::guard::Gate for Limiter {
    /// The slot lives as long as the request: until its answer, or until
    /// the future is dropped because the client went away.
    type Held = Option<Slot>;

    fn decide<B>(
        &self,
        req: &mut http::Request<B>,
    ) -> std::result::Result<Option<Slot>, tonic::Status> {
        if !req.uri().path().starts_with(KV_PATH) {
            return Ok(None);
        }
        self.try_take().map(Some).map_err(to_status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_limiter_refuses_naming_the_bound_and_frees_on_drop() {
        let l = Limiter::new(2, "things (max_things)");
        let a = l.try_take().expect("first");
        let _b = l.try_take().expect("second");
        let err = l.try_take().expect_err("third is over the bound");
        assert!(matches!(err, Error::Overloaded(_)), "{err:?}");
        assert!(err.to_string().contains("2 things (max_things)"), "{err}");
        assert_eq!((l.in_use(), l.refused()), (2, 1));
        drop(a);
        assert_eq!(l.in_use(), 1);
        l.try_take().expect("a dropped slot is free again");
    }

    #[test]
    fn a_closed_limiter_refuses_as_unavailable_and_still_counts_what_is_left() {
        let l = Limiter::new(4, "things (max_things)");
        let held = l.try_take().expect("open");
        l.close("node is shutting down");
        let err = l.try_take().expect_err("closed");
        assert!(
            matches!(&err, Error::Unavailable(m) if m == "node is shutting down"),
            "{err:?}"
        );
        assert_eq!((l.in_use(), l.refused()), (1, 0));
        drop(held);
        assert_eq!(l.in_use(), 0);
    }
}
