//! The health endpoints of the metrics variant, from the outside: the built
//! worker of the default variant against a redis-server of the test's own,
//! which is killed and started again on the same port.
//!
//! - `/healthz` answers 200 throughout: the process is alive;
//! - `/readyz` answers 200 once the consumer group exists, 503 while Redis
//!   is down, and 200 again once Redis is back; its probes share one kept
//!   connection;
//! - `/metrics` counts the processed entries;
//! - while Redis cannot be reached at start, `/healthz` stays 200 and, in
//!   the no-metrics variant, `healthcheck` finds the heartbeat fresh:
//!   waiting for Redis is not being stuck.
//!
//! Plain HTTP/1.1 over `std::net::TcpStream`, no client library.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use common::{
    Process, RedisOptions, RedisServer, cargo, debug_binary, generate, note, scrub_env, selected,
    unused_port, variant, wait_until,
};

/// How long the worker may take to start serving and create its group.
const START_DEADLINE: Duration = Duration::from_secs(30);

/// How soon `/readyz` must notice that Redis is gone (it connects with a
/// one-second timeout, and a refused connection fails at once).
const NOT_READY_DEADLINE: Duration = Duration::from_secs(10);

/// How soon `/readyz` must recover once Redis is back.
const READY_AGAIN_DEADLINE: Duration = Duration::from_secs(30);

/// Entries sent, to be counted in `/metrics`.
const ENTRIES: usize = 5;

/// `/readyz` probes in a row that must not each open a Redis connection.
const PROBES: u64 = 20;

