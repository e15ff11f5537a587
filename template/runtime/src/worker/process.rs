//! Processing a batch: the handler on every entry, `concurrency` at a
//! time and each call bounded by `process_timeout`, the retry policy's
//! decision carried out for each, and the decisions recorded in Redis as
//! entries finish (dead letters written, then one `XACK` for what finished
//! in the last moment).
//!
//! While the batch runs, a heartbeat resets the idle time of every entry
//! still held (in flight, waiting for a slot, or read ahead) every quarter
//! of `claim_idle`, so no other consumer takes over the entries of a live
//! worker, however long they take. It resets only entries still this
//! worker's: one that another consumer took over while this worker did not
//! answer (frozen, or cut off from Redis, for longer than `claim_idle`) is
//! let go. It is no longer kept or read ahead here, and if its call here
//! fails, the failure is left to its new holder: neither retried nor
//! dead-lettered here. A success is acknowledged, as any processed entry is.

use std::collections::HashSet;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use futures_util::{FutureExt, StreamExt};
use opentelemetry::Context;
use opentelemetry::context::FutureExt as _;
use tokio::time::{Instant, sleep_until, timeout_at};
use tracing::{Instrument, debug, info, info_span, warn};

use super::ledger::Ledger;
use super::{StepReport, Worker, log_taken_over};
use crate::consumer::{Consumer, Delivery, ReadAhead};
use crate::dead_letter::DeadLetter;
use crate::entry::Entry;
use crate::error::Error;
use crate::handler::{Handler, ProcessError};
use crate::observe::{Observer, Outcome};
use crate::otel::{self, SpanOutcome};
use crate::replay;
use crate::retry::{Decision, GiveUp, RetryPolicy};

/// How long a finished entry may wait for its acknowledgement while the
/// rest of its batch is still running: long enough that a fast batch is
/// acknowledged with one `XACK`, short enough that a slow entry holds back
/// nothing.
const ACK_INTERVAL: Duration = Duration::from_millis(100);

/// An entry whose call ended: its position in the batch, the entry, its
/// delivery count, the result, how long the call took, and its span when
/// traces are exported.
type Finished = (
    usize,
    Entry,
    u64,
    Result<(), ProcessError>,
    Duration,
    Option<Context>,
);

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
                        // Its earlier deliveries' spans may have died with
                        // a crashed process: this one says what became of it.
                        let trace = self
                            .spans
                            .as_ref()
                            .map(|spans| spans.start(&entry, deliveries));
                        carry_out(
                            &mut self.ledger,
                            entry,
                            deliveries,
                            decision,
                            None,
                            trace.as_ref(),
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
        let unfinished = Unfinished::new(work.iter().map(|(entry, _)| entry.id.as_str()));
        self.observer
            .in_flight(work.len().min(self.settings.concurrency));
        let handler = &self.handler;
        let spans = self.spans.as_ref();
        let limit = self.settings.process_timeout;
        let mut outcomes = futures_util::stream::iter(work.into_iter().enumerate())
            .map(|(position, (entry, deliveries))| async move {
                let span = info_span!("message", id = %entry.id, deliveries);
                let trace = Unended(spans.map(|spans| spans.start(&entry, deliveries)));
                let started = Instant::now();
                let call = AssertUnwindSafe(handler.handle(&entry))
                    .catch_unwind()
                    .instrument(span);
                // The delivery's span is the current context while the
                // logic runs, so the logic's own spans nest in it.
                let call = match &trace.0 {
                    Some(trace) => {
                        timeout_at(started + limit, call.with_context(trace.clone())).await
                    }
                    None => timeout_at(started + limit, call).await,
                };
                let result = match call {
                    Ok(Ok(result)) => result,
                    Ok(Err(panic)) => Err(ProcessError::retry(panic_message(panic.as_ref()))),
                    Err(_) => {
                        otel::timed_out(trace.0.as_ref(), limit);
                        Err(ProcessError::retry(format!(
                            "timed out after {} ms (worker.process_timeout_ms)",
                            limit.as_millis()
                        )))
                    }
                };
                (
                    position,
                    entry,
                    deliveries,
                    result,
                    started.elapsed(),
                    trace.pass_on(),
                )
            })
            .buffer_unordered(self.settings.concurrency);

        let mut shutdown = self.shutdown.clone();
        let mut remaining = report.processed;
        let heartbeat_every = (self.settings.claim_idle / 4).max(Duration::from_millis(1));
        let mut next_heartbeat = Instant::now() + heartbeat_every;
        let mut batch = Batch {
            unfinished,
            taken_over: HashSet::new(),
            next_flush: None,
            report,
        };
        // Whether entries finished since the last liveness mark: marked
        // once per run of finished entries rather than once per entry, which
        // would read the clock every time.
        let mut progressed = false;
        while remaining > 0 {
            let deadline = shutdown.deadline();
            // Most outcomes are ready at once: take them without setting up
            // the timers below.
            if let Some(next) = outcomes.next().now_or_never() {
                let Some(outcome) = next else { break };
                remaining -= 1;
                progressed = true;
                finished(
                    &mut self.ledger,
                    &self.policy,
                    &*self.observer,
                    outcome,
                    &mut batch,
                    &mut self.first_entry_logged,
                );
                continue;
            }
            if std::mem::take(&mut progressed) {
                self.progress.mark();
            }
            let tick = batch
                .next_flush
                .map_or(next_heartbeat, |at| at.min(next_heartbeat));
            let next = tokio::select! {
                biased;
                next = outcomes.next() => next,
                _ = shutdown.requested(), if deadline.is_none() => continue,
                () = sleep_until(deadline.unwrap_or(tick)), if deadline.is_some() => break,
                () = sleep_until(tick) => {
                    self.progress.mark();
                    let now = Instant::now();
                    if now >= next_heartbeat {
                        next_heartbeat = now + heartbeat_every;
                        heartbeat(&mut self.consumer, self.read_ahead.as_mut(), &mut self.ledger, &mut batch).await;
                    }
                    if batch.next_flush.is_some_and(|at| now >= at) {
                        batch.next_flush = None;
                        if let Err(error) = self.ledger.record(&mut self.consumer, &*self.observer).await {
                            debug!(%error, "cannot record finished entries yet; the end of the step retries");
                        }
                    }
                    continue;
                }
            };
            let Some(outcome) = next else {
                break;
            };
            remaining -= 1;
            self.progress.mark();
            finished(
                &mut self.ledger,
                &self.policy,
                &*self.observer,
                outcome,
                &mut batch,
                &mut self.first_entry_logged,
            );
        }
        if progressed {
            self.progress.mark();
        }
        self.observer.in_flight(0);
        let mut report = batch.report;
        if remaining > 0 {
            warn!(
                unfinished = remaining,
                "shutdown deadline passed; unfinished entries stay pending for another consumer or the next start"
            );
            report.abandoned = remaining;
        }
        report
    }

    /// Records in Redis what the ledger holds; see [`Ledger::record`].
    pub(super) async fn flush(&mut self) -> Result<(), Error> {
        self.ledger
            .record(&mut self.consumer, &*self.observer)
            .await
    }
}

