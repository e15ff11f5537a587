//! Entries whose fate is decided but not yet recorded in Redis, and how
//! they are recorded: dead letters written, the rest acknowledged, failed
//! entries' retry delays started.

use tracing::warn;

use super::log_taken_over;
use crate::consumer::Consumer;
use crate::dead_letter::DeadLetter;
use crate::error::Error;
use crate::observe::Observer;

/// What the worker owes Redis.
#[derive(Debug, Default)]
pub(super) struct Ledger {
    /// Processed or dead-lettered, not yet acknowledged.
    pub(super) unacked: Vec<String>,
    /// Given up on, not yet written to the dead-letter stream.
    pub(super) unwritten: Vec<DeadLetter>,
    /// Failed, to be retried: their idle time must restart now, because
    /// the retry delay is measured as idle time and must count from the
    /// failure, not from the delivery. One that another consumer took over
    /// meanwhile is left to it.
    pub(super) failed: Vec<String>,
}

impl Ledger {
    pub(super) fn is_empty(&self) -> bool {
        self.unacked.is_empty() && self.unwritten.is_empty() && self.failed.is_empty()
    }

    pub(super) fn len(&self) -> usize {
        self.unacked.len() + self.unwritten.len() + self.failed.len()
    }

    /// Writes dead letters, then acknowledges them with everything
    /// processed, in one `XACK`; the order matters: a crash in between can
    /// duplicate a dead letter, never lose it. A dead-letter write that
    /// fails (maxmemory, an ACL) holds back only its own entries: the
    /// others are acknowledged anyway, and the letters are written by a
    /// later call, once Redis accepts them.
    pub(super) async fn record(
        &mut self,
        consumer: &mut Consumer,
        observer: &dyn Observer,
    ) -> Result<(), Error> {
        let mut held_back = None;
        if !self.unwritten.is_empty() {
            match consumer.dead_letter(&self.unwritten).await {
                Ok(()) => {
                    observer.dead_lettered(self.unwritten.len());
                    let written = std::mem::take(&mut self.unwritten);
                    self.unacked
                        .extend(written.into_iter().map(|letter| letter.entry.id));
                }
                Err(error) => held_back = Some(error),
            }
        }
        if !self.failed.is_empty() {
            match consumer.touch(&self.failed).await {
                Ok(taken_over) => {
                    taken_over.iter().for_each(log_taken_over);
                    self.failed.clear();
                }
                Err(error) if error.is_no_group() => self.failed.clear(),
                Err(error) => return Err(error),
            }
        }
        if !self.unacked.is_empty() {
            match consumer.ack(&self.unacked).await {
                Ok(_) => {}
                Err(error) if error.is_no_group() => {
                    warn!(
                        count = self.unacked.len(),
                        "the consumer group is gone; its pending list went with it, nothing left to acknowledge"
                    );
                }
                Err(error) => return Err(error),
            }
            self.unacked.clear();
        }
        match held_back {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }
}
