//! Fault injection: generated workers run as real processes against real
//! redis-servers, one consumer group per scenario, while processes and
//! Redis are killed, restarted and signalled, and the business logic fails,
//! panics or crawls on purpose.
//!
//! The default variant is generated once as `fault-worker`, its
//! `src/business_logic.rs` replaced by `tests/fixtures/fault_business_logic.rs`
//! (each entry's `data` says how to fail; each call appends `<id> <n> <pid>`
//! to the file named by `FAULT_RECORD`), checked with clippy and built once.
//! Every scenario then has a redis-server, a stream and a group of its own,
//! so they run in parallel.
//!
//! Counts are checked against Redis itself (`XPENDING`, `XINFO GROUPS` lag,
//! the dead-letter stream `<stream>:dlq` and its `dlq.*` fields) and against
//! the record of what the business logic saw.

mod common;

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

use common::{
    Process, RedisOptions, RedisServer, StreamInfoGroup, cargo, debug_binary, generate_with, note,
    repo_root, scrub_env, unused_port, variant, wait_until,
};
use redis::streams::{StreamPendingCountReply, StreamPendingReply, StreamRangeReply};
use tempfile::TempDir;

// ---------------------------------------------------------------------------
// The fault-injecting worker
// ---------------------------------------------------------------------------

/// The generated project and binary name.
const PROJECT: &str = "fault-worker";

/// The business logic copied over the generated one.
const FAULT_LOGIC: &str = "tests/fixtures/fault_business_logic.rs";

/// `REDIS_BLOCK_TIMEOUT_MS` of every worker unless a scenario sets its own.
const BLOCK_TIMEOUT_MS: u64 = 1_000;

/// The worker binary, generated, checked and built on first use; later
/// callers wait for it. A failed build fails every scenario with its reason.
fn worker_binary() -> &'static Path {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let built = BUILT.get_or_init(|| {
        std::panic::catch_unwind(build_fault_worker).map_err(|panic| {
            panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|text| (*text).to_owned()))
                .unwrap_or_else(|| "a panic without a message".to_owned())
        })
    });
    match built {
        Ok(binary) => binary,
        Err(error) => panic!("the fault-injecting worker could not be built: {error}"),
    }
}

/// Generates the default variant as `fault-worker`, overwrites its business
/// logic the way a user edits it, and builds it.
fn build_fault_worker() -> PathBuf {
    let started = Instant::now();
    let project = generate_with(PROJECT, variant("default").defines);
    let logic = project.path().join("src").join("business_logic.rs");
    assert!(logic.is_file(), "no {}", logic.display());
    fs::copy(repo_root().join(FAULT_LOGIC), &logic).unwrap();
    cargo(&project, &["clippy", "--", "-D", "warnings"]);
    cargo(&project, &["build"]);
    let binary = debug_binary(PROJECT);
    note(format!(
        "faults: `{PROJECT}` generated, checked and built in {:.1}s",
        started.elapsed().as_secs_f64()
    ));
    binary
}

/// The `data` of an entry for the fault logic.
fn data(n: usize, fail: &str, sleep_ms: u64) -> String {
    format!(r#"{{"n":{n},"fail":"{fail}","sleep_ms":{sleep_ms}}}"#)
}

// ---------------------------------------------------------------------------
// The record of calls
// ---------------------------------------------------------------------------

/// One call of the business logic, as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Call {
    id: String,
    n: u64,
    pid: u32,
}

/// Every recorded call, in file order.
#[derive(Debug, Default)]
struct Record {
    calls: Vec<Call>,
}

impl Record {
    /// Reads `path`; a missing file is an empty record. Every line must be
    /// complete, except while workers may still be writing (`live`), when a
    /// last line being written is left out.
    fn read(path: &Path, live: bool) -> Record {
        let mut text = match fs::read_to_string(path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(error) => panic!("{}: {error}", path.display()),
        };
        if live {
            text.truncate(text.rfind('\n').map_or(0, |end| end + 1));
        }
        assert!(
            text.is_empty() || text.ends_with('\n'),
            "the record ends with a torn line: {:?}",
            text.lines().last()
        );
        let calls = text
            .lines()
            .map(|line| {
                let parts: Vec<&str> = line.split(' ').collect();
                match parts[..] {
                    [id, n, pid] if id.contains('-') => Call {
                        id: id.to_owned(),
                        n: n.parse()
                            .unwrap_or_else(|_| panic!("bad record line {line:?}")),
                        pid: pid
                            .parse()
                            .unwrap_or_else(|_| panic!("bad record line {line:?}")),
                    },
                    _ => panic!("bad record line {line:?}"),
                }
            })
            .collect();
        Record { calls }
    }

    /// How many lines the file has, without parsing it (for polling).
    fn count_lines(path: &Path) -> usize {
        fs::read(path).map_or(0, |bytes| bytes.iter().filter(|&&b| b == b'\n').count())
    }

    /// Calls per entry ID.
    fn counts(&self) -> HashMap<&str, usize> {
        let mut counts = HashMap::new();
        for call in &self.calls {
            *counts.entry(call.id.as_str()).or_insert(0) += 1;
        }
        counts
    }

    /// The distinct IDs recorded.
    fn ids(&self) -> HashSet<&str> {
        self.calls.iter().map(|call| call.id.as_str()).collect()
    }

    /// The processes that recorded `id`, in order.
    fn pids_of(&self, id: &str) -> Vec<u32> {
        self.calls
            .iter()
            .filter(|call| call.id == id)
            .map(|call| call.pid)
            .collect()
    }
}

// ---------------------------------------------------------------------------
// Scenarios
// ---------------------------------------------------------------------------

/// A worker process and whether the scenario expects it to be running.
struct Worker {
    process: Process,
    consumer: String,
    expect_running: bool,
}

/// One scenario: a redis-server (or the port one will use), a stream and a
/// group, a record file, and the workers started so far. Dropping it kills
/// the workers, then Redis; when the test is failing it first prints the
/// end of every worker's output and keeps the record.
struct Scenario {
    workers: Vec<Worker>,
    redis: Option<RedisServer>,
    name: &'static str,
    url: String,
    stream: String,
    group: String,
    dir: Option<TempDir>,
    record: PathBuf,
    /// Every entry added, in order: the `n` of the `n`th is `n`.
    added: RefCell<Vec<String>>,
    started: Instant,
}

impl Scenario {
    /// A scenario with a fresh redis-server.
    fn new(name: &'static str) -> Scenario {
        Scenario::with_redis(name, Some(RedisServer::start()), None)
    }

    /// A scenario with `redis`, or with none yet and workers pointed at
    /// `url`.
    fn with_redis(name: &'static str, redis: Option<RedisServer>, url: Option<String>) -> Scenario {
        let binary = worker_binary();
        assert!(binary.is_file());
        let url = url
            .or_else(|| redis.as_ref().map(RedisServer::url))
            .expect("a Redis or its URL");
        let dir = tempfile::Builder::new()
            .prefix("template-test-faults-")
            .tempdir_in(std::env::temp_dir())
            .expect("a temporary directory");
        let record = dir.path().join("record.txt");
        note(format!("faults::{name}: started"));
        Scenario {
            workers: Vec::new(),
            redis,
            name,
            url,
            stream: format!("faults:{name}"),
            group: format!("{name}-group"),
            dir: Some(dir),
            record,
            added: RefCell::new(Vec::new()),
            started: Instant::now(),
        }
    }

    fn redis(&self) -> &RedisServer {
        self.redis
            .as_ref()
            .expect("this scenario's Redis is running")
    }

    fn dead_letter_stream(&self) -> String {
        format!("{}:dlq", self.stream)
    }

    /// Starts a worker called `consumer` with the scenario's names, JSON
    /// logs, the record file and `env` on top; returns its index.
    fn spawn(&mut self, consumer: &str, env: &[(&str, &str)]) -> usize {
        self.spawn_wrapped(&[], consumer, env)
    }

    /// [`Scenario::spawn`], the worker started by the command `wrapper`
    /// (its program and arguments, the worker's path appended) if any.
    fn spawn_wrapped(&mut self, wrapper: &[&str], consumer: &str, env: &[(&str, &str)]) -> usize {
        let mut command = match wrapper.split_first() {
            Some((program, args)) => {
                let mut command = Command::new(program);
                command.args(args).arg(worker_binary());
                command
            }
            None => Command::new(worker_binary()),
        };
        command.current_dir(self.dir.as_ref().unwrap().path());
        scrub_env(&mut command);
        command
            .env_remove("FAULT_SLEEP_MS")
            .env("REDIS_URL", &self.url)
            .env("REDIS_STREAM", &self.stream)
            .env("REDIS_CONSUMER_GROUP", &self.group)
            .env("REDIS_CONSUMER_NAME", consumer)
            .env("REDIS_BLOCK_TIMEOUT_MS", BLOCK_TIMEOUT_MS.to_string())
            .env("METRICS_ADDR", "127.0.0.1:0")
            .env("LOG_FORMAT", "json")
            .env("LOG_LEVEL", "info")
            .env("FAULT_RECORD", &self.record);
        command.envs(env.iter().copied());
        let process = Process::spawn(&format!("{PROJECT} {consumer}"), command);
        self.workers.push(Worker {
            process,
            consumer: consumer.to_owned(),
            expect_running: true,
        });
        self.workers.len() - 1
    }

    fn worker(&mut self, index: usize) -> &mut Process {
        &mut self.workers[index].process
    }

    fn pid(&self, index: usize) -> u32 {
        self.workers[index].process.pid()
    }

    /// `kill -9` of worker `index`.
    fn kill(&mut self, index: usize) {
        self.workers[index].expect_running = false;
        self.workers[index].process.kill();
    }

    /// Fails with its output if a worker that should run has exited.
    fn check_workers(&mut self) {
        for worker in &mut self.workers {
            if worker.expect_running {
                worker.process.assert_running();
            }
        }
    }

    /// [`wait_until`], failing early if a worker exits.
    fn wait_for<T>(
        &mut self,
        timeout: Duration,
        what: &str,
        mut probe: impl FnMut(&Scenario) -> Result<T, String>,
    ) -> T {
        wait_until(timeout, what, || {
            self.check_workers();
            probe(self)
        })
    }

