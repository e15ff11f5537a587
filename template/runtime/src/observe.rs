//! What the worker reports as it runs, for whoever wants to count it
//! (metrics, tests), and [`Progress`]: when its loop last moved, for a
//! liveness check.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How one delivery of an entry ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Processed; acknowledged.
    Succeeded,
    /// Failed, stays pending for another delivery.
    Retrying,
    /// Failed for good; sent to the dead-letter stream.
    DeadLettered,
}

/// Receives the worker's events. Every method has a no-op default.
pub trait Observer: Send + Sync + 'static {
    /// The business logic finished with an entry after `elapsed`.
    fn processed(&self, _outcome: Outcome, _elapsed: Duration) {}
    /// Entries were written to the dead-letter stream.
    fn dead_lettered(&self, _count: usize) {}
    /// Redis refused to write `count` dead letters (a key of another type,
    /// maxmemory, an ACL); their entries stay pending and are tried again.
    fn dead_letters_refused(&self, _count: usize) {}
    /// Entries of other consumers were taken over.
    fn claimed(&self, _count: usize) {}
    /// Own failed entries were delivered again.
    fn retried(&self, _count: usize) {}
    /// Entries now being processed.
    fn in_flight(&self, _count: usize) {}
    /// A Redis command failed on a broken connection; a new one will be made.
    fn reconnecting(&self) {}
    /// The consume loop went round once: the worker is not stuck. Called at
    /// every step, also when it read nothing, and after every backoff.
    fn alive(&self) {}
}

/// Reports nothing.
impl Observer for () {}

/// Reports to each observer in turn, so metrics, the log summary and tests
/// can all listen to one worker.
impl Observer for Vec<Arc<dyn Observer>> {
    fn processed(&self, outcome: Outcome, elapsed: Duration) {
        self.iter()
            .for_each(|observer| observer.processed(outcome, elapsed));
    }
    fn dead_lettered(&self, count: usize) {
        self.iter()
            .for_each(|observer| observer.dead_lettered(count));
    }
    fn dead_letters_refused(&self, count: usize) {
        self.iter()
            .for_each(|observer| observer.dead_letters_refused(count));
    }
    fn claimed(&self, count: usize) {
        self.iter().for_each(|observer| observer.claimed(count));
    }
    fn retried(&self, count: usize) {
        self.iter().for_each(|observer| observer.retried(count));
    }
    fn in_flight(&self, count: usize) {
        self.iter().for_each(|observer| observer.in_flight(count));
    }
    fn reconnecting(&self) {
        self.iter().for_each(|observer| observer.reconnecting());
    }
    fn alive(&self) {
        self.iter().for_each(|observer| observer.alive());
    }
}

/// When the worker's loop last made progress (a step, an entry finished, a
/// heartbeat), so a liveness check can tell a frozen worker from a busy
/// one. Shared: the worker marks it, the health endpoint reads it.
#[derive(Debug)]
pub struct Progress {
    started: Instant,
    /// Milliseconds from `started` to the last mark.
    last: AtomicU64,
    limit: Duration,
}

impl Progress {
    /// Progress that counts as stalled after `limit` without a mark.
    pub fn new(limit: Duration) -> Self {
        Self {
            started: Instant::now(),
            last: AtomicU64::new(0),
            limit,
        }
    }

    /// The loop moved.
    pub fn mark(&self) {
        let now = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(now, Ordering::Relaxed);
    }

    /// How long since the last mark.
    pub fn since_last(&self) -> Duration {
        let last = Duration::from_millis(self.last.load(Ordering::Relaxed));
        self.started.elapsed().saturating_sub(last)
    }

    /// Whether the loop has not moved for longer than the limit.
    pub fn is_stalled(&self) -> bool {
        self.since_last() > self.limit
    }

    /// How long without progress counts as stalled.
    pub fn limit(&self) -> Duration {
        self.limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_stalls_after_its_limit_without_a_mark() {
        let progress = Progress::new(Duration::ZERO);
        progress.mark();
        std::thread::sleep(Duration::from_millis(5));
        assert!(progress.is_stalled());
        let progress = Progress::new(Duration::from_secs(60));
        assert!(!progress.is_stalled());
    }
}
