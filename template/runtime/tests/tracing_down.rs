//! A trace collector that is down or hangs costs the worker nothing but
//! spans: every entry is processed and acknowledged as without tracing,
//! and the spans the export could not deliver are counted.
//!
//! Needs Redis at `REDIS_URL` (default `redis://127.0.0.1:6379`).

mod common;

use std::net::TcpListener;
use std::time::Duration;

use common::{Recorder, add, connect, create_group, pending, settings, spawn, until};

use redis_streams_runtime::otel::{Tracing, spans_dropped};
use redis_streams_runtime::{Settings, Worker};

const ENTRIES: usize = 300;

/// Processes `ENTRIES` entries with traces sent to `endpoint`; the spans
/// dropped meanwhile.
async fn drain(settings: &mut Settings, endpoint: String) -> u64 {
    settings.tracing.endpoint = Some(endpoint);
    settings.tracing.queue_size = 16;
    settings.tracing.batch_size = 8;
    settings.tracing.export_interval = Duration::from_millis(20);
    let tracing = Tracing::start(&settings.tracing, "down", "1.0.0")
        .unwrap()
        .unwrap();
    let before = spans_dropped();
    let mut redis = connect(settings).await;
    create_group(&mut redis, settings).await;
    add(&mut redis, &settings.redis.stream, &["{}"; ENTRIES]).await;
    let recorder = Recorder::succeeding();
    let running = spawn(
        Worker::new(settings, recorder.clone())
            .unwrap()
            .with_tracing(&tracing),
    );
    until("every entry processed", || {
        recorder.finished().len() == ENTRIES
    })
    .await;
    running.stop().await;
    assert_eq!(pending(&mut redis, settings).await, 0, "all acknowledged");
    tokio::task::spawn_blocking(move || tracing.shutdown(Duration::from_secs(1)))
        .await
        .unwrap();
    spans_dropped() - before
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_is_down_or_hangs_stops_nothing_and_the_drops_are_counted() {
    // Nothing listens: every export fails at once, every span is dropped.
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let dropped = drain(&mut settings("tracing-down"), endpoint).await;
    assert_eq!(dropped, ENTRIES as u64, "one span per entry, all dropped");

    // A collector that accepts and never answers: the first export hangs
    // for the whole test (its timeout is longer), so every entry is
    // processed while it hangs, and the queue's overflow is dropped.
    let hanging = TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", hanging.local_addr().unwrap());
    let mut settings = settings("tracing-hang");
    settings.tracing.export_timeout = Duration::from_secs(120);
    let dropped = drain(&mut settings, endpoint).await;
    let queued = 16 + 8;
    assert!(
        dropped >= (ENTRIES - queued) as u64,
        "{dropped} dropped; at most the queue and one batch wait"
    );

    #[cfg(feature = "metrics")]
    {
        let names = redis_streams_runtime::Names {
            stream: "s".to_owned(),
            group: "g".to_owned(),
            consumer: "c".to_owned(),
            dead_letter_stream: "s:dlq".to_owned(),
        };
        let text = redis_streams_runtime::metrics::Metrics::new("w", &names).render();
        let line = text
            .lines()
            .find(|line| line.starts_with("worker_trace_spans_dropped_total{"))
            .unwrap_or_else(|| panic!("no dropped-spans counter in {text}"));
        let counted: u64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        assert_eq!(counted, spans_dropped(), "{line}");
    }
    drop(hanging);
}
