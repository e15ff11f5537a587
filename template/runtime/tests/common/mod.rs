//! Helpers for the runtime's integration tests: the crate's
//! [`testing`](redis_streams_runtime::testing) helpers (settings of their
//! own against the Redis at `REDIS_URL`), a group and a consumer to set up,
//! a worker running in the background, and a handler that records what it
//! saw.

#![allow(dead_code)]

pub mod otlp;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::AsyncCommands;
use redis::aio::MultiplexedConnection;
use redis::streams::{StreamReadOptions, StreamReadReply};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use redis_streams_runtime::testing::*;
use redis_streams_runtime::{Entry, Error, Handler, ProcessError, Settings, Worker};

/// Creates the group at the start of the stream.
pub async fn create_group(redis: &mut MultiplexedConnection, settings: &Settings) {
    let (stream, group) = (&settings.redis.stream, &settings.redis.consumer_group);
    let _: () = redis
        .xgroup_create_mkstream(stream, group, "0")
        .await
        .unwrap();
}

/// Reads up to `count` new entries as `consumer` without acknowledging
/// them, like a consumer that then dies.
pub async fn read_as(
    redis: &mut MultiplexedConnection,
    settings: &Settings,
    consumer: &str,
    count: usize,
) {
    let (stream, group) = (&settings.redis.stream, &settings.redis.consumer_group);
    let options = StreamReadOptions::default()
        .group(group, consumer)
        .count(count);
    let _: StreamReadReply = redis
        .xread_options(&[stream], &[">"], &options)
        .await
        .unwrap();
}

/// A worker running in the background until [`Running::stop`].
pub struct Running {
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), Error>>,
}

/// Starts `worker.run` with a shutdown the test triggers.
pub fn spawn<H: Handler>(worker: Worker<H>) -> Running {
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(worker.run(async move {
        let _ = stopped.await;
    }));
    Running { stop, task }
}

impl Running {
    /// Asks the worker to stop and waits until `run` returns.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(DEADLINE, self.task)
            .await
            .expect("run returns after the shutdown signal")
            .expect("run does not panic")
            .expect("run ends without an error");
    }
}

/// What a [`Recorder`] does with an entry.
pub type Behaviour = dyn Fn(&Entry, usize) -> Result<(), ProcessError> + Send + Sync;

/// A handler that counts the deliveries of each entry and then behaves as
/// told (given the entry and how often it has seen it, 1 the first time).
#[derive(Clone)]
pub struct Recorder {
    seen: Arc<Mutex<HashMap<String, usize>>>,
    finished: Arc<Mutex<Vec<String>>>,
    entries: Arc<Mutex<Vec<Entry>>>,
    delay: Duration,
    gate: Option<Arc<AtomicBool>>,
    behaviour: Arc<Behaviour>,
}

impl Recorder {
    /// Succeeds on every entry.
    pub fn succeeding() -> Self {
        Self::new(|_, _| Ok(()))
    }

    /// Behaves as `behaviour` says.
    pub fn new(
        behaviour: impl Fn(&Entry, usize) -> Result<(), ProcessError> + Send + Sync + 'static,
    ) -> Self {
        Self {
            seen: Arc::default(),
            finished: Arc::default(),
            entries: Arc::default(),
            delay: Duration::ZERO,
            gate: None,
            behaviour: Arc::new(behaviour),
        }
    }

    /// Sleeps this long before deciding, like slow business logic.
    pub fn slow(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// Holds every call, before its delay, until `gate` opens (is set):
    /// the test decides when calls go on, whatever the machine's load.
    pub fn gated(mut self, gate: Arc<AtomicBool>) -> Self {
        self.gate = Some(gate);
        self
    }

    /// How often each entry was handed over.
    pub fn seen(&self) -> HashMap<String, usize> {
        self.seen.lock().unwrap().clone()
    }

    /// Entries that ran to the end of the handler.
    pub fn finished(&self) -> Vec<String> {
        self.finished.lock().unwrap().clone()
    }

    /// Every entry handed over, as the handler got it.
    pub fn entries(&self) -> Vec<Entry> {
        self.entries.lock().unwrap().clone()
    }

    /// The original ID of every entry handed over, in order.
    pub fn original_ids(&self) -> Vec<String> {
        self.entries()
            .iter()
            .map(|entry| entry.original_id().to_owned())
            .collect()
    }
}

impl Handler for Recorder {
    async fn handle(&self, entry: &Entry) -> Result<(), ProcessError> {
        let count = {
            let mut seen = self.seen.lock().unwrap();
            let count = seen.entry(entry.id.clone()).or_default();
            *count += 1;
            *count
        };
        self.entries.lock().unwrap().push(entry.clone());
        if let Some(gate) = &self.gate {
            while !gate.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        let result = (self.behaviour)(entry, count);
        self.finished.lock().unwrap().push(entry.id.clone());
        result
    }
}