/// A delivery's span while its call runs. If the call is dropped unfinished
/// (the shutdown deadline passed), the span ends as abandoned rather than
/// with no outcome.
struct Unended(Option<Context>);

impl Unended {
    /// The span, now that the call ended: its outcome is recorded later.
    fn pass_on(mut self) -> Option<Context> {
        self.0.take()
    }
}

impl Drop for Unended {
    fn drop(&mut self) {
        otel::end(self.0.as_ref(), SpanOutcome::Abandoned);
    }
}

/// A batch's bookkeeping while its calls run.
struct Batch {
    /// The entries not yet finished and still this worker's: the
    /// heartbeat's list.
    unfinished: Unfinished,
    /// Entries of the batch that another consumer took over while their
    /// calls ran here.
    taken_over: HashSet<String>,
    /// When to record what finished, once something did.
    next_flush: Option<Instant>,
    report: StepReport,
}

/// The IDs of a batch's entries whose calls have not finished, by position
/// in the batch. All IDs share one buffer, so noting an entry and crossing
/// it off cost no allocation of their own.
struct Unfinished {
    text: String,
    /// Each entry's ID as a range of `text`; `None` once it finished or
    /// was let go.
    spans: Vec<Option<(usize, usize)>>,
}

impl Unfinished {
    fn new<'a>(ids: impl ExactSizeIterator<Item = &'a str> + Clone) -> Self {
        let mut text = String::with_capacity(ids.clone().map(str::len).sum());
        let mut spans = Vec::with_capacity(ids.len());
        for id in ids {
            spans.push(Some((text.len(), text.len() + id.len())));
            text.push_str(id);
        }
        Self { text, spans }
    }

    /// The IDs not yet finished.
    fn ids(&self) -> impl Iterator<Item = &str> {
        self.spans
            .iter()
            .flatten()
            .map(|&(start, end)| &self.text[start..end])
    }

    /// Crosses off the entry at `position`.
    fn finish(&mut self, position: usize) {
        if let Some(span) = self.spans.get_mut(position) {
            *span = None;
        }
    }

    /// Crosses off the entry `id`; whether it was still there.
    fn let_go(&mut self, id: &str) -> bool {
        let text = &self.text;
        match self
            .spans
            .iter_mut()
            .find(|span| span.is_some_and(|(start, end)| &text[start..end] == id))
        {
            Some(span) => {
                *span = None;
                true
            }
            None => false,
        }
    }
}

