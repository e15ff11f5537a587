//! A private `redis-server` per test on a free port of 127.0.0.1 (never the
//! machine's own on 6379), which can be killed and restarted like a crash,
//! with the stream queries the tests assert on (`XLEN`, `XINFO GROUPS`, ...).

use std::fs;
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use redis::Commands;
use redis::streams::{StreamInfoConsumer, StreamInfoGroup};
use tempfile::TempDir;

use super::process::Process;

/// How to run a [`RedisServer`].
#[derive(Debug, Clone, Copy, Default)]
pub struct RedisOptions {
    /// `--appendonly yes`: writes survive a kill and a [`RedisServer::restart`].
    pub appendonly: bool,
}

/// A `redis-server` of the test's own on a free port of 127.0.0.1, with a
/// fresh data directory; killed on drop.
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    dir: TempDir,
    options: RedisOptions,
    /// More `redis-server` arguments (TLS, cluster), kept for restarts.
    extra_args: Vec<String>,
    process: Option<Process>,
}

/// How long a starting redis-server may take to answer PING.
const REDIS_START_DEADLINE: Duration = Duration::from_secs(20);

impl RedisServer {
    /// Starts one that keeps nothing on disk.
    pub fn start() -> RedisServer {
        RedisServer::start_with(RedisOptions::default())
    }

    /// Starts one with `options`.
    pub fn start_with(options: RedisOptions) -> RedisServer {
        RedisServer::start_with_args(options, Vec::new())
    }

    /// Starts one with `options` and more `redis-server` arguments.
    pub fn start_with_args(options: RedisOptions, extra_args: Vec<String>) -> RedisServer {
        let dir = tempfile::Builder::new()
            .prefix("template-test-redis-")
            .tempdir_in(std::env::temp_dir())
            .expect("a temporary directory");
        // The free port is found by binding port 0 and letting it go, so
        // another process may take it before redis-server does: try again.
        let mut last_error = String::new();
        for _ in 0..5 {
            let port = free_port();
            match launch_redis(port, dir.path(), options, &extra_args) {
                Ok(process) => {
                    return RedisServer {
                        port,
                        dir,
                        options,
                        extra_args,
                        process: Some(process),
                    };
                }
                Err(error) => last_error = error,
            }
        }
        panic!("redis-server did not start: {last_error}");
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its data directory (and `redis.log`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir().join("redis.log")).unwrap_or_default()
    }

