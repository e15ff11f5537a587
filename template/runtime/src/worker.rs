//! The consume loop.
//!
//! [`Worker::step`] does one unit of work: it picks the next source of
//! entries, hands them to the [`Handler`] (up to `concurrency` at once,
//! each call bounded by `process_timeout`), and acknowledges what succeeded
//! and dead-letters what failed for good as entries finish, batched into
//! few `XACK`s. [`Worker::run`] repeats it, and adds only
//! waiting, backoff on Redis errors and graceful shutdown.
//!
//! Sources, in order of priority:
//! 1. this consumer's own pending entries, once after start and after each
//!    reconnect (`XPENDING` for this consumer, then `XCLAIM` of one entry
//!    at a time): work a previous run left unfinished, processed and
//!    acknowledged one by one, because one of them may be what killed
//!    that run;
//! 2. entries of dead consumers, idle longer than `claim_idle`, every
//!    `claim_interval` (`XAUTOCLAIM`, walking the whole pending list);
//!    those delivered more than once are processed one at a time, like a
//!    replay;
//! 3. this consumer's own failures whose retry delay has passed (`XPENDING`
//!    for this consumer, then `XCLAIM` to itself, which counts a delivery);
//! 4. new entries (`XREADGROUP ... >`, blocking up to `block_timeout`).
//!
//! Entries are acknowledged only after processing. A dead letter replayed
//! for another group (see [`crate::replay`]) is acknowledged unprocessed.
//! A shutdown asked for while the worker waits for new entries ends that
//! wait at once.
//! While entries run, a heartbeat keeps them this consumer's (see
//! `worker/process.rs`).
//!
//! While a full batch of new entries is processed, the next batch is read
//! ahead (without blocking), so Redis prepares it while this worker works;
//! this happens only when new entries are next anyway (nothing to replay,
//! no claim or retry scan due). The next step takes those entries before
//! any other source, and at shutdown they are processed like the batch in
//! flight. Apart from that read, nothing is in flight between two steps, so
//! the sources never hand out an entry that is still being processed here.
//!
//! Reading from the sources is in `worker/sources.rs`; processing a batch,
//! carrying out the retry policy's decisions and recording them in Redis in
//! `worker/process.rs`.

mod ledger;
mod process;
mod sources;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::time::{Instant, sleep, timeout_at};
use tracing::{debug, error, info, warn};

use crate::backoff::Backoff;
use crate::connection::Connector;
use crate::consumer::{Consumer, Leave, Names, ReadAhead, TakenOver};
use crate::error::Error;
use crate::handler::Handler;
use crate::name_lock::NameLock;
use crate::observe::{Observer, Progress};
use crate::otel::{ConsumerSpans, Tracing};
use crate::retry::RetryPolicy;
use crate::settings::{Settings, WorkerSettings};
use crate::shutdown::{self, Shutdown};
use crate::summary::{self, SUMMARY_INTERVAL, Summary};

use self::ledger::Ledger;
use self::sources::{delivery_id, first_deliveries};

/// While Redis has not answered since the start, how often a failed attempt
/// is logged at warn; the others are logged at debug.
const START_REMINDER: Duration = Duration::from_secs(30);

/// The longest leaving the group at a stop may take.
const LEAVE_TIMEOUT: Duration = Duration::from_secs(2);

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
    /// Dead letters replayed for another group, acknowledged unprocessed.
    pub skipped: usize,
    /// Entries that failed here after another consumer had taken them over
    /// (this worker did not answer for longer than `claim_idle`): left to
    /// that consumer, neither retried nor dead-lettered here.
    pub taken_over: usize,
}

impl StepReport {
    /// Adds the counts of `other`, a part of this step.
    fn absorb(&mut self, other: StepReport) {
        self.processed += other.processed;
        self.succeeded += other.succeeded;
        self.retrying += other.retrying;
        self.dead_lettered += other.dead_lettered;
        self.deleted += other.deleted;
        self.abandoned += other.abandoned;
        self.skipped += other.skipped;
        self.taken_over += other.taken_over;
    }
}

