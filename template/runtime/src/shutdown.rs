//! Graceful shutdown: the signal that asks for it, and the deadline it sets
//! for work already in flight.

use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

/// Sets the shutdown deadline when asked to stop.
#[derive(Debug)]
pub struct Trigger {
    sender: watch::Sender<Option<Instant>>,
    grace: Duration,
}

/// Tells the worker whether to stop, and by when in-flight work must end.
#[derive(Debug, Clone)]
pub struct Shutdown {
    receiver: watch::Receiver<Option<Instant>>,
}

/// A trigger and the matching shutdown; `grace` is how long in-flight work
/// may go on after the trigger.
pub fn channel(grace: Duration) -> (Trigger, Shutdown) {
    let (sender, receiver) = watch::channel(None);
    (Trigger { sender, grace }, Shutdown { receiver })
}

impl Trigger {
    /// Asks to stop; the deadline is now plus the grace period. Later calls
    /// keep the first deadline.
    pub fn trigger(&self) {
        let deadline = Instant::now() + self.grace;
        self.sender.send_if_modified(|current| {
            let first = current.is_none();
            if first {
                *current = Some(deadline);
            }
            first
        });
    }
}

impl Shutdown {
    /// A shutdown that never comes, for driving the worker step by step.
    pub fn never() -> Self {
        let (_, shutdown) = channel(Duration::ZERO);
        shutdown
    }

    /// The deadline for in-flight work, once shutdown was asked for.
    pub fn deadline(&self) -> Option<Instant> {
        *self.receiver.borrow()
    }

    /// Waits until shutdown is asked for; returns the deadline.
    pub async fn requested(&mut self) -> Instant {
        loop {
            if let Some(deadline) = *self.receiver.borrow_and_update() {
                return deadline;
            }
            if self.receiver.changed().await.is_err() {
                // The trigger is gone without firing: shutdown never comes.
                std::future::pending::<()>().await;
            }
        }
    }
}

/// Completes on SIGINT (Ctrl-C) or, on Unix, SIGTERM.
pub async fn signals() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM; only Ctrl-C stops the worker");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
    tracing::info!("shutdown requested");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_first_trigger_sets_the_deadline() {
        let (trigger, mut shutdown) = channel(Duration::from_secs(5));
        assert_eq!(shutdown.deadline(), None);
        trigger.trigger();
        let deadline = shutdown.requested().await;
        trigger.trigger();
        assert_eq!(shutdown.deadline(), Some(deadline));
        assert!(deadline > Instant::now() + Duration::from_secs(4));
    }

    #[tokio::test]
    async fn never_never_fires() {
        let mut shutdown = Shutdown::never();
        let waited = tokio::time::timeout(Duration::from_millis(20), shutdown.requested()).await;
        assert!(waited.is_err());
    }
}
