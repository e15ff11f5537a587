//! Processing a batch: the handler on every entry, `concurrency` at a
//! time, the retry policy's decision carried out for each, and the
//! decisions recorded in Redis (dead letters written, then one `XACK`).

use std::panic::AssertUnwindSafe;

use futures_util::{FutureExt, StreamExt};
use tokio::time::timeout_at;
use tracing::{Instrument, debug, info_span, warn};

use super::{StepReport, Worker};
use crate::consumer::Delivery;
use crate::dead_letter::DeadLetter;
use crate::entry::Entry;
use crate::error::Error;
use crate::handler::{Handler, ProcessError};
use crate::observe::Outcome;
use crate::replay;
use crate::retry::{Decision, GiveUp};

/// Entries whose fate is decided but not yet recorded in Redis.
#[derive(Debug, Default)]
pub(super) struct Ledger {
    /// Processed or dead-lettered, not yet acknowledged.
    unacked: Vec<String>,
    /// Given up on, not yet written to the dead-letter stream.
    unwritten: Vec<DeadLetter>,
}

impl Ledger {
    pub(super) fn is_empty(&self) -> bool {
        self.unacked.is_empty() && self.unwritten.is_empty()
    }

    pub(super) fn len(&self) -> usize {
        self.unacked.len() + self.unwritten.len()
    }
}

impl<H: Handler> Worker<H> {
    /// Runs the handler on every entry, `concurrency` at a time, and sorts
    /// the results into acknowledgements and dead letters.
    pub(super) async fn process(&mut self, deliveries: Vec<(Delivery, u64)>) -> StepReport {
        let mut report = StepReport::default();
        let mut work = Vec::with_capacity(deliveries.len());
        for (delivery, deliveries) in deliveries {
            match delivery {
                Delivery::Deleted(id) => {
                    warn!(id = %id, "a pending entry was deleted from the stream before it was processed; acknowledging it");
                    self.ledger.unacked.push(id);
                    report.deleted += 1;
                }
                Delivery::Entry(entry)
                    if replay::is_for_another_group(&entry, &self.consumer.names().group) =>
                {
                    debug!(id = %entry.id, "a replay for another group; acknowledging it unprocessed");
                    self.ledger.unacked.push(entry.id);
                    report.skipped += 1;
                }
                Delivery::Entry(entry) => match self.policy.before(deliveries) {
                    Some(decision) => {
                        carry_out(
                            &mut self.ledger,
                            entry,
                            deliveries,
                            decision,
                            None,
                            &mut report,
                        );
                    }
                    None => work.push((entry, deliveries)),
                },
            }
        }
        if work.is_empty() {
            return report;
        }

        report.processed = work.len();
        self.observer
            .in_flight(work.len().min(self.settings.concurrency));
        let handler = &self.handler;
        let mut outcomes = futures_util::stream::iter(work)
            .map(|(entry, deliveries)| async move {
                let span = info_span!("message", id = %entry.id, deliveries);
                let started = std::time::Instant::now();
                let result = AssertUnwindSafe(handler.handle(&entry))
                    .catch_unwind()
                    .instrument(span)
                    .await
                    .unwrap_or_else(|panic| {
                        Err(ProcessError::retry(panic_message(panic.as_ref())))
                    });
                (entry, deliveries, result, started.elapsed())
            })
            .buffer_unordered(self.settings.concurrency);

        let mut shutdown = self.shutdown.clone();
        let mut remaining = report.processed;
        while remaining > 0 {
            let next = match shutdown.deadline() {
                None => tokio::select! {
                    next = outcomes.next() => next,
                    _ = shutdown.requested() => continue,
                },
                Some(deadline) => match timeout_at(deadline, outcomes.next()).await {
                    Ok(next) => next,
                    Err(_) => break,
                },
            };
            let Some((entry, deliveries, result, elapsed)) = next else {
                break;
            };
            remaining -= 1;
            let decision = self.policy.after(deliveries, &result);
            let outcome = carry_out(
                &mut self.ledger,
                entry,
                deliveries,
                decision,
                result.err(),
                &mut report,
            );
            self.observer.processed(outcome, elapsed);
        }
        self.observer.in_flight(0);
        if remaining > 0 {
            warn!(
                unfinished = remaining,
                "shutdown deadline passed; unfinished entries stay pending for another consumer or the next start"
            );
            report.abandoned = remaining;
        }
        report
    }

    /// Writes dead letters, then acknowledges them with everything processed,
    /// in one `XACK`. The order matters: a crash in between can duplicate a
    /// dead letter, never lose it.
    pub(super) async fn flush(&mut self) -> Result<(), Error> {
        let ledger = &mut self.ledger;
        if !ledger.unwritten.is_empty() {
            self.consumer.dead_letter(&ledger.unwritten).await?;
            self.observer.dead_lettered(ledger.unwritten.len());
            let written = std::mem::take(&mut ledger.unwritten);
            ledger
                .unacked
                .extend(written.into_iter().map(|letter| letter.entry.id));
        }
        if !ledger.unacked.is_empty() {
            match self.consumer.ack(&ledger.unacked).await {
                Ok(_) => {}
                Err(error) if error.is_no_group() => {
                    warn!(
                        count = ledger.unacked.len(),
                        "the consumer group is gone; its pending list went with it, nothing left to acknowledge"
                    );
                }
                Err(error) => return Err(error),
            }
            ledger.unacked.clear();
        }
        Ok(())
    }
}

/// Carries out the policy's `decision` on an entry delivered `deliveries`
/// times; `error` is what the handler returned, if it ran and failed.
fn carry_out(
    ledger: &mut Ledger,
    entry: Entry,
    deliveries: u64,
    decision: Decision,
    error: Option<ProcessError>,
    report: &mut StepReport,
) -> Outcome {
    let error = error.map(|error| error.to_string()).unwrap_or_default();
    match decision {
        Decision::Acknowledge => {
            ledger.unacked.push(entry.id);
            report.succeeded += 1;
            Outcome::Succeeded
        }
        Decision::Retry { delay } => {
            warn!(id = %entry.id, %error, deliveries, retry_in_ms = delay.as_millis() as u64, "failed; will retry");
            report.retrying += 1;
            Outcome::Retrying
        }
        Decision::DeadLetter { reason, cause } => {
            match cause {
                GiveUp::Permanent => {
                    warn!(id = %entry.id, %error, "permanent failure; dead-lettering");
                }
                GiveUp::Exhausted => {
                    warn!(id = %entry.id, %error, deliveries, "failed on the last allowed delivery; dead-lettering");
                }
                GiveUp::KeepsComingBack => {
                    warn!(id = %entry.id, deliveries, "giving up on an entry that keeps coming back");
                }
            }
            ledger
                .unwritten
                .push(DeadLetter::new(entry, reason, deliveries));
            report.dead_lettered += 1;
            Outcome::DeadLettered
        }
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    let detail = panic
        .downcast_ref::<&str>()
        .map(|text| (*text).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string payload".to_owned());
    format!("panicked: {detail}")
}
