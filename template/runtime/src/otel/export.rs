//! The export of finished spans: a bounded queue that the worker's tasks
//! only ever push to, and one thread that sends it to the collector in
//! batches. A collector that is down, slow or refusing costs the worker
//! nothing but the spans: a full queue drops the newest, a failed request
//! drops its batch, and both are counted ([`spans_dropped`]).
//!
//! The SDK's own batch processor drops too, but keeps the count to itself;
//! this one is small enough to own.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use opentelemetry::Context;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{Span, SpanData, SpanExporter, SpanProcessor};

/// Spans dropped since start: queue full, or their export failed.
static DROPPED: AtomicU64 = AtomicU64::new(0);

/// How often a failing collector is reported in the log, at most.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// Spans dropped since the process started, because the export queue was
/// full or their export failed (`worker_trace_spans_dropped_total`).
pub fn spans_dropped() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

fn drop_spans(count: usize) {
    DROPPED.fetch_add(count as u64, Ordering::Relaxed);
}

/// Limits of the queue and its batches.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Spans waiting at most; more are dropped.
    pub queue_size: usize,
    /// Spans per export request.
    pub batch_size: usize,
    /// How long a span waits at most before its batch is sent.
    pub interval: Duration,
}

/// A [`SpanProcessor`] that queues finished spans for the export thread.
#[derive(Debug)]
pub struct QueueProcessor {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    /// Wakes the export thread: a full batch, a flush, the shutdown.
    work: Condvar,
    /// Wakes those waiting for a flush or the shutdown.
    done: Condvar,
    limits: Limits,
}

#[derive(Debug, Default)]
struct State {
    spans: VecDeque<SpanData>,
    /// Flushes asked for, and the last one done (a sequence number each).
    flush_asked: u64,
    flush_done: u64,
    stopping: bool,
    stopped: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves nothing half-done here.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl QueueProcessor {
    /// Starts the export thread. `exporter` is built on that thread, so a
    /// blocking HTTP client never runs inside the async runtime; an
    /// exporter that cannot be built is an error here, not a silent loss.
    pub fn start<E, F>(limits: Limits, resource: Resource, exporter: F) -> Result<Self, String>
    where
        E: SpanExporter + 'static,
        F: FnOnce() -> Result<E, String> + Send + 'static,
    {
        // The settings' rules hold these already; the queue relies on them.
        let queue_size = limits.queue_size.max(1);
        let limits = Limits {
            queue_size,
            batch_size: limits.batch_size.clamp(1, queue_size),
            interval: limits.interval.max(Duration::from_millis(1)),
        };
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            work: Condvar::new(),
            done: Condvar::new(),
            limits,
        });
        let (built, outcome) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("trace-export".to_owned())
            .spawn({
                let shared = shared.clone();
                move || {
                    let mut exporter = match exporter() {
                        Ok(exporter) => exporter,
                        Err(error) => {
                            let _ = built.send(Err(error));
                            return;
                        }
                    };
                    let _ = built.send(Ok(()));
                    exporter.set_resource(&resource);
                    export_loop(&shared, &mut exporter);
                    let _ = exporter.shutdown();
                    shared.lock().stopped = true;
                    shared.done.notify_all();
                }
            })
            .map_err(|error| format!("cannot start the export thread: {error}"))?;
        match outcome.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(())) => Ok(Self {
                shared,
                thread: Mutex::new(Some(thread)),
            }),
            Ok(Err(error)) => Err(error),
            Err(_) => Err("the exporter was not built within 10 s".to_owned()),
        }
    }

    /// Waits until `reached` holds or `timeout` passes; whether it holds.
    fn wait_for(&self, timeout: Duration, reached: impl Fn(&State) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        let mut state = self.shared.lock();
        while !reached(&state) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            state = self
                .shared
                .done
                .wait_timeout(state, left)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
        true
    }
}

impl SpanProcessor for QueueProcessor {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        let mut state = self.shared.lock();
        if state.stopping || state.spans.len() >= self.shared.limits.queue_size {
            drop(state);
            drop_spans(1);
            return;
        }
        state.spans.push_back(span);
        if state.spans.len() >= self.shared.limits.batch_size {
            self.shared.work.notify_one();
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        let asked = {
            let mut state = self.shared.lock();
            state.flush_asked += 1;
            state.flush_asked
        };
        self.shared.work.notify_one();
        // The export thread bounds each request by the exporter's timeout;
        // a flush waits for at most a few of them.
        if self.wait_for(Duration::from_secs(30), |state| {
            state.flush_done >= asked || state.stopped
        }) {
            Ok(())
        } else {
            Err(OTelSdkError::Timeout(Duration::from_secs(30)))
        }
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.shared.lock().stopping = true;
        self.shared.work.notify_one();
        if !self.wait_for(timeout, |state| state.stopped) {
            return Err(OTelSdkError::Timeout(timeout));
        }
        let thread = self
            .thread
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(thread) = thread {
            let _ = thread.join();
        }
        Ok(())
    }
}

