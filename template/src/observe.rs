//! What the worker reports as it runs, for whoever wants to count it
//! (metrics, tests).

use std::sync::Arc;
use std::time::Duration;

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
