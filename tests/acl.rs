//! The worker and the operator's commands as ACL users with exactly the
//! rules the generated README gives: keys limited to the stream and its
//! dead letters, only the commands each sends.
//!
//! As its user the worker replays its own pending entries after a `kill -9`,
//! takes over a dead consumer's entries, dead-letters poison and removes
//! idle consumers. As the operator's user every operator command runs:
//! `status`, `send`, `dlq list`, `replay` and `purge`, `trim` in each form
//! and `config`, on one server and on a cluster (with what the README adds
//! to the rule there). `ACL LOG` stays empty, no output says NOPERM, and
//! the operator's rule allows no command that none of them sends.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use common::cluster::RedisCluster;
use common::{
    Process, RedisServer, build_fault_worker, number_after, repo_root, scrub_env, wait_until,
};

const PROJECT: &str = "acl-worker";
const USER: &str = "acl-worker";
const PASSWORD: &str = "acl-secret";
const STREAM: &str = "acl:orders";
const GROUP: &str = "acl-group";

/// How long each phase may take.
const DEADLINE: Duration = Duration::from_secs(60);

/// The fault-injecting worker, generated and built once for both tests.
fn fault_worker() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| build_fault_worker(PROJECT))
}

/// The worker's `ACL SETUSER` line of the template's README, for this
/// test's user, password and stream: the arguments after `ACL SETUSER`.
fn worker_rule() -> Vec<String> {
    readme_rule("{{worker_name}}")
}

/// Creates a user for each `ACL SETUSER` argument list in `rules`, then
/// empties `ACL LOG`, so that whatever it holds later was refused to them.
fn set_users(admin: &mut redis::Connection, rules: &[Vec<String>]) {
    for rule in rules {
        redis::cmd("ACL")
            .arg("SETUSER")
            .arg(rule)
            .exec(admin)
            .unwrap_or_else(|error| panic!("ACL SETUSER {rule:?}: {error}"));
    }
    redis::cmd("ACL")
        .arg("LOG")
        .arg("RESET")
        .exec(admin)
        .unwrap();
}

/// The `ACL SETUSER` line of the template's README for the user `user`
/// (as the README spells it, with Liquid), for this test's names and
/// password: the arguments after `ACL SETUSER`.
fn readme_rule(user: &str) -> Vec<String> {
    let readme = fs::read_to_string(repo_root().join("template/README.md")).unwrap();
    let start = format!("ACL SETUSER {user} on");
    let line = readme
        .lines()
        .find(|line| line.starts_with(&start))
        .unwrap_or_else(|| panic!("the README gives no rule `{start} ...`"));
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
    let binary = fault_worker();
    let redis = RedisServer::start();
    let mut admin = redis.connect();
    set_users(&mut admin, &[worker_rule()]);
    let dir = tempfile::Builder::new()
        .prefix("template-test-acl-")
        .tempdir_in(std::env::temp_dir())
        .unwrap();
    let run = Run {
        binary,
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
    assert!(
        !keeper.output().to_lowercase().contains("noperm"),
        "{}",
        keeper.output()
    );
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
        assert!(
            !output.to_lowercase().contains("noperm"),
            "a NOPERM:\n{output}"
        );
    }
    keeper.terminate();
    let status = keeper.wait_for_exit(Duration::from_secs(30));
    assert!(status.success(), "{}", keeper.output());
}

// ---------------------------------------------------------------------------
// The operator's commands
// ---------------------------------------------------------------------------

/// The operator's user, as the README names it.
fn operator_user() -> String {
    format!("{USER}-operator")
}

/// The commands `rule` allows (`xinfo|groups`, ...): its `+` arguments.
fn allowed_commands(rule: &[String]) -> BTreeSet<String> {
    rule.iter()
        .filter_map(|argument| argument.strip_prefix('+'))
        .map(str::to_lowercase)
        .collect()
}