/// Sends batches until the shutdown, then what is left.
fn export_loop<E: SpanExporter>(shared: &Shared, exporter: &mut E) {
    let limits = shared.limits;
    let mut failing = Failing::default();
    let mut next_send = Instant::now() + limits.interval;
    loop {
        let mut state = shared.lock();
        // Until a batch is full, a flush or the shutdown is asked for, or
        // the oldest queued span has waited the interval.
        loop {
            let now = Instant::now();
            if now >= next_send && state.spans.is_empty() {
                next_send = now + limits.interval;
            }
            if state.stopping
                || state.flush_asked > state.flush_done
                || state.spans.len() >= limits.batch_size
                || now >= next_send
            {
                break;
            }
            state = shared
                .work
                .wait_timeout(state, next_send - now)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
        // A flush or the shutdown sends everything queued; otherwise a batch.
        let everything = state.stopping || state.flush_asked > state.flush_done;
        let flush = state.flush_asked;
        let stopping = state.stopping;
        let mut batches = Vec::new();
        while !state.spans.is_empty() {
            let take = state.spans.len().min(limits.batch_size);
            batches.push(state.spans.drain(..take).collect::<Vec<_>>());
            if !everything {
                break;
            }
        }
        drop(state);
        for batch in batches {
            let count = batch.len();
            match futures_executor::block_on(exporter.export(batch)) {
                Ok(()) => failing.recovered(),
                Err(error) => {
                    drop_spans(count);
                    failing.failed(count, &error);
                }
            }
        }
        failing.report_overflow();
        next_send = Instant::now() + limits.interval;
        if everything {
            let mut state = shared.lock();
            state.flush_done = state.flush_done.max(flush);
            drop(state);
            shared.done.notify_all();
        }
        if stopping {
            return;
        }
    }
}

/// The collector's trouble, reported when it starts and then at most once
/// per [`WARN_EVERY`], so a collector that is down does not flood the log.
#[derive(Default)]
struct Failing {
    since: Option<Instant>,
    last_warned: Option<Instant>,
    dropped: usize,
    /// [`spans_dropped`] when the queue's overflow was last reported, and
    /// when.
    overflow_seen: u64,
    overflow_warned: Option<Instant>,
}

impl Failing {
    /// Warns, at most once per [`WARN_EVERY`], of spans dropped since the
    /// last warning, failed exports included: a collector that answers
    /// but too slowly loses spans to a full queue.
    fn report_overflow(&mut self) {
        let dropped = spans_dropped();
        if dropped == self.overflow_seen {
            return;
        }
        let now = Instant::now();
        if self
            .overflow_warned
            .is_none_or(|warned| now.duration_since(warned) >= WARN_EVERY)
        {
            tracing::warn!(
                dropped = dropped - self.overflow_seen,
                total = dropped,
                "trace spans dropped: the export queue (tracing.queue_size) was full or exports failed"
            );
            self.overflow_seen = dropped;
            self.overflow_warned = Some(now);
        }
    }

    fn failed(&mut self, count: usize, error: &OTelSdkError) {
        let now = Instant::now();
        self.since.get_or_insert(now);
        self.dropped += count;
        if self
            .last_warned
            .is_none_or(|warned| now.duration_since(warned) >= WARN_EVERY)
        {
            tracing::warn!(
                %error,
                dropped = self.dropped,
                "cannot export traces (tracing.endpoint); spans are dropped, processing goes on"
            );
            self.last_warned = Some(now);
            self.dropped = 0;
            // Already said: not again as an overflow.
            self.overflow_seen = spans_dropped();
            self.overflow_warned = Some(now);
        }
    }

    fn recovered(&mut self) {
        if let Some(since) = self.since.take() {
            tracing::info!(
                failing_for_s = since.elapsed().as_secs(),
                "traces are exported again"
            );
            self.last_warned = None;
            self.dropped = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::{Span as _, Tracer as _, TracerProvider as _};
    use opentelemetry_sdk::trace::SdkTracerProvider;

    use super::*;

    /// Records the size of each batch it is sent.
    #[derive(Debug, Clone, Default)]
    struct Batches(Arc<Mutex<Vec<usize>>>);

    impl SpanExporter for Batches {
        async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
            self.0.lock().unwrap().push(batch.len());
            Ok(())
        }
    }

    /// Limits that the settings refuse, were they handed over by another
    /// caller, are lowered to ones the queue works with: a batch of none
    /// would never empty the queue at the shutdown.
    #[test]
    fn limits_out_of_bounds_still_send_everything() {
        for (queue_size, batch_size) in [(3, 0), (3, 512), (0, 0)] {
            let batches = Batches::default();
            let limits = Limits {
                queue_size,
                batch_size,
                interval: Duration::ZERO,
            };
            let processor = QueueProcessor::start(limits, Resource::builder_empty().build(), {
                let batches = batches.clone();
                move || Ok(batches)
            })
            .unwrap();
            let provider = SdkTracerProvider::builder()
                .with_span_processor(processor)
                .build();
            let tracer = provider.tracer("test");
            for _ in 0..3 {
                tracer.start("span").end();
            }
            provider
                .shutdown_with_timeout(Duration::from_secs(5))
                .unwrap();
            let sent = batches.0.lock().unwrap();
            // A queue of one may drop spans that end before the export
            // thread took the one it holds.
            let most = queue_size.max(1);
            let total: usize = sent.iter().sum();
            assert!(
                (most.min(3)..=3).contains(&total),
                "{queue_size}, {batch_size}: {sent:?}"
            );
            assert!(
                sent.iter().all(|&size| (1..=most).contains(&size)),
                "{sent:?}"
            );
        }
    }
}
