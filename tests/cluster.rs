//! The worker and its operator commands on a Redis Cluster: a local cluster
//! of three masters started by the test, the default variant built with the
//! fault-injecting business logic (`tests/fixtures/fault_business_logic.rs`)
//! and `REDIS_CLUSTER=true`.
//!
//! - a drain with poison entries, a worker killed with `kill -9` halfway
//!   and its entries taken over by another name; the poison ends in the
//!   default dead-letter stream, which shares the stream's hash slot
//!   (`{<stream>}:dlq`); then `status --json`, `dlq replay` and `trim`;
//! - the stream's slot moved to another master in the middle of a drain
//!   (`CLUSTER SETSLOT ... IMPORTING / MIGRATING`, `MIGRATE`, `SETSLOT
//!   NODE`), with nothing lost.
//!
//! The first flow runs on a TLS cluster too (`--tls-cluster yes`, a private
//! CA); the test's own commands go in plain text to the node of the slot.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use common::cluster::RedisCluster;
use common::tls::Certificates;
use common::{Process, build_fault_worker, note, scrub_env, wait_until};
use redis::Commands;
use tempfile::TempDir;

const PROJECT: &str = "cluster-worker";

/// How long a drain may take, start and takeover included.
const DRAIN_DEADLINE: Duration = Duration::from_secs(120);

/// How long an operator command may take.
const COMMAND_DEADLINE: Duration = Duration::from_secs(30);

/// The default variant with the fault logic, built once for every test.
fn worker_binary() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let binary = build_fault_worker(PROJECT);
        note(format!("cluster: `{PROJECT}` built"));
        binary
    })
}

/// A cluster, a stream on it, a record file and the workers started.
struct Scenario {
    cluster: RedisCluster,
    /// Kept for the nodes' and the worker's TLS files.
    _certificates: Option<Certificates>,
    stream: String,
    group: String,
    dir: TempDir,
    workers: Vec<Process>,
}

impl Scenario {
    /// A scenario on a new cluster, with TLS if `certificates` are given.
    fn new(stream: &str, certificates: Option<Certificates>) -> Scenario {
        let binary = worker_binary();
        assert!(binary.is_file());
        let cluster = match &certificates {
            Some(certificates) => RedisCluster::start_tls(3, certificates),
            None => RedisCluster::start(3),
        };
        Scenario {
            cluster,
            _certificates: certificates,
            stream: stream.to_owned(),
            group: "cluster-group".to_owned(),
            dir: tempfile::Builder::new()
                .prefix("template-test-cluster-")
                .tempdir_in(std::env::temp_dir())
                .unwrap(),
            workers: Vec::new(),
        }
    }

    fn record(&self) -> PathBuf {
        self.dir.path().join("record.txt")
    }

