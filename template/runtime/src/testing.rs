//! Helpers for integration tests against a real Redis, for the runtime's
//! tests and for the business logic's: settings with names of their own
//! (so tests run in parallel against one Redis) whose keys are deleted when
//! the test ends, a connection, and what a test adds and checks.
//!
//! The Redis is the one at `REDIS_URL` (default `redis://127.0.0.1:6379`;
//! add `/15` for a database of its own). These helpers panic with a clear
//! message instead of returning errors: they are for tests only.

use std::time::Duration;

use redis::AsyncCommands;
use redis::aio::MultiplexedConnection;

use crate::entry::Entry;
use crate::settings::Settings;

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
    // The tests bound their waits themselves (`DEADLINE`); redis-rs's
    // default half a second per reply fails a test on a machine that is
    // merely busy.
    let config = redis::AsyncConnectionConfig::new().set_response_timeout(Some(DEADLINE));
    redis::Client::open(settings.redis.url.expose())
        .expect("REDIS_URL is a valid URL")
        .get_multiplexed_async_connection_with_config(&config)
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