/// `ACL LOG`, one line per entry: whose command was refused, and why.
fn acl_log(admin: &mut redis::Connection) -> Vec<String> {
    let entries: Vec<HashMap<String, redis::Value>> =
        redis::cmd("ACL").arg("LOG").query(admin).unwrap();
    entries
        .iter()
        .map(|entry| {
            let field = |name: &str| match entry.get(name) {
                Some(redis::Value::BulkString(bytes)) => {
                    String::from_utf8_lossy(bytes).into_owned()
                }
                Some(other) => format!("{other:?}"),
                None => "?".to_owned(),
            };
            format!(
                "user {} refused `{}` (reason: {}, context: {})",
                field("username"),
                field("object"),
                field("reason"),
                field("context")
            )
        })
        .collect()
}

/// How often each command (`xinfo|groups`, ...) was called so far, refused
/// calls included, from `INFO commandstats`; commands run inside scripts
/// count too.
fn command_calls(admin: &mut redis::Connection) -> BTreeMap<String, u64> {
    let info: String = redis::cmd("INFO").arg("commandstats").query(admin).unwrap();
    info.lines()
        .filter_map(|line| {
            let (name, stats) = line.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = stats
                .split(',')
                .filter_map(|stat| stat.split_once('='))
                .filter(|(key, _)| matches!(*key, "calls" | "rejected_calls"))
                .filter_map(|(_, value)| value.parse::<u64>().ok())
                .sum();
            Some((name.to_owned(), calls))
        })
        .collect()
}

/// The binary's operator commands as the operator's user, each checked
/// against `ACL LOG` and its output, with the Redis commands each sent.
struct Operator<'a> {
    binary: &'a Path,
    /// `REDIS_URL`: every node, with the operator's user and password.
    url: String,
    /// Whether the nodes are a Redis Cluster.
    cluster: bool,
    /// The dead-letter stream the commands use.
    dead_letter_stream: String,
    /// The default user's connection to every node, for `ACL LOG` and
    /// `INFO`.
    admins: Vec<redis::Connection>,
    /// Each Redis command sent, with the operator commands that sent it.
    sent: BTreeMap<String, BTreeSet<String>>,
}