    /// Adds one entry per element of `data`, in pipelines of 5,000.
    fn add(&self, data: &[String]) -> Vec<String> {
        let ids: Vec<String> = data
            .chunks(5_000)
            .flat_map(|chunk| self.redis().xadd_data(&self.stream, chunk))
            .collect();
        self.added.borrow_mut().extend(ids.iter().cloned());
        ids
    }

    /// Adds one entry per element of `data` in one transaction: readers
    /// blocked on the stream wake up once, with all of them there.
    fn add_atomically(&self, data: &[String]) -> Vec<String> {
        let mut pipe = redis::pipe();
        pipe.atomic();
        for value in data {
            pipe.cmd("XADD")
                .arg(&self.stream)
                .arg("*")
                .arg("data")
                .arg(value);
        }
        let ids: Vec<String> = pipe
            .query(&mut self.redis().connect())
            .unwrap_or_else(|error| panic!("MULTI/XADD/EXEC failed: {error}"));
        self.added.borrow_mut().extend(ids.iter().cloned());
        ids
    }

    /// The record, read when no worker is writing to it (all stopped, or
    /// nothing left to process). Each call's `n` must be that of the entry
    /// it names: the logic saw the entry's own data.
    fn record(&self) -> Record {
        self.checked_record(false)
    }

    /// The record so far, while workers may be writing to it.
    fn record_live(&self) -> Record {
        self.checked_record(true)
    }

    fn checked_record(&self, live: bool) -> Record {
        let record = Record::read(&self.record, live);
        let added = self.added.borrow();
        for call in &record.calls {
            let expected = usize::try_from(call.n).ok().and_then(|n| added.get(n));
            assert_eq!(
                expected,
                Some(&call.id),
                "the logic recorded n={} for entry {}",
                call.n,
                call.id
            );
        }
        record
    }

    fn group(&self) -> Option<StreamInfoGroup> {
        self.redis().group(&self.stream, &self.group)
    }

    /// `XPENDING stream group`: how many entries each consumer holds.
    fn pending_by_consumer(&self) -> HashMap<String, usize> {
        let reply: StreamPendingReply = redis::cmd("XPENDING")
            .arg(&self.stream)
            .arg(&self.group)
            .query(&mut self.redis().connect())
            .unwrap();
        match reply {
            StreamPendingReply::Data(data) => data
                .consumers
                .into_iter()
                .map(|consumer| (consumer.name, consumer.pending))
                .collect(),
            _ => HashMap::new(),
        }
    }

    /// The IDs pending in the group (all consumers, or one).
    fn pending_ids(&self, consumer: Option<&str>) -> BTreeSet<String> {
        let mut cmd = redis::cmd("XPENDING");
        cmd.arg(&self.stream)
            .arg(&self.group)
            .arg("-")
            .arg("+")
            .arg(1_000_000);
        if let Some(consumer) = consumer {
            cmd.arg(consumer);
        }
        let reply: StreamPendingCountReply = cmd.query(&mut self.redis().connect()).unwrap();
        reply.ids.into_iter().map(|pending| pending.id).collect()
    }

    /// The dead letters, in order.
    fn dead_letters(&self) -> Vec<DeadLetter> {
        let reply: StreamRangeReply = redis::cmd("XRANGE")
            .arg(self.dead_letter_stream())
            .arg("-")
            .arg("+")
            .query(&mut self.redis().connect())
            .unwrap();
        reply
            .ids
            .into_iter()
            .map(|entry| {
                let field = |name: &str| -> String {
                    entry
                        .get(name)
                        .unwrap_or_else(|| panic!("dead letter {} has no {name}", entry.id))
                };
                DeadLetter {
                    original_id: field("dlq.original_id"),
                    deliveries: field("dlq.deliveries"),
                    reason: field("dlq.reason"),
                    data: field("data"),
                }
            })
            .collect()
    }

    /// Waits until the group has read `total` entries and has nothing
    /// pending and no lag: every entry acknowledged.
    fn wait_drained(&mut self, total: usize, timeout: Duration) -> StreamInfoGroup {
        let what = format!("group {} to acknowledge all {total} entries", self.group);
        self.wait_for(timeout, &what, |scenario| match scenario.group() {
            Some(group)
                if group.pending == 0
                    && group.lag == Some(0)
                    && group.entries_read.is_some_and(|read| read >= total) =>
            {
                Ok(group)
            }
            other => Err(format!("{other:?}")),
        })
    }

    /// Asserts the group's final state: nothing pending, no lag.
    fn assert_all_acknowledged(&self) {
        let group = self.group().expect("the group exists");
        assert_eq!(group.pending, 0, "entries left pending: {group:?}");
        assert_eq!(group.lag, Some(0), "entries never delivered: {group:?}");
        assert!(
            self.pending_by_consumer().is_empty(),
            "XPENDING: {:?}",
            self.pending_by_consumer()
        );
    }

    /// Log lines of worker `index` (JSON, one object each) holding `text`.
    fn log_lines(&self, index: usize, text: &str) -> Vec<String> {
        self.workers[index]
            .process
            .stderr()
            .lines()
            .filter(|line| line.contains(text))
            .map(str::to_owned)
            .collect()
    }

    /// Prints how long the scenario took.
    fn done(self, summary: impl std::fmt::Display) {
        note(format!(
            "faults::{}: ok in {:.1}s ({summary})",
            self.name,
            self.started.elapsed().as_secs_f64()
        ));
    }
}

impl Drop for Scenario {
    fn drop(&mut self) {
        if !thread::panicking() {
            return;
        }
        for worker in &mut self.workers {
            worker.process.kill();
            let output = worker.process.output();
            let lines: Vec<&str> = output.lines().collect();
            let tail = &lines[lines.len().saturating_sub(40)..];
            note(format!(
                "faults::{}: worker {} (pid {}), last {} lines of output:\n{}",
                self.name,
                worker.consumer,
                worker.process.pid(),
                tail.len(),
                tail.join("\n")
            ));
        }
        if let Some(redis) = &self.redis {
            let log = redis.log();
            let lines: Vec<&str> = log.lines().collect();
            let tail = &lines[lines.len().saturating_sub(15)..];
            note(format!(
                "faults::{}: redis-server log (end):\n{}",
                self.name,
                tail.join("\n")
            ));
        }
        if let Some(dir) = self.dir.take() {
            note(format!(
                "faults::{}: record kept at {}",
                self.name,
                dir.keep().join("record.txt").display()
            ));
        }
    }
}

/// A dead letter's metadata and original `data`.
#[derive(Debug, Clone)]
struct DeadLetter {
    original_id: String,
    deliveries: String,
    reason: String,
    data: String,
}