    /// The worker binary with `args`, on this cluster and stream.
    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(worker_binary());
        scrub_env(&mut command);
        command
            .args(args)
            .current_dir(self.dir.path())
            .env("REDIS_URL", self.cluster.url())
            .env("REDIS_CLUSTER", "true")
            .env("REDIS_STREAM", &self.stream)
            .env("REDIS_CONSUMER_GROUP", &self.group)
            .env("REDIS_BLOCK_TIMEOUT_MS", "1000")
            .env("WORKER_MAX_DELIVERIES", "3")
            .env("WORKER_RETRY_BACKOFF_MS", "50")
            .env("WORKER_CLAIM_IDLE_MS", "2000")
            .env("WORKER_CLAIM_INTERVAL_MS", "500")
            .env("LOG_FORMAT", "json")
            .env("METRICS_ADDR", "127.0.0.1:0")
            .env("FAULT_RECORD", self.record());
        if let Some(ca) = self.cluster.ca() {
            command.env("REDIS_TLS_CA_FILE", ca);
        }
        command
    }

    /// Starts a worker called `consumer` with `env` on top.
    fn spawn(&mut self, consumer: &str, env: &[(&str, &str)]) -> usize {
        let mut command = self.command(&["run"]);
        command.env("REDIS_CONSUMER_NAME", consumer);
        command.envs(env.iter().copied());
        self.workers.push(Process::spawn(consumer, command));
        self.workers.len() - 1
    }

    /// Runs an operator command; panics with its output if it fails.
    fn operator(&self, args: &[&str]) -> String {
        let mut process = Process::spawn(&args.join(" "), self.command(args));
        let status = process.wait_for_exit(COMMAND_DEADLINE);
        assert!(
            status.success(),
            "`{}` failed:\n{}",
            args.join(" "),
            process.output()
        );
        process.stdout()
    }

    /// Adds entries with these `data` values, in pipelines of 500.
    fn add(&self, data: &[String]) -> Vec<String> {
        let mut connection = self.cluster.connect_for(&self.stream);
        let mut ids = Vec::new();
        for chunk in data.chunks(500) {
            let mut pipe = redis::pipe();
            for value in chunk {
                pipe.cmd("XADD")
                    .arg(&self.stream)
                    .arg("*")
                    .arg("data")
                    .arg(value);
            }
            let added: Vec<String> = pipe.query(&mut connection).unwrap();
            ids.extend(added);
        }
        ids
    }

    /// The `n`s recorded, with how often each was processed.
    fn calls(&self) -> HashMap<u64, usize> {
        let text = fs::read_to_string(self.record()).unwrap_or_default();
        let mut calls = HashMap::new();
        for line in text.lines() {
            if let Some(n) = line.split(' ').nth(1).and_then(|n| n.parse().ok()) {
                *calls.entry(n).or_default() += 1;
            }
        }
        calls
    }

    fn check_workers(&mut self, running: &[usize]) {
        for index in running {
            self.workers[*index].assert_running();
        }
    }

    /// `XLEN` of `key` (0 if missing).
    fn xlen(&self, key: &str) -> usize {
        self.cluster.connect_for(&self.stream).xlen(key).unwrap()
    }

    /// The group's lag and pending count.
    fn lag_and_pending(&self) -> Result<(Option<usize>, usize), String> {
        let mut connection = self.cluster.connect_for(&self.stream);
        let reply: redis::streams::StreamInfoGroupsReply = connection
            .xinfo_groups(&self.stream)
            .map_err(|error| error.to_string())?;
        let group = reply
            .groups
            .into_iter()
            .find(|group| group.name == self.group)
            .ok_or("no group yet")?;
        Ok((group.lag, group.pending))
    }

    /// Waits until every `n` of `fine` was processed and the group has
    /// nothing left, while the workers `running` keep running.
    fn wait_drained(&mut self, fine: &BTreeSet<u64>, running: &[usize]) {
        wait_until(DRAIN_DEADLINE, "the stream drained", || {
            self.check_workers(running);
            let calls = self.calls();
            let missing = fine.iter().filter(|n| !calls.contains_key(n)).count();
            if missing > 0 {
                return Err(format!("{missing} entries never processed"));
            }
            match self.lag_and_pending()? {
                (Some(0), 0) => Ok(()),
                other => Err(format!("(lag, pending) = {other:?}")),
            }
        });
    }
}

impl Drop for Scenario {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for worker in &self.workers {
                let output = worker.output();
                let tail: Vec<&str> = output.lines().rev().take(30).collect();
                eprintln!(
                    "--- worker output (last lines, newest first):\n{}",
                    tail.join("\n")
                );
            }
        }
    }
}

