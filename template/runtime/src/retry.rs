//! The delivery policy, in one place: from an entry's delivery count and
//! the handler's result, [`RetryPolicy`] decides whether the entry is
//! acknowledged, retried after a delay or dead-lettered. The worker only
//! carries out its decisions.
//!
//! One rule bounds every path: delivery number `n` of an entry is processed
//! only while `n <= max_deliveries`. A failure on the last allowed delivery
//! dead-letters the entry; an entry that comes back beyond the limit (its
//! worker crashed while processing it) is dead-lettered without processing.

use std::time::Duration;

use crate::backoff::retry_delay;
use crate::handler::ProcessError;
use crate::settings::WorkerSettings;

/// What happens to an entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Processed: acknowledge it.
    Acknowledge,
    /// Failed with deliveries left: it stays pending and is claimed again
    /// once it has been idle for `delay`.
    Retry {
        /// How long it waits before its next delivery.
        delay: Duration,
    },
    /// Given up on: written to the dead-letter stream, then acknowledged.
    DeadLetter {
        /// Why, as the dead letter records it.
        reason: String,
        /// Which rule gave up on it.
        cause: GiveUp,
    },
}

/// Why an entry is given up on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GiveUp {
    /// The handler said retrying cannot help.
    Permanent,
    /// It failed on its last allowed delivery.
    Exhausted,
    /// It was delivered beyond the limit without ever being acknowledged.
    KeepsComingBack,
}

/// Retries with exponential backoff, up to `max_deliveries` deliveries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    max_deliveries: u64,
    backoff: Duration,
    backoff_max: Duration,
}

impl RetryPolicy {
    /// The policy the settings describe.
    pub fn new(settings: &WorkerSettings) -> Self {
        Self {
            max_deliveries: settings.max_deliveries,
            backoff: settings.retry_backoff,
            backoff_max: settings.retry_backoff_max,
        }
    }

    /// Whether delivery number `delivery` of an entry may be processed.
    fn allows(&self, delivery: u64) -> bool {
        delivery <= self.max_deliveries
    }

    /// Before processing: `Some` decision when an entry delivered
    /// `deliveries` times must not be processed again.
    pub fn before(&self, deliveries: u64) -> Option<Decision> {
        (!self.allows(deliveries)).then(|| Decision::DeadLetter {
            reason: format!(
                "delivered {deliveries} times without being acknowledged (max_deliveries is {}); \
                 a worker may have crashed while processing it",
                self.max_deliveries
            ),
            cause: GiveUp::KeepsComingBack,
        })
    }

    /// After processing delivery number `deliveries` with `result`.
    pub fn after(&self, deliveries: u64, result: &Result<(), ProcessError>) -> Decision {
        match result {
            Ok(()) => Decision::Acknowledge,
            Err(error @ ProcessError::Permanent(_)) => Decision::DeadLetter {
                reason: error.to_string(),
                cause: GiveUp::Permanent,
            },
            Err(error) if !self.allows(deliveries.saturating_add(1)) => Decision::DeadLetter {
                reason: format!("failed {deliveries} deliveries; last error: {error}"),
                cause: GiveUp::Exhausted,
            },
            Err(_) => Decision::Retry {
                delay: self.delay(deliveries),
            },
        }
    }

    /// How long an entry that failed its delivery number `deliveries` waits
    /// before the next one.
    pub fn delay(&self, deliveries: u64) -> Duration {
        retry_delay(self.backoff, self.backoff_max, deliveries)
    }

    /// The shortest wait before any retry: a failed entry idle for less is
    /// never due.
    pub fn min_delay(&self) -> Duration {
        self.backoff
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(max_deliveries: u64) -> RetryPolicy {
        RetryPolicy {
            max_deliveries,
            backoff: Duration::from_millis(100),
            backoff_max: Duration::from_millis(300),
        }
    }

    #[test]
    fn failures_retry_with_growing_delays_until_the_last_delivery() {
        let policy = policy(3);
        let failed = Err(ProcessError::retry("down"));
        assert_eq!(
            policy.after(1, &failed),
            Decision::Retry {
                delay: Duration::from_millis(100)
            }
        );
        assert_eq!(
            policy.after(2, &failed),
            Decision::Retry {
                delay: Duration::from_millis(200)
            }
        );
        let Decision::DeadLetter { reason, cause } = policy.after(3, &failed) else {
            panic!("the third failure of three dead-letters");
        };
        assert_eq!(cause, GiveUp::Exhausted);
        assert_eq!(reason, "failed 3 deliveries; last error: down");
        assert_eq!(policy.after(3, &Ok(())), Decision::Acknowledge);
    }

    #[test]
    fn permanent_failures_dead_letter_at_once() {
        let decision = policy(5).after(1, &Err(ProcessError::permanent("malformed")));
        assert!(matches!(
            decision,
            Decision::DeadLetter { cause: GiveUp::Permanent, ref reason } if reason == "malformed"
        ));
    }

    #[test]
    fn entries_beyond_the_limit_are_not_processed_again() {
        let policy = policy(3);
        assert_eq!(policy.before(3), None);
        assert!(matches!(
            policy.before(4),
            Some(Decision::DeadLetter {
                cause: GiveUp::KeepsComingBack,
                ..
            })
        ));
    }
}