/// The number after `"key":` in a JSON log line.
fn json_number(line: &str, key: &str) -> Option<u64> {
    let start = line.find(&format!("\"{key}\":"))? + key.len() + 3;
    let digits: String = line[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

// ---------------------------------------------------------------------------
// 1. kill -9 mid-drain, restart with the same name
// ---------------------------------------------------------------------------

/// A worker killed with SIGKILL in the middle of 10,000 entries and started
/// again under the same consumer name replays its own pending list: every
/// entry is processed, nothing stays pending, and only entries that were
/// pending at the kill are processed twice.
///
/// The bounds: one step reads at most `batch_size` entries and acknowledges
/// them with one `XACK`, and while it processes a full batch the next one
/// is read ahead, unprocessed. So at the kill the consumer's pending list
/// holds at most two batches, and only the one in flight can have been
/// recorded without being acknowledged: at most `batch_size` duplicates.
/// (The test asserts the exact form: every duplicate was in that pending
/// list, and was processed exactly twice.)
#[test]
fn kill_9_mid_drain_then_restart_replays_own_pending() {
    const ENTRIES: usize = 10_000;
    const BATCH: usize = 100;
    let mut scenario = Scenario::new("kill9");
    let settings = [("WORKER_BATCH_SIZE", "100"), ("WORKER_CONCURRENCY", "16")];
    let data: Vec<String> = (0..ENTRIES).map(|n| data(n, "none", 2)).collect();
    let ids = scenario.add(&data);

    let first = scenario.spawn("w1", &settings);
    let record = scenario.record.clone();
    let processed = scenario.wait_for(
        Duration::from_secs(60),
        "the record to show 3,000 calls",
        |_| match Record::count_lines(&record) {
            count if count >= 3_000 => Ok(count),
            count => Err(format!("{count} calls")),
        },
    );
    let first_pid = scenario.pid(first);
    scenario.kill(first);
    let at_kill = scenario.record();
    assert!(
        at_kill.calls.len() < ENTRIES,
        "the worker drained all {ENTRIES} entries before the kill ({processed} when seen): nothing was tested"
    );
    let pending_at_kill = scenario.pending_ids(Some("w1"));
    assert!(
        pending_at_kill.len() <= 2 * BATCH,
        "w1 held {} entries at the kill, more than two batches of {BATCH}",
        pending_at_kill.len()
    );

    let second = scenario.spawn("w1", &settings);
    scenario.wait_drained(ENTRIES, Duration::from_secs(90));
    scenario.assert_all_acknowledged();
    let second_pid = scenario.pid(second);

    let record = scenario.record();
    let counts = record.counts();
    let missing: Vec<&String> = ids
        .iter()
        .filter(|id| !counts.contains_key(id.as_str()))
        .collect();
    assert!(missing.is_empty(), "never processed: {missing:?}");
    let duplicates: BTreeSet<&str> = counts
        .iter()
        .filter(|(_, count)| **count > 1)
        .map(|(id, _)| *id)
        .collect();
    for id in &duplicates {
        assert!(
            pending_at_kill.contains(*id),
            "{id} was processed twice though it was not pending at the kill: {:?}",
            record.pids_of(id)
        );
        assert_eq!(
            record.pids_of(id),
            [first_pid, second_pid],
            "{id}: once before the kill, once after"
        );
    }
    assert!(duplicates.len() <= BATCH);
    for id in &pending_at_kill {
        assert!(
            record.pids_of(id).contains(&second_pid),
            "{id} was pending for w1 at the kill but the restarted w1 did not process it"
        );
    }
    assert_eq!(scenario.redis().xlen(&scenario.dead_letter_stream()), 0);
    scenario.done(format!(
        "killed after {} calls with {} pending; {} duplicates (bound {BATCH})",
        at_kill.calls.len(),
        pending_at_kill.len(),
        duplicates.len()
    ));
}

// ---------------------------------------------------------------------------
// 2. Takeover of a dead consumer's entries
// ---------------------------------------------------------------------------

/// Three workers; one is slow, holds a batch, and is killed with SIGKILL.
/// The two others take its entries over (`XAUTOCLAIM`) within `claim_idle`
/// + `claim_interval` and a margin, and finish them.
#[test]
fn dead_consumers_entries_are_taken_over() {
    const CLAIM_IDLE_MS: u64 = 1_000;
    const CLAIM_INTERVAL_MS: u64 = 200;
    const MARGIN: Duration = Duration::from_millis(1_500);
    let mut scenario = Scenario::new("takeover");
    let claim_idle = CLAIM_IDLE_MS.to_string();
    let claim_interval = CLAIM_INTERVAL_MS.to_string();
    // A blocked read returns within claim_interval, so the claim check is
    // never held up by it.
    let block = CLAIM_INTERVAL_MS.to_string();
    let common = [
        ("WORKER_CLAIM_IDLE_MS", claim_idle.as_str()),
        ("WORKER_CLAIM_INTERVAL_MS", claim_interval.as_str()),
        ("REDIS_BLOCK_TIMEOUT_MS", block.as_str()),
        ("WORKER_BATCH_SIZE", "50"),
    ];
    let slow_env: Vec<(&str, &str)> = common
        .iter()
        .copied()
        .chain([("FAULT_SLEEP_MS", "600000"), ("WORKER_CONCURRENCY", "50")])
        .collect();
    let fast_a = scenario.spawn("fast-a", &common);
    let fast_b = scenario.spawn("fast-b", &common);
    let slow = scenario.spawn("slow", &slow_env);
    let (stream, group) = (scenario.stream.clone(), scenario.group.clone());
    scenario.wait_for(
        Duration::from_secs(30),
        "three consumers in the group",
        |scenario| {
            if scenario.group().is_none() {
                return Err("no group yet".into());
            }
            let consumers = scenario.redis().consumers(&stream, &group);
            (consumers.len() == 3)
                .then_some(())
                .ok_or_else(|| format!("{consumers:?}"))
        },
    );

    // Entries arrive 100 at a time, each lot in one MULTI/EXEC, so the first
    // reader woken takes a whole batch, until the slow worker holds some.
    let mut added: Vec<String> = Vec::new();
    let mut n = 0;
    let held = loop {
        assert!(n < 2_000, "the slow worker never got an entry");
        let chunk: Vec<String> = (n..n + 100).map(|n| data(n, "none", 0)).collect();
        n += 100;
        added.extend(scenario.add_atomically(&chunk));
        let held =
            scenario.wait_for(
                Duration::from_secs(2),
                "entries read",
                |scenario| match scenario.group() {
                    Some(group) if group.lag == Some(0) => Ok(scenario
                        .pending_by_consumer()
                        .get("slow")
                        .copied()
                        .unwrap_or(0)),
                    other => Err(format!("{other:?}")),
                },
            );
        if held > 0 {
            break held;
        }
    };
    let slow_pid = scenario.pid(slow);
    scenario.kill(slow);
    let killed_at = Instant::now();
    let held_ids = scenario.pending_ids(Some("slow"));
    assert_eq!(held_ids.len(), held, "the slow worker's pending list");
    let record_at_kill = scenario.record_live();
    let seen_before = record_at_kill.ids().len();
    for id in &held_ids {
        assert!(
            record_at_kill.pids_of(id).is_empty(),
            "{id} was processed before the takeover could happen"
        );
    }

    // More work arrives while the takeover is due.
    let rest: Vec<String> = (n..1_000).map(|n| data(n, "none", 0)).collect();
    added.extend(scenario.add(&rest));
    let bound = Duration::from_millis(CLAIM_IDLE_MS + CLAIM_INTERVAL_MS) + MARGIN;
    scenario.wait_for(
        bound,
        "the dead consumer's entries to be taken over",
        |scenario| match scenario.pending_by_consumer().get("slow") {
            None | Some(0) => Ok(()),
            Some(count) => Err(format!("slow still holds {count}")),
        },
    );
    let took_over_in = killed_at.elapsed();
    scenario.wait_drained(added.len(), Duration::from_secs(60));
    scenario.assert_all_acknowledged();
    let consumers = scenario.redis().consumers(&stream, &group);
    let slow_info = consumers
        .iter()
        .find(|consumer| consumer.name == "slow")
        .expect("the dead consumer is still listed");
    assert_eq!(slow_info.pending, 0);

    let record = scenario.record();
    let counts = record.counts();
    for id in &added {
        assert!(counts.contains_key(id.as_str()), "{id} never processed");
    }
    let fast_pids = [scenario.pid(fast_a), scenario.pid(fast_b)];
    for id in &held_ids {
        let pids = record.pids_of(id);
        assert!(
            !pids.is_empty() && pids.iter().all(|pid| fast_pids.contains(pid)),
            "{id}, held by the dead worker (pid {slow_pid}), was processed by {pids:?}; fast workers are {fast_pids:?}"
        );
    }
    assert!(
        record.calls.iter().all(|call| call.pid != slow_pid),
        "the slow worker finished an entry"
    );
    let takeover_logs = scenario.log_lines(fast_a, "took over entries").len()
        + scenario.log_lines(fast_b, "took over entries").len();
    assert!(takeover_logs >= 1, "no takeover was logged");
    let duplicates = counts.values().filter(|count| **count > 1).count();
    scenario.done(format!(
        "{held} entries taken over {:.2}s after the kill (bound {:.2}s); {} entries, {seen_before} done at the kill, {duplicates} duplicates",
        took_over_in.as_secs_f64(),
        bound.as_secs_f64(),
        added.len()
    ));
}

// ---------------------------------------------------------------------------
// 3. Redis killed and restarted
// ---------------------------------------------------------------------------

/// `appendfsync always`, set at run time (the harness starts redis-server
/// with append-only on but the default fsync policy).
fn fsync_always(redis: &RedisServer) {
    redis::cmd("CONFIG")
        .arg("SET")
        .arg("appendfsync")
        .arg("always")
        .exec(&mut redis.connect())
        .unwrap();
}

/// Redis killed with SIGKILL mid-run and restarted from its append-only file
/// on the same port: the same worker process reconnects and acknowledges
/// every entry, those added before the crash and those added after.
#[test]
fn redis_killed_and_restarted_the_worker_reconnects() {
    const BEFORE: usize = 3_000;
    const AFTER: usize = 2_000;
    let redis = RedisServer::start_with(RedisOptions { appendonly: true });
    fsync_always(&redis);
    let mut scenario = Scenario::with_redis("redis-restart", Some(redis), None);
    let data_before: Vec<String> = (0..BEFORE).map(|n| data(n, "none", 5)).collect();
    let mut ids = scenario.add(&data_before);
    let worker = scenario.spawn(
        "w1",
        &[
            ("WORKER_BATCH_SIZE", "50"),
            ("WORKER_CONCURRENCY", "8"),
            ("WORKER_RECONNECT_BACKOFF_MS", "100"),
            ("WORKER_RECONNECT_BACKOFF_MAX_MS", "1000"),
        ],
    );
    let pid = scenario.pid(worker);
    let record = scenario.record.clone();
    scenario.wait_for(
        Duration::from_secs(60),
        "the record to show 500 calls",
        |_| match Record::count_lines(&record) {
            count if count >= 500 => Ok(()),
            count => Err(format!("{count} calls")),
        },
    );
    scenario.redis.as_mut().unwrap().kill();
    let at_kill = Record::count_lines(&record);
    assert!(
        at_kill < BEFORE,
        "the worker finished before Redis was killed: nothing was tested"
    );
    // The worker notices and backs off, and keeps running.
    scenario.wait_for(
        Duration::from_secs(10),
        "the worker to log a Redis error",
        |scenario| {
            let lines = scenario.log_lines(worker, "Redis error; backing off");
            (!lines.is_empty())
                .then_some(())
                .ok_or_else(|| "no backoff logged".to_owned())
        },
    );
    thread::sleep(Duration::from_millis(1_500));
    scenario.check_workers();
    scenario.redis.as_mut().unwrap().restart();
    fsync_always(scenario.redis());
    let data_after: Vec<String> = (BEFORE..BEFORE + AFTER)
        .map(|n| data(n, "none", 0))
        .collect();
    ids.extend(scenario.add(&data_after));
    assert_eq!(scenario.redis().xlen(&scenario.stream), BEFORE + AFTER);

    scenario.wait_drained(BEFORE + AFTER, Duration::from_secs(90));
    scenario.assert_all_acknowledged();
    assert_eq!(scenario.pid(worker), pid);
    scenario.worker(worker).assert_running();
    let record = scenario.record();
    let counts = record.counts();
    let missing: Vec<&String> = ids
        .iter()
        .filter(|id| !counts.contains_key(id.as_str()))
        .collect();
    assert!(missing.is_empty(), "never processed: {missing:?}");
    assert!(record.calls.iter().all(|call| call.pid == pid));
    assert!(
        !scenario
            .log_lines(worker, "Redis is reachable again")
            .is_empty(),
        "no reconnect logged"
    );
    assert_eq!(scenario.redis().xlen(&scenario.dead_letter_stream()), 0);
    let backoffs = scenario.log_lines(worker, "Redis error; backing off").len();
    let duplicates = counts.values().filter(|count| **count > 1).count();
    scenario.done(format!(
        "Redis killed after {at_kill} calls; {backoffs} backoffs logged; {} entries, {duplicates} duplicates",
        ids.len()
    ));
}

// ---------------------------------------------------------------------------
// 4-6. Failing logic: retries, dead letters, panics
// ---------------------------------------------------------------------------

/// Settings for the retry scenarios: three deliveries, short backoff.
const RETRY_SETTINGS: &[(&str, &str)] = &[
    ("WORKER_MAX_DELIVERIES", "3"),
    ("WORKER_RETRY_BACKOFF_MS", "50"),
    ("WORKER_RETRY_BACKOFF_MAX_MS", "200"),
    ("WORKER_BATCH_SIZE", "50"),
];

/// Adds `total` entries, every `every`th with `fail` (from the first);
/// returns the IDs of those and of the others.
fn add_with_faults(
    scenario: &Scenario,
    total: usize,
    every: usize,
    fail: &str,
) -> (Vec<String>, Vec<String>) {
    let data: Vec<String> = (0..total)
        .map(|n| data(n, if n % every == 0 { fail } else { "none" }, 0))
        .collect();
    let ids = scenario.add(&data);
    let (mut faulty, mut fine) = (Vec::new(), Vec::new());
    for (n, id) in ids.into_iter().enumerate() {
        if n % every == 0 {
            faulty.push(id);
        } else {
            fine.push(id);
        }
    }
    (faulty, fine)
}

/// Waits until `count` dead letters exist and the group is drained.
fn wait_dead_letters_and_drained(scenario: &mut Scenario, count: usize, total: usize) {
    let dlq = scenario.dead_letter_stream();
    scenario.wait_for(
        Duration::from_secs(30),
        &format!("{count} dead letters"),
        |scenario| match scenario.redis().xlen(&dlq) {
            len if len >= count => Ok(()),
            len => Err(format!("{len} dead letters")),
        },
    );
    scenario.wait_drained(total, Duration::from_secs(30));
    scenario.assert_all_acknowledged();
}

/// Asserts one dead letter per ID of `faulty`, each after 3 deliveries with
/// a reason holding `reason`, and 3 calls per faulty entry, 1 per other.
fn assert_dead_lettered_after_three(
    scenario: &Scenario,
    faulty: &[String],
    fine: &[String],
    reason: &str,
) {
    let letters = scenario.dead_letters();
    let originals: Vec<&str> = letters
        .iter()
        .map(|letter| letter.original_id.as_str())
        .collect();
    let mut expected: Vec<&str> = faulty.iter().map(String::as_str).collect();
    let mut sorted = originals.clone();
    sorted.sort_unstable();
    expected.sort_unstable();
    assert_eq!(sorted, expected, "dead letters: one per faulty entry");
    for letter in &letters {
        assert_eq!(letter.deliveries, "3", "{letter:?}");
        assert!(
            letter.reason.contains("failed 3 deliveries") && letter.reason.contains(reason),
            "reason of {letter:?}"
        );
        assert!(
            letter.data.contains(r#""n":"#),
            "original data kept: {letter:?}"
        );
    }
    let record = scenario.record();
    let counts = record.counts();
    for id in faulty {
        assert_eq!(counts.get(id.as_str()), Some(&3), "calls for faulty {id}");
    }
    for id in fine {
        assert_eq!(
            counts.get(id.as_str()),
            Some(&1),
            "calls for neighbour {id}"
        );
    }
    assert_eq!(record.calls.len(), 3 * faulty.len() + fine.len());
}

/// Entries whose logic always fails are dead-lettered after exactly
/// `max_deliveries` (3) deliveries with the last error; their neighbours
/// are processed once.
#[test]
fn poison_entries_are_dead_lettered_after_max_deliveries() {
    const TOTAL: usize = 200;
    let mut scenario = Scenario::new("poison");
    let worker = scenario.spawn("w1", RETRY_SETTINGS);
    let (poison, fine) = add_with_faults(&scenario, TOTAL, 20, "always");
    wait_dead_letters_and_drained(&mut scenario, poison.len(), TOTAL);
    assert_dead_lettered_after_three(&scenario, &poison, &fine, "injected failure (always)");
    assert_eq!(
        scenario.log_lines(worker, "will retry").len(),
        2 * poison.len()
    );
    scenario.done(format!(
        "{} poison entries dead-lettered after 3 deliveries, {} neighbours once",
        poison.len(),
        fine.len()
    ));
}

/// Entries that fail twice, then succeed, are processed on the third (and
/// last allowed) delivery and never dead-lettered.
#[test]
fn entries_failing_twice_succeed_on_the_third_delivery() {
    const TOTAL: usize = 100;
    let mut scenario = Scenario::new("flaky");
    scenario.spawn("w1", RETRY_SETTINGS);
    let (flaky, fine) = add_with_faults(&scenario, TOTAL, 10, "times:2");
    scenario.wait_drained(TOTAL, Duration::from_secs(30));
    scenario.assert_all_acknowledged();
    assert_eq!(
        scenario.redis().xlen(&scenario.dead_letter_stream()),
        0,
        "dead letters: {:?}",
        scenario.dead_letters()
    );
    let record = scenario.record();
    let counts = record.counts();
    for id in &flaky {
        assert_eq!(counts.get(id.as_str()), Some(&3), "calls for {id}");
    }
    for id in &fine {
        assert_eq!(counts.get(id.as_str()), Some(&1), "calls for {id}");
    }
    scenario.done(format!(
        "{} entries processed on their third call, {} once",
        flaky.len(),
        fine.len()
    ));
}

/// Logic that panics does not take the process down: the entry is retried
/// like any retryable failure, then dead-lettered with "panicked".
#[test]
fn panicking_logic_is_retried_then_dead_lettered() {
    const TOTAL: usize = 100;
    let mut scenario = Scenario::new("panic");
    let worker = scenario.spawn("w1", RETRY_SETTINGS);
    let pid = scenario.pid(worker);
    let (panicking, fine) = add_with_faults(&scenario, TOTAL, 25, "panic");
    wait_dead_letters_and_drained(&mut scenario, panicking.len(), TOTAL);
    scenario.worker(worker).assert_running();
    assert_eq!(scenario.pid(worker), pid);
    assert_dead_lettered_after_three(&scenario, &panicking, &fine, "panicked");
    for letter in scenario.dead_letters() {
        assert!(letter.reason.contains("injected panic"), "{letter:?}");
    }
    assert!(scenario.record().calls.iter().all(|call| call.pid == pid));
    scenario.done(format!(
        "{} panicking entries dead-lettered, process {pid} still running",
        panicking.len()
    ));
}

// ---------------------------------------------------------------------------
// 7. SIGTERM under load
// ---------------------------------------------------------------------------

/// SIGTERM while slow entries are in flight: the worker exits 0 within the
/// shutdown timeout (plus a block timeout and a margin), and no entry is
/// both recorded as processed and left pending: whatever finished was
/// acknowledged, whatever did not stays pending for the next start.
#[test]
fn sigterm_under_load_exits_cleanly_and_acknowledges_what_finished() {
    const TOTAL: usize = 1_000;
    const SHUTDOWN_TIMEOUT_MS: u64 = 3_000;
    let mut scenario = Scenario::new("sigterm");
    let data: Vec<String> = (0..TOTAL).map(|n| data(n, "none", 200)).collect();
    let ids = scenario.add(&data);
    let shutdown_timeout = SHUTDOWN_TIMEOUT_MS.to_string();
    let worker = scenario.spawn(
        "w1",
        &[
            ("WORKER_CONCURRENCY", "20"),
            ("WORKER_SHUTDOWN_TIMEOUT_MS", shutdown_timeout.as_str()),
        ],
    );
    let record = scenario.record.clone();
    scenario.wait_for(
        Duration::from_secs(30),
        "the record to show 40 calls",
        |_| match Record::count_lines(&record) {
            count if count >= 40 => Ok(()),
            count => Err(format!("{count} calls")),
        },
    );
    let signalled = Instant::now();
    scenario.workers[worker].expect_running = false;
    scenario.worker(worker).terminate();
    let bound = Duration::from_millis(SHUTDOWN_TIMEOUT_MS + BLOCK_TIMEOUT_MS + 2_000);
    let status = scenario.worker(worker).wait_for_exit(bound);
    let stopped_in = signalled.elapsed();
    assert!(
        status.success(),
        "exit status {status} after SIGTERM; output:\n{}",
        scenario.worker(worker).output()
    );

    let record = scenario.record();
    let counts = record.counts();
    let twice: Vec<(&&str, &usize)> = counts.iter().filter(|(_, count)| **count > 1).collect();
    assert!(twice.is_empty(), "processed twice: {twice:?}");
    let pending = scenario.pending_ids(None);
    let both: Vec<&String> = pending
        .iter()
        .filter(|id| counts.contains_key(id.as_str()))
        .collect();
    assert!(
        both.is_empty(),
        "processed (recorded) but left pending: {both:?}"
    );
    // Every entry delivered to the group is either done or pending; the
    // others were never read.
    let group = scenario.group().expect("the group");
    let delivered = group.entries_read.expect("entries_read");
    for (index, id) in ids.iter().enumerate() {
        let recorded = counts.contains_key(id.as_str());
        if index < delivered {
            assert!(
                recorded || pending.contains(id),
                "{id} was delivered but is neither processed nor pending"
            );
        } else {
            assert!(!recorded, "{id} was never delivered yet was processed");
        }
    }
    assert_eq!(group.pending, pending.len());
    assert!(
        !pending.is_empty(),
        "nothing was in flight at the deadline: the scenario tested nothing"
    );
    assert!(
        !scenario
            .log_lines(
                worker,
                "shutdown deadline passed; unfinished entries stay pending"
            )
            .is_empty(),
        "the abandoned entries were not logged"
    );
    scenario.done(format!(
        "exit 0 {:.2}s after SIGTERM (bound {:.1}s); {} processed and acknowledged, {} left pending, {} never read",
        stopped_in.as_secs_f64(),
        bound.as_secs_f64(),
        counts.len(),
        pending.len(),
        TOTAL - delivered
    ));
}

// ---------------------------------------------------------------------------
// 8. The stream deleted under the worker
// ---------------------------------------------------------------------------

/// `DEL` of the stream while the worker runs: the worker recreates the group
/// (`NOGROUP`) and processes the entries added afterwards.
#[test]
fn deleted_stream_gets_its_group_back() {
    let mut scenario = Scenario::new("deleted");
    let worker = scenario.spawn("w1", &[]);
    let first: Vec<String> = (0..100).map(|n| data(n, "none", 0)).collect();
    let first_ids = scenario.add(&first);
    scenario.wait_drained(100, Duration::from_secs(30));

    let deleted: usize = redis::cmd("DEL")
        .arg(&scenario.stream)
        .query(&mut scenario.redis().connect())
        .unwrap();
    assert_eq!(deleted, 1);
    let deleted_at = Instant::now();
    scenario.wait_for(
        Duration::from_secs(15),
        "the group to be recreated",
        |scenario| {
            let noticed = !scenario
                .log_lines(worker, "the consumer group is gone")
                .is_empty();
            // Logged just after XGROUP CREATE returned: wait for the line too.
            let created = scenario.log_lines(worker, "consumer group created").len();
            match scenario.group() {
                Some(group) if noticed && created >= 2 => Ok(group),
                other => Err(format!(
                    "noticed: {noticed}, logged as created {created} time(s), group: {other:?}"
                )),
            }
        },
    );
    let recreated_in = deleted_at.elapsed();

    let second: Vec<String> = (100..200).map(|n| data(n, "none", 0)).collect();
    let second_ids = scenario.add(&second);
    scenario.wait_drained(100, Duration::from_secs(30));
    scenario.assert_all_acknowledged();
    let record = scenario.record();
    let counts = record.counts();
    for id in first_ids.iter().chain(&second_ids) {
        assert_eq!(counts.get(id.as_str()), Some(&1), "calls for {id}");
    }
    scenario.done(format!(
        "group recreated {:.2}s after DEL; 100 entries before, 100 after",
        recreated_in.as_secs_f64()
    ));
}

// ---------------------------------------------------------------------------
// 9. Five workers, 50,000 entries
// ---------------------------------------------------------------------------

/// Five workers share 50,000 entries without faults: each is processed
/// exactly once, all are acknowledged, and more than one worker took part.
#[test]
fn five_workers_process_50_000_entries_exactly_once() {
    const TOTAL: usize = 50_000;
    const WORKERS: usize = 5;
    let mut scenario = Scenario::new("five");
    let workers: Vec<usize> = (1..=WORKERS)
        .map(|n| scenario.spawn(&format!("w{n}"), &[("WORKER_BATCH_SIZE", "200")]))
        .collect();
    let (stream, group) = (scenario.stream.clone(), scenario.group.clone());
    scenario.wait_for(
        Duration::from_secs(30),
        "five consumers in the group",
        |scenario| {
            if scenario.group().is_none() {
                return Err("no group yet".into());
            }
            let consumers = scenario.redis().consumers(&stream, &group);
            (consumers.len() == WORKERS)
                .then_some(())
                .ok_or_else(|| format!("{consumers:?}"))
        },
    );
    let data: Vec<String> = (0..TOTAL).map(|n| data(n, "none", 0)).collect();
    let adding = Instant::now();
    let ids = scenario.add(&data);
    let added_in = adding.elapsed();
    scenario.wait_drained(TOTAL, Duration::from_secs(150));
    let drained_in = adding.elapsed();
    scenario.assert_all_acknowledged();

    let record = scenario.record();
    assert_eq!(record.calls.len(), TOTAL, "one call per entry");
    let recorded = record.ids();
    assert_eq!(recorded.len(), TOTAL, "distinct IDs recorded");
    assert!(ids.iter().all(|id| recorded.contains(id.as_str())));
    let mut per_pid: HashMap<u32, usize> = HashMap::new();
    for call in &record.calls {
        *per_pid.entry(call.pid).or_insert(0) += 1;
    }
    let pids: HashSet<u32> = workers.iter().map(|&index| scenario.pid(index)).collect();
    assert!(per_pid.keys().all(|pid| pids.contains(pid)));
    assert!(
        per_pid.len() > 1,
        "one worker did all the work: {per_pid:?}"
    );
    assert_eq!(scenario.redis().xlen(&scenario.dead_letter_stream()), 0);
    let mut shares: Vec<usize> = per_pid.values().copied().collect();
    shares.sort_unstable_by(|a, b| b.cmp(a));
    scenario.done(format!(
        "added in {:.2}s, drained in {:.1}s; calls per worker {shares:?}",
        added_in.as_secs_f64(),
        drained_in.as_secs_f64()
    ));
}

// ---------------------------------------------------------------------------
// 10. Redis not there yet
// ---------------------------------------------------------------------------

/// A scale-down as an autoscaler does it: three workers named like pods,
/// two get SIGTERM mid-stream. Each drains and leaves the group once it
/// holds nothing, so stopped pods' consumers do not pile up; nothing is
/// lost, and the survivor drains the stream.
#[test]
fn scaled_down_workers_leave_the_group_and_lose_nothing() {
    const TOTAL: usize = 1_500;
    let pods = [
        "orders-worker-7d9f8c6b5-x2k4q",
        "orders-worker-7d9f8c6b5-m8n3z",
        "orders-worker-7d9f8c6b5-p5r7t",
    ];
    let mut scenario = Scenario::new("scale-down");
    let data: Vec<String> = (0..TOTAL).map(|n| data(n, "none", 20)).collect();
    let ids = scenario.add(&data);
    // Small batches, so that a stopping worker holds a few entries, not
    // the stream.
    let workers: Vec<usize> = pods
        .iter()
        .map(|pod| {
            scenario.spawn(
                pod,
                &[("WORKER_CONCURRENCY", "4"), ("WORKER_BATCH_SIZE", "10")],
            )
        })
        .collect();
    let record = scenario.record.clone();
    scenario.wait_for(
        Duration::from_secs(30),
        "the record to show 150 calls",
        |_| match Record::count_lines(&record) {
            count if count >= 150 => Ok(()),
            count => Err(format!("{count} calls")),
        },
    );
    for &worker in &workers[..2] {
        scenario.workers[worker].expect_running = false;
        scenario.worker(worker).terminate();
    }
    for &worker in &workers[..2] {
        let status = scenario
            .worker(worker)
            .wait_for_exit(Duration::from_secs(40));
        assert!(
            status.success(),
            "exit status {status} after SIGTERM:\n{}",
            scenario.worker(worker).output()
        );
    }
    let at_stop = Record::count_lines(&record);
    assert!(
        at_stop < TOTAL,
        "the stream was drained before the scale-down: nothing was tested"
    );
    let consumers: Vec<String> = scenario
        .redis()
        .consumers(&scenario.stream, &scenario.group)
        .into_iter()
        .map(|consumer| consumer.name)
        .collect();
    assert_eq!(consumers, [pods[2]], "the stopped pods' consumers remain");
    for &worker in &workers[..2] {
        let logs = scenario.worker(worker).output();
        assert!(
            logs.contains("left the consumer group"),
            "{}:\n{logs}",
            pods[worker]
        );
    }

    scenario.wait_drained(TOTAL, Duration::from_secs(90));
    scenario.assert_all_acknowledged();
    let record = scenario.record();
    let counts = record.counts();
    let missing: Vec<&String> = ids
        .iter()
        .filter(|id| !counts.contains_key(id.as_str()))
        .collect();
    assert!(missing.is_empty(), "never processed: {missing:?}");
    let survivor = scenario.pid(workers[2]);
    let after_stop = record
        .calls
        .iter()
        .skip(at_stop)
        .filter(|call| call.pid == survivor)
        .count();
    scenario.done(format!(
        "{at_stop} calls before two of three stopped, the survivor made {after_stop} of the rest"
    ));
}

/// A worker started before Redis retries with a logged, growing backoff and
/// starts consuming as soon as Redis appears.
#[test]
fn worker_started_before_redis_waits_and_then_consumes() {
    const BACKOFF_MS: u64 = 200;
    const BACKOFF_MAX_MS: u64 = 800;
    // Built first, so the port is picked just before it is used.
    worker_binary();
    let port = unused_port();
    let mut scenario = Scenario::with_redis(
        "late-redis",
        None,
        Some(format!("redis://127.0.0.1:{port}")),
    );
    let backoff = BACKOFF_MS.to_string();
    let backoff_max = BACKOFF_MAX_MS.to_string();
    // Until Redis first answers, attempts after the first are logged at
    // debug only: the worker's module at debug shows every one.
    let worker = scenario.spawn(
        "w1",
        &[
            ("WORKER_RECONNECT_BACKOFF_MS", backoff.as_str()),
            ("WORKER_RECONNECT_BACKOFF_MAX_MS", backoff_max.as_str()),
            ("RUST_LOG", "info,redis_streams_runtime::worker=debug"),
        ],
    );
    scenario.wait_for(
        Duration::from_secs(20),
        "two backoffs logged",
        |scenario| match scenario.log_lines(worker, "Redis error; backing off").len() {
            count if count >= 2 => Ok(()),
            count => Err(format!("{count} backoffs logged")),
        },
    );
    scenario.redis = Some(RedisServer::start_on(port, RedisOptions::default()));
    let redis_up = Instant::now();
    let data: Vec<String> = (0..100).map(|n| data(n, "none", 0)).collect();
    let ids = scenario.add(&data);
    // At most one full backoff away, plus a margin.
    let bound = Duration::from_millis(BACKOFF_MAX_MS + 3_000);
    scenario.wait_drained(ids.len(), bound);
    let consumed_in = redis_up.elapsed();
    scenario.assert_all_acknowledged();

    let backoffs = scenario.log_lines(worker, "Redis error; backing off");
    for (index, line) in backoffs.iter().enumerate() {
        let attempt =
            json_number(line, "attempt").unwrap_or_else(|| panic!("no attempt in {line}"));
        assert_eq!(attempt, index as u64 + 1, "attempts are numbered: {line}");
        let delay =
            json_number(line, "retry_in_ms").unwrap_or_else(|| panic!("no retry_in_ms in {line}"));
        let full = (BACKOFF_MS << (attempt - 1).min(16)).min(BACKOFF_MAX_MS);
        assert!(
            delay >= full / 2 && delay <= full,
            "attempt {attempt}: {delay} ms, expected {}..={full}: {line}",
            full / 2
        );
    }
    assert!(
        !scenario
            .log_lines(worker, "Redis is reachable again")
            .is_empty(),
        "no reconnect logged"
    );
    let counts = scenario.record().counts().len();
    assert_eq!(counts, ids.len());
    scenario.done(format!(
        "{} backoffs logged before Redis started; consumed {} entries {:.2}s after it did",
        backoffs.len(),
        ids.len(),
        consumed_in.as_secs_f64()
    ));
}

// ---------------------------------------------------------------------------
// 12. Business logic that hangs, crawls or crashes
// ---------------------------------------------------------------------------

/// Settings of the scenarios below: the retry settings, calls bounded to
/// 300 ms.
const HOSTILE_SETTINGS: &[(&str, &str)] = &[
    ("WORKER_MAX_DELIVERIES", "3"),
    ("WORKER_RETRY_BACKOFF_MS", "50"),
    ("WORKER_RETRY_BACKOFF_MAX_MS", "200"),
    ("WORKER_BATCH_SIZE", "50"),
    ("WORKER_PROCESS_TIMEOUT_MS", "300"),
];

/// Calls that never return are dropped after `process_timeout_ms` and count
/// as retryable failures: the hanging entries are dead-lettered after three
/// deliveries with the timeout as their reason, every neighbour is
/// processed once, and the worker goes on reading.
#[test]
fn hanging_logic_times_out_and_the_worker_goes_on() {
    const TOTAL: usize = 100;
    let mut scenario = Scenario::new("hang");
    scenario.spawn("w1", HOSTILE_SETTINGS);
    let (hanging, fine) = add_with_faults(&scenario, TOTAL, 25, "hang");
    wait_dead_letters_and_drained(&mut scenario, hanging.len(), TOTAL);
    assert_dead_lettered_after_three(&scenario, &hanging, &fine, "timed out after 300 ms");
    let more = scenario.add(&[data(TOTAL, "none", 0)]);
    scenario.wait_drained(TOTAL + 1, Duration::from_secs(10));
    assert_eq!(scenario.record().counts().get(more[0].as_str()), Some(&1));
    scenario.done(format!(
        "{} hanging entries timed out three times and were dead-lettered",
        hanging.len()
    ));
}

/// Entries are acknowledged as they finish: one slow entry of a batch holds
/// back only its own acknowledgement, not its 49 neighbours'.
#[test]
fn entries_are_acknowledged_as_they_finish() {
    const TOTAL: usize = 50;
    const SLOW_MS: u64 = 10_000;
    let mut scenario = Scenario::new("ack_as_finished");
    scenario.spawn(
        "w1",
        &[("WORKER_BATCH_SIZE", "50"), ("WORKER_CONCURRENCY", "8")],
    );
    let mut entries = vec![data(0, "none", SLOW_MS)];
    entries.extend((1..TOTAL).map(|n| data(n, "none", 0)));
    let ids = scenario.add_atomically(&entries);
    scenario.wait_for(
        Duration::from_secs(30),
        "the batch read",
        |scenario| match scenario.group() {
            Some(group) if group.entries_read.is_some_and(|read| read >= TOTAL) => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );
    // Well before the slow entry finishes, only it is pending.
    let pending = scenario.wait_for(
        Duration::from_millis(SLOW_MS / 2),
        "every entry but the slow one acknowledged",
        |scenario| match scenario.pending_ids(None) {
            pending if pending.len() == 1 => Ok(pending),
            pending => Err(format!("{} pending", pending.len())),
        },
    );
    assert_eq!(
        pending.into_iter().collect::<Vec<_>>(),
        vec![ids[0].clone()]
    );
    scenario.wait_drained(TOTAL, Duration::from_secs(30));
    scenario.done("49 entries acknowledged while the slow one ran");
}

/// A dead-letter write that fails (here the dead-letter key holds a string:
/// `WRONGTYPE`, as a maxmemory or ACL refusal would) holds back nothing but
/// its own entry: the successful entries are acknowledged, the permanent
/// failure stays pending, and is dead-lettered once Redis accepts it.
#[test]
fn failing_dead_letter_writes_hold_back_only_their_entry() {
    const TOTAL: usize = 20;
    let mut scenario = Scenario::new("dlq_refused");
    let dlq = scenario.dead_letter_stream();
    let _: () = redis::cmd("SET")
        .arg(&dlq)
        .arg("not a stream")
        .query(&mut scenario.redis().connect())
        .unwrap();
    scenario.spawn("w1", HOSTILE_SETTINGS);
    let (refused, _fine) = add_with_faults(&scenario, TOTAL, TOTAL, "permanent");
    let pending = scenario.wait_for(
        Duration::from_secs(30),
        "every entry but the permanent failure acknowledged",
        |scenario| match scenario.group() {
            Some(group) if group.entries_read.is_some_and(|read| read >= TOTAL) => {
                match scenario.pending_ids(None) {
                    pending if pending.len() == 1 => Ok(pending),
                    pending => Err(format!("{} pending", pending.len())),
                }
            }
            other => Err(format!("{other:?}")),
        },
    );
    assert_eq!(pending.into_iter().collect::<Vec<_>>(), refused);
    let _: () = redis::cmd("DEL")
        .arg(&dlq)
        .query(&mut scenario.redis().connect())
        .unwrap();
    wait_dead_letters_and_drained(&mut scenario, 1, TOTAL);
    let letters = scenario.dead_letters();
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0].original_id, refused[0]);
    scenario.done("19 entries acknowledged while the dead-letter write failed");
}

/// A live worker keeps its entries however long they take: with calls of
/// 3 s and a `claim_idle_ms` of 1 s, a second worker scanning for idle
/// entries every 200 ms takes none of them over, and every entry is
/// processed once, by the worker that read it.
#[test]
fn slow_but_live_workers_keep_their_entries() {
    const TOTAL: usize = 8;
    let mut scenario = Scenario::new("slow_live");
    let settings = [
        ("WORKER_CLAIM_IDLE_MS", "1000"),
        ("WORKER_CLAIM_INTERVAL_MS", "200"),
        ("WORKER_PROCESS_TIMEOUT_MS", "10000"),
        ("WORKER_CONCURRENCY", "4"),
    ];
    let first = scenario.spawn("w1", &settings);
    let entries: Vec<String> = (0..TOTAL).map(|n| data(n, "none", 3_000)).collect();
    let ids = scenario.add_atomically(&entries);
    scenario.wait_for(
        Duration::from_secs(30),
        "w1 to hold every entry",
        |scenario| {
            if scenario.group().is_none() {
                return Err("no group yet".to_owned());
            }
            match scenario.pending_by_consumer().get("w1") {
                Some(&held) if held == TOTAL => Ok(()),
                other => Err(format!("w1 holds {other:?}")),
            }
        },
    );
    let second = scenario.spawn("w2", &settings);
    scenario.wait_drained(TOTAL, Duration::from_secs(30));
    let record = scenario.record();
    let first_pid = scenario.pid(first);
    for id in &ids {
        assert_eq!(record.pids_of(id), vec![first_pid], "calls for {id}");
    }
    assert!(
        scenario.log_lines(second, "took over entries").is_empty(),
        "w2 took over entries of a live worker"
    );
    assert_eq!(scenario.redis().xlen(&scenario.dead_letter_stream()), 0);
    scenario.done("8 entries of 3 s each kept by their live worker against claim_idle 1 s");
}

/// A worker frozen for longer than `claim_idle_ms` (SIGSTOP here; a long
/// pause or a cut-off network look the same to Redis) loses the entries it
/// was processing to another consumer, and once it wakes its heartbeat
/// leaves them there: from the takeover on they stay the other consumer's
/// in `XPENDING`, the woken worker logs each one as taken over, and no
/// entry is processed more than twice (once by each worker).
///
/// `w2` beats half as often as `w1` (`claim_idle_ms` 2 s against 1 s): a
/// heartbeat that claimed whatever it was given would hand the entries back
/// to `w1` for at least half of the watch, so polling cannot miss it.
#[test]
fn a_frozen_worker_that_wakes_leaves_taken_over_entries_alone() {
    const TOTAL: usize = 4;
    /// Long enough that `w1`'s calls are still running when it wakes and
    /// for the whole watch after that.
    const CALL_MS: u64 = 12_000;
    const WATCH: Duration = Duration::from_secs(2);
    let mut scenario = Scenario::new("frozen_takeover");
    let settings = |claim_idle_ms: &'static str| {
        [
            ("WORKER_CLAIM_IDLE_MS", claim_idle_ms),
            ("WORKER_CLAIM_INTERVAL_MS", "200"),
            ("WORKER_PROCESS_TIMEOUT_MS", "30000"),
            ("WORKER_CONCURRENCY", "8"),
        ]
    };
    let first = scenario.spawn("w1", &settings("1000"));
    let entries: Vec<String> = (0..TOTAL).map(|n| data(n, "none", CALL_MS)).collect();
    let ids: BTreeSet<String> = scenario.add_atomically(&entries).into_iter().collect();
    scenario.wait_for(
        Duration::from_secs(30),
        "w1 to hold every entry",
        |scenario| {
            if scenario.group().is_none() {
                return Err("no group yet".to_owned());
            }
            match scenario.pending_ids(Some("w1")) {
                held if held == ids => Ok(()),
                held => Err(format!("w1 holds {held:?}")),
            }
        },
    );
    let second = scenario.spawn("w2", &settings("2000"));
    let (stream, group) = (scenario.stream.clone(), scenario.group.clone());
    scenario.wait_for(Duration::from_secs(30), "w2 in the group", |scenario| {
        let consumers = scenario.redis().consumers(&stream, &group);
        if consumers.iter().any(|consumer| consumer.name == "w2") {
            Ok(())
        } else {
            Err(format!("{consumers:?}"))
        }
    });

    scenario.worker(first).signal(libc::SIGSTOP);
    let frozen = Instant::now();
    scenario.wait_for(
        Duration::from_secs(20),
        "w2 to take over w1's entries",
        |scenario| match scenario.pending_ids(Some("w2")) {
            held if held == ids => Ok(()),
            held => Err(format!("w2 holds {held:?}")),
        },
    );
    scenario.worker(first).signal(libc::SIGCONT);
    let frozen_for = frozen.elapsed();

    // Watch through several heartbeats of each worker.
    let woke = Instant::now();
    while woke.elapsed() < WATCH {
        scenario.check_workers();
        let by_w1 = scenario.pending_ids(Some("w1"));
        assert!(
            by_w1.is_empty(),
            "{:?} after waking, w1 took back {by_w1:?}, which w2 had taken over and is processing",
            woke.elapsed()
        );
        assert_eq!(scenario.pending_ids(Some("w2")), ids, "w2's pending list");
        thread::sleep(Duration::from_millis(20));
    }
    assert!(
        scenario.record_live().calls.is_empty(),
        "a call ended during the watch; make CALL_MS longer"
    );

    // w1's calls end first and are acknowledged; w2's end later.
    scenario.wait_drained(TOTAL, Duration::from_secs(60));
    let record_file = scenario.record.clone();
    scenario.wait_for(
        Duration::from_secs(30),
        "w2's calls to end",
        |_| match Record::count_lines(&record_file) {
            calls if calls >= 2 * TOTAL => Ok(()),
            calls => Err(format!("{calls} calls")),
        },
    );
    scenario.assert_all_acknowledged();
    let record = scenario.record();
    let mut pids = [scenario.pid(first), scenario.pid(second)];
    pids.sort_unstable();
    for id in &ids {
        let mut calls = record.pids_of(id);
        calls.sort_unstable();
        assert_eq!(calls, pids, "the processes that called {id}");
    }
    let warnings = scenario.log_lines(first, "taken over by another consumer");
    for id in &ids {
        let count = warnings.iter().filter(|line| line.contains(id)).count();
        assert_eq!(count, 1, "warnings naming {id}: {warnings:#?}");
    }
    assert_eq!(warnings.len(), TOTAL, "{warnings:#?}");
    scenario.done(format!(
        "{TOTAL} entries stayed w2's after w1 woke from a {frozen_for:.1?} freeze"
    ));
}

/// Waits until the business logic was called `calls` times in all.
fn wait_for_calls(scenario: &mut Scenario, calls: usize) {
    let record = scenario.record.clone();
    scenario.wait_for(Duration::from_secs(30), &format!("{calls} calls"), |_| {
        match Record::count_lines(&record) {
            done if done >= calls => Ok(()),
            done => Err(format!("{done} calls")),
        }
    });
}

/// The retry delay counts from the failure: an entry that fails after
/// 2 s, with a 2 s backoff, is called again no sooner than 2 s after that
/// failure (counted from its delivery it would be due at once).
#[test]
fn retry_backoff_counts_from_the_failure() {
    let mut scenario = Scenario::new("backoff_from_failure");
    scenario.spawn(
        "w1",
        &[
            ("WORKER_RETRY_BACKOFF_MS", "2000"),
            ("WORKER_RETRY_BACKOFF_MAX_MS", "2000"),
            ("WORKER_PROCESS_TIMEOUT_MS", "10000"),
        ],
    );
    scenario.add(&[data(0, "times:1", 2_000)]);
    wait_for_calls(&mut scenario, 1);
    let failed = Instant::now();
    wait_for_calls(&mut scenario, 2);
    let gap = failed.elapsed();
    // The retry waits 2 s from the failure, then its call takes 2 s.
    assert!(
        gap >= Duration::from_millis(3_800),
        "the second call ended {gap:?} after the failure"
    );
    scenario.wait_drained(1, Duration::from_secs(10));
    scenario.done(format!("retried {gap:?} after the failure"));
}

/// A lost connection does not cut a retry's backoff short: an entry waiting
/// out a 4 s backoff is not called again at each reconnect while the link
/// flaps (the worker's connections cut three times), so a flaky link
/// cannot burn through `max_deliveries` and dead-letter it early.
#[test]
fn reconnects_keep_the_retry_backoff() {
    let mut scenario = Scenario::new("backoff_over_reconnects");
    scenario.spawn(
        "w1",
        &[
            ("WORKER_RETRY_BACKOFF_MS", "4000"),
            ("WORKER_RETRY_BACKOFF_MAX_MS", "4000"),
            ("WORKER_MAX_DELIVERIES", "3"),
            ("WORKER_RECONNECT_BACKOFF_MS", "50"),
        ],
    );
    scenario.add(&[data(0, "times:1", 0)]);
    let record = scenario.record.clone();
    wait_for_calls(&mut scenario, 1);
    let failed = Instant::now();
    let mut admin = scenario.redis().connect();
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(600));
        let killed: u64 = redis::cmd("CLIENT")
            .arg(&["KILL", "TYPE", "normal", "SKIPME", "yes"])
            .query(&mut admin)
            .unwrap();
        assert!(killed > 0, "no connection of the worker to cut");
    }
    std::thread::sleep(Duration::from_millis(3_000).saturating_sub(failed.elapsed()));
    assert_eq!(
        Record::count_lines(&record),
        1,
        "called again {:?} after the failure, before its 4 s backoff",
        failed.elapsed()
    );
    scenario.wait_drained(1, Duration::from_secs(20));
    assert!(scenario.dead_letters().is_empty());
    assert_eq!(Record::count_lines(&record), 2);
    scenario.done("no retry before the backoff over three reconnects");
}

