//! Helpers for the integration tests: settings that point at the test
//! Redis (`REDIS_URL`, default `redis://127.0.0.1:6379`; add `/15` for a
//! database of their own) with names of their own, so tests run in
//! parallel, whose keys are deleted when the test ends, and a handler that
//! records what it saw.

#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::AsyncCommands;
use redis::aio::MultiplexedConnection;
use redis::streams::{StreamReadOptions, StreamReadReply};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use {{crate_name}}::{Entry, Error, Handler, ProcessError, Settings, Worker};

/// Settings for one test: unique stream, group and consumer, fast retries.
/// Every key the test creates starts with the stream's name and is deleted
/// when the returned value is dropped, also when the test fails.
pub fn settings(test: &str) -> TestSettings {
    let mut settings = Settings::default();
    if let Ok(url) = std::env::var("REDIS_URL") {
        settings.redis.url = url.as_str().into();
    }
    let unique = format!("{test}-{}-{}", std::process::id(), fastrand::u32(..));
    settings.redis.stream = format!("test:{unique}");
    settings.redis.consumer_group = format!("group-{unique}");
    settings.redis.consumer_name = Some(format!("consumer-{unique}"));
    settings.redis.block_timeout = Duration::from_millis(100);
    settings.worker.retry_backoff = Duration::from_millis(20);
    settings.worker.retry_backoff_max = Duration::from_millis(40);
    settings.worker.shutdown_timeout = Duration::from_millis(5_000);
    TestSettings(settings)
}

/// A test's [`Settings`]; on drop, deletes its stream and every key named
/// `<stream>:...` (the dead letters).
pub struct TestSettings(Settings);

impl std::ops::Deref for TestSettings {
    type Target = Settings;

    fn deref(&self) -> &Settings {
        &self.0
    }
}

impl std::ops::DerefMut for TestSettings {
    fn deref_mut(&mut self) -> &mut Settings {
        &mut self.0
    }
}

impl Drop for TestSettings {
    fn drop(&mut self) {
        // Runs during a panic too, so it must not panic itself: a Redis that
        // cannot be reached holds nothing to delete.
        let Ok(client) = redis::Client::open(self.0.redis.url.expose()) else {
            return;
        };
        let Ok(mut redis) = client.get_connection_with_timeout(Duration::from_secs(2)) else {
            return;
        };
        let stream = &self.0.redis.stream;
        let pattern = format!("{stream}:*");
        let Ok(found) = redis::Commands::scan_match::<_, String>(&mut redis, &pattern) else {
            return;
        };
        let mut keys: Vec<String> = found.filter_map(Result::ok).collect();
        keys.push(stream.clone());
        let _: redis::RedisResult<()> = redis::Commands::del(&mut redis, keys);
    }
}

/// A plain connection for setting up and checking.
pub async fn connect(settings: &Settings) -> MultiplexedConnection {
    redis::Client::open(settings.redis.url.expose())
        .expect("REDIS_URL is a valid URL")
        .get_multiplexed_async_connection()
        .await
        .expect("Redis answers at REDIS_URL (start one or set REDIS_URL)")
}

/// Adds entries with one `data` field each; returns their IDs.
pub async fn add(redis: &mut MultiplexedConnection, stream: &str, data: &[&str]) -> Vec<String> {
    let mut ids = Vec::new();
    for data in data {
        let id: String = redis.xadd(stream, "*", &[("data", *data)]).await.unwrap();
        ids.push(id);
    }
    ids
}

/// Entries pending in the group.
pub async fn pending(redis: &mut MultiplexedConnection, settings: &Settings) -> usize {
    let reply: redis::streams::StreamPendingReply = redis
        .xpending(&settings.redis.stream, &settings.redis.consumer_group)
        .await
        .unwrap();
    reply.count()
}

/// Entries of the dead-letter stream.
pub async fn dead_letters(redis: &mut MultiplexedConnection, settings: &Settings) -> Vec<Entry> {
    let reply: redis::streams::StreamRangeReply = redis
        .xrange_all(settings.dead_letter_stream())
        .await
        .unwrap();
    reply
        .ids
        .into_iter()
        .map(|entry| {
            let fields = entry.map.into_iter().map(|(name, value)| {
                let value: Vec<u8> = redis::from_redis_value(value).unwrap();
                (name.into_bytes(), value)
            });
            Entry::new(entry.id, fields)
        })
        .collect()
}

/// How long a test waits for a condition before it fails.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// Checks `condition` every 20 ms until it holds; panics after [`DEADLINE`].
pub async fn until(what: &str, mut condition: impl FnMut() -> bool) {
    let give_up = tokio::time::Instant::now() + DEADLINE;
    while !condition() {
        assert!(
            tokio::time::Instant::now() < give_up,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

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
            behaviour: Arc::new(behaviour),
        }
    }

    /// Sleeps this long before deciding, like slow business logic.
    pub fn slow(mut self, delay: Duration) -> Self {
        self.delay = delay;
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
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        let result = (self.behaviour)(entry, count);
        self.finished.lock().unwrap().push(entry.id.clone());
        result
    }
}
