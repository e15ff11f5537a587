//! The worker as an ACL user with exactly the rule the generated README
//! gives: keys limited to the stream and its dead letters, only the commands
//! the worker sends. As that user it replays its own pending entries after
//! a `kill -9`, takes over a dead consumer's entries, dead-letters poison
//! and removes idle consumers; `ACL LOG` stays empty and no log line says
//! NOPERM.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{Process, RedisServer, build_fault_worker, repo_root, scrub_env, wait_until};

const PROJECT: &str = "acl-worker";
const USER: &str = "acl-worker";
const PASSWORD: &str = "acl-secret";
const STREAM: &str = "acl:orders";
const GROUP: &str = "acl-group";

/// How long each phase may take.
const DEADLINE: Duration = Duration::from_secs(60);

/// The worker's `ACL SETUSER` line of the template's README, for this
/// test's user, password and stream: the arguments after `ACL SETUSER`.
fn worker_rule() -> Vec<String> {
    let readme = fs::read_to_string(repo_root().join("template/README.md")).unwrap();
    let line = readme
        .lines()
        .find(|line| line.starts_with("ACL SETUSER {{worker_name}} on"))
        .expect("the README gives the worker's ACL rule");
    line.replace("{{worker_name}}", USER)
        .replace("{{stream_slot_prefix}}", &format!("{{{STREAM}}}"))
        .replace("{{stream}}", STREAM)
        .replace(">PASSWORD", &format!(">{PASSWORD}"))
        .split_whitespace()
        .skip(2)
        .map(str::to_owned)
        .collect()
}

fn data(n: u64, fail: &str, sleep_ms: u64) -> String {
    format!(r#"{{"n":{n},"fail":"{fail}","sleep_ms":{sleep_ms}}}"#)
}

fn recorded(record: &Path) -> BTreeSet<u64> {
    fs::read_to_string(record)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.split(' ').nth(1)?.parse().ok())
        .collect()
}

struct Run<'a> {
    binary: &'a Path,
    redis: &'a RedisServer,
    dir: &'a Path,
}

impl Run<'_> {
    /// A worker called `consumer`, as the ACL user, with `env` on top.
    fn spawn(&self, consumer: &str, env: &[(&str, &str)]) -> Process {
        let mut command = Command::new(self.binary);
        scrub_env(&mut command);
        command
            .arg("run")
            .current_dir(self.dir)
            .env(
                "REDIS_URL",
                format!("redis://{USER}:{PASSWORD}@127.0.0.1:{}", self.redis.port()),
            )
            .env("REDIS_STREAM", STREAM)
            .env("REDIS_CONSUMER_GROUP", GROUP)
            .env("REDIS_CONSUMER_NAME", consumer)
            .env("REDIS_BLOCK_TIMEOUT_MS", "500")
            .env("WORKER_MAX_DELIVERIES", "2")
            .env("WORKER_RETRY_BACKOFF_MS", "50")
            .env("WORKER_CLAIM_IDLE_MS", "1000")
            .env("WORKER_CLAIM_INTERVAL_MS", "300")
            .env("WORKER_DELETE_IDLE_CONSUMERS_MS", "1500")
            .env("LOG_FORMAT", "json")
            .env("METRICS_ADDR", "127.0.0.1:0")
            .env("FAULT_RECORD", self.dir.join("record.txt"));
        command.envs(env.iter().copied());
        Process::spawn(consumer, command)
    }

    /// Waits until every `n` in `fine` is recorded, `poison` entries sit in
    /// the dead-letter stream and the group has nothing left.
    fn wait_drained(&self, fine: &BTreeSet<u64>, poison: usize, worker: &mut Process) {
        wait_until(DEADLINE, "the stream drained", || {
            worker.assert_running();
            let done = recorded(&self.dir.join("record.txt"));
            let missing = fine.difference(&done).count();
            let letters = self.redis.xlen(&format!("{STREAM}:dlq"));
            let group = self.redis.group(STREAM, GROUP).ok_or("no group")?;
            match (missing, letters, group.lag, group.pending) {
                (0, l, Some(0), 0) if l == poison => Ok(()),
                other => Err(format!("(missing, dead letters, lag, pending) = {other:?}")),
            }
        });
    }

    /// Kills `worker` with `kill -9` once it has processed `count` entries
    /// itself (record lines end with the process ID).
    fn kill_after(&self, worker: &mut Process, count: usize) {
        let record = self.dir.join("record.txt");
        let pid = worker.pid().to_string();
        wait_until(DEADLINE, &format!("{count} entries processed"), || {
            worker.assert_running();
            let text = fs::read_to_string(&record).unwrap_or_default();
            match text.lines().filter(|line| line.ends_with(&pid)).count() {
                done if done >= count => Ok(()),
                done => Err(format!("{done} processed")),
            }
        });
        worker.kill();
    }
}

