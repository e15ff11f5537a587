//! What every measurement shares: the stream and group, the entries put on
//! the stream, the queries that say how far a consumer got, and starting and
//! stopping a worker on a measurement's Redis.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::streams::{StreamInfoGroup, StreamInfoGroupsReply};

use crate::common::{Process, RedisServer, note, scrub_env};
use crate::options::Options;

/// The stream and group of every measurement.
pub const STREAM: &str = "bench";
pub const GROUP: &str = "bench-group";
/// Size of each entry's `data` field.
const DATA_BYTES: usize = 100;
/// Entries per pipelined round trip of the pre-fill.
const PREFILL_BATCH: usize = 10_000;
/// How often a drain is checked.
pub const DRAIN_POLL: Duration = Duration::from_millis(10);
/// How often start-up looks for the first read.
pub const STARTUP_POLL: Duration = Duration::from_millis(1);
/// How long the worker may take to stop after SIGTERM.
const STOP_DEADLINE: Duration = Duration::from_secs(30);

/// The `data` of the `n`th pre-filled entry: a JSON object of
/// [`DATA_BYTES`] bytes.
pub fn drain_data(n: usize) -> String {
    padded(format!(
        r#"{{"n":{n},"user_id":"u{}","action":"login","note":""#,
        n % 1000
    ))
}

/// The `data` of the `n`th latency entry, sent at `sent_us`.
pub fn latency_data(n: u64, sent_us: u64) -> String {
    padded(format!(
        r#"{{"sent_us":{sent_us},"n":{n},"user_id":"u{}","note":""#,
        n % 1000
    ))
}

/// Closes `head` (which ends inside a string) after padding it to
/// [`DATA_BYTES`].
pub fn padded(mut head: String) -> String {
    while head.len() < DATA_BYTES - 2 {
        head.push('x');
    }
    head.push_str("\"}");
    head
}

pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_micros() as u64)
}

/// Adds `entries` entries to [`STREAM`] with pipelined `XADD`s.
pub fn prefill(redis: &RedisServer, entries: usize) {
    let mut connection = redis.connect();
    let mut added = 0;
    while added < entries {
        let batch = PREFILL_BATCH.min(entries - added);
        let mut pipe = redis::pipe();
        for n in added..added + batch {
            pipe.cmd("XADD")
                .arg(STREAM)
                .arg("*")
                .arg("data")
                .arg(drain_data(n))
                .ignore();
        }
        pipe.query::<()>(&mut connection)
            .unwrap_or_else(|error| panic!("pre-fill XADD failed: {error}"));
        added += batch;
    }
}

/// [`GROUP`] of [`STREAM`], if both exist.
pub fn group_info(connection: &mut redis::Connection) -> Option<StreamInfoGroup> {
    let reply: redis::RedisResult<StreamInfoGroupsReply> = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(STREAM)
        .query(connection);
    reply
        .ok()?
        .groups
        .into_iter()
        .find(|group| group.name == GROUP)
}

/// Whether the group has read all `entries` and acknowledged them.
pub fn drained(connection: &mut redis::Connection, entries: usize) -> bool {
    group_info(connection).is_some_and(|group| {
        group.lag == Some(0) && group.pending == 0 && group.entries_read == Some(entries)
    })
}

/// How many `XREADGROUP`s the server ran (`INFO commandstats`).
pub fn xreadgroup_calls(connection: &mut redis::Connection) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(connection)
        .unwrap_or_default();
    info.lines()
        .find_map(|line| line.strip_prefix("cmdstat_xreadgroup:calls="))
        .and_then(|rest| rest.split(',').next()?.parse().ok())
        .unwrap_or(0)
}

/// Starts the worker `binary` on `redis`, optionally under `wrapper`.
pub fn spawn_worker(
    name: &str,
    binary: &Path,
    redis: &RedisServer,
    options: &Options,
    wrapper: &[String],
    env: &[(&str, &str)],
) -> Process {
    let mut command = match wrapper.split_first() {
        Some((program, args)) => {
            let mut command = Command::new(program);
            command.args(args).arg(binary);
            command
        }
        None => Command::new(binary),
    };
    command.current_dir(std::env::temp_dir());
    scrub_env(&mut command);
    command
        .env("REDIS_URL", redis.url())
        .env("REDIS_STREAM", STREAM)
        .env("REDIS_CONSUMER_GROUP", GROUP)
        .env("METRICS_ADDR", "127.0.0.1:0")
        .env("LOG_LEVEL", "warn")
        .envs(options.worker_env.iter().map(|(k, v)| (k, v)))
        .envs(env.iter().copied());
    Process::spawn(name, command)
}

/// Stops the worker with SIGTERM and checks that it exits cleanly.
pub fn stop(mut worker: Process) {
    worker.terminate();
    let status = worker.wait_for_exit(STOP_DEADLINE);
    if !status.success() {
        note(format!(
            "    the worker exited with {status} after SIGTERM:\n{}",
            worker.output()
        ));
    }
}
