//! The helpers in `common` themselves, so that later tests can rely on them:
//! private Redis servers (restart, append-only persistence, kill -9) and
//! processes that are stopped and reaped.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{Process, RedisOptions, RedisServer, strip_ansi, wait_until};

#[test]
fn each_redis_server_is_private_and_answers() {
    let first = RedisServer::start();
    let second = RedisServer::start();
    assert_ne!(first.port(), 6379);
    assert_ne!(first.port(), second.port());
    first.xadd_data("s", &[r#"{"n":1}"#]);
    assert_eq!(first.xlen("s"), 1);
    assert_eq!(second.xlen("s"), 0);
    assert!(first.groups("s").is_empty());
    assert!(first.groups("missing").is_empty());
    assert_eq!(first.url(), format!("redis://127.0.0.1:{}", first.port()));
}

#[test]
fn an_append_only_server_keeps_its_data_over_kill_and_restart() {
    let mut redis = RedisServer::start_with(RedisOptions { appendonly: true });
    let port = redis.port();
    redis.xadd_data("kept", &["a", "b", "c"]);
    redis.kill();
    assert!(!redis.is_running());
    redis.restart();
    assert!(redis.is_running());
    assert_eq!(redis.port(), port);
    assert_eq!(redis.xlen("kept"), 3);
}

#[test]
fn a_server_without_persistence_starts_empty_after_restart() {
    let mut redis = RedisServer::start();
    redis.xadd_data("gone", &["a"]);
    redis.restart();
    assert_eq!(redis.xlen("gone"), 0);
}

#[test]
fn groups_report_lag_and_pending() {
    let redis = RedisServer::start();
    redis.xadd_data("s", &["1", "2", "3"]);
    let mut connection = redis.connect();
    redis::cmd("XGROUP")
        .arg(&["CREATE", "s", "g", "0"])
        .exec(&mut connection)
        .unwrap();
    let group = redis.group("s", "g").unwrap();
    assert_eq!((group.lag, group.pending), (Some(3), 0));
    redis::cmd("XREADGROUP")
        .arg(&["GROUP", "g", "c1", "COUNT", "2", "STREAMS", "s", ">"])
        .exec(&mut connection)
        .unwrap();
    let group = redis.group("s", "g").unwrap();
    assert_eq!((group.lag, group.pending), (Some(1), 2));
    let consumers = redis.consumers("s", "g");
    assert_eq!(consumers.len(), 1);
    assert_eq!(
        (consumers[0].name.as_str(), consumers[0].pending),
        ("c1", 2)
    );
}

#[test]
fn a_process_is_signalled_and_reaped() {
    let mut command = Command::new("sh");
    command.args([
        "-c",
        "trap 'echo bye; exit 3' TERM; echo ready; while :; do sleep 0.05; done",
    ]);
    let mut process = Process::spawn("sh", command);
    wait_until(Duration::from_secs(10), "ready", || {
        process.assert_running();
        process
            .stdout()
            .contains("ready")
            .then_some(())
            .ok_or_else(|| process.output())
    });
    process.terminate();
    let status = process.wait_for_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(3));
    assert!(process.output().contains("bye"));
}

#[test]
fn dropping_a_process_kills_it_and_its_children() {
    let mut command = Command::new("sh");
    command.args(["-c", "sleep 300 & echo $!; wait"]);
    let process = Process::spawn("sh", command);
    let child: u32 = wait_until(Duration::from_secs(10), "the child's pid", || {
        process
            .stdout()
            .trim()
            .parse()
            .map_err(|_| process.output())
    });
    let pid = process.pid();
    drop(process);
    let deadline = Instant::now() + Duration::from_secs(5);
    for pid in [pid, child] {
        while alive(pid) {
            assert!(Instant::now() < deadline, "process {pid} still runs");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Whether `pid` exists and is not a zombie waiting for its (new) parent.
fn alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = stat[stat.rfind(')').unwrap() + 1..]
        .split_whitespace()
        .next();
    state != Some("Z")
}

#[test]
#[should_panic(expected = "still running after")]
fn waiting_past_the_deadline_fails_and_kills() {
    let mut command = Command::new("sleep");
    command.arg("300");
    Process::spawn("sleep", command).wait_for_exit(Duration::from_millis(200));
}

#[test]
fn colours_are_stripped() {
    assert_eq!(
        strip_ansi("\u{1b}[1m\u{1b}[31mfailed\u{1b}[0m: x"),
        "failed: x"
    );
}
