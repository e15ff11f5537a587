//! What an operator meets in the first hour with a generated worker, run as
//! real processes of the default and the no-metrics variant against a
//! redis-server of each test's own:
//!
//! - the README's "Scale" section runs as written: three processes on one
//!   host, all consuming;
//! - a metrics port in use is refused with a message that names
//!   `METRICS_ADDR` and how to pick another;
//! - an idle worker exits at once on SIGTERM instead of waiting out its
//!   blocking read (the time is printed);
//! - `healthcheck` exits 0 for a running worker and non-zero for a frozen
//!   or stopped one, over `/healthz` or the heartbeat file;
//! - at `info` the log carries a periodic summary, not a line per entry,
//!   and the first entry shows at once;
//! - a Redis that cannot be reached is explained in one message (where,
//!   which setting, what went wrong in plain words, what to do) for each
//!   kind of failure: at the start of `run`, which keeps trying, and by the
//!   operator's commands, which fail fast;
//! - a malformed setting names the variable and the unit, an error names
//!   each cause once, and `--help` sets the global options apart.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::{
    Process, RedisServer, cargo, debug_binary, generate, note, scrub_env, selected, unused_port,
    variant, wait_until,
};

/// How long a worker may take to start and create its group.
const START_DEADLINE: Duration = Duration::from_secs(30);

/// The block time of the idle worker that is stopped: long, so that
/// waiting it out cannot pass for a quick exit.
const LONG_BLOCK_MS: u64 = 5_000;

/// The most an idle worker may take to exit after SIGTERM in this test. The
/// aim is under 100 ms (the figure is printed); the bound leaves room for a
/// loaded machine while staying far below the block time.
const IDLE_EXIT_BOUND: Duration = Duration::from_secs(1);

/// A generated, built variant: its project directory (kept for the README)
/// and its binary.
struct Built {
    readme: String,
    binary: PathBuf,
}

/// The variant `label`, generated and built once per test binary; `None`
/// when `TEMPLATE_VARIANTS` leaves it out.
fn built(label: &'static str) -> Option<&'static Built> {
    static DEFAULT: OnceLock<Built> = OnceLock::new();
    static NO_METRICS: OnceLock<Built> = OnceLock::new();
    if !selected(label) {
        return None;
    }
    let cell = match label {
        "default" => &DEFAULT,
        "no-metrics" => &NO_METRICS,
        other => panic!("no build for variant `{other}` here"),
    };
    Some(cell.get_or_init(|| {
        let variant = variant(label);
        let project = generate(variant);
        cargo(&project, &["build"]);
        Built {
            readme: project.read("README.md"),
            binary: debug_binary(variant.project_name),
        }
    }))
}

/// A command for the binary with a clean environment pointing at `redis`.
fn worker_command(binary: &Path, redis: &RedisServer) -> Command {
    let mut command = Command::new(binary);
    scrub_env(&mut command);
    command
        .env_remove("HEARTBEAT_FILE")
        .env_remove("HEARTBEAT_MAX_AGE_MS")
        .env("REDIS_URL", redis.url())
        .env("LOG_FORMAT", "json");
    command
}

/// Runs the binary to completion with `args` and `env`.
fn run_once(binary: &Path, redis: &RedisServer, args: &[&str], env: &[(&str, &str)]) -> Output {
    worker_command(binary, redis)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("the binary runs")
}

/// Waits until the worker's consumer `consumer` sits in a blocking
/// `XREADGROUP`, as Redis reports its clients.
fn wait_blocked_in_read(redis: &RedisServer, worker: &mut Process) {
    wait_until(START_DEADLINE, "the worker to block in XREADGROUP", || {
        worker.assert_running();
        let clients: String = redis::cmd("CLIENT")
            .arg("LIST")
            .query(&mut redis.connect())
            .map_err(|error| error.to_string())?;
        clients
            .lines()
            .any(|client| client.contains("cmd=xreadgroup") && client.contains("flags=b"))
            .then_some(())
            .ok_or(clients)
    });
}

/// The commands of the README's Scale section, as (environment, program
/// and arguments) pairs.
fn scale_commands(readme: &str) -> Vec<(Vec<(String, String)>, String)> {
    let section = readme
        .split("\n## Scale\n")
        .nth(1)
        .expect("the README has a Scale section");
    let block = section
        .split("```bash\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("the Scale section shows commands");
    block
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let line = line
                .trim()
                .strip_suffix('&')
                .unwrap_or_else(|| panic!("not started in the background: {line}"));
            let mut env = Vec::new();
            let mut words = line.split_whitespace().peekable();
            while let Some((name, value)) = words.peek().and_then(|word| word.split_once('=')) {
                env.push((name.to_owned(), value.to_owned()));
                words.next();
            }
            (env, words.collect::<Vec<_>>().join(" "))
        })
        .collect()
}