/// An entry that kills the process on every delivery (`abort`, as an OOM
/// kill or a segfault in a C library would) is dead-lettered alone: the
/// worker runs under a restart loop, as a supervisor would run it, and
/// after `max_deliveries` crashes only that entry is in the dead-letter
/// stream; every other entry of its batch is processed and acknowledged.
#[test]
fn an_entry_that_kills_the_process_is_dead_lettered_alone() {
    let settings = [
        ("WORKER_MAX_DELIVERIES", "3"),
        ("WORKER_BATCH_SIZE", "100"),
        ("WORKER_CONCURRENCY", "16"),
    ];
    crash_isolation("crash_isolation", "w1", &settings, 3);
}

/// The same with the default consumer name: every restart has a new name,
/// so what the dead runs left is taken over (`claim_idle_ms` later), not
/// replayed. An entry taken over a second time is processed alone; the
/// crashing one is dead-lettered alone after four starts.
#[test]
fn an_entry_that_kills_the_process_is_dead_lettered_alone_when_taken_over() {
    let settings = [
        ("WORKER_MAX_DELIVERIES", "3"),
        ("WORKER_BATCH_SIZE", "100"),
        ("WORKER_CONCURRENCY", "16"),
        ("WORKER_CLAIM_IDLE_MS", "300"),
        ("WORKER_CLAIM_INTERVAL_MS", "100"),
        ("WORKER_DELETE_IDLE_CONSUMERS_MS", "300"),
    ];
    crash_isolation("crash_isolation_claimed", "", &settings, 3);
}

