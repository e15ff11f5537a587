//! The operator's commands as someone runs them on a busy production stream:
//! the generated binary against private redis-servers, while producers keep
//! writing, while other operators run the same command, with several
//! consumer groups on one stream, and with passwords in every URL form.
//!
//! The default variant is generated once as `operator-worker` and built;
//! each scenario has a redis-server and a stream of its own.

mod common;

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use common::{
    Process, RedisServer, cargo, debug_binary, generate_with, note, number_after, scrub_env,
    unused_port, variant, wait_until,
};
use redis::streams::StreamRangeReply;

/// The generated project and binary name.
const PROJECT: &str = "operator-worker";

/// The worker binary, generated and built on first use.
fn binary() -> &'static Path {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let built = BUILT.get_or_init(|| {
        std::panic::catch_unwind(|| {
            let started = Instant::now();
            let project = generate_with(PROJECT, variant("default").defines);
            cargo(&project, &["build"]);
            note(format!(
                "operator: `{PROJECT}` generated and built in {:.1}s",
                started.elapsed().as_secs_f64()
            ));
            debug_binary(PROJECT)
        })
        .map_err(|panic| {
            panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|text| (*text).to_owned()))
                .unwrap_or_else(|| "a panic without a message".to_owned())
        })
    });
    match built {
        Ok(binary) => binary,
        Err(error) => panic!("the operator worker could not be built: {error}"),
    }
}

/// A command of the binary with only the given environment.
fn command(env: &[(&str, &str)], args: &[&str]) -> Command {
    let mut command = Command::new(binary());
    scrub_env(&mut command);
    command.args(args).envs(env.iter().copied());
    command
}

/// Runs the binary to the end, without standard input.
fn run(env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut command = command(env, args);
    command.stdin(std::process::Stdio::null());
    command.output().expect("the binary starts")
}

