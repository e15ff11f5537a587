//! A periodic summary of what the worker did, logged at info: entries
//! processed, failed and dead-lettered, and the rate.
//!
//! Per-entry detail is logged at debug, so that a busy worker does not spend
//! its time writing logs (with `LOG_FORMAT=json` a line per entry halves
//! the drain rate); this summary keeps the info level informative. It
//! counts through the [`Observer`] events, so it works whatever the business
//! logic is.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::{Instant, MissedTickBehavior};

use crate::observe::{Observer, Outcome};

/// How often the summary is logged, when anything happened since the last.
pub const SUMMARY_INTERVAL: Duration = Duration::from_secs(10);

/// Until the first entry was processed, how often the summary looks: the
/// first entries show up at info at once, not up to an interval later.
const FIRST_LOOK: Duration = Duration::from_secs(1);

/// Counts the worker's outcomes for the summary.
#[derive(Debug, Default)]
pub struct Summary {
    processed: AtomicU64,
    failed: AtomicU64,
    dead_lettered: AtomicU64,
}

/// Counts since the worker started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// Entries processed successfully.
    pub processed: u64,
    /// Failed deliveries, retried or dead-lettered.
    pub failed: u64,
    /// Entries written to the dead-letter stream.
    pub dead_lettered: u64,
}

impl Totals {
    /// What happened between `earlier` and these totals.
    pub fn since(&self, earlier: &Totals) -> Totals {
        Totals {
            processed: self.processed.saturating_sub(earlier.processed),
            failed: self.failed.saturating_sub(earlier.failed),
            dead_lettered: self.dead_lettered.saturating_sub(earlier.dead_lettered),
        }
    }

    fn is_empty(&self) -> bool {
        *self == Totals::default()
    }
}

impl Summary {
    /// The counts so far.
    pub fn totals(&self) -> Totals {
        Totals {
            processed: self.processed.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            dead_lettered: self.dead_lettered.load(Ordering::Relaxed),
        }
    }
}

impl Observer for Summary {
    fn processed(&self, outcome: Outcome, _elapsed: Duration) {
        let counter = match outcome {
            Outcome::Succeeded => &self.processed,
            Outcome::Retrying | Outcome::DeadLettered => &self.failed,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn dead_lettered(&self, count: usize) {
        self.dead_lettered
            .fetch_add(count as u64, Ordering::Relaxed);
    }
}

/// Logs what happened every `interval`, skipping intervals in which nothing
/// did; the first time within a second of the first entry. Runs until
/// dropped.
pub async fn log_every(summary: Arc<Summary>, interval: Duration) {
    let mut looked = Instant::now();
    let mut first = tokio::time::interval_at(looked + FIRST_LOOK, FIRST_LOOK);
    first.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        first.tick().await;
        if !summary.totals().is_empty() {
            break;
        }
        looked = Instant::now();
    }
    // The first window starts at the last look that found nothing: its
    // rate is that of the first entries, not averaged over an idle start.
    let mut last = (Totals::default(), looked);
    let mut ticks = tokio::time::interval_at(Instant::now(), interval);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let now = (summary.totals(), Instant::now());
        let delta = now.0.since(&last.0);
        if !delta.is_empty() {
            let seconds = now.1.duration_since(last.1).as_secs_f64();
            tracing::info!(
                processed = delta.processed,
                failed = delta.failed,
                dead_lettered = delta.dead_lettered,
                per_second = (delta.processed as f64 / seconds.max(0.001)).round() as u64,
                "processed {} entries in the last {seconds:.0} s",
                delta.processed
            );
        }
        last = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_outcomes_and_dead_letters() {
        let summary = Summary::default();
        summary.processed(Outcome::Succeeded, Duration::ZERO);
        summary.processed(Outcome::Succeeded, Duration::ZERO);
        summary.processed(Outcome::Retrying, Duration::ZERO);
        summary.processed(Outcome::DeadLettered, Duration::ZERO);
        summary.dead_lettered(1);
        let totals = summary.totals();
        assert_eq!(
            totals,
            Totals {
                processed: 2,
                failed: 2,
                dead_lettered: 1
            }
        );
        summary.processed(Outcome::Succeeded, Duration::ZERO);
        assert_eq!(
            summary.totals().since(&totals),
            Totals {
                processed: 1,
                ..Totals::default()
            }
        );
    }
}