/// Runs the worker called `consumer` (empty: the default name) under a
/// restart loop over 100 entries, one of which aborts the process; checks
/// that only that one is dead-lettered, after `crashes` crashes, and that
/// every other entry was processed and acknowledged.
fn crash_isolation(name: &'static str, consumer: &str, settings: &[(&str, &str)], crashes: usize) {
    const TOTAL: usize = 100;
    const CRASHING: usize = 50;
    let mut scenario = Scenario::new(name);
    let mut settings = settings.to_vec();
    if consumer.is_empty() {
        settings.push(("REDIS_CONSUMER_NAME", ""));
    }
    let entries: Vec<String> = (0..TOTAL)
        .map(|n| data(n, if n == CRASHING { "abort" } else { "none" }, 0))
        .collect();
    // Added before the first start: one batch holds them all.
    let ids = scenario.add(&entries);
    let expected_crashes = crashes;
    let mut crashes = 0;
    loop {
        let label = format!("run-{crashes}");
        let index = if consumer.is_empty() {
            scenario.spawn(&label, &settings)
        } else {
            scenario.spawn(consumer, &settings)
        };
        let crashed = wait_until(
            Duration::from_secs(60),
            "the worker to crash or drain the stream",
            || {
                if let Some(status) = scenario.worker(index).try_status() {
                    return Ok(Some(status));
                }
                match scenario.group() {
                    Some(group)
                        if group.pending == 0
                            && group.lag == Some(0)
                            && group.entries_read.is_some_and(|read| read >= TOTAL) =>
                    {
                        Ok(None)
                    }
                    other => Err(format!("{other:?}")),
                }
            },
        );
        match crashed {
            Some(status) => {
                scenario.workers[index].expect_running = false;
                crashes += 1;
                assert!(
                    crashes <= 5,
                    "still crashing after {crashes} starts: {status}"
                );
            }
            None => break,
        }
    }
    scenario.assert_all_acknowledged();
    let letters = scenario.dead_letters();
    let originals: Vec<&str> = letters.iter().map(|l| l.original_id.as_str()).collect();
    assert_eq!(originals, vec![ids[CRASHING].as_str()], "dead letters");
    assert_eq!(crashes, expected_crashes, "one crash per allowed delivery");
    let record = scenario.record();
    let counts = record.counts();
    assert_eq!(counts.get(ids[CRASHING].as_str()), Some(&3));
    for (n, id) in ids.iter().enumerate().filter(|(n, _)| *n != CRASHING) {
        assert!(
            counts.contains_key(id.as_str()),
            "entry {n} never processed"
        );
    }
    scenario.done(format!(
        "{crashes} crashes; the crashing entry dead-lettered alone, {} others processed",
        TOTAL - 1
    ));
}