/// Its standard output, after checking that it succeeded.
fn succeeded(output: &Output) -> String {
    assert!(
        output.status.success(),
        "failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Both outputs as text.
fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Every entry ID of `stream`, oldest first.
fn all_ids(redis: &RedisServer, stream: &str) -> Vec<String> {
    let reply: StreamRangeReply = redis::cmd("XRANGE")
        .arg(stream)
        .arg("-")
        .arg("+")
        .query(&mut redis.connect())
        .unwrap();
    reply.ids.into_iter().map(|entry| entry.id).collect()
}

// ---------------------------------------------------------------------------
// trim while producers write
// ---------------------------------------------------------------------------

/// Producers adding entries in pipelined batches from the moment the
/// watched command reaches Redis until told to stop.
struct Producers {
    stop: Arc<AtomicBool>,
    started: Arc<AtomicBool>,
    threads: Vec<thread::JoinHandle<Vec<String>>>,
}

impl Producers {
    /// `count` producers that start writing as soon as Redis receives a
    /// command containing `trigger` (seen with `MONITOR`), so they write
    /// while the command's client works, not before it looks.
    fn start_on(redis: &RedisServer, stream: &str, count: usize, trigger: &str) -> Producers {
        let stop = Arc::new(AtomicBool::new(false));
        let started = Arc::new(AtomicBool::new(false));
        let mut monitor = redis.connect();
        redis::cmd("MONITOR").exec(&mut monitor).unwrap();
        let (go, trigger) = (Arc::clone(&started), trigger.to_owned());
        thread::spawn(move || {
            while let Ok(value) = monitor.recv_response() {
                if let redis::Value::SimpleString(line) = value
                    && line.contains(&trigger)
                {
                    go.store(true, Ordering::SeqCst);
                    return;
                }
            }
        });
        let threads = (0..count)
            .map(|producer| {
                let mut connection = redis.connect();
                let (stop, go) = (Arc::clone(&stop), Arc::clone(&started));
                let stream = stream.to_owned();
                thread::spawn(move || {
                    while !go.load(Ordering::SeqCst) && !stop.load(Ordering::SeqCst) {
                        thread::yield_now();
                    }
                    let mut added = Vec::new();
                    while !stop.load(Ordering::SeqCst) {
                        let mut pipe = redis::pipe();
                        for n in 0..50 {
                            pipe.cmd("XADD")
                                .arg(&stream)
                                .arg("*")
                                .arg("data")
                                .arg(format!(r#"{{"producer":{producer},"n":{n}}}"#));
                        }
                        let ids: Vec<String> = pipe.query(&mut connection).unwrap();
                        added.extend(ids);
                        // Tens of thousands a second, not millions: enough
                        // to move the newest entries on every round trip.
                        thread::sleep(Duration::from_millis(1));
                    }
                    added
                })
            })
            .collect();
        Producers {
            stop,
            started,
            threads,
        }
    }

    /// Stops them; returns every ID they added.
    fn stop(self) -> Vec<String> {
        self.stop.store(true, Ordering::SeqCst);
        assert!(
            self.started.load(Ordering::SeqCst),
            "the producers never started"
        );
        self.threads
            .into_iter()
            .flat_map(|thread| thread.join().expect("a producer panicked"))
            .collect()
    }
}

/// A stream of `initial` entries of which the group `g` has received and
/// acknowledged the first `delivered`; `trim --maxlen <initial -
/// delivered>` starts, a cut exactly where the group stands when it
/// starts, and producers write while it runs. Nothing the group has not
/// received may go, and the count printed must be what went.
fn trim_while_producers_write(exact: bool) {
    // Built before anything is timed.
    binary();
    let redis = RedisServer::start();
    let env = [
        ("REDIS_URL", redis.url()),
        ("REDIS_STREAM", "orders".into()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (initial, delivered) = (60_000, 5_000);
    let data: Vec<String> = (0..initial).map(|n| format!(r#"{{"n":{n}}}"#)).collect();
    let mut before = Vec::new();
    for chunk in data.chunks(5_000) {
        before.extend(redis.xadd_data("orders", chunk));
    }
    let mut connection = redis.connect();
    redis::cmd("XGROUP")
        .arg(&["CREATE", "orders", "g", "0"])
        .exec(&mut connection)
        .unwrap();
    redis::cmd("XREADGROUP")
        .arg(&["GROUP", "g", "c", "COUNT", &delivered.to_string()])
        .arg(&["STREAMS", "orders", ">"])
        .exec(&mut connection)
        .unwrap();
    redis::cmd("XACK")
        .arg("orders")
        .arg("g")
        .arg(&before[..delivered])
        .exec(&mut connection)
        .unwrap();
    let last_delivered = before[delivered - 1].clone();

    // The producers start with the trim's first command (`XLEN`): from
    // then on the newest `keep` entries are a moving target.
    let producers = Producers::start_on(&redis, "orders", 2, "\"XLEN\"");
    let keep = (initial - delivered).to_string();
    let mut args = vec!["trim", "--maxlen", &keep];
    if exact {
        args.push("--exact");
    }
    let output = run(&env, &args);
    let added = producers.stop();
    let printed = succeeded(&output);

    let remaining: HashSet<String> = all_ids(&redis, "orders").into_iter().collect();
    let undelivered_lost = before[delivered..]
        .iter()
        .chain(&added)
        .filter(|id| !remaining.contains(*id))
        .count();
    assert_eq!(
        undelivered_lost, 0,
        "trim removed entries group g had not received (it stood at {last_delivered}); it printed: {printed}"
    );
    let vanished = (initial + added.len() - remaining.len()) as u64;
    assert_eq!(
        number_after(&printed, "removed"),
        vanished,
        "the printed count is not what went: {printed}"
    );
    if exact {
        assert_eq!(vanished, delivered as u64, "{printed}");
    }
    note(format!(
        "operator: trim (exact: {exact}) with {} entries added meanwhile: {}",
        added.len(),
        printed.lines().next().unwrap_or_default()
    ));
}

#[test]
fn an_exact_trim_while_producers_write_cuts_only_what_it_checked() {
    trim_while_producers_write(true);
}

#[test]
fn an_approximate_trim_while_producers_write_never_passes_the_group() {
    trim_while_producers_write(false);
}

// ---------------------------------------------------------------------------
// dlq replay
// ---------------------------------------------------------------------------

/// Adds `count` entries to `orders`, the group `group` after them (a
/// replay puts a letter back only for a group that exists), and a dead
/// letter of that group for each entry to `orders:dlq`, as the worker
/// writes them; returns the entries' IDs.
fn dead_letters(redis: &RedisServer, group: &str, count: usize) -> Vec<String> {
    let data: Vec<String> = (0..count).map(|n| format!(r#"{{"n":{n}}}"#)).collect();
    let ids = redis.xadd_data("orders", &data);
    redis::cmd("XGROUP")
        .arg(&["CREATE", "orders", group, "$"])
        .exec(&mut redis.connect())
        .unwrap();
    dead_letters_for(redis, group, &ids);
    ids
}

/// Adds a dead letter of group `group` to `orders:dlq` for each of `ids`,
/// with the fields the producer wrote (`data`, `user_id`).
fn dead_letters_for(redis: &RedisServer, group: &str, ids: &[String]) {
    let mut pipe = redis::pipe();
    for (n, id) in ids.iter().enumerate() {
        pipe.cmd("XADD")
            .arg("orders:dlq")
            .arg("*")
            .arg(&[
                ("dlq.original_id", id.as_str()),
                ("dlq.stream", "orders"),
                ("dlq.group", group),
                ("dlq.consumer", "c"),
                ("dlq.deliveries", "5"),
                ("dlq.reason", "downstream said no"),
                ("dlq.failed_at_ms", "1700000000000"),
            ])
            .arg("data")
            .arg(format!(r#"{{"n":{n}}}"#))
            .arg("user_id")
            .arg(format!("u{n}"))
            .ignore();
    }
    pipe.exec(&mut redis.connect()).unwrap();
}

/// The field `name` of every entry of `stream` added after `after`.
fn field_after(redis: &RedisServer, stream: &str, after: &str, name: &str) -> Vec<String> {
    let reply: StreamRangeReply = redis::cmd("XRANGE")
        .arg(stream)
        .arg(format!("({after}"))
        .arg("+")
        .query(&mut redis.connect())
        .unwrap();
    reply
        .ids
        .into_iter()
        .map(|entry| entry.get::<String>(name).unwrap_or_default())
        .collect()
}

#[test]
fn replays_running_at_once_move_each_dead_letter_exactly_once() {
    const LETTERS: usize = 3_000;
    const REPLAYS: usize = 3;
    let redis = RedisServer::start();
    let url = redis.url();
    let env = [
        ("REDIS_URL", url.as_str()),
        ("REDIS_STREAM", "orders"),
        ("REDIS_CONSUMER_GROUP", "g"),
    ];
    let ids = dead_letters(&redis, "g", LETTERS);
    let last = ids.last().unwrap().clone();

    let replays: Vec<Process> = (0..REPLAYS)
        .map(|_| Process::spawn("dlq replay", command(&env, &["dlq", "replay"])))
        .collect();
    let mut moved = 0;
    for mut replay in replays {
        let status = replay.wait_for_exit(Duration::from_secs(60));
        assert!(status.success(), "{}", replay.output());
        moved += number_after(&replay.stdout(), "moved");
    }

    assert_eq!(redis.xlen("orders:dlq"), 0, "every dead letter left");
    let replayed = field_after(&redis, "orders", &last, "replay.original_id");
    assert_eq!(
        replayed.len(),
        LETTERS,
        "{REPLAYS} replays at once added {} entries for {LETTERS} dead letters",
        replayed.len()
    );
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for id in &replayed {
        *counts.entry(id).or_default() += 1;
    }
    let wrong: Vec<_> = ids
        .iter()
        .filter(|id| counts.get(id.as_str()) != Some(&1))
        .collect();
    assert!(wrong.is_empty(), "not replayed exactly once: {wrong:?}");
    assert_eq!(moved, LETTERS as u64, "the replays' printed counts");
    let users = field_after(&redis, "orders", &last, "user_id");
    assert!(
        users.iter().all(|user| user.starts_with('u')),
        "the producer's fields are kept"
    );
}

/// Two groups consume one stream; a dead letter of group `a` is replayed:
/// group `a`'s worker processes it under its original ID and time, group
/// `b`'s worker acknowledges it without processing it.
#[test]
fn a_replay_reaches_only_the_group_that_dead_lettered_it() {
    let redis = RedisServer::start();
    let url = redis.url();
    // The example logic logs each message it processes at debug.
    let base = [
        ("REDIS_URL", url.as_str()),
        ("REDIS_STREAM", "orders"),
        ("LOG_FORMAT", "json"),
        ("LOG_LEVEL", "debug"),
        ("METRICS_ADDR", "127.0.0.1:0"),
    ];
    let env = |group: &'static str| {
        let mut env = base.to_vec();
        env.extend([
            ("REDIS_CONSUMER_GROUP", group),
            ("REDIS_CONSUMER_NAME", group),
        ]);
        env
    };
    // An entry produced at 1700000000000 ms (2023-11-14 22:13:20 UTC),
    // given up on by group `a`.
    let original = "1700000000000-1".to_owned();
    redis::cmd("XADD")
        .arg(&["orders", &original, "data", r#"{"n":0}"#, "user_id", "u0"])
        .exec(&mut redis.connect())
        .unwrap();
    dead_letters_for(&redis, "a", std::slice::from_ref(&original));
    let mut workers: Vec<Process> = ["a", "b"]
        .into_iter()
        .map(|group| Process::spawn(group, command(&env(group), &["run"])))
        .collect();
    let settled = |group: &str, read: usize| {
        wait_until(
            Duration::from_secs(30),
            &format!("group {group} to acknowledge {read} entries"),
            || match redis.group("orders", group) {
                Some(info)
                    if info.entries_read == Some(read)
                        && info.pending == 0
                        && info.lag == Some(0) =>
                {
                    Ok(())
                }
                other => Err(format!("{other:?}")),
            },
        );
    };
    settled("a", 1);
    settled("b", 1);

    let out = succeeded(&run(&env("a"), &["dlq", "replay"]));
    assert!(out.contains("moved 1 dead letters"), "{out}");
    settled("a", 2);
    settled("b", 2);
    for worker in &mut workers {
        worker.terminate();
        assert!(worker.wait_for_exit(Duration::from_secs(10)).success());
    }

    let processed = |worker: &Process| -> Vec<String> {
        worker
            .stderr()
            .lines()
            .filter(|line| line.contains("message processed"))
            .map(str::to_owned)
            .collect()
    };
    let (a, b) = (processed(&workers[0]), processed(&workers[1]));
    assert_eq!(
        a.len(),
        2,
        "group a processes the entry and its replay: {a:?}"
    );
    assert_eq!(
        b.len(),
        1,
        "group b processed the replay of group a's dead letter: {b:?}"
    );
    // The replay's time comes from the original ID, not from the replay.
    assert!(
        a[1].contains("2023-11-14 22:13:20"),
        "the replayed message's time is not the original one ({original}): {}",
        a[1]
    );
}

#[test]
fn purge_off_a_terminal_refuses_at_once_unless_told_yes() {
    let redis = RedisServer::start();
    let url = redis.url();
    let env = [("REDIS_URL", url.as_str()), ("REDIS_STREAM", "orders")];
    dead_letters(&redis, "g", 2);
    let started = Instant::now();
    let refused = run(&env, &["dlq", "purge"]);
    assert!(!refused.status.success());
    assert!(started.elapsed() < Duration::from_secs(10), "it waited");
    assert!(text(&refused).contains("--yes"), "{}", text(&refused));
    assert_eq!(redis.xlen("orders:dlq"), 2);
    let out = succeeded(&run(&env, &["dlq", "purge", "-y"]));
    assert!(out.contains("deleted 2 dead letters"), "{out}");
}

// ---------------------------------------------------------------------------
// Secrets
// ---------------------------------------------------------------------------

/// The default user's password and a second ACL user's.
const DEFAULT_PASSWORD: &str = "Def4ult-pw-x9";
const APP_PASSWORD: &str = "App-pw-7q2";

/// A redis-server that requires a password, on TCP and a unix socket.
struct SecureRedis {
    port: u16,
    socket: PathBuf,
    _dir: tempfile::TempDir,
    _process: Process,
}

impl SecureRedis {
    fn start() -> SecureRedis {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("redis.sock");
        let port = unused_port();
        let mut command = Command::new("redis-server");
        command
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path())
            .arg("--unixsocket")
            .arg(&socket)
            .args(["--unixsocketperm", "700"])
            .args(["--requirepass", DEFAULT_PASSWORD]);
        let process = Process::spawn("redis-server", command);
        let url = format!("redis://:{DEFAULT_PASSWORD}@127.0.0.1:{port}");
        let mut connection = wait_until(Duration::from_secs(20), "redis-server", || {
            redis::Client::open(url.as_str())
                .and_then(|client| client.get_connection())
                .map_err(|error| error.to_string())
        });
        redis::cmd("ACL")
            .arg(&["SETUSER", "app", "on"])
            .arg(format!(">{APP_PASSWORD}"))
            .arg(&["~*", "&*", "+@all"])
            .exec(&mut connection)
            .unwrap();
        SecureRedis {
            port,
            socket,
            _dir: dir,
            _process: process,
        }
    }
}

#[test]
fn no_password_reaches_config_status_errors_or_logs_in_any_url_form() {
    let redis = SecureRedis::start();
    let (port, socket) = (redis.port, redis.socket.display().to_string());
    let dead = unused_port();
    let password_file = tempfile::NamedTempFile::new().unwrap();
    fs::write(password_file.path(), format!("{APP_PASSWORD}\n")).unwrap();
    let file = password_file.path().display().to_string();

    // (URL, password file, the user name config must show, whether it
    // reaches Redis)
    let forms: Vec<(String, Option<&str>, Option<&str>, bool)> = vec![
        (
            format!("unix://{socket}?user=app&pass={APP_PASSWORD}"),
            None,
            Some("app"),
            true,
        ),
        (
            format!("redis://app:{APP_PASSWORD}@127.0.0.1:{port}"),
            None,
            Some("app"),
            true,
        ),
        (
            format!("redis://:{DEFAULT_PASSWORD}@127.0.0.1:{port}/0"),
            None,
            None,
            true,
        ),
        (
            format!("redis://app@127.0.0.1:{port}"),
            Some(&file),
            Some("app"),
            true,
        ),
        (
            format!("redis+unix://{socket}?pass={DEFAULT_PASSWORD}"),
            None,
            None,
            true,
        ),
        (
            format!("unix://{socket}?password={DEFAULT_PASSWORD}"),
            None,
            None,
            false,
        ),
        (
            format!("redis://127.0.0.1:{port}?password={DEFAULT_PASSWORD}"),
            None,
            None,
            false,
        ),
        // A TLS handshake with a plain-text server: fails.
        (
            format!("rediss://app:{APP_PASSWORD}@127.0.0.1:{port}"),
            None,
            Some("app"),
            false,
        ),
        (
            format!("redis://app:{APP_PASSWORD}@127.0.0.1:{dead}"),
            None,
            Some("app"),
            false,
        ),
        (
            format!("unix://{socket}.gone?user=app&pass={APP_PASSWORD}"),
            None,
            Some("app"),
            false,
        ),
        (
            format!("redis://app:{APP_PASSWORD}@127.0.0.1:{port}/0"),
            None,
            Some("app"),
            true,
        ),
        (
            format!(
                "redis://app:{APP_PASSWORD}@127.0.0.1:{port},redis://app:{APP_PASSWORD}@127.0.0.1:{dead}"
            ),
            None,
            Some("app"),
            false,
        ),
    ];
    for (url, password_file, user, reachable) in forms {
        let mut env = vec![
            ("REDIS_URL", url.as_str()),
            ("REDIS_STREAM", "orders"),
            ("REDIS_CONSUMER_GROUP", "g"),
            ("METRICS_ADDR", "127.0.0.1:0"),
            ("LOG_LEVEL", "debug"),
        ];
        if let Some(file) = password_file {
            env.push(("REDIS_PASSWORD_FILE", file));
        }
        let mut seen = String::new();
        let config = run(&env, &["config"]);
        seen.push_str(&text(&config));
        assert_no_password(&url, &seen);
        if let Some(user) = user
            && config.status.success()
        {
            let shown = text(&config);
            let line = shown
                .lines()
                .find(|line| line.starts_with("redis.url = "))
                .unwrap_or_else(|| panic!("no redis.url in {shown}"));
            assert!(line.contains(user), "config hides the user {user}: {line}");
        }
        for args in [&["status"][..], &["status", "--json"], &["dlq", "list"]] {
            let output = run(&env, args);
            if reachable {
                succeeded(&output);
            } else {
                assert!(!output.status.success(), "{url}: {}", text(&output));
            }
            seen.push_str(&text(&output));
        }

        // The worker, in both log formats: running (or retrying) until the
        // group exists or a retry was logged, then stopped.
        for format in ["json", "pretty"] {
            let mut env = env.clone();
            env.push(("LOG_FORMAT", format));
            let mut worker = Process::spawn("worker", command(&env, &["run"]));
            wait_until(Duration::from_secs(20), "the worker to log", || {
                let logs = worker.output();
                // A step (debug) after connecting, or a retry, or an exit.
                let done = if reachable {
                    logs.contains("step")
                } else {
                    logs.contains("backing off") || worker.try_status().is_some()
                };
                done.then_some(()).ok_or(logs)
            });
            worker.terminate();
            let _ = worker.wait_for_exit(Duration::from_secs(10));
            seen.push_str(&worker.output());
        }

        assert_no_password(&url, &seen);
    }
}

/// Fails, with the output, if it holds either password.
fn assert_no_password(url: &str, output: &str) {
    for password in [APP_PASSWORD, DEFAULT_PASSWORD] {
        assert!(
            !output.contains(password),
            "the password of {} leaked:\n{output}",
            url.replace(password, "<password>")
        );
    }
}