/// `data` for the fault logic.
fn data(n: u64, fail: &str, sleep_ms: u64) -> String {
    format!(r#"{{"n":{n},"fail":"{fail}","sleep_ms":{sleep_ms}}}"#)
}

#[test]
fn drain_poison_takeover_replay_status_and_trim() {
    drain_poison_takeover_replay_status_and_trim_on(Scenario::new("cluster:orders", None));
}

#[test]
fn the_same_on_a_tls_cluster() {
    let certificates = Certificates::generate();
    drain_poison_takeover_replay_status_and_trim_on(Scenario::new(
        "cluster:orders",
        Some(certificates),
    ));
}

fn drain_poison_takeover_replay_status_and_trim_on(mut scenario: Scenario) {
    let dead_letters = "{cluster:orders}:dlq";
    let total = 400;
    let poison: BTreeSet<u64> = (0..total).filter(|n| n % 40 == 7).collect();
    let fine: BTreeSet<u64> = (0..total).filter(|n| !poison.contains(n)).collect();
    let entries: Vec<String> = (0..total)
        .map(|n| {
            data(
                n,
                if poison.contains(&n) {
                    "always"
                } else {
                    "none"
                },
                2,
            )
        })
        .collect();
    scenario.add(&entries);

    // A slow worker holds entries in flight when it is killed.
    let slow = scenario.spawn(
        "slow",
        &[("FAULT_SLEEP_MS", "100"), ("WORKER_CONCURRENCY", "8")],
    );
    wait_until(
        DRAIN_DEADLINE,
        "the slow worker to process 40 entries",
        || {
            scenario.check_workers(&[slow]);
            let done = scenario.calls().len();
            if done >= 40 {
                Ok(())
            } else {
                Err(format!("{done} processed"))
            }
        },
    );
    scenario.workers[slow].kill();
    let (_, pending) = scenario.lag_and_pending().unwrap();
    assert!(pending > 0, "the killed worker left nothing pending");

    let taker = scenario.spawn("taker", &[]);
    scenario.wait_drained(&fine, &[taker]);
    wait_until(DRAIN_DEADLINE, "every poison entry dead-lettered", || {
        scenario.check_workers(&[taker]);
        match scenario.xlen(dead_letters) {
            n if n == poison.len() => Ok(()),
            n => Err(format!("{n} dead letters in {dead_letters}")),
        }
    });
    // Redis counts the deliveries to the killed worker too, so a poison
    // entry may have been processed fewer than three times here.
    let calls = scenario.calls();
    for n in &poison {
        assert!(calls.contains_key(n), "poison {n} never processed");
    }

    let status = scenario.operator(&["status", "--json"]);
    let status: serde_norway::Value = serde_norway::from_str(&status)
        .unwrap_or_else(|error| panic!("status --json is not JSON ({error}):\n{status}"));
    assert_eq!(
        status["dead_letter_stream"].as_str(),
        Some(dead_letters),
        "status --json: {status:?}"
    );

    // Replayed dead letters go back onto the stream, fail again and come
    // back as new dead letters.
    let before = scenario.calls();
    let replayed = scenario.operator(&["dlq", "replay"]);
    note(format!("cluster: dlq replay: {}", replayed.trim()));
    wait_until(
        DRAIN_DEADLINE,
        "the replayed entries dead-lettered again",
        || {
            scenario.check_workers(&[taker]);
            let calls = scenario.calls();
            let again = poison
                .iter()
                .filter(|n| calls.get(n) >= Some(&(before.get(n).copied().unwrap_or(0) + 3)))
                .count();
            let letters = scenario.xlen(dead_letters);
            match (again, letters, scenario.lag_and_pending()?) {
                (a, l, (Some(0), 0)) if a == poison.len() && l == poison.len() => Ok(()),
                other => Err(format!(
                    "(retried, dead letters, (lag, pending)) = {other:?}"
                )),
            }
        },
    );

    let trimmed = scenario.operator(&["trim", "--maxlen", "5", "--exact"]);
    note(format!("cluster: trim: {}", trimmed.trim()));
    assert_eq!(scenario.xlen(&scenario.stream), 5, "after trim:\n{trimmed}");

    scenario.workers[taker].terminate();
    let status = scenario.workers[taker].wait_for_exit(Duration::from_secs(30));
    assert!(status.success(), "{}", scenario.workers[taker].output());
}

#[test]
fn the_streams_slot_moves_to_another_master_mid_drain() {
    let mut scenario = Scenario::new("{moving}:events", None);
    let total = 3_000;
    let fine: BTreeSet<u64> = (0..total).collect();
    let entries: Vec<String> = fine.iter().map(|n| data(*n, "none", 20)).collect();
    scenario.add(&entries[..2_000]);
    let worker = scenario.spawn("mover", &[("WORKER_CONCURRENCY", "16")]);
    wait_until(DRAIN_DEADLINE, "the worker to process 300 entries", || {
        scenario.check_workers(&[worker]);
        let done = scenario.calls().len();
        if done >= 300 {
            Ok(())
        } else {
            Err(format!("{done} processed"))
        }
    });

    let from = scenario.cluster.owner(&scenario.stream);
    let to = scenario.cluster.other_than(&from);
    let moved = scenario.cluster.migrate_slot(&scenario.stream, &from, &to);
    assert!(moved >= 1, "the stream did not move");
    assert_eq!(scenario.cluster.owner(&scenario.stream).port, to.port);
    let processed_at_move = scenario.calls().len();
    note(format!(
        "cluster: slot moved from :{} to :{} after {processed_at_move} entries",
        from.port, to.port
    ));
    assert!(processed_at_move < 2_000, "the drain ended before the move");

    scenario.add(&entries[2_000..]);
    scenario.wait_drained(&fine, &[worker]);
    let calls = scenario.calls();
    assert_eq!(calls.len(), total as usize);
    assert_eq!(
        scenario.xlen("{moving}:events:dlq"),
        0,
        "dead letters after the move"
    );
}