/// A consumer-group worker running handler `H`.
pub struct Worker<H> {
    handler: H,
    consumer: Consumer,
    /// For the consumer name's lock, on a connection of its own.
    connector: Connector,
    settings: WorkerSettings,
    policy: RetryPolicy,
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
    /// The last new entry this worker read: where a group lost to
    /// `NOGROUP` is recreated, so it neither replays nor skips anything.
    last_seen: Option<String>,
    /// When a blocking read was abandoned at the stop: what it delivered
    /// is given back (see `give_back_unstarted`).
    abandoned_read: Option<Instant>,
    /// New entries read while the previous batch was processed.
    read_ahead: Option<ReadAhead>,
    ledger: Ledger,
    progress: Arc<Progress>,
    /// Whether the first finished entry was logged (at info).
    first_entry_logged: bool,
    /// A span per delivery, when traces are exported.
    spans: Option<ConsumerSpans>,
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
        let connector = Connector::new(&settings.redis)?;
        let names = Names {
            stream: settings.redis.stream.clone(),
            group: settings.redis.consumer_group.clone(),
            consumer: settings.redis.consumer_name(),
            dead_letter_stream: settings.dead_letter_stream(),
        };
        let now = Instant::now();
        Ok(Self {
            handler,
            consumer: Consumer::new(connector.clone(), names, settings.redis.block_timeout),
            connector,
            settings: settings.worker.clone(),
            policy: RetryPolicy::new(&settings.worker),
            observer: Arc::new(()),
            shutdown: Shutdown::never(),
            group_ready: false,
            replay_after: Some("0".to_owned()),
            claim_cursor: "0-0".to_owned(),
            next_claim: now,
            next_retry_scan: now,
            own_failures: true,
            last_seen: None,
            abandoned_read: None,
            read_ahead: None,
            ledger: Ledger::default(),
            progress: Arc::new(Progress::new(liveness_limit(settings))),
            first_entry_logged: false,
            spans: None,
        })
    }

    /// Starts a span per delivery with `tracing`'s tracer, continuing the
    /// producer's trace (see [`crate::otel`]).
    pub fn with_tracing(mut self, tracing: &Tracing) -> Self {
        self.spans = Some(tracing.consumer_spans(self.consumer.names()));
        self
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

    /// Connects once, before [`Worker::run`], to check the TLS setup. A
    /// refused certificate (the server's not signed by a trusted CA, or ours
    /// refused) is returned: no retry can fix it, so the start should end
    /// with it. Any other failure is left to `run`, which waits for Redis.
    pub async fn verify_tls(&mut self) -> Result<(), Error> {
        match self.consumer.connect().await {
            Err(error) if error.is_certificate_refused() => Err(error),
            _ => Ok(()),
        }
    }

    /// When the loop last made progress, for a liveness check.
    pub fn progress(&self) -> Arc<Progress> {
        self.progress.clone()
    }

    /// Runs until `shutdown` completes, then lets in-flight entries finish
    /// for up to `shutdown_timeout`, acknowledges them and returns. Redis
    /// errors never end the run: the worker backs off and carries on. The
    /// errors returned are about its consumer name (see `name_lock.rs`):
    /// [`Error::NameInUse`] at start, another live process consumes under
    /// it; [`Error::NameLost`] after a pause or a cut longer than the name's
    /// lifetime, another process took it meanwhile, and this one stopped as
    /// at a shutdown.
    pub async fn run(
        mut self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), Error> {
        let (trigger, stop) = shutdown::channel(self.settings.shutdown_timeout);
        let trigger = Arc::new(trigger);
        self.shutdown = stop;
        let watcher = tokio::spawn({
            let trigger = trigger.clone();
            async move {
                shutdown.await;
                trigger.trigger();
            }
        });
        let names = self.names().clone();
        let mut backoff = Backoff::new(
            self.settings.reconnect_backoff,
            self.settings.reconnect_backoff_max,
        );
        // Until Redis first answers, the backoff is logged at warn once and
        // then every START_REMINDER only (the binary said at start where it
        // tried and why that failed); at debug otherwise.
        let mut remind_at = Instant::now();
        let mut lock = loop {
            // Waiting for Redis is not being stuck: /healthz and the
            // heartbeat file stay healthy through an outage at start.
            self.observer.alive();
            self.progress.mark();
            match NameLock::acquire(&self.connector, &names).await {
                Ok(lock) => break lock,
                Err(error) if error.is_connection() => {
                    let delay = backoff.next_delay();
                    let retry_in_ms = delay.as_millis() as u64;
                    if Instant::now() >= remind_at {
                        remind_at = Instant::now() + START_REMINDER;
                        warn!(%error, attempt = backoff.attempts(), retry_in_ms, "Redis error; backing off");
                    } else {
                        debug!(%error, attempt = backoff.attempts(), retry_in_ms, "Redis error; backing off");
                    }
                    let mut stop = self.shutdown.clone();
                    tokio::select! {
                        _ = sleep(delay) => {}
                        _ = stop.requested() => {
                            watcher.abort();
                            return Ok(());
                        }
                    }
                }
                Err(error) => {
                    watcher.abort();
                    return Err(error);
                }
            }
        };
        info!(stream = %names.stream, group = %names.group, consumer = %names.consumer, "worker started");
        // A name taken over by another process stops this one as SIGTERM
        // would: two processes under one name take each other's entries.
        let name_lost = Arc::new(AtomicBool::new(false));
        let lost_watcher = tokio::spawn({
            let (lost, name_lost, trigger) = (lock.lost(), name_lost.clone(), trigger.clone());
            let (consumer, key) = (names.consumer.clone(), lock.key().to_owned());
            async move {
                lost.await;
                error!(%consumer, %key, "another process took this consumer name while this one was paused or cut off; finishing what it holds and stopping");
                name_lost.store(true, Ordering::SeqCst);
                trigger.trigger();
            }
        });
        let summary = Arc::new(Summary::default());
        self.observer = Arc::new(vec![self.observer.clone(), summary.clone()]);
        let summarise = tokio::spawn(summary::log_every(summary.clone(), SUMMARY_INTERVAL));

        while self.shutdown.deadline().is_none() {
            self.observer.alive();
            self.progress.mark();
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
                        // Entries read just before the failure may be ours
                        // now, with no one processing them: the retry scan
                        // finds them once their first backoff has passed,
                        // as it finds failures once theirs has. A replay
                        // would retry every own pending entry at once.
                        self.own_failures = true;
                        self.next_retry_scan = Instant::now();
                    }
                    let mut stop = self.shutdown.clone();
                    tokio::select! {
                        _ = sleep(delay) => {}
                        _ = stop.requested() => {}
                    }
                }
            }
        }
        let settled = self.finish().await;
        let lost = name_lost.load(Ordering::SeqCst);
        match (settled, lost) {
            // The consumer is the other process's now: it stays, with
            // whatever is pending under the name.
            (_, true) => {}
            (true, false) => {
                self.give_back_unstarted().await;
                self.leave_group().await;
            }
            (false, false) => info!(
                "stays in the consumer group: entries may still be pending under its name; other consumers take them over"
            ),
        }
        let key = lock.key().to_owned();
        lock.release().await;
        watcher.abort();
        lost_watcher.abort();
        summarise.abort();
        let totals = summary.totals();
        info!(
            processed = totals.processed,
            failed = totals.failed,
            dead_lettered = totals.dead_lettered,
            "worker stopped"
        );
        if lost {
            return Err(Error::NameLost {
                name: names.consumer,
                key,
            });
        }
        Ok(())
    }

    /// Gives back what a blocking read abandoned at the stop delivered to
    /// this consumer: never started, those entries must not have a delivery
    /// counted against them (with `max_deliveries` = 1 the next delivery
    /// would dead-letter them unprocessed). Bounded by [`LEAVE_TIMEOUT`];
    /// entries it misses stay pending and are delivered again, counted.
    async fn give_back_unstarted(&mut self) {
        let Some(abandoned) = self.abandoned_read else {
            return;
        };
        // Everything the read delivered has been idle for less than this.
        let since = abandoned.elapsed() + Duration::from_millis(100);
        let last_read = self.last_seen.clone();
        match tokio::time::timeout(
            LEAVE_TIMEOUT,
            self.consumer.give_back(last_read.as_deref(), since),
        )
        .await
        {
            Ok(Ok(0)) => {}
            Ok(Ok(count)) => info!(
                count,
                "gave back the entries a read delivered as the worker stopped; they were not started and count no delivery"
            ),
            Ok(Err(error)) => {
                warn!(%error, "cannot give back the entries delivered as the worker stopped; their delivery counts")
            }
            Err(_) => warn!(
                "giving back the entries delivered as the worker stopped timed out; their delivery counts"
            ),
        }
    }

    /// Leaves the group if this consumer holds nothing any more, so that the
    /// consumers of processes that stopped (pods scaled down, each named
    /// anew) do not pile up in it. One that still holds entries stays until
    /// another worker took them over; `worker.delete_idle_consumers_ms`
    /// removes it then. Bounded by [`LEAVE_TIMEOUT`]: the stop must fit in
    /// the orchestrator's grace period.
    async fn leave_group(&mut self) {
        match tokio::time::timeout(LEAVE_TIMEOUT, self.consumer.leave()).await {
            Ok(Ok(Leave::Left)) => info!("left the consumer group: nothing pending"),
            Ok(Ok(Leave::Holds)) => info!(
                "stays in the consumer group: it still holds pending entries, which are delivered again"
            ),
            Ok(Ok(Leave::NotMember)) => debug!("not in the consumer group; nothing to leave"),
            Ok(Err(error)) => debug!(%error, "cannot leave the consumer group; it stays"),
            Err(_) => debug!("leaving the consumer group timed out; it stays"),
        }
    }

    /// Processes the entries read ahead and acknowledges what was processed,
    /// before the deadline; what cannot be done in time stays pending and is
    /// delivered again later. Whether everything was settled: the read ahead
    /// answered and every outcome was recorded. A read that did not answer
    /// may still hand entries to this consumer after it stopped.
    async fn finish(&mut self) -> bool {
        let mut settled = true;
        let deadline = self.shutdown.deadline().unwrap_or_else(Instant::now);
        if let Some(read) = self.read_ahead.take() {
            match timeout_at(deadline, self.consumer.take(read)).await {
                Ok(Ok(deliveries)) => {
                    let report = self.process(first_deliveries(deliveries)).await;
                    debug!(?report, "processed the entries read ahead");
                }
                Ok(Err(error)) => {
                    settled = false;
                    warn!(%error, "the read ahead failed");
                }
                Err(_) => {
                    settled = false;
                    warn!("the read ahead did not answer before the shutdown deadline");
                }
            }
        }
        let mut backoff = Backoff::new(
            self.settings.reconnect_backoff,
            self.settings.reconnect_backoff_max,
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
                unrecorded = self.ledger.len(),
                "stopping before every finished entry was recorded (acknowledged, or its dead letter written); they will be delivered again"
            );
            return false;
        }
        settled
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
            // A group lost to NOGROUP comes back where this worker left
            // off: at the start ID it would replay what was done, at `$`
            // skip what arrived meanwhile.
            let start = self
                .last_seen
                .clone()
                .unwrap_or_else(|| self.settings.group_start_id.clone());
            if self.consumer.ensure_group(&start).await? {
                info!(group = %self.names().group, stream = %self.names().stream, start_id = %start, "consumer group created");
            }
            // Cosmetic: a refusal (maxmemory, an ACL) only means the
            // consumer is listed from its first entry on.
            match self.consumer.create_consumer().await {
                Ok(()) => {}
                Err(error) if error.is_connection() || error.is_no_group() => return Err(error),
                Err(error) => {
                    debug!(%error, "cannot add this consumer to the group before its first entry")
                }
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
            let mut report = self.replay(&after).await?;
            report.source = Source::Replay;
            return Ok(report);
        } else if now >= self.next_claim {
            let mut report = self.claim_from_dead_consumers(now).await?;
            report.source = Source::Claim;
            return Ok(report);
        } else if self.own_failures && now >= self.next_retry_scan {
            self.next_retry_scan = now + self.policy.min_delay().min(Duration::from_secs(1));
            (Source::Retry, self.due_retries().await?)
        } else {
            // Wake up for the next scan rather than block past it.
            let mut wake = self.next_claim;
            if self.own_failures {
                wake = wake.min(self.next_retry_scan);
            }
            let mut stop = self.shutdown.clone();
            tokio::select! {
                // Entries that arrived with the signal are processed first.
                biased;
                read = self.consumer.read_new(batch, wake - now) => (Source::New, first_deliveries(read?)),
                _ = stop.requested() => {
                    // Nothing is in flight while the worker waits for new
                    // entries, so it can stop at once instead of waiting out
                    // the block. The read may still deliver entries to this
                    // consumer; they stay pending for its next start or a
                    // takeover, and its connection is not used again.
                    self.consumer.abandon_read();
                    self.abandoned_read = Some(Instant::now());
                    (Source::Idle, Vec::new())
                }
            }
        };
        if source == Source::New
            && let Some((last, _)) = deliveries.last()
        {
            self.last_seen = Some(delivery_id(last).to_owned());
        }
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
}

/// Logs that `lost`, held by this worker, is no longer its own: from now
/// on this worker neither keeps it nor retries or dead-letters it. A
/// warning when another consumer holds it; only information when none
/// does (typically the frozen worker it was taken from finished and
/// acknowledged it after all).
fn log_taken_over(lost: &TakenOver) {
    match &lost.holder {
        Some(holder) => warn!(
            id = %lost.id,
            %holder,
            "entry taken over by another consumer while this worker was unresponsive for longer than claim_idle; it is that consumer's now: no longer kept, retried or dead-lettered here"
        ),
        None => info!(
            id = %lost.id,
            "entry no longer pending: another consumer acknowledged it, or the group was recreated; no longer kept, retried or dead-lettered here"
        ),
    }
}

/// How long the loop may go without progress before it counts as frozen:
/// the longest a healthy worker goes without a mark is a call of the
/// business logic (bounded by `process_timeout`), a blocking read or a
/// backoff after a Redis error, plus a few command timeouts.
fn liveness_limit(settings: &Settings) -> Duration {
    const MARGIN: Duration = Duration::from_secs(15);
    settings.worker.process_timeout
        + settings.redis.block_timeout
        + settings.worker.reconnect_backoff_max
        + MARGIN
}
