//! Brakes on password checks, so that `Authenticate` can be neither a
//! password-guessing oracle nor a way to burn the node's CPU.
//!
//! Two limits, both per node (they protect this node; they are not
//! replicated state):
//! - **Failures per user name.** After [`FREE_FAILURES`] wrong passwords in
//!   a row for one name, the next attempt must wait: 1 s, then doubling with
//!   each further failure up to [`MAX_WAIT`]. An attempt inside the wait is
//!   refused at once, without checking the password (UNAUTHENTICATED naming
//!   the wait and the limit: a client must not fail over and try the
//!   password on the next node); a success clears the count. Unknown
//!   names count like known ones, so the answer says nothing about which
//!   names exist. The table is bounded ([`MAX_TRACKED`] names).
//! - **Checks at a time.** An argon2id check costs tens of milliseconds of
//!   one core by design; at most one per core runs at once, at most
//!   [`MAX_WAITING`] more wait for their turn, and past that a request is
//!   refused at once (RESOURCE_EXHAUSTED: another node may have a core).
//!
//! Both meet in [`Throttle::enter`]: the name's wait is checked before and
//! again after the turn, so guesses sent in parallel, which all pass the
//! first check while nothing has failed yet, are refused once the failures
//! of those ahead of them in the queue are recorded.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, SemaphorePermit};

use crate::error::{Error, Result};

/// Wrong passwords in a row for one name before attempts must wait.
pub const FREE_FAILURES: u32 = 5;
/// The first wait after [`FREE_FAILURES`] failures; it doubles with each
/// further failure.
pub const FIRST_WAIT: Duration = Duration::from_secs(1);
/// The longest wait.
pub const MAX_WAIT: Duration = Duration::from_secs(30);
/// Password checks that may wait for a core before new ones are refused.
pub const MAX_WAITING: usize = 64;
/// Names whose failures are remembered at once.
pub const MAX_TRACKED: usize = 10_000;

/// One name's failures in a row, and until when it must wait.
#[derive(Clone, Copy, Debug)]
struct Failures {
    count: u32,
    until: Instant,
}

/// The brakes of one node's `Authenticate`.
#[derive(Debug)]
pub struct Throttle {
    failures: Mutex<HashMap<String, Failures>>,
    running: Semaphore,
    waiting: AtomicUsize,
}

/// How long a name must wait after `count` failures in a row.
pub fn wait_after(count: u32) -> Duration {
    if count < FREE_FAILURES {
        return Duration::ZERO;
    }
    let doublings = (count - FREE_FAILURES).min(16);
    FIRST_WAIT.saturating_mul(1 << doublings).min(MAX_WAIT)
}

impl Throttle {
    /// Brakes allowing `parallel` password checks at once.
    pub fn new(parallel: usize) -> Throttle {
        Throttle {
            failures: Mutex::new(HashMap::new()),
            running: Semaphore::new(parallel.max(1)),
            waiting: AtomicUsize::new(0),
        }
    }

    /// Whether `name` may try a password at `now`.
    pub fn admit(&self, name: &str, now: Instant) -> Result<()> {
        let failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        match failures.get(name) {
            Some(f) if now < f.until => {
                let left = (f.until - now).as_secs_f64().ceil().max(1.0);
                Err(Error::Unauthenticated(format!(
                    "too many failed authentications for user {name:?} ({} in a row): \
                     try again in {left:.0}s (after {FREE_FAILURES} failures in a row each \
                     attempt waits, from {}s doubling up to {}s)",
                    f.count,
                    FIRST_WAIT.as_secs(),
                    MAX_WAIT.as_secs()
                )))
            }
            _ => Ok(()),
        }
    }

