//! Entries whose fate is decided but not yet recorded in Redis, and how
//! they are recorded: dead letters written, the rest acknowledged, failed
//! entries' retry delays started.

use std::time::Duration;

use tokio::time::Instant;
use tracing::{error, warn};

use super::log_taken_over;
use crate::backoff::Backoff;
use crate::consumer::Consumer;
use crate::dead_letter::DeadLetter;
use crate::error::Error;
use crate::observe::Observer;

/// The first wait before a refused dead-letter write is tried again; it
/// doubles with each refusal up to [`REFUSED_RETRY_MAX`].
const REFUSED_RETRY: Duration = Duration::from_secs(1);
const REFUSED_RETRY_MAX: Duration = Duration::from_secs(30);

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
    /// Set while Redis refuses the dead-letter writes: when to try again.
    refused: Option<Refused>,
}

/// Dead letters Redis refused (`WRONGTYPE`, `OOM`, `NOPERM`): their
/// entries stay pending to this consumer, kept alive by its heartbeat, and
/// the write is tried again with a growing delay, while everything else
/// goes on.
#[derive(Debug)]
struct Refused {
    retry_at: Instant,
    backoff: Backoff,
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
    /// duplicate a dead letter, never lose it.
    ///
    /// A letter is written only while its entry is still this consumer's:
    /// one that another consumer took over while this worker did not
    /// answer (frozen, or cut off, for longer than `claim_idle`) is its new
    /// holder's to finish. A write Redis refuses (a key of another type,
    /// maxmemory, an ACL) holds back only its own entries: the others are
    /// acknowledged, the refusal is logged and counted, and the letters
    /// are tried again after a delay that grows to 30 s; meanwhile
    /// [`Ledger::held`] keeps their entries alive.
    pub(super) async fn record(
        &mut self,
        consumer: &mut Consumer,
        observer: &dyn Observer,
    ) -> Result<(), Error> {
        let due = self
            .refused
            .as_ref()
            .is_none_or(|refused| Instant::now() >= refused.retry_at);
        if !self.unwritten.is_empty() {
            self.let_go_taken_over(consumer).await?;
        }
        if due && !self.unwritten.is_empty() {
            match consumer.dead_letter(&self.unwritten).await {
                Ok(()) => {
                    observer.dead_lettered(self.unwritten.len());
                    self.refused = None;
                    let written = std::mem::take(&mut self.unwritten);
                    self.unacked
                        .extend(written.into_iter().map(|letter| letter.entry.id));
                }
                Err(error) if error.is_connection() => return Err(error),
                Err(error) => self.refuse(error, observer),
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
        Ok(())
    }

    /// The IDs of the entries whose dead letters wait to be written: held
    /// by this worker, for the heartbeat.
    pub(super) fn held(&self) -> impl Iterator<Item = &str> {
        self.unwritten.iter().map(|letter| letter.entry.id.as_str())
    }

    /// Drops the letter of `id`, whose entry another consumer holds now;
    /// whether there was one.
    pub(super) fn let_go(&mut self, id: &str) -> bool {
        let before = self.unwritten.len();
        self.unwritten.retain(|letter| letter.entry.id != id);
        self.unwritten.len() < before
    }

    /// Checks that the entries of the unwritten letters are still this
    /// consumer's, resetting their idle time, and drops the letters of
    /// those another consumer took over.
    async fn let_go_taken_over(&mut self, consumer: &mut Consumer) -> Result<(), Error> {
        let ids: Vec<String> = self.held().map(str::to_owned).collect();
        match consumer.touch(&ids).await {
            Ok(taken_over) => {
                for lost in taken_over {
                    log_taken_over(&lost);
                    self.let_go(&lost.id);
                }
                Ok(())
            }
            Err(error) if error.is_connection() => Err(error),
            // Without the check the letters are written as before.
            Err(error) => {
                warn!(%error, "cannot check that the entries to dead-letter are still this consumer's");
                Ok(())
            }
        }
    }

    /// Notes a refused dead-letter write and when to try again.
    fn refuse(&mut self, refusal: Error, observer: &dyn Observer) {
        let refused = self.refused.get_or_insert_with(|| Refused {
            retry_at: Instant::now(),
            backoff: Backoff::new(REFUSED_RETRY, REFUSED_RETRY_MAX),
        });
        let delay = refused.backoff.next_delay();
        refused.retry_at = Instant::now() + delay;
        observer.dead_letters_refused(self.unwritten.len());
        error!(
            error = %refusal,
            count = self.unwritten.len(),
            attempt = refused.backoff.attempts(),
            retry_in_ms = delay.as_millis() as u64,
            "Redis refused to write dead letters; their entries stay pending to this worker and are tried again, the others go on"
        );
    }
}