/// Removing idle consumers is housekeeping: when it fails (here the
/// worker's ACL user may not run `XINFO`), the entries just taken over from
/// a dead consumer are still processed, once each, and acknowledged.
#[test]
fn a_failing_idle_consumer_removal_drops_no_claimed_entry() {
    const TOTAL: usize = 20;
    let mut scenario = Scenario::new("removal_refused");
    let mut redis = scenario.redis().connect();
    let _: () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg("worker")
        .arg("on")
        .arg(">secret")
        .arg("~*")
        .arg("&*")
        .arg("+@all")
        .arg("-xinfo")
        .query(&mut redis)
        .unwrap();
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&scenario.stream)
        .arg(&scenario.group)
        .arg("0")
        .arg("MKSTREAM")
        .query(&mut redis)
        .unwrap();
    let entries: Vec<String> = (0..TOTAL).map(|n| data(n, "none", 0)).collect();
    let ids = scenario.add(&entries);
    // A consumer that read them all and died.
    let _: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg(&scenario.group)
        .arg("dead")
        .arg("COUNT")
        .arg(TOTAL)
        .arg("STREAMS")
        .arg(&scenario.stream)
        .arg(">")
        .query(&mut redis)
        .unwrap();
    scenario.url = format!(
        "redis://worker:secret@127.0.0.1:{}",
        scenario.redis().port()
    );
    let worker = scenario.spawn(
        "w1",
        &[
            ("WORKER_CLAIM_IDLE_MS", "500"),
            ("WORKER_CLAIM_INTERVAL_MS", "100"),
            ("WORKER_DELETE_IDLE_CONSUMERS_MS", "500"),
        ],
    );
    scenario.wait_drained(TOTAL, Duration::from_secs(20));
    scenario.assert_all_acknowledged();
    let record = scenario.record();
    let counts = record.counts();
    for id in &ids {
        assert_eq!(counts.get(id.as_str()), Some(&1), "calls for {id}");
    }
    assert!(
        !scenario
            .log_lines(worker, "cannot remove idle consumers")
            .is_empty(),
        "the removal was tried and failed"
    );
    scenario.done("20 entries taken over and processed while the removal failed");
}