    /// Admits one password check for `name`: refused inside the name's
    /// wait, then a turn on a core ([`MAX_WAITING`] bound), then the wait is
    /// checked again. The second check is what makes the brake hold against
    /// guesses sent in parallel: they queue for a core, and the failures of
    /// those ahead of them are recorded by the time their turn comes.
    pub async fn enter(&self, name: &str) -> Result<SemaphorePermit<'_>> {
        self.admit(name, Instant::now())?;
        let turn = self.turn().await?;
        self.admit(name, Instant::now())?;
        Ok(turn)
    }

    /// A turn to run one password check: waits for a free core, or is
    /// refused when [`MAX_WAITING`] checks already wait.
    async fn turn(&self) -> Result<SemaphorePermit<'_>> {
        if let Ok(permit) = self.running.try_acquire() {
            return Ok(permit);
        }
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= MAX_WAITING {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(Error::Overloaded(format!(
                "too many password checks at once: {MAX_WAITING} already wait for a core"
            )));
        }
        let permit = self.running.acquire().await;
        self.waiting.fetch_sub(1, Ordering::AcqRel);
        permit.map_err(|_| Error::Internal("the password check semaphore was closed".into()))
    }

    /// Records a wrong password for `name` at `now`. A name longer than a
    /// user name may be is not recorded (the caller refuses those first):
    /// the table's size stays bounded in bytes, not only in names.
    pub fn failed(&self, name: &str, now: Instant) {
        if name.len() > super::state::MAX_NAME_BYTES {
            return;
        }
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if !failures.contains_key(name) && failures.len() >= MAX_TRACKED {
            // Forget names whose wait is long over; if none, this name goes
            // untracked (the bound on checks at a time still holds).
            failures.retain(|_, f| now < f.until + MAX_WAIT);
            if failures.len() >= MAX_TRACKED {
                return;
            }
        }
        let f = failures.entry(name.to_string()).or_insert(Failures {
            count: 0,
            until: now,
        });
        f.count = f.count.saturating_add(1);
        f.until = now + wait_after(f.count);
    }

    /// Records a right password for `name`: its count starts again.
    pub fn succeeded(&self, name: &str) {
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_after_the_free_failures_up_to_the_cap() {
        let waits: Vec<u64> = (1..=12).map(|n| wait_after(n).as_secs()).collect();
        assert_eq!(waits, [0, 0, 0, 0, 1, 2, 4, 8, 16, 30, 30, 30]);
        assert_eq!(wait_after(u32::MAX), MAX_WAIT);
    }

    #[test]
    fn a_name_is_refused_inside_its_wait_and_cleared_by_a_success() {
        let t = Throttle::new(1);
        let t0 = Instant::now();
        for _ in 0..FREE_FAILURES - 1 {
            t.admit("alice", t0).unwrap();
            t.failed("alice", t0);
        }
        t.admit("alice", t0).unwrap();
        t.failed("alice", t0);
        let e = t.admit("alice", t0).unwrap_err().to_string();
        assert!(
            e.contains("\"alice\" (5 in a row)") && e.contains("try again in 1s"),
            "{e}"
        );
        // Another name is not affected.
        t.admit("bob", t0).unwrap();
        // After the wait, one more try; its failure doubles the wait.
        let t1 = t0 + Duration::from_secs(1);
        t.admit("alice", t1).unwrap();
        t.failed("alice", t1);
        let e = t
            .admit("alice", t1 + Duration::from_millis(1500))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("6 in a row") && e.contains("try again in 1s"),
            "{e}"
        );
        t.admit("alice", t1 + Duration::from_secs(2)).unwrap();
        t.succeeded("alice");
        t.failed("alice", t1);
        t.admit("alice", t1).unwrap();
    }

    #[tokio::test]
    async fn checks_beyond_the_waiting_bound_are_refused() {
        let t = std::sync::Arc::new(Throttle::new(1));
        let held = t.turn().await.unwrap();
        let mut waiters = Vec::new();
        for _ in 0..MAX_WAITING {
            let t = t.clone();
            waiters.push(tokio::spawn(async move { t.turn().await.map(|_| ()) }));
        }
        // Let every waiter register.
        while t.waiting.load(Ordering::Acquire) < MAX_WAITING {
            tokio::task::yield_now().await;
        }
        let e = t.turn().await.unwrap_err().to_string();
        assert!(e.contains("64 already wait"), "{e}");
        drop(held);
        for w in waiters {
            w.await.unwrap().unwrap();
        }
    }

    #[tokio::test]
    async fn guesses_sent_in_parallel_are_braked_once_their_turn_comes() {
        let t = std::sync::Arc::new(Throttle::new(1));
        // One check runs; five guesses for alice queue behind it.
        let running = t.enter("alice").await.unwrap();
        let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
        for _ in 0..5 {
            let (t, done_tx) = (t.clone(), done_tx.clone());
            tokio::spawn(async move {
                let r = t.enter("alice").await.map(drop);
                done_tx.send(r.map_err(|e| e.to_string())).unwrap();
            });
        }
        while t.waiting.load(Ordering::Acquire) < 5 {
            tokio::task::yield_now().await;
        }
        // Meanwhile five guesses fail: the queued ones must not be checked.
        let now = Instant::now();
        for _ in 0..FREE_FAILURES {
            t.failed("alice", now);
        }
        drop(running);
        for _ in 0..5 {
            let r = done_rx.recv().await.unwrap();
            let e = r.expect_err("a queued guess was let through");
            assert!(e.contains("too many failed authentications"), "{e}");
        }
        // Another name is not braked.
        drop(t.enter("bob").await.unwrap());
    }

    #[test]
    fn the_table_is_bounded() {
        let t = Throttle::new(1);
        let t0 = Instant::now();
        for i in 0..MAX_TRACKED + 10 {
            t.failed(&format!("user{i}"), t0);
        }
        assert_eq!(t.failures.lock().unwrap().len(), MAX_TRACKED);
        // Names longer than a user name are never stored.
        let long = "x".repeat(super::super::state::MAX_NAME_BYTES + 1);
        t.failed(&long, t0 + MAX_WAIT * 3);
        assert!(!t.failures.lock().unwrap().contains_key(&long));
        // Once the old waits are long over, new names are tracked again.
        let later = t0 + MAX_WAIT * 3;
        t.failed("late", later);
        assert!(t.failures.lock().unwrap().contains_key("late"));
    }
}
