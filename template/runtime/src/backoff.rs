//! Exponential backoff: for reconnecting (with jitter, so a fleet of workers
//! does not reconnect in lockstep) and for retrying a failed entry (without,
//! so the delay follows from the delivery count Redis keeps).

use std::time::Duration;

/// Delays that double from `base` up to `max`, with jitter.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    /// A backoff starting at `base`, never above `max`.
    pub fn new(base: Duration, max: Duration) -> Self {
        Self {
            base,
            max,
            attempt: 0,
        }
    }

    /// The delay before the next attempt: half of the exponential delay plus
    /// a random part of the other half.
    pub fn next_delay(&mut self) -> Duration {
        let full = exponential(self.base, self.max, self.attempt);
        self.attempt = self.attempt.saturating_add(1);
        let half = full / 2;
        half + half.mul_f64(fastrand::f64())
    }

    /// Attempts made since the last success.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    /// Starts over after a success.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// How long an entry delivered `deliveries` times waits before its next
/// delivery: `base`, then doubling, at most `max`.
pub fn retry_delay(base: Duration, max: Duration, deliveries: u64) -> Duration {
    let exponent = u32::try_from(deliveries.saturating_sub(1)).unwrap_or(u32::MAX);
    exponential(base, max, exponent)
}

fn exponential(base: Duration, max: Duration, exponent: u32) -> Duration {
    let factor = 2_u32.checked_pow(exponent.min(31)).unwrap_or(u32::MAX);
    base.checked_mul(factor).map_or(max, |delay| delay.min(max))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn retry_delays_double_up_to_the_cap() {
        let delays: Vec<_> = (1..=6)
            .map(|n| retry_delay(100 * MS, 1000 * MS, n))
            .collect();
        assert_eq!(
            delays,
            [100 * MS, 200 * MS, 400 * MS, 800 * MS, 1000 * MS, 1000 * MS]
        );
        assert_eq!(retry_delay(100 * MS, 1000 * MS, u64::MAX), 1000 * MS);
    }

    #[test]
    fn reconnect_delays_grow_with_jitter_and_reset() {
        let mut backoff = Backoff::new(100 * MS, 800 * MS);
        for full in [100, 200, 400, 800, 800] {
            let delay = backoff.next_delay();
            assert!(
                delay >= full * MS / 2 && delay <= full * MS,
                "{delay:?} for {full}"
            );
        }
        assert_eq!(backoff.attempts(), 5);
        backoff.reset();
        assert!(backoff.next_delay() <= 100 * MS);
    }
}