/// The status code and body of `GET path` on 127.0.0.1:`port`.
fn http_get(port: u16, path: &str) -> Result<(u16, String), String> {
    use std::io::{Read, Write};
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .map_err(|error| format!("connect {addr}: {error}"))?;
    let timeout = Some(Duration::from_secs(5));
    stream.set_read_timeout(timeout).unwrap();
    stream.set_write_timeout(timeout).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|error| format!("send GET {path}: {error}"))?;
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .map_err(|error| format!("read the answer to GET {path}: {error}"))?;
    let response = String::from_utf8_lossy(&response);
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no end of headers in {response:?}"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("no status in {head:?}"))?;
    Ok((status, body.to_owned()))
}

/// A handler that blocks its thread freezes the loop where no timeout can
/// reach it: `/healthz` answers 200 until the loop has made no progress for
/// longer than the processing timeout plus its margin (17 s here), then
/// 503, so a liveness probe restarts the worker.
#[test]
fn a_frozen_loop_turns_healthz_unhealthy() {
    let mut scenario = Scenario::new("frozen");
    let port = unused_port();
    let addr = format!("127.0.0.1:{port}");
    scenario.spawn(
        "w1",
        &[
            ("METRICS_ADDR", addr.as_str()),
            ("WORKER_PROCESS_TIMEOUT_MS", "500"),
            ("WORKER_RECONNECT_BACKOFF_MAX_MS", "500"),
        ],
    );
    scenario.wait_for(
        Duration::from_secs(30),
        "/healthz 200",
        |_| match http_get(port, "/healthz") {
            Ok((200, _)) => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );
    scenario.add(&[data(0, "block", 0)]);
    let record = scenario.record.clone();
    scenario.wait_for(
        Duration::from_secs(30),
        "the blocking call",
        |_| match Record::count_lines(&record) {
            0 => Err("no call yet".to_owned()),
            _ => Ok(()),
        },
    );
    let blocked = Instant::now();
    assert_eq!(
        http_get(port, "/healthz").map(|(status, _)| status),
        Ok(200)
    );
    let body = scenario.wait_for(Duration::from_secs(60), "/healthz 503", |_| match http_get(
        port, "/healthz",
    ) {
        Ok((503, body)) => Ok(body),
        other => Err(format!("{other:?}")),
    });
    let after = blocked.elapsed();
    assert!(
        after >= Duration::from_secs(15),
        "unhealthy {after:?} after the block"
    );
    assert!(body.contains("no progress"), "{body}");
    scenario.done(format!("/healthz 503 {after:?} after the loop froze"));
}

/// A group destroyed under a running worker (`XGROUP DESTROY`; the stream
/// and its entries stay) is recreated at the last entry the worker read:
/// with `group_start_id` `0` the 100 entries already done are not replayed,
/// and the entries added after the loss are processed.
#[test]
fn a_lost_group_comes_back_where_the_worker_left_off() {
    let mut scenario = Scenario::new("group_lost");
    let worker = scenario.spawn("w1", &[("WORKER_GROUP_START_ID", "0")]);
    let first: Vec<String> = (0..100).map(|n| data(n, "none", 0)).collect();
    let first_ids = scenario.add(&first);
    scenario.wait_drained(100, Duration::from_secs(30));
    let destroyed: usize = redis::cmd("XGROUP")
        .arg("DESTROY")
        .arg(&scenario.stream)
        .arg(&scenario.group)
        .query(&mut scenario.redis().connect())
        .unwrap();
    assert_eq!(destroyed, 1);
    let second: Vec<String> = (100..150).map(|n| data(n, "none", 0)).collect();
    let second_ids = scenario.add(&second);
    let record = scenario.record.clone();
    scenario.wait_for(
        Duration::from_secs(30),
        "the entries added after the loss",
        |scenario| {
            let created = scenario.log_lines(worker, "consumer group created").len();
            match (created, scenario.group()) {
                (2.., Some(group))
                    if group.pending == 0
                        && group.lag == Some(0)
                        && Record::count_lines(&record) >= 150 =>
                {
                    Ok(())
                }
                (created, group) => Err(format!(
                    "created {created} time(s), {} calls, {group:?}",
                    Record::count_lines(&record)
                )),
            }
        },
    );
    let record = scenario.record();
    let counts = record.counts();
    for id in first_ids.iter().chain(&second_ids) {
        assert_eq!(counts.get(id.as_str()), Some(&1), "calls for {id}");
    }
    assert_eq!(record.calls.len(), 150);
    scenario.done("group recreated at the last entry read; nothing replayed, nothing skipped");
}

/// A start against a Redis at its `maxmemory` (writes that allocate are
/// refused) where the group exists writes nothing to check it, and
/// consumes: reading and acknowledging work at `maxmemory`.
#[test]
fn a_start_at_maxmemory_with_an_existing_group_consumes() {
    const TOTAL: usize = 20;
    let mut scenario = Scenario::new("maxmemory_start");
    let mut redis = scenario.redis().connect();
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&scenario.stream)
        .arg(&scenario.group)
        .arg("0")
        .arg("MKSTREAM")
        .query(&mut redis)
        .unwrap();
    let entries: Vec<String> = (0..TOTAL).map(|n| data(n, "none", 0)).collect();
    let ids = scenario.add(&entries);
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg("1")
        .query(&mut redis)
        .unwrap();
    let refused: redis::RedisResult<()> = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&scenario.stream)
        .arg("another-group")
        .arg("0")
        .arg("MKSTREAM")
        .query(&mut redis);
    assert!(
        refused.is_err_and(|error| error.code() == Some("OOM")),
        "Redis must refuse writes that allocate"
    );
    scenario.spawn("w1", &[]);
    scenario.wait_drained(TOTAL, Duration::from_secs(30));
    let counts = scenario.record().counts().len();
    assert_eq!(counts, ids.len());
    scenario.done("20 entries consumed at maxmemory");
}

