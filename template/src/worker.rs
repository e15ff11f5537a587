//! The consume loop.
//!
//! [`Worker::step`] does one unit of work: it picks the next source of
//! entries, hands them to the [`Handler`] (up to `concurrency` at once),
//! then acknowledges what succeeded and dead-letters what failed for good,
//! with one `XACK` for the batch. [`Worker::run`] repeats it, and adds only
//! waiting, backoff on Redis errors and graceful shutdown.
//!
//! Sources, in order of priority:
//! 1. this consumer's own pending entries, once after start and after each
//!    reconnect (`XREADGROUP ... 0`): work a previous run left unfinished;
//! 2. entries of dead consumers, idle longer than `claim_idle`, every
//!    `claim_interval` (`XAUTOCLAIM`, walking the whole pending list);
//! 3. this consumer's own failures whose retry delay has passed (`XPENDING`
//!    for this consumer, then `XCLAIM` to itself, which counts a delivery);
//! 4. new entries (`XREADGROUP ... >`, blocking up to `block_timeout`).
//!
//! Entries are acknowledged only after processing.
//!
//! While a full batch of new entries is processed, the next batch is read
//! ahead (without blocking), so Redis prepares it while this worker works;
//! this happens only when new entries are next anyway (nothing to replay,
//! no claim or retry scan due). The next step takes those entries before
//! any other source, and at shutdown they are processed like the batch in
//! flight. Apart from that read, nothing is in flight between two steps, so
//! the sources never hand out an entry that is still being processed here.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{FutureExt, StreamExt};
use tokio::time::{Instant, sleep, timeout_at};
use tracing::{Instrument, debug, error, info, info_span, warn};

use crate::backoff::{Backoff, retry_delay};
use crate::consumer::{Consumer, Delivery, Names, ReadAhead};
use crate::dead_letter::DeadLetter;
use crate::entry::Entry;
use crate::error::Error;
use crate::handler::{Handler, ProcessError};
use crate::observe::{Observer, Outcome};
use crate::settings::{Settings, WorkerSettings};
use crate::shutdown::{self, Shutdown};

/// At most this many pages of the own pending list are read per retry check.
const RETRY_SCAN_PAGES: usize = 10;

/// Where the entries of a step came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Source {
    /// Nothing was read (the group was being created, or a source was empty).
    #[default]
    Idle,
    /// This consumer's own pending entries, after a start or reconnect.
    Replay,
    /// Entries taken over from other consumers.
    Claim,
    /// This consumer's failed entries, due for another try.
    Retry,
    /// Entries never delivered before.
    New,
}

/// What one step did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StepReport {
    /// Where the entries came from.
    pub source: Source,
    /// Entries handed to the business logic.
    pub processed: usize,
    /// Entries processed successfully (and acknowledged).
    pub succeeded: usize,
    /// Entries that failed and stay pending for another try.
    pub retrying: usize,
    /// Entries sent to the dead-letter stream (and acknowledged).
    pub dead_lettered: usize,
    /// Pending entries that no longer existed in the stream.
    pub deleted: usize,
    /// Entries still running when the shutdown deadline passed; left pending.
    pub abandoned: usize,
}

/// A consumer-group worker running handler `H`.
pub struct Worker<H> {
    handler: H,
    consumer: Consumer,
    settings: WorkerSettings,
    observer: Arc<dyn Observer>,
    shutdown: Shutdown,
    group_ready: bool,
    /// `Some(after)` while replaying the own pending list.
    replay_after: Option<String>,
    claim_cursor: String,
    next_claim: Instant,
    next_retry_scan: Instant,
    /// Whether this consumer may hold failed entries waiting for a retry.
    own_failures: bool,
    /// New entries read while the previous batch was processed.
    read_ahead: Option<ReadAhead>,
    ledger: Ledger,
}

/// Entries whose fate is decided but not yet recorded in Redis.
#[derive(Debug, Default)]
struct Ledger {
    /// Processed or dead-lettered, not yet acknowledged.
    unacked: Vec<String>,
    /// Given up on, not yet written to the dead-letter stream.
    unwritten: Vec<DeadLetter>,
}

impl Ledger {
    fn is_empty(&self) -> bool {
        self.unacked.is_empty() && self.unwritten.is_empty()
    }

    fn len(&self) -> usize {
        self.unacked.len() + self.unwritten.len()
    }
}

impl<H> std::fmt::Debug for Worker<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("consumer", &self.consumer)
            .field("ledger", &self.ledger)
            .finish_non_exhaustive()
    }
}