/// Resets the idle time of every entry the batch still holds (in flight or
/// waiting for a slot), of the entries read ahead and of those whose dead
/// letters wait to be written. Those another consumer took over meanwhile
/// are let go, with a warning each: left out of later heartbeats, dropped
/// from the read ahead unprocessed, their dead letters left unwritten.
async fn heartbeat(
    consumer: &mut Consumer,
    mut read_ahead: Option<&mut ReadAhead>,
    ledger: &mut Ledger,
    batch: &mut Batch,
) {
    let mut held: Vec<String> = batch.unfinished.ids().map(str::to_owned).collect();
    held.extend(ledger.held().map(str::to_owned));
    if let Some(read) = read_ahead.as_deref_mut() {
        held.extend(read.arrived_ids().await);
    }
    let taken_over = match consumer.touch(&held).await {
        Ok(taken_over) => taken_over,
        Err(error) => {
            warn!(%error, "heartbeat of the entries in flight failed; another consumer may take them over");
            return;
        }
    };
    for lost in taken_over {
        log_taken_over(&lost);
        if batch.unfinished.let_go(&lost.id) {
            batch.taken_over.insert(lost.id);
        } else if !ledger.let_go(&lost.id)
            && let Some(read) = read_ahead.as_deref_mut()
        {
            read.forget(&lost.id);
        }
    }
}

/// Carries out the policy's decision on an entry whose call ended, and
/// schedules the recording of it within [`ACK_INTERVAL`]. The first entry
/// of the worker's life is logged at info, so that a first try shows; the
/// others at debug, with the summary at info.
fn finished(
    ledger: &mut Ledger,
    policy: &RetryPolicy,
    observer: &dyn Observer,
    (position, entry, deliveries, result, elapsed, trace): Finished,
    batch: &mut Batch,
    first_entry_logged: &mut bool,
) {
    batch.unfinished.finish(position);
    let decision = policy.after(deliveries, &result);
    let taken_over = !batch.taken_over.is_empty() && batch.taken_over.remove(&entry.id);
    if taken_over && decision != Decision::Acknowledge {
        debug!(id = %entry.id, "failed here after another consumer took it over; left to that consumer");
        otel::end(trace.as_ref(), SpanOutcome::TakenOver);
        batch.report.taken_over += 1;
        observer.processed(Outcome::Retrying, elapsed);
        return;
    }
    // The ID only for the first entry: no allocation per entry.
    let first_id = (!*first_entry_logged).then(|| entry.id.clone());
    let outcome = carry_out(
        ledger,
        entry,
        deliveries,
        decision,
        result.err(),
        trace.as_ref(),
        &mut batch.report,
    );
    observer.processed(outcome, elapsed);
    if let Some(id) = first_id {
        *first_entry_logged = true;
        let what = match outcome {
            Outcome::Succeeded => "processed",
            Outcome::Retrying => "failed and will be retried",
            Outcome::DeadLettered => "dead-lettered",
        };
        info!(
            %id,
            elapsed_ms = elapsed.as_millis() as u64,
            "first entry {what}; the next ones are logged at debug (RUST_LOG=info,redis_streams_runtime=debug), with a summary at info"
        );
    }
    if batch.next_flush.is_none() {
        batch.next_flush = Some(Instant::now() + ACK_INTERVAL);
    }
}

/// Carries out the policy's `decision` on an entry delivered `deliveries`
/// times; `error` is what the handler returned, if it ran and failed, and
/// `trace` the delivery's span, which records the outcome and ends.
fn carry_out(
    ledger: &mut Ledger,
    mut entry: Entry,
    deliveries: u64,
    decision: Decision,
    error: Option<ProcessError>,
    trace: Option<&Context>,
    report: &mut StepReport,
) -> Outcome {
    let error = error.map(|error| error.to_string()).unwrap_or_default();
    match decision {
        Decision::Acknowledge => {
            otel::end(trace, SpanOutcome::Acknowledged);
            ledger.unacked.push(entry.id);
            report.succeeded += 1;
            Outcome::Succeeded
        }
        Decision::Retry { delay } => {
            warn!(id = %entry.id, %error, deliveries, retry_in_ms = delay.as_millis() as u64, "failed; will retry");
            otel::end(
                trace,
                SpanOutcome::Retried {
                    error: &error,
                    delay,
                },
            );
            ledger.failed.push(entry.id);
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
            otel::carry_into_dead_letter(&mut entry, trace);
            otel::end(trace, SpanOutcome::DeadLettered { reason: &reason });
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
