//! Jittered exponential backoff, shared by endpoint failover and transaction
//! retries.

use std::time::Duration;

use rand::Rng;

/// Exponential backoff with "equal jitter": the n-th delay is drawn uniformly
/// from `[d/2, d]` where `d = min(cap, base * 2^n)`, so concurrent clients
/// that failed together do not retry in lockstep.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Backoff {
    /// The delay before the first retry (before jitter).
    pub base: Duration,
    /// The largest delay (before jitter).
    pub cap: Duration,
}

impl Backoff {
    /// The delay before retry number `retry` (0-based), jittered by `rng`.
    pub fn delay_with(&self, retry: u32, rng: &mut impl Rng) -> Duration {
        let factor = 1u32.checked_shl(retry.min(20)).unwrap_or(u32::MAX);
        let full = self.base.saturating_mul(factor).min(self.cap);
        let half = full / 2;
        let jitter_nanos = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX);
        let jitter = if jitter_nanos == 0 {
            0
        } else {
            rng.gen_range(0..=jitter_nanos)
        };
        half + Duration::from_nanos(jitter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_and_stay_within_cap() {
        let b = Backoff {
            base: Duration::from_millis(10),
            cap: Duration::from_millis(100),
        };
        let rng = &mut rand::thread_rng();
        for _ in 0..100 {
            let d0 = b.delay_with(0, rng);
            assert!(d0 >= Duration::from_millis(5) && d0 <= Duration::from_millis(10));
            let d3 = b.delay_with(3, rng);
            assert!(d3 >= Duration::from_millis(40) && d3 <= Duration::from_millis(80));
            let d30 = b.delay_with(30, rng);
            assert!(d30 >= Duration::from_millis(50) && d30 <= Duration::from_millis(100));
        }
    }
}