impl<H: Handler> Worker<H> {
    /// A worker for `settings` running `handler`. Nothing connects yet: the
    /// first step does, and [`Worker::run`] retries until Redis answers.
    pub fn new(settings: &Settings, handler: H) -> Result<Self, Error> {
        let client = redis::Client::open(settings.redis.url.expose())?;
        let names = Names {
            stream: settings.redis.stream.clone(),
            group: settings.redis.consumer_group.clone(),
            consumer: settings.redis.consumer_name(),
            dead_letter_stream: settings.dead_letter_stream(),
        };
        let now = Instant::now();
        Ok(Self {
            handler,
            consumer: Consumer::new(client, names, settings.redis.block_timeout()),
            settings: settings.worker.clone(),
            observer: Arc::new(()),
            shutdown: Shutdown::never(),
            group_ready: false,
            replay_after: Some("0".to_owned()),
            claim_cursor: "0-0".to_owned(),
            next_claim: now,
            next_retry_scan: now,
            own_failures: true,
            read_ahead: None,
            ledger: Ledger::default(),
        })
    }

    /// Reports events to `observer` (metrics, tests).
    pub fn with_observer(mut self, observer: Arc<dyn Observer>) -> Self {
        self.observer = observer;
        self
    }

    /// The stream, group and consumer names.
    pub fn names(&self) -> &Names {
        self.consumer.names()
    }

    /// Runs until `shutdown` completes, then lets in-flight entries finish
    /// for up to `shutdown_timeout`, acknowledges them and returns. Redis
    /// errors never end the run: the worker backs off and carries on.
    pub async fn run(mut self, shutdown: impl Future<Output = ()> + Send + 'static) {
        let (trigger, stop) = shutdown::channel(self.settings.shutdown_timeout());
        self.shutdown = stop;
        let watcher = tokio::spawn(async move {
            shutdown.await;
            trigger.trigger();
        });
        let names = self.names().clone();
        info!(stream = %names.stream, group = %names.group, consumer = %names.consumer, "worker started");

        let mut backoff = Backoff::new(
            self.settings.reconnect_backoff(),
            self.settings.reconnect_backoff_max(),
        );
        while self.shutdown.deadline().is_none() {
            match self.step().await {
                Ok(report) => {
                    if backoff.attempts() > 0 {
                        info!("Redis is reachable again");
                    }
                    backoff.reset();
                    debug!(?report, "step");
                }
                Err(error) if error.is_no_group() => {
                    warn!(%error, "the consumer group is gone (stream deleted, evicted or flushed); recreating it");
                    self.group_ready = false;
                }
                Err(error) => {
                    let delay = backoff.next_delay();
                    warn!(%error, attempt = backoff.attempts(), retry_in_ms = delay.as_millis() as u64, "Redis error; backing off");
                    if error.is_connection() {
                        self.observer.reconnecting();
                        // Entries read just before the failure may be ours now: replay.
                        self.replay_after = Some("0".to_owned());
                    }
                    let mut stop = self.shutdown.clone();
                    tokio::select! {
                        _ = sleep(delay) => {}
                        _ = stop.requested() => {}
                    }
                }
            }
        }
        self.finish().await;
        watcher.abort();
        info!("worker stopped");
    }

