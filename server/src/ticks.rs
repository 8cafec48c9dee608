//! The grid a node's periodic loops sleep on.
//!
//! Each loop sleeps until the next multiple of its period counted from one
//! origin, the node's start ([`Ticks::new`]), instead of a whole period after
//! its last pass ended. Loops whose periods divide one another (the failure
//! detector's pings and the replication watch every `ping_interval_ms`, lease
//! expiry every 200 ms, retention every second, the apply-lag sampler every
//! 100 ms) then come due in the same millisecond, and tokio fires the timers
//! due in one millisecond in one turn of its driver: one thread wake for all
//! of them instead of one each. On an idle node that wake, not the loops'
//! work, is what costs CPU.
//!
//! What it owns: the grid arithmetic. What it may import: nothing of the crate.

use std::time::Duration;

use tokio::time::Instant;

/// One node's grid: the origin every period is counted from.
#[derive(Clone, Copy, Debug)]
pub struct Ticks {
    origin: Instant,
}

impl Default for Ticks {
    fn default() -> Self {
        Self::new()
    }
}

impl Ticks {
    /// A grid whose origin is now (on tokio's clock, which a simulation controls).
    pub fn new() -> Self {
        Ticks {
            origin: Instant::now(),
        }
    }

    /// The first multiple of `period` after the origin that is later than
    /// `now`: at most one `period` away, never `now` itself. A zero period is
    /// taken as one millisecond.
    pub fn next_after(&self, now: Instant, period: Duration) -> Instant {
        let period = period.max(Duration::from_millis(1));
        let since = now.saturating_duration_since(self.origin);
        let p = period.as_nanos();
        let passed = since.as_nanos() % p;
        // `passed < p`, and both fit in u64 nanoseconds for any period we use.
        let wait = u64::try_from(p - passed).unwrap_or(u64::MAX);
        now + Duration::from_nanos(wait)
    }

    /// Sleeps until the next multiple of `period` on this grid.
    pub async fn sleep(&self, period: Duration) {
        tokio::time::sleep_until(self.next_after(Instant::now(), period)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loops_with_dividing_periods_come_due_at_the_same_instants() {
        let ticks = Ticks::new();
        let o = ticks.origin;
        let ms = Duration::from_millis;
        // Two loops that last ran at different moments meet on the grid.
        assert_eq!(ticks.next_after(o + ms(13), ms(200)), o + ms(200));
        assert_eq!(ticks.next_after(o + ms(171), ms(200)), o + ms(200));
        assert_eq!(ticks.next_after(o + ms(171), ms(100)), o + ms(200));
        assert_eq!(ticks.next_after(o + ms(1_150), ms(1_000)), o + ms(2_000));
        assert_eq!(ticks.next_after(o + ms(1_150), ms(200)), o + ms(1_200));
    }

    #[test]
    fn the_next_tick_is_later_than_now_and_at_most_a_period_away() {
        let ticks = Ticks::new();
        let o = ticks.origin;
        let ms = Duration::from_millis;
        // Exactly on a tick: the next one, not this one (a loop never spins).
        assert_eq!(ticks.next_after(o + ms(400), ms(200)), o + ms(600));
        assert_eq!(ticks.next_after(o, ms(200)), o + ms(200));
        for now in [1, 99, 199, 200, 201, 5_555] {
            let next = ticks.next_after(o + ms(now), ms(200));
            assert!(next > o + ms(now) && next <= o + ms(now + 200), "{now}");
        }
        // A zero period is a millisecond, not a division by zero.
        assert_eq!(ticks.next_after(o + ms(5), Duration::ZERO), o + ms(6));
    }
}