/// The string after `"key":` in a JSON log line.
fn json_string(line: &str, key: &str) -> Option<String> {
    let start = line.find(&format!("\"{key}\":\""))? + key.len() + 4;
    let end = line[start..].find('"')?;
    Some(line[start..start + end].to_owned())
}

/// A second process started under a consumer name a live one holds is
/// refused at start, with an error that says so; the first goes on.
/// Waits until `worker` logged that it started (it holds its name).
fn wait_started(scenario: &mut Scenario, worker: usize) {
    scenario.wait_for(
        Duration::from_secs(30),
        "the worker to start",
        |scenario| match scenario.log_lines(worker, "worker started").len() {
            0 => Err("not yet".to_owned()),
            _ => Ok(()),
        },
    );
}

/// A holder paused for longer than the name's lifetime, while a second
/// process takes the name, does not go on consuming beside it when it
/// wakes: it finishes what it holds and exits non-zero, saying why; the
/// second goes on alone and processes everything once.
#[test]
fn a_process_that_lost_its_name_stops_consuming() {
    let mut scenario = Scenario::new("name_lost");
    let first = scenario.spawn("twin", &[]);
    wait_started(&mut scenario, first);
    scenario.worker(first).signal(libc::SIGSTOP);
    // The name's key lapses (6 s without a refresh); the second waits to
    // see its holder gone, then takes the name.
    let second = scenario.spawn("twin", &[]);
    wait_started(&mut scenario, second);
    scenario.worker(first).signal(libc::SIGCONT);
    scenario.workers[first].expect_running = false;
    let status = scenario
        .worker(first)
        .wait_for_exit(Duration::from_secs(20));
    assert!(!status.success(), "the first process exited with {status}");
    let output = scenario.worker(first).output();
    assert!(
        output.contains("another process took consumer name `twin`"),
        "{output}"
    );
    scenario.worker(second).assert_running();
    let entries: Vec<String> = (0..20).map(|n| data(n, "none", 0)).collect();
    let ids = scenario.add(&entries);
    scenario.wait_drained(20, Duration::from_secs(20));
    for id in &ids {
        assert_eq!(scenario.record().pids_of(id), vec![scenario.pid(second)]);
    }
    scenario.done("the paused `twin` stopped once it found its name taken");
}

#[test]
fn a_second_process_under_a_live_name_is_refused() {
    let mut scenario = Scenario::new("name_taken");
    let first = scenario.spawn("twin", &[]);
    wait_started(&mut scenario, first);
    let second = scenario.spawn("twin", &[]);
    scenario.workers[second].expect_running = false;
    let status = scenario
        .worker(second)
        .wait_for_exit(Duration::from_secs(20));
    assert!(!status.success(), "the second process exited with {status}");
    let output = scenario.worker(second).output();
    assert!(
        output.contains("consumer name `twin` is held by another live process"),
        "{output}"
    );
    assert!(scenario.log_lines(second, "worker started").is_empty());
    scenario.worker(first).assert_running();
    let ids = scenario.add(&[data(0, "none", 0)]);
    scenario.wait_drained(1, Duration::from_secs(10));
    assert_eq!(
        scenario.record().pids_of(&ids[0]),
        vec![scenario.pid(first)]
    );
    scenario.done("the second `twin` was refused at start");
}

/// Two processes with the default consumer name on one host, each PID 1
/// of its own PID namespace (containers on the host's network), get
/// distinct names and share the stream.
#[test]
fn default_names_differ_between_pid_1_processes_on_one_host() {
    const TOTAL: usize = 200;
    let mut scenario = Scenario::new("pid_1");
    let wrapper = ["unshare", "--pid", "--fork", "--kill-child"];
    let unset = [("REDIS_CONSUMER_NAME", "")];
    let workers = [
        scenario.spawn_wrapped(&wrapper, "pid-1-a", &unset),
        scenario.spawn_wrapped(&wrapper, "pid-1-b", &unset),
    ];
    let names: Vec<String> = workers
        .iter()
        .map(|&index| {
            scenario.wait_for(Duration::from_secs(30), "the worker to start", |scenario| {
                scenario
                    .log_lines(index, "worker started")
                    .first()
                    .and_then(|line| json_string(line, "consumer"))
                    .ok_or_else(|| "not yet".to_owned())
            })
        })
        .collect();
    assert_ne!(names[0], names[1]);
    for name in &names {
        assert!(name.contains("-1"), "PID 1 in {name}");
    }
    let entries: Vec<String> = (0..TOTAL).map(|n| data(n, "none", 5)).collect();
    scenario.add(&entries);
    scenario.wait_drained(TOTAL, Duration::from_secs(30));
    let record = scenario.record();
    assert!(record.counts().values().all(|&calls| calls == 1));
    scenario.done(format!(
        "two PID 1 workers named {} and {}",
        names[0], names[1]
    ));
}