    /// Processes the entries read ahead and acknowledges what was processed,
    /// before the deadline; what cannot be done in time stays pending and is
    /// delivered again later.
    async fn finish(&mut self) {
        let deadline = self.shutdown.deadline().unwrap_or_else(Instant::now);
        if let Some(read) = self.read_ahead.take() {
            match timeout_at(deadline, self.consumer.take(read)).await {
                Ok(Ok(deliveries)) => {
                    let report = self.process(first_deliveries(deliveries)).await;
                    debug!(?report, "processed the entries read ahead");
                }
                Ok(Err(error)) => warn!(%error, "the read ahead failed"),
                Err(_) => warn!("the read ahead did not answer before the shutdown deadline"),
            }
        }
        let mut backoff = Backoff::new(
            self.settings.reconnect_backoff(),
            self.settings.reconnect_backoff_max(),
        );
        while !self.ledger.is_empty() {
            match timeout_at(deadline, self.flush()).await {
                Ok(Ok(())) => break,
                Ok(Err(error)) => {
                    warn!(%error, "cannot acknowledge before stopping; retrying");
                    if timeout_at(deadline, sleep(backoff.next_delay()))
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
        if !self.ledger.is_empty() {
            error!(
                unacknowledged = self.ledger.len(),
                "shutdown deadline passed before every processed entry was acknowledged; they will be delivered again"
            );
        }
    }

    /// One unit of work: finishes acknowledgements a failed step left, makes
    /// sure the group exists, then reads from the next source, processes what
    /// it got and acknowledges it.
    ///
    /// After a full batch of new entries a read ahead may be left for the
    /// next step; a worker dropped between steps leaves its entries pending
    /// for a replay or a claim. [`Worker::run`] finishes it at shutdown.
    pub async fn step(&mut self) -> Result<StepReport, Error> {
        self.flush().await?;
        if !self.group_ready {
            if self
                .consumer
                .ensure_group(&self.settings.group_start_id)
                .await?
            {
                info!(group = %self.names().group, stream = %self.names().stream, "consumer group created");
            }
            self.group_ready = true;
            return Ok(StepReport::default());
        }

        let now = Instant::now();
        let batch = self.settings.batch_size;
        let (source, deliveries) = if let Some(read) = self.read_ahead.take() {
            let deliveries = self.consumer.take(read).await?;
            (Source::New, first_deliveries(deliveries))
        } else if let Some(after) = self.replay_after.clone() {
            let deliveries = self.consumer.read_pending(&after, batch).await?;
            match deliveries.last() {
                Some(last) => self.replay_after = Some(delivery_id(last).to_owned()),
                None => self.replay_after = None,
            }
            (Source::Replay, self.with_delivery_counts(deliveries).await?)
        } else if now >= self.next_claim {
            (Source::Claim, self.claim_from_dead_consumers(now).await?)
        } else if self.own_failures && now >= self.next_retry_scan {
            self.next_retry_scan = now + self.settings.retry_backoff().min(Duration::from_secs(1));
            (Source::Retry, self.due_retries().await?)
        } else {
            // Wake up for the next scan rather than block past it.
            let mut wake = self.next_claim;
            if self.own_failures {
                wake = wake.min(self.next_retry_scan);
            }
            let deliveries = self.consumer.read_new(batch, wake - now).await?;
            (Source::New, first_deliveries(deliveries))
        };
        if source == Source::New && deliveries.len() == batch && self.new_entries_next() {
            self.read_ahead = self.consumer.read_ahead(batch);
        }

        let mut report = self.process(deliveries).await;
        report.source = source;
        if report.retrying > 0 || report.abandoned > 0 {
            self.own_failures = true;
        }
        self.flush().await?;
        Ok(report)
    }

    /// Whether the next step would read new entries anyway: nothing to
    /// replay, no claim or retry scan due, no shutdown requested.
    fn new_entries_next(&self) -> bool {
        let now = Instant::now();
        self.replay_after.is_none()
            && now < self.next_claim
            && !(self.own_failures && now >= self.next_retry_scan)
            && self.shutdown.deadline().is_none()
    }

    /// Asks Redis how often each entry was delivered (after a replay or a
    /// takeover the count is not known locally).
    async fn with_delivery_counts(
        &mut self,
        deliveries: Vec<Delivery>,
    ) -> Result<Vec<(Delivery, u64)>, Error> {
        let ids: Vec<&str> = deliveries.iter().map(delivery_id).collect();
        let counts = self.consumer.delivery_counts(&ids).await?;
        Ok(deliveries.into_iter().zip(counts).collect())
    }

    /// One page of `XAUTOCLAIM`; the walk of the pending list goes on at the
    /// next step until it is complete, then waits `claim_interval`.
    async fn claim_from_dead_consumers(
        &mut self,
        now: Instant,
    ) -> Result<Vec<(Delivery, u64)>, Error> {
        let page = self
            .consumer
            .autoclaim(
                self.settings.claim_idle(),
                &self.claim_cursor,
                self.settings.batch_size,
            )
            .await?;
        if page.next_cursor == "0-0" {
            self.next_claim = now + self.settings.claim_interval();
            if let Some(idle) = self.settings.delete_idle_consumers() {
                let removed = self.consumer.remove_idle_consumers(idle).await?;
                if !removed.is_empty() {
                    info!(
                        ?removed,
                        "removed idle consumers that held no pending entries"
                    );
                }
            }
        }
        self.claim_cursor = page.next_cursor;
        for id in &page.deleted {
            warn!(id = %id, "a pending entry was deleted from the stream before it was processed; dropped from the pending list");
        }
        if !page.entries.is_empty() {
            info!(
                count = page.entries.len(),
                "took over entries of consumers idle longer than claim_idle"
            );
            self.observer.claimed(page.entries.len());
        }
        let deliveries = page.entries.into_iter().map(Delivery::Entry).collect();
        self.with_delivery_counts(deliveries).await
    }

    /// This consumer's failed entries whose retry delay has passed, claimed
    /// again (which counts a delivery).
    async fn due_retries(&mut self) -> Result<Vec<(Delivery, u64)>, Error> {
        let batch = self.settings.batch_size;
        let (base, max) = (
            self.settings.retry_backoff(),
            self.settings.retry_backoff_max(),
        );
        let mut due: HashMap<String, u64> = HashMap::new();
        let mut after: Option<String> = None;
        let mut any = false;
        for _ in 0..RETRY_SCAN_PAGES {
            let page = self
                .consumer
                .own_pending(Duration::ZERO, after.as_deref(), batch)
                .await?;
            any |= !page.is_empty();
            let complete = page.len() < batch;
            after = page.last().map(|pending| pending.id.clone());
            for pending in page {
                if due.len() < batch && pending.idle >= retry_delay(base, max, pending.deliveries) {
                    due.insert(pending.id, pending.deliveries);
                }
            }
            if complete || due.len() >= batch {
                break;
            }
        }
        // Nothing of ours is pending: no scans until something fails again.
        self.own_failures = any;
        if due.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<&str> = due.keys().map(String::as_str).collect();
        let claimed = self.consumer.claim(&ids, base).await?;
        self.observer.retried(claimed.len());
        Ok(claimed
            .into_iter()
            .map(|delivery| {
                let deliveries = due.get(delivery_id(&delivery)).copied().unwrap_or(0) + 1;
                (delivery, deliveries)
            })
            .collect())
    }

    /// Runs the handler on every entry, `concurrency` at a time, and sorts
    /// the results into acknowledgements and dead letters.
    async fn process(&mut self, deliveries: Vec<(Delivery, u64)>) -> StepReport {
        let mut report = StepReport::default();
        let max_deliveries = self.settings.max_deliveries;
        let mut work = Vec::with_capacity(deliveries.len());
        for (delivery, deliveries) in deliveries {
            match delivery {
                Delivery::Deleted(id) => {
                    warn!(id = %id, "a pending entry was deleted from the stream before it was processed; acknowledging it");
                    self.ledger.unacked.push(id);
                    report.deleted += 1;
                }
                Delivery::Entry(entry) if deliveries > max_deliveries => {
                    let reason = format!(
                        "delivered {deliveries} times without being acknowledged (max_deliveries is {max_deliveries}); \
                         a worker may have crashed while processing it"
                    );
                    warn!(id = %entry.id, deliveries, "giving up on an entry that keeps coming back");
                    self.ledger
                        .unwritten
                        .push(DeadLetter::new(entry, reason, deliveries));
                    report.dead_lettered += 1;
                }
                Delivery::Entry(entry) => work.push((entry, deliveries)),
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
            let outcome = settle(
                &self.settings,
                &mut self.ledger,
                entry,
                deliveries,
                result,
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
    async fn flush(&mut self) -> Result<(), Error> {
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

/// Decides what happens to an entry after the handler returned.
fn settle(
    settings: &WorkerSettings,
    ledger: &mut Ledger,
    entry: Entry,
    deliveries: u64,
    result: Result<(), ProcessError>,
    report: &mut StepReport,
) -> Outcome {
    let max_deliveries = settings.max_deliveries;
    match result {
        Ok(()) => {
            ledger.unacked.push(entry.id);
            report.succeeded += 1;
            Outcome::Succeeded
        }
        Err(error @ ProcessError::Permanent(_)) => {
            warn!(id = %entry.id, %error, "permanent failure; dead-lettering");
            ledger
                .unwritten
                .push(DeadLetter::new(entry, error.to_string(), deliveries));
            report.dead_lettered += 1;
            Outcome::DeadLettered
        }
        Err(error) if deliveries >= max_deliveries => {
            warn!(id = %entry.id, %error, deliveries, "failed on the last allowed delivery; dead-lettering");
            let reason = format!("failed {deliveries} deliveries; last error: {error}");
            ledger
                .unwritten
                .push(DeadLetter::new(entry, reason, deliveries));
            report.dead_lettered += 1;
            Outcome::DeadLettered
        }
        Err(error) => {
            let delay = retry_delay(
                settings.retry_backoff(),
                settings.retry_backoff_max(),
                deliveries,
            );
            warn!(id = %entry.id, %error, deliveries, retry_in_ms = delay.as_millis() as u64, "failed; will retry");
            report.retrying += 1;
            Outcome::Retrying
        }
    }
}

/// Entries read as new: delivered for the first time.
fn first_deliveries(deliveries: Vec<Delivery>) -> Vec<(Delivery, u64)> {
    deliveries
        .into_iter()
        .map(|delivery| (delivery, 1))
        .collect()
}

fn delivery_id(delivery: &Delivery) -> &str {
    match delivery {
        Delivery::Entry(entry) => &entry.id,
        Delivery::Deleted(id) => id,
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