#[test]
fn the_readme_scale_section_runs_three_workers_on_one_host() {
    for label in ["default", "no-metrics"] {
        let Some(built) = built(label) else {
            continue;
        };
        let variant = variant(label);
        let commands = scale_commands(&built.readme);
        assert_eq!(commands.len(), 3, "`{label}`: {commands:?}");
        let redis = RedisServer::start();
        let mut workers = Vec::new();
        let mut names = Vec::new();
        let mut addrs = std::collections::HashSet::new();
        for (env, program) in &commands {
            // The README builds and runs with cargo; the binary is built.
            assert_eq!(program, "cargo run --release", "`{label}`");
            let mut command = worker_command(&built.binary, &redis);
            for (name, value) in env {
                // Each process's own port or file, as the README gives
                // them, moved to a free port and a temporary directory so
                // that nothing else on this machine is in the way.
                let value = match name.as_str() {
                    "METRICS_ADDR" => {
                        assert!(addrs.insert(value.clone()), "`{label}`: {value} twice");
                        format!("127.0.0.1:{}", unused_port())
                    }
                    "HEARTBEAT_FILE" => {
                        assert!(addrs.insert(value.clone()), "`{label}`: {value} twice");
                        let file = format!("lifecycle-{}-{value}", std::process::id());
                        let file = std::env::temp_dir().join(file.replace('/', "-"));
                        file.to_string_lossy().into_owned()
                    }
                    _ => value.clone(),
                };
                command.env(name, value);
            }
            let name = env
                .iter()
                .find(|(name, _)| name == "REDIS_CONSUMER_NAME")
                .map(|(_, value)| value.clone())
                .expect("each process gets its own consumer name");
            names.push(name);
            workers.push(Process::spawn(label, command));
        }
        let entries: Vec<String> = (0..300).map(|n| format!(r#"{{"n":{n}}}"#)).collect();
        redis.xadd_data(variant.stream, &entries);
        wait_until(
            START_DEADLINE,
            "three consumers to drain the stream",
            || {
                for worker in &mut workers {
                    worker.assert_running();
                }
                let group = redis.group(variant.stream, variant.consumer_group);
                let consumers: Vec<String> = match group {
                    Some(_) => redis
                        .consumers(variant.stream, variant.consumer_group)
                        .into_iter()
                        .map(|consumer| consumer.name)
                        .collect(),
                    None => Vec::new(),
                };
                let drained = group
                    .as_ref()
                    .is_some_and(|group| group.lag == Some(0) && group.pending == 0);
                (drained && names.iter().all(|name| consumers.contains(name)))
                    .then_some(())
                    .ok_or_else(|| format!("consumers {consumers:?}, group {group:?}"))
            },
        );
        for worker in &mut workers {
            worker.terminate();
            let status = worker.wait_for_exit(Duration::from_secs(10));
            assert!(status.success(), "`{label}`: {}", worker.output());
        }
        note(format!(
            "  `{label}`: the README's three processes ran side by side"
        ));
    }
}

#[test]
fn a_metrics_port_in_use_is_refused_naming_metrics_addr() {
    let Some(built) = built("default") else {
        return;
    };
    let redis = RedisServer::start();
    let addr = format!("127.0.0.1:{}", unused_port());
    let mut first = worker_command(&built.binary, &redis);
    first.env("METRICS_ADDR", &addr);
    let mut first = Process::spawn("first worker", first);
    wait_blocked_in_read(&redis, &mut first);

    let second = run_once(&built.binary, &redis, &[], &[("METRICS_ADDR", &addr)]);
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot listen on {addr} (METRICS_ADDR)"))
            && stderr.contains("METRICS_ADDR=127.0.0.1:0"),
        "the refusal should name METRICS_ADDR and how to pick another: {stderr}"
    );
    assert!(
        stderr.matches("os error").count() <= 1,
        "a cause is repeated: {stderr}"
    );
}

#[test]
fn an_idle_worker_exits_at_once_on_sigterm() {
    let Some(built) = built("default") else {
        return;
    };
    let redis = RedisServer::start();
    let mut command = worker_command(&built.binary, &redis);
    command
        .env("METRICS_ADDR", "127.0.0.1:0")
        .env("REDIS_BLOCK_TIMEOUT_MS", LONG_BLOCK_MS.to_string());
    let mut worker = Process::spawn("idle worker", command);
    wait_blocked_in_read(&redis, &mut worker);

    let signalled = Instant::now();
    worker.terminate();
    // Polled every millisecond: `wait_for_exit` looks only every 20 ms.
    while worker.try_status().is_none() && signalled.elapsed() < 3 * IDLE_EXIT_BOUND {
        std::thread::sleep(Duration::from_millis(1));
    }
    let took = signalled.elapsed();
    let status = worker.wait_for_exit(Duration::from_secs(30));
    note(format!(
        "  an idle worker (block {LONG_BLOCK_MS} ms) exited {:.1} ms after SIGTERM",
        took.as_secs_f64() * 1000.0
    ));
    assert!(status.success(), "{}", worker.output());
    assert!(
        took < IDLE_EXIT_BOUND,
        "an idle worker took {took:?} to exit after SIGTERM (block {LONG_BLOCK_MS} ms)"
    );
}

#[test]
fn healthcheck_asks_healthz_and_fails_for_a_frozen_or_stopped_worker() {
    let Some(built) = built("default") else {
        return;
    };
    let redis = RedisServer::start();
    let addr = format!("127.0.0.1:{}", unused_port());
    let mut command = worker_command(&built.binary, &redis);
    command.env("METRICS_ADDR", &addr);
    let mut worker = Process::spawn("worker", command);
    wait_blocked_in_read(&redis, &mut worker);
    let check = || {
        run_once(
            &built.binary,
            &redis,
            &["healthcheck", "--timeout-ms", "500"],
            &[("METRICS_ADDR", &addr)],
        )
    };

    let healthy = check();
    assert!(
        healthy.status.success(),
        "a running worker: {}",
        String::from_utf8_lossy(&healthy.stderr)
    );

    worker.signal(libc::SIGSTOP);
    let frozen = check();
    worker.signal(libc::SIGCONT);
    let stderr = String::from_utf8_lossy(&frozen.stderr);
    assert_eq!(frozen.status.code(), Some(1), "a frozen worker: {stderr}");
    assert!(stderr.contains("did not answer within 500 ms"), "{stderr}");

    worker.terminate();
    assert!(worker.wait_for_exit(Duration::from_secs(10)).success());
    let stopped = check();
    let stderr = String::from_utf8_lossy(&stopped.stderr);
    assert_eq!(stopped.status.code(), Some(1), "a stopped worker: {stderr}");
    assert!(stderr.contains("METRICS_ADDR"), "{stderr}");
}

#[test]
fn healthcheck_without_metrics_reads_the_heartbeat_file() {
    let Some(built) = built("no-metrics") else {
        return;
    };
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("heartbeat");
    let file = file.to_str().unwrap();
    // Allowed silence: 300 ms beyond a 100 ms block.
    let env = [
        ("HEARTBEAT_FILE", file),
        ("HEARTBEAT_MAX_AGE_MS", "300"),
        ("REDIS_BLOCK_TIMEOUT_MS", "100"),
        ("WORKER_RECONNECT_BACKOFF_MAX_MS", "200"),
        ("WORKER_RECONNECT_BACKOFF_MS", "50"),
    ];
    let check = || run_once(&built.binary, &redis, &["healthcheck"], &env);

    let missing = check();
    assert_eq!(missing.status.code(), Some(1), "no worker ran yet");

    let mut command = worker_command(&built.binary, &redis);
    command.envs(env);
    let mut worker = Process::spawn("worker", command);
    wait_blocked_in_read(&redis, &mut worker);
    wait_until(START_DEADLINE, "healthcheck to pass", || {
        worker.assert_running();
        let output = check();
        output
            .status
            .success()
            .then_some(())
            .ok_or_else(|| String::from_utf8_lossy(&output.stderr).into_owned())
    });

    worker.signal(libc::SIGSTOP);
    std::thread::sleep(Duration::from_millis(1_500));
    let frozen = check();
    worker.signal(libc::SIGCONT);
    let stderr = String::from_utf8_lossy(&frozen.stderr);
    assert_eq!(frozen.status.code(), Some(1), "a frozen worker: {stderr}");
    assert!(stderr.contains("stopped or stuck"), "{stderr}");

    wait_until(START_DEADLINE, "healthcheck to pass again", || {
        worker.assert_running();
        let output = check();
        output
            .status
            .success()
            .then_some(())
            .ok_or_else(|| String::from_utf8_lossy(&output.stderr).into_owned())
    });
}

/// Entries the logging test sends.
const LOGGED_ENTRIES: usize = 500;

#[test]
fn at_info_the_log_summarises_instead_of_a_line_per_entry() {
    for label in ["default", "no-metrics"] {
        let Some(built) = built(label) else {
            continue;
        };
        let variant = variant(label);
        let redis = RedisServer::start();
        let mut command = worker_command(&built.binary, &redis);
        command
            .env("LOG_LEVEL", "info")
            .env("METRICS_ADDR", "127.0.0.1:0")
            .env(
                "HEARTBEAT_FILE",
                std::env::temp_dir().join(format!("lifecycle-log-{}", std::process::id())),
            );
        let mut worker = Process::spawn(label, command);
        wait_blocked_in_read(&redis, &mut worker);
        let entries: Vec<String> = (0..LOGGED_ENTRIES)
            .map(|n| format!(r#"{{"n":{n},"user_id":"u{n}"}}"#))
            .collect();
        redis.xadd_data(variant.stream, &entries);
        // The first summary within a second of the first entry, then one
        // every 10 s in which something happened.
        wait_until(Duration::from_secs(30), "the periodic summary", || {
            worker.assert_running();
            let logs = worker.stderr();
            let summarised: u64 = logs
                .lines()
                .filter(|line| line.contains(r#""per_second":"#))
                .filter_map(|line| json_number(line, "processed"))
                .sum();
            (summarised == LOGGED_ENTRIES as u64)
                .then_some(())
                .ok_or(logs)
        });
        let summary = format!(r#""processed":{LOGGED_ENTRIES},"#);
        worker.terminate();
        assert!(worker.wait_for_exit(Duration::from_secs(10)).success());
        let logs = worker.stderr();
        let lines = logs.lines().count();
        assert!(
            lines < 20,
            "`{label}`: {lines} log lines at info for {LOGGED_ENTRIES} entries:\n{logs}"
        );
        assert!(
            logs.lines()
                .any(|line| line.contains("worker stopped") && line.contains(&summary)),
            "`{label}`: the stop line should carry the totals:\n{logs}"
        );
    }
}

/// The number after `"key":` in a JSON log line.
fn json_number(line: &str, key: &str) -> Option<u64> {
    let rest = &line[line.find(&format!(r#""{key}":"#))? + key.len() + 3..];
    rest.split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

#[test]
fn the_first_entry_shows_at_info_at_once_and_a_busy_worker_stays_quiet() {
    let Some(built) = built("default") else {
        return;
    };
    let variant = variant("default");
    let redis = RedisServer::start();
    let mut command = worker_command(&built.binary, &redis);
    command
        .env("LOG_LEVEL", "info")
        .env("METRICS_ADDR", "127.0.0.1:0");
    let mut worker = Process::spawn("first entry", command);
    wait_blocked_in_read(&redis, &mut worker);
    let id = redis.xadd_data(variant.stream, &[r#"{"test":"message"}"#])[0].clone();
    let added = Instant::now();
    wait_until(
        Duration::from_secs(5),
        "the first entry and a summary at info",
        || {
            worker.assert_running();
            let logs = worker.stderr();
            let first = logs
                .lines()
                .any(|line| line.contains("first entry processed") && line.contains(&id));
            let summary = logs
                .lines()
                .any(|line| line.contains(r#""processed":1,"#) && line.contains("per_second"));
            (first && summary).then_some(()).ok_or(logs)
        },
    );
    note(format!(
        "  the first entry and its summary showed at info {} ms after XADD",
        added.elapsed().as_millis()
    ));

    // Busy: 3,000 entries make no more than a few lines at info.
    let before = worker.stderr().lines().count();
    let entries: Vec<String> = (0..3_000).map(|n| format!(r#"{{"n":{n}}}"#)).collect();
    redis.xadd_data(variant.stream, &entries);
    wait_until(
        Duration::from_secs(60),
        "the 3,000 entries acknowledged",
        || {
            worker.assert_running();
            let group = redis
                .group(variant.stream, variant.consumer_group)
                .ok_or("no group")?;
            (group.pending == 0 && group.lag == Some(0))
                .then_some(())
                .ok_or(format!("pending {}, lag {:?}", group.pending, group.lag))
        },
    );
    std::thread::sleep(Duration::from_millis(1_500));
    let logs = worker.stderr();
    let lines: Vec<&str> = logs.lines().skip(before).collect();
    assert!(
        lines.len() <= 3,
        "{} lines at info for 3,000 entries:\n{}",
        lines.len(),
        lines.join("\n")
    );
    assert!(
        !lines.iter().any(|line| line.contains("first entry")),
        "only the first entry is logged at info:\n{}",
        lines.join("\n")
    );
    worker.terminate();
    assert!(worker.wait_for_exit(Duration::from_secs(10)).success());
}

/// A listener that accepts connections and never answers, like a firewall
/// that lets the connection through, or a service that is not Redis.
fn silent_listener() -> (std::net::TcpListener, u16) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    (listener, port)
}

#[test]
fn an_unreachable_redis_is_explained_once_for_each_kind_of_failure() {
    let Some(built) = built("default") else {
        return;
    };
    // No such user: AUTH fails with WRONGPASS, like a wrong password.
    let password_redis = RedisServer::start();
    let certificates = common::tls::Certificates::generate();
    let tls_port = unused_port();
    let _tls_redis = RedisServer::start_with_args(
        common::RedisOptions::default(),
        certificates.server_args(tls_port, "no"),
    );
    let (_silent, silent_port) = silent_listener();
    let refused_port = unused_port();
    let cases = [
        (
            format!("redis://127.0.0.1:{refused_port}"),
            "connection refused",
            "redis-server",
        ),
        (
            "redis://no-such-host.invalid:6379".to_owned(),
            "no such host",
            "does not resolve",
        ),
        (
            format!("rediss://localhost:{tls_port}"),
            "the TLS handshake failed",
            "REDIS_TLS_CA_FILE",
        ),
        (
            format!("redis://app:wrong-pass@127.0.0.1:{}", password_redis.port()),
            "authentication failed",
            "REDIS_PASSWORD_FILE",
        ),
        (
            format!("redis://127.0.0.1:{silent_port}"),
            "no answer in time",
            "firewall",
        ),
    ];
    for (url, words, hint) in &cases {
        let started = Instant::now();
        let mut command = Command::new(&built.binary);
        scrub_env(&mut command);
        let output = command
            .args(["status"])
            .env("REDIS_URL", url)
            .output()
            .expect("the binary runs");
        let took = started.elapsed();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{url}: {stderr}");
        let shown = url.replace("wrong-pass", "***");
        let expected = format!(
            "cannot reach Redis at {shown} (redis.url, from environment variable REDIS_URL): {words}"
        );
        assert!(
            stderr.contains(&expected),
            "{url}: expected `{expected}` in:\n{stderr}"
        );
        assert!(
            stderr.contains(hint),
            "{url}: no hint `{hint}` in:\n{stderr}"
        );
        assert!(!stderr.contains("wrong-pass"), "{stderr}");
        assert_eq!(stderr.lines().count(), 1, "one message: {stderr}");
        // Fails fast: one try, bounded by the first-contact timeout.
        assert!(took < Duration::from_secs(8), "{url}: took {took:?}");
        note(format!(
            "  {words}: `status` failed in {} ms",
            took.as_millis()
        ));
    }

    // A cluster's seeds fail inside the cluster client's own error: the
    // same words.
    for (url, words) in [
        (
            format!("redis://127.0.0.1:{refused_port}"),
            "connection refused",
        ),
        (
            format!("redis://app:wrong-pass@127.0.0.1:{}", password_redis.port()),
            "authentication failed",
        ),
    ] {
        let mut command = Command::new(&built.binary);
        scrub_env(&mut command);
        let output = command
            .args(["status", "--cluster"])
            .env("REDIS_URL", &url)
            .output()
            .expect("the binary runs");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{url}: {stderr}");
        assert!(
            stderr.contains("cannot reach Redis at") && stderr.contains(words),
            "cluster {url}: {stderr}"
        );
    }

    // Every operator command that needs Redis fails fast the same way.
    let refused = format!("redis://127.0.0.1:{refused_port}");
    for args in [
        &["send", r#"{"a":1}"#][..],
        &["dlq", "list"],
        &["dlq", "replay"],
        &["trim", "--maxlen", "10"],
    ] {
        let mut command = Command::new(&built.binary);
        scrub_env(&mut command);
        let output = command
            .args(args)
            .env("REDIS_URL", &refused)
            .output()
            .expect("the binary runs");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(
            stderr.contains("cannot reach Redis at") && stderr.contains("connection refused"),
            "{args:?}: {stderr}"
        );
    }

    // `run` says it once, at once, with where the URL came from, then keeps
    // trying quietly; a config file is named as the source.
    let config = std::env::temp_dir().join(format!("unreachable-{}.yaml", std::process::id()));
    std::fs::write(&config, format!("redis:\n  url: {refused}\n")).unwrap();
    let mut command = Command::new(&built.binary);
    scrub_env(&mut command);
    command
        .args(["--config", &config.display().to_string()])
        .env("METRICS_ADDR", "127.0.0.1:0")
        .env("LOG_FORMAT", "json");
    let started = Instant::now();
    let mut worker = Process::spawn("unreachable", command);
    wait_until(Duration::from_secs(5), "the message at start", || {
        worker.assert_running();
        let logs = worker.stderr();
        logs.contains(&format!("from config file {}", config.display()))
            .then_some(())
            .ok_or(logs)
    });
    note(format!(
        "  `run` explained an unreachable Redis {} ms after start",
        started.elapsed().as_millis()
    ));
    std::thread::sleep(Duration::from_secs(3));
    worker.assert_running();
    let logs = worker.stderr();
    assert_eq!(
        logs.matches("cannot reach Redis").count(),
        1,
        "said once:\n{logs}"
    );
    let warnings = logs
        .lines()
        .filter(|line| line.contains(r#""WARN""#))
        .count();
    assert!(warnings <= 2, "quiet while it retries:\n{logs}");
    worker.terminate();
    assert!(worker.wait_for_exit(Duration::from_secs(10)).success());
    let _ = std::fs::remove_file(&config);
}

#[test]
fn errors_name_what_the_user_set_and_each_cause_once() {
    let Some(built) = built("default") else {
        return;
    };
    let redis = RedisServer::start();

    let output = run_once(
        &built.binary,
        &redis,
        &["config"],
        &[("REDIS_BLOCK_TIMEOUT_MS", "abc")],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("environment variable REDIS_BLOCK_TIMEOUT_MS")
            && stderr.contains("milliseconds")
            && stderr.contains("\"abc\""),
        "{stderr}"
    );

    let output = run_once(
        &built.binary,
        &redis,
        &["--log-format", "xml", "config"],
        &[],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("from command-line flag --log-format: expected one of `pretty`, `json`"),
        "{stderr}"
    );

    let output = run_once(
        &built.binary,
        &redis,
        &["config"],
        &[("WORKER_CLAIM_IDLE_MS", "0")],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("WORKER_CLAIM_IDLE_MS: must be at least 1 millisecond"),
        "{stderr}"
    );

    let output = run_once(&built.binary, &redis, &["send", "not json"], &[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    let cause = "expected ident at line 1 column 2";
    assert_eq!(stderr.matches(cause).count(), 1, "{stderr}");
}

#[test]
fn help_sets_the_global_options_apart() {
    let Some(built) = built("default") else {
        return;
    };
    let output = Command::new(&built.binary)
        .args(["trim", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&output.stdout);
    let global = help
        .find("Global options:")
        .unwrap_or_else(|| panic!("no heading for the global options:\n{help}"));
    let (own, globals) = help.split_at(global);
    assert!(
        own.contains("--maxlen") && !own.contains("--redis-url"),
        "{help}"
    );
    assert!(
        globals.contains("--redis-url") && !globals.contains("--maxlen"),
        "{help}"
    );
}