#[test]
fn readyz_follows_redis_and_healthz_stays_up() {
    if !selected("default") {
        return;
    }
    let variant = variant("default");
    assert!(variant.add_metrics, "the default variant serves metrics");
    let started = Instant::now();
    let project = generate(variant);
    cargo(&project, &["build"]);
    let binary = debug_binary(variant.project_name);

    // Append-only, so the group survives the kill: once Redis answers again
    // the worker is ready at once, without waiting to recreate it.
    let port = unused_port();
    let mut redis = RedisServer::start_on(port, RedisOptions { appendonly: true });
    let metrics_port = unused_port();
    let mut command = Command::new(&binary);
    command.current_dir(project.path());
    scrub_env(&mut command);
    command
        .arg("run")
        .env("REDIS_URL", redis.url())
        .env("METRICS_ADDR", format!("127.0.0.1:{metrics_port}"))
        .env("LOG_FORMAT", "json");
    let mut worker = Process::spawn(variant.project_name, command);
    let get = |path: &str| http_get(metrics_port, path);

    wait_until(START_DEADLINE, "/healthz to answer 200", || {
        worker.assert_running();
        expect_status(get("/healthz"), 200)
    });
    wait_until(START_DEADLINE, "/readyz to answer 200", || {
        worker.assert_running();
        expect_status(get("/readyz"), 200)
    });
    assert!(
        redis
            .group(variant.stream, variant.consumer_group)
            .is_some(),
        "ready, but the group does not exist"
    );

    // Entries processed are counted.
    let data: Vec<String> = (0..ENTRIES)
        .map(|n| format!(r#"{{"n":{n},"user_id":"u{n}"}}"#))
        .collect();
    redis.xadd_data(variant.stream, &data);
    wait_until(
        START_DEADLINE,
        &format!("/metrics to count {ENTRIES} processed entries"),
        || {
            worker.assert_running();
            let (status, body) = get("/metrics")?;
            if status != 200 {
                return Err(format!("{status}: {body}"));
            }
            match counter(&body, "worker_messages_processed_total") {
                Some(count) if count == ENTRIES as f64 => Ok(()),
                other => Err(format!(
                    "worker_messages_processed_total = {other:?} in\n{body}"
                )),
            }
        },
    );

    // Probes reuse one kept connection instead of connecting each time.
    let mut info = redis.connect();
    let connections_before = connections_received(&mut info);
    for _ in 0..PROBES {
        expect_status(get("/readyz"), 200).unwrap_or_else(|error| panic!("/readyz: {error}"));
    }
    let new_connections = connections_received(&mut info) - connections_before;
    assert!(
        new_connections <= 1,
        "{PROBES} /readyz probes opened {new_connections} Redis connections"
    );
    drop(info);

    // Redis goes away: not ready, still alive.
    redis.kill();
    let down = Instant::now();
    let (_, reason) = wait_until(NOT_READY_DEADLINE, "/readyz to answer 503", || {
        worker.assert_running();
        let (status, body) = get("/readyz")?;
        match status {
            503 => Ok((status, body)),
            _ => Err(format!("{status}: {body}")),
        }
    });
    let noticed_in = down.elapsed();
    for _ in 0..10 {
        expect_status(get("/healthz"), 200)
            .unwrap_or_else(|error| panic!("/healthz while Redis is down: {error}"));
        worker.assert_running();
        thread::sleep(Duration::from_millis(100));
    }
    expect_status(get("/readyz"), 503)
        .unwrap_or_else(|error| panic!("/readyz while Redis is down: {error}"));

    // Redis is back on the same port: ready again.
    redis.restart();
    let up = Instant::now();
    wait_until(READY_AGAIN_DEADLINE, "/readyz to answer 200 again", || {
        worker.assert_running();
        expect_status(get("/readyz"), 200)
    });
    let recovered_in = up.elapsed();
    expect_status(get("/healthz"), 200).unwrap_or_else(|error| panic!("/healthz: {error}"));

    worker.terminate();
    let status = worker.wait_for_exit(Duration::from_secs(10));
    assert!(
        status.success(),
        "the worker exited with {status} after SIGTERM; output:\n{}",
        worker.output()
    );
    note(format!(
        "  health: /readyz 503 {:.2}s after Redis died ({}), 200 {:.2}s after it came back; ok in {:.1}s",
        noticed_in.as_secs_f64(),
        reason.trim(),
        recovered_in.as_secs_f64(),
        started.elapsed().as_secs_f64()
    ));
}

/// `total_connections_received` of `INFO stats`.
fn connections_received(connection: &mut redis::Connection) -> u64 {
    let info: String = redis::cmd("INFO").arg("stats").query(connection).unwrap();
    info.lines()
        .find_map(|line| line.strip_prefix("total_connections_received:"))
        .and_then(|count| count.trim().parse().ok())
        .unwrap_or_else(|| panic!("no total_connections_received in {info}"))
}

/// `Ok(())` if the response has `status`, else what it was.
/// Longer than the liveness limit of the worker below (process timeout +
/// block time + reconnect backoff maximum + 15 s, about 15.4 s): a worker
/// that marked no progress while waiting for Redis would be unhealthy by
/// then.
const DOWN_AT_START: Duration = Duration::from_secs(20);

#[test]
fn healthy_while_redis_is_down_at_start() {
    if !selected("default") || !selected("no-metrics") {
        return;
    }
    let binaries: Vec<_> = ["default", "no-metrics"]
        .into_iter()
        .map(|label| {
            let variant = variant(label);
            let project = generate(variant);
            cargo(&project, &["build"]);
            (label, debug_binary(variant.project_name))
        })
        .collect();
    let redis_port = unused_port();
    let metrics_port = unused_port();
    let heartbeat = std::env::temp_dir().join(format!("down-at-start-{}", std::process::id()));
    let mut workers: Vec<(&str, Process)> = binaries
        .iter()
        .map(|(label, binary)| {
            let mut command = Command::new(binary);
            scrub_env(&mut command);
            command
                .env("REDIS_URL", format!("redis://127.0.0.1:{redis_port}"))
                .env("METRICS_ADDR", format!("127.0.0.1:{metrics_port}"))
                .env("HEARTBEAT_FILE", &heartbeat)
                .env("HEARTBEAT_MAX_AGE_MS", "2000")
                .env("WORKER_PROCESS_TIMEOUT_MS", "100")
                .env("REDIS_BLOCK_TIMEOUT_MS", "100")
                .env("WORKER_RECONNECT_BACKOFF_MS", "50")
                .env("WORKER_RECONNECT_BACKOFF_MAX_MS", "200");
            (*label, Process::spawn(label, command))
        })
        .collect();
    let no_metrics = &binaries[1].1;
    let healthcheck = || {
        let mut command = Command::new(no_metrics);
        scrub_env(&mut command);
        let output = command
            .arg("healthcheck")
            .env("HEARTBEAT_FILE", &heartbeat)
            .env("HEARTBEAT_MAX_AGE_MS", "2000")
            .env("REDIS_BLOCK_TIMEOUT_MS", "100")
            .output()
            .expect("healthcheck runs");
        output
            .status
            .success()
            .then_some(())
            .ok_or_else(|| String::from_utf8_lossy(&output.stderr).into_owned())
    };
    wait_until(START_DEADLINE, "/healthz and the heartbeat", || {
        expect_status(http_get(metrics_port, "/healthz"), 200)?;
        healthcheck()
    });
    let started = Instant::now();
    let mut checks = 0;
    while started.elapsed() < DOWN_AT_START {
        for (label, worker) in &mut workers {
            assert!(
                worker.try_status().is_none(),
                "`{label}` exited:\n{}",
                worker.output()
            );
        }
        expect_status(http_get(metrics_port, "/healthz"), 200)
            .unwrap_or_else(|error| panic!("/healthz after {:?}: {error}", started.elapsed()));
        healthcheck()
            .unwrap_or_else(|error| panic!("healthcheck after {:?}: {error}", started.elapsed()));
        checks += 1;
        thread::sleep(Duration::from_millis(500));
    }
    note(format!(
        "  Redis down at start for {DOWN_AT_START:?}: /healthz and healthcheck healthy in {checks} checks each"
    ));
    let _ = std::fs::remove_file(&heartbeat);
}

fn expect_status(response: Result<(u16, String), String>, status: u16) -> Result<(), String> {
    match response? {
        (got, _) if got == status => Ok(()),
        (got, body) => Err(format!("{got}: {body}")),
    }
}

/// `GET path` on 127.0.0.1:`port`; the status code and the body, or why
/// there is none.
fn http_get(port: u16, path: &str) -> Result<(u16, String), String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .map_err(|error| format!("connect {addr}: {error}"))?;
    let timeout = Some(Duration::from_secs(5));
    stream.set_read_timeout(timeout).unwrap();
    stream.set_write_timeout(timeout).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
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

/// The value of the sample called `name` (with any labels) in a Prometheus
/// or OpenMetrics text.
fn counter(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?;
        let value = if rest.starts_with('{') {
            &rest[rest.find('}')? + 1..]
        } else if rest.starts_with(' ') {
            rest
        } else {
            return None;
        };
        value.split_whitespace().next()?.parse().ok()
    })
}