    /// Its process ID while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(Process::pid)
    }

    /// Whether it is running (it may have been killed).
    pub fn is_running(&mut self) -> bool {
        self.process
            .as_mut()
            .is_some_and(|process| process.try_status().is_none())
    }

    /// Kills it with SIGKILL, as a crash would: nothing is flushed beyond
    /// what the append-only file already has.
    pub fn kill(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.kill();
        }
    }

    /// Starts it again on the same port and data directory (after
    /// [`kill`](Self::kill), or killing it first).
    pub fn restart(&mut self) {
        self.kill();
        let process = launch_redis(self.port, self.dir.path(), self.options, &self.extra_args)
            .unwrap_or_else(|error| panic!("redis-server did not restart: {error}"));
        self.process = Some(process);
    }

    /// A new connection.
    pub fn connect(&self) -> redis::Connection {
        let client = redis::Client::open(self.url()).unwrap();
        let connection = client
            .get_connection_with_timeout(Duration::from_secs(5))
            .unwrap_or_else(|error| panic!("cannot connect to {}: {error}", self.url()));
        connection
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        connection
            .set_write_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        connection
    }

    /// Adds one entry per element of `data`, each with a single field
    /// `data`, in one pipeline; returns their IDs.
    pub fn xadd_data<S: AsRef<str>>(&self, stream: &str, data: &[S]) -> Vec<String> {
        let mut pipe = redis::pipe();
        for value in data {
            pipe.cmd("XADD")
                .arg(stream)
                .arg("*")
                .arg("data")
                .arg(value.as_ref());
        }
        pipe.query(&mut self.connect())
            .unwrap_or_else(|error| panic!("XADD to {stream} failed: {error}"))
    }

    /// `XLEN stream` (0 for a stream that does not exist).
    pub fn xlen(&self, stream: &str) -> usize {
        self.connect().xlen(stream).unwrap()
    }

    /// `XINFO GROUPS stream`; empty if the stream does not exist.
    pub fn groups(&self, stream: &str) -> Vec<StreamInfoGroup> {
        let mut connection = self.connect();
        let exists: bool = connection.exists(stream).unwrap();
        if !exists {
            return Vec::new();
        }
        let reply: redis::streams::StreamInfoGroupsReply = connection.xinfo_groups(stream).unwrap();
        reply.groups
    }

    /// The group called `group` of `stream`, if it exists.
    pub fn group(&self, stream: &str, group: &str) -> Option<StreamInfoGroup> {
        self.groups(stream)
            .into_iter()
            .find(|info| info.name == group)
    }

    /// `XINFO CONSUMERS stream group`.
    pub fn consumers(&self, stream: &str, group: &str) -> Vec<StreamInfoConsumer> {
        let reply: redis::streams::StreamInfoConsumersReply =
            self.connect().xinfo_consumers(stream, group).unwrap();
        reply.consumers
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

impl RedisServer {
    /// Starts one on `port`, chosen beforehand (with [`unused_port`]) so
    /// that a client can be pointed at it before it exists. Panics if it
    /// cannot start there.
    pub fn start_on(port: u16, options: RedisOptions) -> RedisServer {
        RedisServer::try_start_on(port, options, Vec::new())
            .unwrap_or_else(|error| panic!("redis-server did not start on port {port}: {error}"))
    }

    /// Starts one on `port` with more `redis-server` arguments; the error
    /// says why it did not start.
    pub fn try_start_on(
        port: u16,
        options: RedisOptions,
        extra_args: Vec<String>,
    ) -> Result<RedisServer, String> {
        let dir = tempfile::Builder::new()
            .prefix("template-test-redis-")
            .tempdir_in(std::env::temp_dir())
            .expect("a temporary directory");
        let process = launch_redis(port, dir.path(), options, &extra_args)?;
        Ok(RedisServer {
            port,
            dir,
            options,
            extra_args,
            process: Some(process),
        })
    }
}

/// A port of 127.0.0.1 with nothing listening on it a moment ago (never
/// 6379), for [`RedisServer::start_on`].
pub fn unused_port() -> u16 {
    loop {
        let port = free_port();
        if port != 6379 {
            return port;
        }
    }
}

/// A port of 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().unwrap().port()
}

/// Starts redis-server on `port` with its data in `dir` and waits until it
/// answers PING.
/// The `redis-server` the tests start: `TEST_REDIS_SERVER` (a path), so the
/// suites can run against another Redis version, or the one on `PATH`.
pub fn redis_server_program() -> std::ffi::OsString {
    std::env::var_os("TEST_REDIS_SERVER")
        .filter(|program| !program.is_empty())
        .unwrap_or_else(|| "redis-server".into())
}

fn launch_redis(
    port: u16,
    dir: &Path,
    options: RedisOptions,
    extra_args: &[String],
) -> Result<Process, String> {
    assert_ne!(port, 6379, "never the machine's own Redis");
    let log = dir.join("redis.log");
    let mut command = Command::new(redis_server_program());
    command
        .arg("--port")
        .arg(port.to_string())
        .args(["--bind", "127.0.0.1"])
        .args(["--save", ""])
        .args([
            "--appendonly",
            if options.appendonly { "yes" } else { "no" },
        ])
        .arg("--dir")
        .arg(dir)
        .arg("--logfile")
        .arg(&log)
        .args(["--daemonize", "no"])
        .args(extra_args);
    let mut process = Process::spawn("redis-server", command);
    let deadline = Instant::now() + REDIS_START_DEADLINE;
    loop {
        if let Some(status) = process.try_status() {
            return Err(format!(
                "redis-server on port {port} exited ({status}):\n{}{}",
                process.output(),
                fs::read_to_string(&log).unwrap_or_default()
            ));
        }
        if ping(port) {
            return Ok(process);
        }
        if Instant::now() >= deadline {
            process.kill();
            return Err(format!(
                "no PONG on port {port} within {REDIS_START_DEADLINE:?}:\n{}",
                fs::read_to_string(&log).unwrap_or_default()
            ));
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Whether a server on `port` answers PING (not while it loads its data).
fn ping(port: u16) -> bool {
    let Ok(client) = redis::Client::open(format!("redis://127.0.0.1:{port}")) else {
        return false;
    };
    let Ok(mut connection) = client.get_connection_with_timeout(Duration::from_millis(500)) else {
        return false;
    };
    redis::cmd("PING")
        .query::<String>(&mut connection)
        .is_ok_and(|reply| reply == "PONG")
}