#[test]
fn the_worker_needs_no_more_than_the_readme_rule() {
    let binary = build_fault_worker(PROJECT);
    let redis = RedisServer::start();
    let mut admin = redis.connect();
    redis::cmd("ACL")
        .arg("SETUSER")
        .arg(worker_rule())
        .exec(&mut admin)
        .unwrap_or_else(|error| panic!("ACL SETUSER {:?}: {error}", worker_rule()));
    redis::cmd("ACL")
        .arg("LOG")
        .arg("RESET")
        .exec(&mut admin)
        .unwrap();
    let dir = tempfile::Builder::new()
        .prefix("template-test-acl-")
        .tempdir_in(std::env::temp_dir())
        .unwrap();
    let run = Run {
        binary: &binary,
        redis: &redis,
        dir: dir.path(),
    };
    let is_poison = |n: u64| n % 20 == 3;
    let entries = |range: std::ops::Range<u64>| -> Vec<String> {
        range
            .map(|n| data(n, if is_poison(n) { "always" } else { "none" }, 2))
            .collect()
    };
    let fine = |range: std::ops::Range<u64>| -> BTreeSet<u64> {
        range.filter(|n| !is_poison(*n)).collect()
    };

    // Replay: killed mid-drain, the same name started again takes up its
    // own pending entries first.
    redis.xadd_data(STREAM, &entries(0..100));
    let mut slow = run.spawn(
        "keeper",
        &[("FAULT_SLEEP_MS", "100"), ("WORKER_CONCURRENCY", "4")],
    );
    run.kill_after(&mut slow, 8);
    let mut keeper = run.spawn("keeper", &[]);
    run.wait_drained(&fine(0..100), 5, &mut keeper);

    // Takeover and idle-consumer cleanup: another consumer, alone at
    // first, dies with entries in flight; `keeper`, back, claims them and
    // then removes the dead one.
    keeper.terminate();
    assert!(
        keeper.wait_for_exit(DEADLINE).success(),
        "{}",
        keeper.output()
    );
    assert!(!keeper.output().contains("NOPERM"), "{}", keeper.output());
    redis.xadd_data(STREAM, &entries(100..200));
    let mut doomed = run.spawn(
        "doomed",
        &[("FAULT_SLEEP_MS", "200"), ("WORKER_CONCURRENCY", "8")],
    );
    run.kill_after(&mut doomed, 4);
    let mut keeper = run.spawn("keeper", &[]);
    run.wait_drained(&fine(0..200), 10, &mut keeper);
    assert!(
        redis
            .consumers(STREAM, GROUP)
            .iter()
            .any(|consumer| consumer.name == "doomed"),
        "the killed consumer should be there to remove"
    );
    wait_until(DEADLINE, "the dead consumer removed", || {
        keeper.assert_running();
        let names: Vec<String> = redis
            .consumers(STREAM, GROUP)
            .into_iter()
            .map(|consumer| consumer.name)
            .collect();
        if names == ["keeper"] {
            Ok(())
        } else {
            Err(format!("consumers {names:?}"))
        }
    });

    let log: Vec<redis::Value> = redis::cmd("ACL").arg("LOG").query(&mut admin).unwrap();
    assert!(log.is_empty(), "ACL LOG: {log:?}");
    for worker in [&slow, &doomed, &keeper] {
        let output = worker.output();
        assert!(!output.contains("NOPERM"), "a NOPERM:\n{output}");
    }
    keeper.terminate();
    let status = keeper.wait_for_exit(Duration::from_secs(30));
    assert!(status.success(), "{}", keeper.output());
}