impl Operator<'_> {
    /// The operator on `nodes`, one server or the nodes of a cluster.
    fn new<'a>(binary: &'a Path, nodes: &[RedisServer], cluster: bool) -> Operator<'a> {
        let user = operator_user();
        let url = nodes
            .iter()
            .map(|node| format!("redis://{user}:{PASSWORD}@127.0.0.1:{}", node.port()))
            .collect::<Vec<_>>()
            .join(",");
        Operator {
            binary,
            url,
            cluster,
            // As the worker names it: on a cluster the stream is its hash tag.
            dead_letter_stream: if cluster {
                format!("{{{STREAM}}}:dlq")
            } else {
                format!("{STREAM}:dlq")
            },
            admins: nodes.iter().map(RedisServer::connect).collect(),
            sent: BTreeMap::new(),
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(self.binary);
        scrub_env(&mut command);
        command
            .args(args)
            .env("REDIS_URL", &self.url)
            .env("REDIS_CLUSTER", self.cluster.to_string())
            .env("REDIS_STREAM", STREAM)
            .env("REDIS_CONSUMER_GROUP", GROUP);
        command
    }

    /// How often each command was called so far, on all nodes together.
    fn command_calls(&mut self) -> BTreeMap<String, u64> {
        let mut total = BTreeMap::new();
        for admin in &mut self.admins {
            for (name, calls) in command_calls(admin) {
                *total.entry(name).or_default() += calls;
            }
        }
        total
    }

    /// `ACL LOG` of every node.
    fn acl_log(&mut self) -> Vec<String> {
        self.admins.iter_mut().flat_map(acl_log).collect()
    }

    /// Runs `what`, which returns the output of one operator command `label`;
    /// notes the Redis commands it sent, and fails if `ACL LOG` has an entry
    /// or the output says NOPERM.
    fn watched(&mut self, label: &str, what: impl FnOnce(&Self) -> String) -> String {
        let before = self.command_calls();
        let output = what(self);
        let after = self.command_calls();
        for (name, calls) in after {
            // `INFO` is this test's own; `AUTH` needs no permission.
            if calls > before.get(&name).copied().unwrap_or(0) && name != "info" && name != "auth" {
                self.sent.entry(name).or_default().insert(label.to_owned());
            }
        }
        let log = self.acl_log();
        assert!(
            log.is_empty(),
            "`{label}` as {} was refused by the README's operator rule:\n{}\noutput:\n{output}",
            operator_user(),
            log.join("\n")
        );
        // redis-rs spells the error kind `NoPerm`.
        assert!(
            !output.to_lowercase().contains("noperm"),
            "`{label}`: a NOPERM:\n{output}"
        );
        output
    }

    /// Runs the binary with `args` to the end, with `stdin` as its input.
    fn run(&mut self, args: &[&str], stdin: &str) -> (Output, String) {
        let mut command = self.command(args);
        let mut output = None;
        let text = self.watched(&args.join(" "), |_| {
            let mut child = command
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("the binary starts");
            child
                .stdin
                .take()
                .unwrap()
                .write_all(stdin.as_bytes())
                .unwrap();
            let done = child.wait_with_output().unwrap();
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&done.stdout),
                String::from_utf8_lossy(&done.stderr)
            );
            output = Some(done);
            text
        });
        (output.unwrap(), text)
    }

    /// Runs `args`, which must succeed; returns standard output.
    fn succeeds(&mut self, args: &[&str]) -> String {
        self.succeeds_with_input(args, "")
    }

    /// Runs `args` with `stdin`, which must succeed; returns standard output.
    fn succeeds_with_input(&mut self, args: &[&str], stdin: &str) -> String {
        let (output, text) = self.run(args, stdin);
        assert!(
            output.status.success(),
            "`{}` as {} failed ({}):\n{text}",
            args.join(" "),
            operator_user(),
            output.status
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Runs `args`, which must fail saying `reason`; returns its output.
    fn refuses(&mut self, args: &[&str], reason: &str) -> String {
        let (output, text) = self.run(args, "");
        assert!(
            !output.status.success() && text.contains(reason),
            "`{}` should have refused ({reason}) but ended with {}:\n{text}",
            args.join(" "),
            output.status
        );
        text
    }
}

/// The IDs of the first `count` entries of `stream`.
fn first_ids(node: &mut redis::Connection, stream: &str, count: usize) -> Vec<String> {
    let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg(stream)
        .arg("-")
        .arg("+")
        .arg("COUNT")
        .arg(count)
        .query(node)
        .unwrap();
    reply.ids.into_iter().map(|entry| entry.id).collect()
}

/// `XLEN key` (0 for a key that does not exist).
fn xlen(node: &mut redis::Connection, key: &str) -> usize {
    redis::cmd("XLEN").arg(key).query(node).unwrap()
}

/// Adds a dead letter of `group` for the entry `original_id` to
/// `dead_letter_stream`, in the format the worker writes.
fn add_dead_letter(
    node: &mut redis::Connection,
    dead_letter_stream: &str,
    original_id: &str,
    group: &str,
    data: &str,
) {
    redis::cmd("XADD")
        .arg(dead_letter_stream)
        .arg("*")
        .arg(&[
            ("dlq.original_id", original_id),
            ("dlq.stream", STREAM),
            ("dlq.group", group),
            ("dlq.consumer", "c"),
            ("dlq.deliveries", "1"),
            ("dlq.reason", "downstream said no"),
            ("dlq.failed_at_ms", "1700000000000"),
            ("data", data),
        ])
        .exec(node)
        .unwrap();
}

/// `config` and `status` before there is a stream, then an entry from 2023
/// (for `trim --max-age`, added on `node`, which holds the stream) and
/// `send` in each form: an argument, lines on stdin and `--count 300`.
/// Three of the entries ask to fail (`n` 1001, 1002, 1004).
fn config_status_and_send(operator: &mut Operator, node: &mut redis::Connection) {
    let config = operator.succeeds(&["config"]);
    assert!(
        config.contains(&format!("redis.stream = {STREAM}")),
        "{config}"
    );
    let status = operator.succeeds(&["status"]);
    assert!(status.contains("no consumer groups"), "{status}");

    let old = data(1000, "none", 0);
    redis::cmd("XADD")
        .arg(&[STREAM, "1700000000000-0", "data", old.as_str()])
        .exec(node)
        .unwrap();
    let sent = operator.succeeds(&["send", &data(1001, "permanent", 0)]);
    assert!(sent.contains("added 1 entries"), "{sent}");
    let lines = [
        data(1002, "permanent", 0),
        data(1003, "none", 0),
        data(1004, "permanent", 0),
    ]
    .join("\n");
    let sent = operator.succeeds_with_input(&["send"], &lines);
    assert!(sent.contains("added 3 entries"), "{sent}");
    let sent = operator.succeeds(&["send", "--count", "300"]);
    assert!(sent.contains("added 300 entries"), "{sent}");
}

/// With the group at the end of the stream, `consumer` in it, and three
/// dead letters of it: `status` in each form, `dlq` in each form and `trim`
/// in each form, ending with an empty stream. `node` holds the stream and
/// its dead letters.
fn status_dlq_and_trim(operator: &mut Operator, node: &mut redis::Connection, consumer: &str) {
    // One dead letter of another group: replays for this group leave it,
    // a purge deletes it.
    let dead_letter_stream = operator.dead_letter_stream.clone();
    let first = first_ids(node, STREAM, 1).remove(0);
    add_dead_letter(
        node,
        &dead_letter_stream,
        &first,
        "audit",
        &data(1000, "none", 0),
    );

    // status, once, as JSON and refreshed in place.
    let status = operator.succeeds(&["status"]);
    assert!(
        status.contains(&format!("group {GROUP}: lag 0, pending 0"))
            && status.contains(consumer)
            && status.contains("dead letters 4"),
        "{status}"
    );
    let json = operator.succeeds(&["status", "--json"]);
    let parsed: serde_norway::Value =
        serde_norway::from_str(&json).unwrap_or_else(|error| panic!("{error}: {json}"));
    assert_eq!(parsed["dead_letters"].as_u64(), Some(4), "{json}");
    assert_eq!(parsed["groups"][0]["name"].as_str(), Some(GROUP), "{json}");
    assert_eq!(
        parsed["groups"][0]["consumers"][0]["name"].as_str(),
        Some(consumer),
        "{json}"
    );
    let watch = operator.command(&["status", "--watch", "--interval", "1"]);
    let watched = operator.watched("status --watch", |_| {
        let mut watch = Process::spawn("status --watch", watch);
        wait_until(DEADLINE, "a refresh of status --watch", || {
            watch.assert_running();
            let out = watch.stdout();
            if out.contains("refreshing every 1s") && out.contains("acknowledged/s") {
                Ok(())
            } else {
                Err(watch.output())
            }
        });
        watch.terminate();
        let status = watch.wait_for_exit(DEADLINE);
        assert!(status.success(), "{}", watch.output());
        watch.output()
    });
    assert!(watched.contains(&format!("group {GROUP}")), "{watched}");

    // dlq: list, replay (dry run, one by ID, the rest of the group's),
    // purge.
    let list = operator.succeeds(&["dlq", "list"]);
    let mine: Vec<&str> = list
        .lines()
        .filter(|line| line.contains(&format!("  group {GROUP}  ")))
        .filter_map(|line| line.split_whitespace().next())
        .collect();
    assert_eq!(mine.len(), 3, "{list}");
    assert!(list.contains("group audit"), "{list}");
    let json = operator.succeeds(&["dlq", "list", "--json", "--count", "10"]);
    let parsed: serde_norway::Value =
        serde_norway::from_str(&json).unwrap_or_else(|error| panic!("{error}: {json}"));
    assert_eq!(parsed.as_sequence().map(Vec::len), Some(4), "{json}");
    let dry = operator.succeeds(&["dlq", "replay", "--dry-run"]);
    assert!(dry.contains("dry run: would move 3 dead letters"), "{dry}");
    assert_eq!(xlen(node, &dead_letter_stream), 4, "a dry run moved");
    let one = operator.succeeds(&["dlq", "replay", mine[0]]);
    assert!(one.contains("moved 1 dead letters"), "{one}");
    let rest = operator.succeeds(&["dlq", "replay"]);
    assert!(rest.contains("moved 2 dead letters"), "{rest}");
    let purged = operator.succeeds(&["dlq", "purge", "--yes"]);
    assert!(purged.contains("deleted 1 dead letters"), "{purged}");
    assert_eq!(xlen(node, &dead_letter_stream), 0);

    // trim. The three replays at the end of the stream are not delivered
    // to the group yet (no worker runs): a trim past them refuses.
    let length = xlen(node, STREAM);
    assert_eq!(length, 1 + 1 + 3 + 300 + 3);
    operator.refuses(
        &["trim", "--maxlen", "0"],
        &format!("undelivered in group(s) {GROUP}; nothing was removed"),
    );
    assert_eq!(xlen(node, STREAM), length, "a refused trim removed entries");
    // One of them delivered and not acknowledged: pending, it refuses too.
    redis::cmd("XREADGROUP")
        .arg(&["GROUP", GROUP, "holder", "COUNT", "1"])
        .arg(&["STREAMS", STREAM, ">"])
        .exec(node)
        .unwrap();
    operator.refuses(
        &["trim", "--maxlen", "1"],
        &format!("still pending or undelivered in group(s) {GROUP}"),
    );
    assert_eq!(xlen(node, STREAM), length, "a refused trim removed entries");
    let dry = operator.succeeds(&["trim", "--maxlen", "0", "--dry-run"]);
    assert!(
        dry.contains("without --force the trim would refuse"),
        "{dry}"
    );
    let aged = operator.succeeds(&["trim", "--max-age", "1d", "--exact"]);
    assert_eq!(number_after(&aged, "removed"), 1, "{aged}");
    let keep = (length - 1 - 2).to_string();
    let dry = operator.succeeds(&["trim", "--maxlen", &keep, "--exact", "--dry-run"]);
    assert!(dry.contains("dry run: would remove 2 entries"), "{dry}");
    let third = first_ids(node, STREAM, 3).remove(2);
    let cut = operator.succeeds(&["trim", "--minid", &third, "--exact"]);
    assert_eq!(number_after(&cut, "removed"), 2, "{cut}");
    let approximate = operator.succeeds(&["trim", "--maxlen", "10"]);
    assert!(
        number_after(&approximate, "removed") > 0,
        "whole nodes before the cut: {approximate}"
    );
    let forced = operator.succeeds(&["trim", "--maxlen", "0", "--exact", "--force"]);
    assert!(
        forced.contains(&format!("not yet processed by group(s) {GROUP}")),
        "{forced}"
    );
    assert_eq!(xlen(node, STREAM), 0, "{forced}");
}

/// Fails unless the commands `rule` allows are those the operator's
/// commands sent, but for `unused_here` (allowed, and not needed in this
/// test's conditions).
fn assert_exactly_what_was_sent(operator: &Operator, rule: &[String], unused_here: &[&str]) {
    let allowed = allowed_commands(rule);
    let sent: BTreeSet<String> = operator.sent.keys().cloned().collect();
    let by_whom = |commands: &BTreeSet<&String>| -> String {
        commands
            .iter()
            .map(|command| match operator.sent.get(*command) {
                Some(senders) => format!("{command} (sent by {senders:?})"),
                None => command.to_string(),
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let unlisted: BTreeSet<&String> = sent.difference(&allowed).collect();
    assert!(
        unlisted.is_empty(),
        "the README's operator rule does not name every command sent: {}",
        by_whom(&unlisted)
    );
    let unused: BTreeSet<&String> = allowed
        .difference(&sent)
        .filter(|command| !unused_here.contains(&command.as_str()))
        .collect();
    assert!(
        unused.is_empty(),
        "the README's operator rule allows commands no operator command sent: {}",
        by_whom(&unused)
    );
}

#[test]
fn the_operator_commands_need_exactly_the_readme_operator_rule() {
    let binary = fault_worker();
    let redis = RedisServer::start();
    let mut admin = redis.connect();
    let operator_rule = readme_rule("{{worker_name}}-operator");
    // Both users, as the README sets them up: the worker makes the dead
    // letters the operator then handles.
    set_users(&mut admin, &[worker_rule(), operator_rule.clone()]);
    let dir = tempfile::Builder::new()
        .prefix("template-test-acl-operator-")
        .tempdir_in(std::env::temp_dir())
        .unwrap();
    let mut operator = Operator::new(binary, std::slice::from_ref(&redis), false);

    config_status_and_send(&mut operator, &mut admin);
    // The worker, as its own user, dead-letters the three that fail.
    let run = Run {
        binary,
        redis: &redis,
        dir: dir.path(),
    };
    let mut worker = run.spawn("drainer", &[]);
    let fine: BTreeSet<u64> = (0..300).chain([1000, 1003]).collect();
    run.wait_drained(&fine, 3, &mut worker);
    worker.terminate();
    assert!(
        worker.wait_for_exit(DEADLINE).success(),
        "{}",
        worker.output()
    );
    // Holding nothing, it left the group at its stop, as its own user.
    assert!(
        redis.consumers(STREAM, GROUP).is_empty(),
        "the stopped worker's consumer remains:\n{}",
        worker.output()
    );
    redis::cmd("XGROUP")
        .arg(&["CREATECONSUMER", STREAM, GROUP, "reader"])
        .exec(&mut admin)
        .unwrap();
    status_dlq_and_trim(&mut operator, &mut admin, "reader");

    // `select` only where the URL names a database other than 0.
    assert_exactly_what_was_sent(&operator, &operator_rule, &["select"]);
    let log = acl_log(&mut admin);
    assert!(log.is_empty(), "ACL LOG:\n{}", log.join("\n"));
}

/// A `REDIS_URL` naming a database other than 0 makes every connection
/// send `SELECT`: the README's rules allow it, for the worker and for the
/// operator, and everything happens in that database.
#[test]
fn both_rules_serve_a_database_other_than_0() {
    const DB: u8 = 3;
    let binary = fault_worker();
    let redis = RedisServer::start();
    let mut admin = redis.connect();
    set_users(
        &mut admin,
        &[worker_rule(), readme_rule("{{worker_name}}-operator")],
    );
    let mut node = redis::Client::open(format!("{}/{DB}", redis.url()))
        .unwrap()
        .get_connection()
        .unwrap();
    let dir = tempfile::Builder::new()
        .prefix("template-test-acl-db-")
        .tempdir_in(std::env::temp_dir())
        .unwrap();
    let run = Run {
        binary,
        redis: &redis,
        dir: dir.path(),
    };
    let url = format!("redis://{USER}:{PASSWORD}@127.0.0.1:{}/{DB}", redis.port());
    let mut worker = run.spawn("selecting", &[("REDIS_URL", &url)]);

    let mut operator = Operator::new(binary, std::slice::from_ref(&redis), false);
    operator.url = format!("{}/{DB}", operator.url);
    let sent = operator.succeeds(&["send", "--count", "20"]);
    assert!(sent.contains("added 20 entries"), "{sent}");
    wait_until(DEADLINE, "the entries processed in database 3", || {
        worker.assert_running();
        let info: redis::streams::StreamInfoGroupsReply = redis::cmd("XINFO")
            .arg("GROUPS")
            .arg(STREAM)
            .query(&mut node)
            .map_err(|error| error.to_string())?;
        match info.groups.first() {
            Some(group) if group.lag == Some(0) && group.pending == 0 => Ok(()),
            other => Err(format!("group {other:?}")),
        }
    });
    let status = operator.succeeds(&["status"]);
    assert!(status.contains(GROUP), "{status}");
    assert_eq!(redis.xlen(STREAM), 0, "nothing lands in database 0");
    assert!(operator.sent.contains_key("select"), "{:?}", operator.sent);

    worker.terminate();
    assert!(
        worker.wait_for_exit(DEADLINE).success(),
        "{}",
        worker.output()
    );
    let log = acl_log(&mut admin);
    assert!(log.is_empty(), "ACL LOG:\n{}", log.join("\n"));
    assert!(
        !worker.output().to_lowercase().contains("noperm"),
        "{}",
        worker.output()
    );
}

/// What the README adds to the operator's rule on a cluster: the words of
/// "On a cluster add `...`" after that rule.
fn readme_cluster_additions() -> Vec<String> {
    let readme = fs::read_to_string(repo_root().join("template/README.md")).unwrap();
    let readme = readme.split_whitespace().collect::<Vec<_>>().join(" ");
    let rule = readme
        .find("ACL SETUSER {{worker_name}}-operator on")
        .expect("the README gives the operator's rule");
    let sentence = "On a cluster add `";
    let start = readme[rule..]
        .find(sentence)
        .map(|at| rule + at + sentence.len())
        .unwrap_or_else(|| panic!("no \"{sentence}...`\" after the operator's rule"));
    let end = start + readme[start..].find('`').unwrap();
    readme[start..end]
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// The same on a Redis Cluster of three masters, with the operator's rule
/// changed as the README says for a cluster: the cluster's dead-letter
/// name in the key pattern, and the commands it adds. The dead letters are
/// written as the worker writes them; `ASKING` is only sent while a slot
/// moves, so it goes unused here.
#[test]
fn the_operator_commands_on_a_cluster_need_the_readme_rule_and_its_cluster_additions() {
    let binary = fault_worker();
    let cluster = RedisCluster::start(3);
    let mut operator = Operator::new(binary, cluster.servers(), true);
    let plain_dead_letters = format!("~{STREAM}:dlq");
    let mut operator_rule: Vec<String> = readme_rule("{{worker_name}}-operator")
        .into_iter()
        .map(|argument| {
            if argument == plain_dead_letters {
                format!("~{}", operator.dead_letter_stream)
            } else {
                argument
            }
        })
        .collect();
    operator_rule.extend(readme_cluster_additions());
    for node in cluster.servers() {
        set_users(&mut node.connect(), std::slice::from_ref(&operator_rule));
    }
    let mut node = cluster.connect_for(STREAM);

    config_status_and_send(&mut operator, &mut node);
    // The group at the end of the stream, a consumer in it, and a dead
    // letter of it for each entry that asked to fail.
    redis::cmd("XGROUP")
        .arg(&["CREATE", STREAM, GROUP, "$"])
        .exec(&mut node)
        .unwrap();
    redis::cmd("XGROUP")
        .arg(&["CREATECONSUMER", STREAM, GROUP, "reader"])
        .exec(&mut node)
        .unwrap();
    let dead_letter_stream = operator.dead_letter_stream.clone();
    for (id, n) in first_ids(&mut node, STREAM, 5).iter().zip(1000..).skip(1) {
        if n != 1003 {
            add_dead_letter(
                &mut node,
                &dead_letter_stream,
                id,
                GROUP,
                &data(n, "permanent", 0),
            );
        }
    }
    status_dlq_and_trim(&mut operator, &mut node, "reader");

    assert_exactly_what_was_sent(&operator, &operator_rule, &["asking", "select"]);
    let log = operator.acl_log();
    assert!(log.is_empty(), "ACL LOG:\n{}", log.join("\n"));
}
