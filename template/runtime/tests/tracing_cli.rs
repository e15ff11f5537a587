//! Traces through the binary, configured by the standard OpenTelemetry
//! variables only: `send` continues the caller's `TRACEPARENT` with a
//! producer span and writes its context into the entry; the worker's span
//! continues that; both processes send their spans when they end.
//!
//! Needs Redis at `REDIS_URL` (default `redis://127.0.0.1:6379`).

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::otlp::{Collector, Received};
use common::{DEADLINE, connect, settings};
use redis::AsyncCommands;

use redis_streams_runtime::Settings;

/// The worker's binary, built for the tests.
const BIN: &str = env!("CARGO_BIN_EXE_echo-worker");

/// The binary for the test's stream and group, exporting to `collector`
/// with a batch interval so long that only the flush at exit sends.
fn command(settings: &Settings, collector: &Collector, service: &str) -> Command {
    let mut command = Command::new(BIN);
    command
        .env("REDIS_URL", settings.redis.url.expose())
        .env("REDIS_STREAM", &settings.redis.stream)
        .env("REDIS_CONSUMER_GROUP", &settings.redis.consumer_group)
        .env("METRICS_ADDR", "127.0.0.1:0")
        .env(
            "HEARTBEAT_FILE",
            std::env::temp_dir().join(format!("{}.heartbeat", settings.redis.consumer_group)),
        )
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", collector.endpoint())
        .env("OTEL_SERVICE_NAME", service)
        .env("OTEL_BSP_SCHEDULE_DELAY", "600000")
        .env_remove("RUST_LOG")
        .env_remove("TRACEPARENT")
        .env_remove("TRACESTATE");
    command
}

fn only<'a>(spans: &'a [Received], name: &str) -> &'a Received {
    let found: Vec<&Received> = spans.iter().filter(|span| span.name == name).collect();
    assert_eq!(found.len(), 1, "one `{name}` span in {spans:#?}");
    found[0]
}

#[tokio::test]
async fn send_and_the_worker_continue_the_caller_s_trace_and_flush_at_exit() {
    let collector = Collector::start();
    let settings = settings("tracing-cli");
    let mut redis = connect(&settings).await;
    let trace = format!("{:032x}", fastrand::u128(1..));
    let caller = format!("{:016x}", fastrand::u64(1..));

    let sent = command(&settings, &collector, "orders-api")
        .args(["send", "{\"order\":7}"])
        .env("TRACEPARENT", format!("00-{trace}-{caller}-01"))
        .env("TRACESTATE", "vendor=abc")
        .output()
        .unwrap();
    assert!(
        sent.status.success(),
        "{}",
        String::from_utf8_lossy(&sent.stderr)
    );
    let spans = collector.spans();
    let send = only(&spans, &format!("send {}", settings.redis.stream));
    assert_eq!(send.service, "orders-api");
    assert_eq!(send.kind, 4, "producer");
    assert_eq!(
        (send.trace_id.as_str(), send.parent_span_id.as_str()),
        (trace.as_str(), caller.as_str())
    );
    assert_eq!(
        send.attribute("messaging.destination.name"),
        settings.redis.stream
    );

    // The entry carries send's span as its parent, and the caller's state.
    let entries: redis::streams::StreamRangeReply =
        redis.xrange_all(&settings.redis.stream).await.unwrap();
    assert_eq!(entries.ids.len(), 1);
    let entry = &entries.ids[0];
    let field = |name: &str| -> String {
        redis::from_redis_value(entry.map.get(name).cloned().unwrap_or(redis::Value::Nil))
            .unwrap_or_default()
    };
    assert_eq!(
        field("traceparent"),
        format!("00-{trace}-{}-01", send.span_id)
    );
    assert_eq!(field("tracestate"), "vendor=abc");

    let mut worker = command(&settings, &collector, "orders-worker")
        .env("LOG_LEVEL", "info")
        .env(
            "OTEL_RESOURCE_ATTRIBUTES",
            "deployment.environment=staging,service.name=ignored",
        )
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (lines, processed) = mpsc::channel();
    let stderr = worker.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = lines.send(line);
        }
    });
    let give_up = std::time::Instant::now() + DEADLINE;
    let mut log = Vec::new();
    while !log
        .iter()
        .any(|line: &String| line.contains("first entry processed"))
    {
        let left = give_up.saturating_duration_since(std::time::Instant::now());
        match processed.recv_timeout(left) {
            Ok(line) => log.push(line),
            Err(_) => panic!("the entry was not processed: {log:#?}"),
        }
    }
    assert_eq!(
        collector.requests(),
        1,
        "only send's spans before the worker's exit"
    );
    let term = Command::new("kill")
        .args(["-TERM", &worker.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let (done, exited) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(worker.wait());
    });
    let status = exited
        .recv_timeout(Duration::from_secs(20))
        .expect("the worker exits after SIGTERM")
        .unwrap();
    assert!(status.success(), "{status}");

    let spans = collector.spans();
    let process = only(&spans, &format!("process {}", settings.redis.stream));
    assert_eq!(process.service, "orders-worker", "OTEL_SERVICE_NAME wins");
    assert_eq!(
        process.resource.get("deployment.environment"),
        Some(&"staging".to_owned()),
        "OTEL_RESOURCE_ATTRIBUTES is read: {process:?}"
    );
    assert_eq!(
        process.resource.get("service.version"),
        Some(&env!("CARGO_PKG_VERSION").to_owned())
    );
    assert_eq!(
        (process.trace_id.as_str(), process.parent_span_id.as_str()),
        (trace.as_str(), send.span_id.as_str()),
        "the worker's span is a child of send's, in the caller's trace"
    );
    assert_eq!(process.attribute("messaging.message.id"), entries.ids[0].id);
}

/// An exporter that cannot be built (here: a compression it does not
/// know, read from the standard variable) stops the start with the reason,
/// rather than dropping every span unseen.
#[test]
fn an_exporter_that_cannot_be_built_stops_the_start_with_the_reason() {
    let collector = Collector::start();
    let settings = settings("tracing-bad-exporter");
    let mut worker = command(&settings, &collector, "orders-worker")
        .env("OTEL_EXPORTER_OTLP_COMPRESSION", "brotli")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A worker that started anyway runs until stopped: stopped here, so
    // the test fails rather than hangs.
    let give_up = std::time::Instant::now() + DEADLINE;
    while worker.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > give_up {
            let _ = worker.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = worker.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("cannot export traces") && stderr.contains("brotli"),
        "{stderr}"
    );
}

/// A `send` that Redis refuses ends its span as an error, with the reason;
/// the spans go to the signal's own URL where one is given.
#[tokio::test]
async fn a_refused_send_ends_its_span_as_an_error() {
    let collector = Collector::start();
    let settings = settings("tracing-cli-refused");
    let mut redis = connect(&settings).await;
    // The stream's key holds something else: XADD is refused (WRONGTYPE).
    let _: () = redis
        .set(&settings.redis.stream, "not a stream")
        .await
        .unwrap();
    let sent = command(&settings, &collector, "orders-api")
        .args(["send", "{\"order\":8}"])
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:1")
        .env(
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            format!("{}/v1/traces", collector.endpoint()),
        )
        .output()
        .unwrap();
    assert!(!sent.status.success());
    let spans = collector.spans();
    let send = only(&spans, &format!("send {}", settings.redis.stream));
    assert_eq!(send.status, 2, "{send:#?}");
    assert!(send.status_message.contains("WRONGTYPE"), "{send:#?}");
}
