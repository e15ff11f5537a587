//! Traces against a real Redis and a collector that speaks OTLP: the
//! worker's span per delivery continues the producer's trace, carries the
//! messaging attributes and the outcome, holds the business logic's own
//! spans, and a replayed dead letter joins the trace of its failure.
//!
//! One test per binary installs the global subscriber, so the scenarios
//! share one test.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::otlp::{Collector, Received};
use common::{
    DEADLINE, Recorder, Running, connect, create_group, dead_letters, settings, spawn, until,
};
use opentelemetry::trace::{SpanContext, TraceContextExt};
use redis::AsyncCommands;
use tracing::Instrument;

use redis_streams_runtime::admin::Admin;
use redis_streams_runtime::dead_letter::ORIGINAL_ID;
use redis_streams_runtime::otel::Tracing;
use redis_streams_runtime::settings::{LogFormat, ParentMode, Settings};
use redis_streams_runtime::{Entry, Handler, ProcessError, Worker, telemetry};

/// Business logic that opens a span of its own around a "downstream call"
/// and behaves as the entry's `kind` field says: `ok`, `retry-once`,
/// `hang-once` (longer than the process timeout, once), `fail` (permanent,
/// unless replayed).
#[derive(Clone, Default)]
struct Traced {
    calls: Arc<Mutex<HashMap<String, usize>>>,
    succeeded: Arc<Mutex<Vec<String>>>,
    /// The OpenTelemetry context each call ran in, by original entry ID.
    contexts: Arc<Mutex<HashMap<String, SpanContext>>>,
    /// Without spans of its own: for the tests other than the one that
    /// installs the global subscriber, whose collector would receive them.
    plain: bool,
}

impl Traced {
    fn plain() -> Self {
        Self {
            plain: true,
            ..Self::default()
        }
    }

    fn succeeded(&self, kind: &str) -> usize {
        let succeeded = self.succeeded.lock().unwrap();
        succeeded.iter().filter(|done| *done == kind).count()
    }
}

impl Handler for Traced {
    async fn handle(&self, entry: &Entry) -> Result<(), ProcessError> {
        let kind = entry.text("kind").unwrap().unwrap().to_owned();
        self.contexts.lock().unwrap().insert(
            entry.original_id().to_owned(),
            opentelemetry::Context::current()
                .span()
                .span_context()
                .clone(),
        );
        let call = {
            let mut calls = self.calls.lock().unwrap();
            let count = calls.entry(entry.original_id().to_owned()).or_default();
            *count += 1;
            *count
        };
        if !self.plain {
            async { tokio::time::sleep(Duration::from_millis(2)).await }
                .instrument(tracing::info_span!("downstream call", kind = %kind))
                .await;
        }
        let replayed = entry.get("replay.original_id").is_some();
        match kind.as_str() {
            "retry-once" if call == 1 => return Err(ProcessError::retry("busy downstream")),
            "hang-once" if call == 1 => tokio::time::sleep(Duration::from_secs(30)).await,
            "fail" if !replayed => return Err(ProcessError::permanent("cannot be processed")),
            _ => {}
        }
        self.succeeded.lock().unwrap().push(kind);
        Ok(())
    }
}

/// A producer's context: a random trace and span, sampled.
fn producer_context() -> (String, String, String) {
    let trace = format!("{:016x}{:016x}", fastrand::u64(1..), fastrand::u64(..));
    let span = format!("{:016x}", fastrand::u64(1..));
    (format!("00-{trace}-{span}-01"), trace, span)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

async fn add(
    redis: &mut redis::aio::MultiplexedConnection,
    settings: &Settings,
    id: &str,
    fields: &[(&str, &str)],
) -> String {
    redis
        .xadd(&settings.redis.stream, id, fields)
        .await
        .expect("XADD")
}

/// The delivery spans of entry `id`, in delivery order.
fn deliveries_of<'a>(spans: &'a [Received], settings: &Settings, id: &str) -> Vec<&'a Received> {
    let name = format!("process {}", settings.redis.stream);
    let mut found: Vec<&Received> = spans
        .iter()
        .filter(|span| {
            span.name == name
                && span
                    .attributes
                    .get("messaging.message.id")
                    .map(String::as_str)
                    == Some(id)
        })
        .collect();
    found.sort_by_key(|span| {
        span.attribute("messaging.redis.message.delivery_count")
            .parse::<u64>()
            .unwrap()
    });
    found
}

/// The business logic's span inside `parent`.
fn nested_in<'a>(spans: &'a [Received], parent: &Received) -> &'a Received {
    let nested: Vec<&Received> = spans
        .iter()
        .filter(|span| span.name == "downstream call" && span.parent_span_id == parent.span_id)
        .collect();
    assert_eq!(nested.len(), 1, "one nested span in {parent:?}: {nested:?}");
    assert_eq!(nested[0].trace_id, parent.trace_id);
    nested[0]
}

/// The tracer the test's settings describe.
fn start_tracing(settings: &Settings) -> Tracing {
    Tracing::start(&settings.tracing, "unused", "1.2.3")
        .unwrap()
        .expect("an endpoint turns tracing on")
}

/// Sends what `tracing` still holds, as a graceful stop does; then every
/// span the collector received.
async fn flushed(tracing: &Tracing, collector: &Collector) -> Vec<Received> {
    let tracing = tracing.clone();
    tokio::task::spawn_blocking(move || tracing.shutdown(Duration::from_secs(5)))
        .await
        .unwrap();
    collector.spans()
}

/// A worker with `handler`, exporting through `tracing`, started.
fn spawn_traced<H: Handler + 'static>(
    settings: &Settings,
    handler: H,
    tracing: &Tracing,
) -> Running {
    spawn(
        Worker::new(settings, handler)
            .unwrap()
            .with_tracing(tracing),
    )
}

/// The dead letters, once there are at least `count`.
async fn at_least_dead_letters(
    redis: &mut redis::aio::MultiplexedConnection,
    settings: &Settings,
    count: usize,
) -> Vec<Entry> {
    let give_up = tokio::time::Instant::now() + DEADLINE;
    loop {
        let letters = dead_letters(redis, settings).await;
        if letters.len() >= count {
            return letters;
        }
        assert!(
            tokio::time::Instant::now() < give_up,
            "{} of {count} dead letters",
            letters.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The status and events of the first delivery of `id`.
fn first_outcome<'a>(spans: &'a [Received], settings: &Settings, id: &str) -> (i32, &'a [String]) {
    let deliveries = deliveries_of(spans, settings, id);
    let first = deliveries
        .first()
        .unwrap_or_else(|| panic!("no delivery of {id} in {spans:#?}"));
    (first.status, first.events.as_slice())
}

fn settings_for(test: &str, collector: &Collector) -> common::TestSettings {
    let mut settings = settings(test);
    settings.tracing.endpoint = Some(collector.endpoint());
    settings.tracing.service_name = Some("orders-worker".to_owned());
    // Nothing is sent before the shutdown: the flush at the end must send
    // it all.
    settings.tracing.export_interval = Duration::from_secs(600);
    settings.tracing.batch_size = settings.tracing.queue_size;
    settings.worker.process_timeout = Duration::from_millis(1_000);
    settings
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_runs_from_the_producer_through_the_worker_into_the_business_logic() {
    let collector = Collector::start();
    let settings = settings_for("tracing", &collector);
    let tracing = start_tracing(&settings);
    telemetry::init(
        "warn",
        LogFormat::Pretty,
        settings.redis.redactor(),
        Some(tracing.tracer()),
    )
    .unwrap();
    let mut redis = connect(&settings).await;
    create_group(&mut redis, &settings).await;

    let (parent_a, trace_a, span_a) = producer_context();
    let (parent_c, trace_c, span_c) = producer_context();
    let (parent_h, trace_h, span_h) = producer_context();
    // Produced 5 s ago: it waited that long in the stream.
    let produced = now_ms() - 5_000;
    let id_a = add(
        &mut redis,
        &settings,
        &format!("{produced}-0"),
        &[
            ("kind", "ok"),
            ("data", "{\"n\":1}"),
            ("traceparent", &parent_a),
            ("tracestate", "vendor=1"),
        ],
    )
    .await;
    let id_b = add(&mut redis, &settings, "*", &[("kind", "ok")]).await;
    let id_c = add(
        &mut redis,
        &settings,
        "*",
        &[("kind", "retry-once"), ("traceparent", &parent_c)],
    )
    .await;
    // A `tracestate` without its `traceparent`: no context.
    let id_d = add(
        &mut redis,
        &settings,
        "*",
        &[("kind", "fail"), ("tracestate", "stray=1")],
    )
    .await;
    let id_h = add(
        &mut redis,
        &settings,
        "*",
        &[("kind", "hang-once"), ("traceparent", &parent_h)],
    )
    .await;

    // The producer did not sample its trace: neither the worker's span nor
    // the logic's is recorded (the default sampler follows the parent).
    let (unsampled, trace_u, _) = producer_context();
    let unsampled = format!("{}-00", unsampled.strip_suffix("-01").unwrap());
    add(
        &mut redis,
        &settings,
        "*",
        &[("kind", "ok"), ("traceparent", &unsampled)],
    )
    .await;

    let handler = Traced::default();
    let running = spawn_traced(&settings, handler.clone(), &tracing);
    until("ok, retried and timed-out entries processed", || {
        handler.succeeded("ok") == 3
            && handler.succeeded("retry-once") == 1
            && handler.succeeded("hang-once") == 1
    })
    .await;
    let letters = at_least_dead_letters(&mut redis, &settings, 1).await;
    assert_eq!(
        letters[0].get("tracestate"),
        None,
        "the stray state is not joined to the failed delivery's context"
    );
    let mut admin = Admin::connect(&settings).await.unwrap();
    admin
        .replay_dead_letters(&[letters[0].id.clone()], false)
        .await
        .unwrap();
    until("the replayed entry processed", || {
        handler.succeeded("fail") == 1
    })
    .await;
    running.stop().await;
    assert!(
        collector.spans().is_empty(),
        "nothing is sent before the shutdown's flush (export interval 600 s)"
    );
    let spans = flushed(&tracing, &collector).await;

    // A child of the producer's span, attributed after the conventions.
    let a = deliveries_of(&spans, &settings, &id_a);
    assert_eq!(a.len(), 1, "{spans:#?}");
    let a = a[0];
    assert_eq!(
        (a.trace_id.as_str(), a.parent_span_id.as_str()),
        (trace_a.as_str(), span_a.as_str())
    );
    assert_eq!(a.kind, 5, "consumer");
    assert_eq!(a.service, "orders-worker");
    let expected = [
        ("messaging.system", "redis"),
        ("messaging.operation.type", "process"),
        ("messaging.destination.name", settings.redis.stream.as_str()),
        (
            "messaging.consumer.group.name",
            settings.redis.consumer_group.as_str(),
        ),
        (
            "messaging.client.id",
            settings.redis.consumer_name.as_deref().unwrap(),
        ),
        ("messaging.message.id", id_a.as_str()),
        ("messaging.redis.message.delivery_count", "1"),
    ];
    for (key, value) in expected {
        assert_eq!(a.attribute(key), value, "{key}");
    }
    let body = "ok".len() + "{\"n\":1}".len() + parent_a.len() + "vendor=1".len();
    assert_eq!(a.attribute("messaging.message.body.size"), body.to_string());
    let waited: u64 = a
        .attribute("messaging.redis.message.wait_time_ms")
        .parse()
        .unwrap();
    assert!((5_000..60_000).contains(&waited), "waited {waited} ms");
    assert_eq!(
        (a.status, a.events.as_slice()),
        (1, ["acknowledged".to_owned()].as_slice())
    );
    nested_in(&spans, a);

    // Without a context: a trace of its own, the logic's span in it.
    let b = deliveries_of(&spans, &settings, &id_b);
    assert_eq!(b.len(), 1);
    assert!(b[0].parent_span_id.is_empty(), "{:?}", b[0]);
    assert_ne!(b[0].trace_id, trace_a);
    nested_in(&spans, b[0]);

    // Retried: two deliveries, both in the producer's trace; the first
    // failed with the retry as its event.
    let c = deliveries_of(&spans, &settings, &id_c);
    assert_eq!(c.len(), 2, "{c:#?}");
    for delivery in &c {
        assert_eq!(
            (delivery.trace_id.as_str(), delivery.parent_span_id.as_str()),
            (trace_c.as_str(), span_c.as_str())
        );
        nested_in(&spans, delivery);
    }
    assert_eq!(
        (c[0].status, c[0].status_message.as_str()),
        (2, "busy downstream")
    );
    assert_eq!(c[0].events, ["retry scheduled"]);
    assert_eq!(
        (
            c[1].status,
            c[1].attribute("messaging.redis.message.delivery_count")
        ),
        (1, "2")
    );

    // Timed out, then retried.
    let h = deliveries_of(&spans, &settings, &id_h);
    assert_eq!(h.len(), 2, "{h:#?}");
    assert_eq!(h[0].events, ["timed out", "retry scheduled"]);
    assert_eq!(
        (h[0].trace_id.as_str(), h[0].parent_span_id.as_str()),
        (trace_h.as_str(), span_h.as_str())
    );
    assert_eq!(h[1].status, 1);

    // Dead-lettered; its replay continues the failed delivery's trace.
    let d = deliveries_of(&spans, &settings, &id_d);
    assert_eq!(d.len(), 1, "{d:#?}");
    let d = d[0];
    assert_eq!(
        (d.status, d.events.as_slice()),
        (2, ["dead-lettered".to_owned()].as_slice())
    );
    let replayed: Vec<&Received> = spans
        .iter()
        .filter(|span| span.kind == 5 && span.parent_span_id == d.span_id)
        .collect();
    assert_eq!(
        replayed.len(),
        1,
        "the replay's span is a child of the failed delivery's: {spans:#?}"
    );
    assert_eq!(replayed[0].trace_id, d.trace_id);
    assert_ne!(
        replayed[0].attribute("messaging.message.id"),
        id_d,
        "the replay is a new entry"
    );
    assert_eq!(replayed[0].status, 1);
    nested_in(&spans, replayed[0]);

    assert!(
        spans.iter().all(|span| span.trace_id != trace_u),
        "nothing of the unsampled trace is recorded: {spans:#?}"
    );

    // Nothing else: a span per delivery and one per logic call.
    let deliveries = spans.iter().filter(|span| span.kind == 5).count();
    assert_eq!(deliveries, 8, "{spans:#?}");
    assert_eq!(spans.len(), 16, "{spans:#?}");
}

/// `link` starts a trace of its own, linked to the producer's; `none`
/// ignores the producer's context.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_and_none_keep_the_producer_s_trace_apart() {
    for mode in [ParentMode::Link, ParentMode::None] {
        let collector = Collector::start();
        let mut settings = settings_for("tracing-link", &collector);
        settings.tracing.parent = mode;
        let tracing = start_tracing(&settings);
        let mut redis = connect(&settings).await;
        create_group(&mut redis, &settings).await;
        let (parent, trace, span) = producer_context();
        let id = add(
            &mut redis,
            &settings,
            "*",
            &[("kind", "ok"), ("traceparent", &parent)],
        )
        .await;
        let handler = Traced::plain();
        let running = spawn_traced(&settings, handler.clone(), &tracing);
        until("processed", || handler.succeeded("ok") == 1).await;
        running.stop().await;
        let spans = flushed(&tracing, &collector).await;
        let delivery = deliveries_of(&spans, &settings, &id);
        assert_eq!(delivery.len(), 1, "{mode:?}: {spans:#?}");
        assert!(delivery[0].parent_span_id.is_empty(), "{mode:?}");
        assert_ne!(delivery[0].trace_id, trace, "{mode:?}");
        let links = match mode {
            ParentMode::Link => vec![(trace.clone(), span.clone())],
            _ => Vec::new(),
        };
        assert_eq!(delivery[0].links, links, "{mode:?}");
    }
}

/// A call that fails after another consumer took its entry over: the span
/// says so, and the failure is left to the new holder.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_taken_over_while_it_ran_ends_as_taken_over() {
    let collector = Collector::start();
    let mut settings = settings_for("tracing-taken", &collector);
    // A heartbeat every 50 ms notices the takeover while the call runs.
    settings.worker.claim_idle = Duration::from_millis(200);
    settings.worker.process_timeout = Duration::from_secs(10);
    let tracing = start_tracing(&settings);
    let mut redis = connect(&settings).await;
    create_group(&mut redis, &settings).await;
    let id = add(&mut redis, &settings, "*", &[("kind", "ok")]).await;
    // The call goes on only once the entry is another consumer's.
    let taken = Arc::new(AtomicBool::new(false));
    let recorder = Recorder::new(|_, _| Err(ProcessError::retry("failed after the takeover")))
        .gated(taken.clone())
        .slow(Duration::from_millis(500));
    let running = spawn_traced(&settings, recorder.clone(), &tracing);
    until("the call to start", || recorder.seen().len() == 1).await;
    let _: redis::Value = redis::cmd("XCLAIM")
        .arg(&settings.redis.stream)
        .arg(&settings.redis.consumer_group)
        .arg("other")
        .arg(0)
        .arg(&id)
        .arg("JUSTID")
        .query_async(&mut redis)
        .await
        .unwrap();
    taken.store(true, Ordering::SeqCst);
    until("the call to end", || recorder.finished().len() == 1).await;
    running.stop().await;
    let spans = flushed(&tracing, &collector).await;
    assert_eq!(
        first_outcome(&spans, &settings, &id),
        (2, ["taken over".to_owned()].as_slice())
    );
    assert!(dead_letters(&mut redis, &settings).await.is_empty());
}

/// A call still running when the shutdown deadline passes: its span ends
/// as abandoned, and is sent with the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_still_running_at_the_deadline_ends_as_abandoned() {
    let collector = Collector::start();
    let mut settings = settings_for("tracing-abandoned", &collector);
    settings.worker.process_timeout = Duration::from_secs(30);
    settings.worker.shutdown_timeout = Duration::from_millis(200);
    let tracing = start_tracing(&settings);
    let mut redis = connect(&settings).await;
    create_group(&mut redis, &settings).await;
    let id = add(&mut redis, &settings, "*", &[("kind", "ok")]).await;
    let recorder = Recorder::succeeding().slow(Duration::from_secs(20));
    let running = spawn_traced(&settings, recorder.clone(), &tracing);
    until("the call to start", || recorder.seen().len() == 1).await;
    running.stop().await;
    let spans = flushed(&tracing, &collector).await;
    assert_eq!(deliveries_of(&spans, &settings, &id).len(), 1, "{spans:#?}");
    assert_eq!(
        first_outcome(&spans, &settings, &id),
        (2, ["abandoned".to_owned()].as_slice())
    );
}

/// A delivery the sampler drops records nothing and passes on no
/// "sampled" flag: the logic runs in a context of its own in the
/// producer's trace, marked not sampled, even where the producer's said
/// sampled; its dead letter gets no context of the worker's (a replay
/// would otherwise continue an unsampled trace), and one the producer gave
/// keeps it as it came.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_the_sampler_drops_passes_on_no_sampled_flag() {
    let collector = Collector::start();
    let mut settings = settings_for("tracing-unsampled", &collector);
    settings.tracing.sampler = "always_off".to_owned();
    let tracing = start_tracing(&settings);
    let mut redis = connect(&settings).await;
    create_group(&mut redis, &settings).await;
    let (sampled, trace, span) = producer_context();
    let unsampled = format!("{}-00", sampled.strip_suffix("-01").unwrap());
    let bare = add(&mut redis, &settings, "*", &[("kind", "fail")]).await;
    let given = add(
        &mut redis,
        &settings,
        "*",
        &[("kind", "fail"), ("traceparent", &unsampled)],
    )
    .await;
    let ok = add(
        &mut redis,
        &settings,
        "*",
        &[("kind", "ok"), ("traceparent", &sampled)],
    )
    .await;
    let handler = Traced::plain();
    let running = spawn_traced(&settings, handler.clone(), &tracing);
    let letters = at_least_dead_letters(&mut redis, &settings, 2).await;
    until("the sampled entry processed", || {
        handler.succeeded("ok") == 1
    })
    .await;
    running.stop().await;

    let seen = handler.contexts.lock().unwrap()[&ok].clone();
    assert_eq!(seen.trace_id().to_string(), trace);
    assert_ne!(seen.span_id().to_string(), span, "a span ID of its own");
    assert!(!seen.is_sampled(), "{seen:?}");

    let context_of = |id: &str| {
        let letter = letters
            .iter()
            .find(|letter| letter.text(ORIGINAL_ID).map(Result::unwrap) == Some(id))
            .unwrap_or_else(|| panic!("no dead letter of {id}: {letters:?}"));
        letter
            .text("traceparent")
            .map(|context| context.unwrap().to_owned())
    };
    assert_eq!(context_of(&bare), None);
    assert_eq!(context_of(&given), Some(unsampled.clone()));
    assert!(flushed(&tracing, &collector).await.is_empty());
}

/// An entry that kept coming back without an outcome (its workers
/// crashed) is dead-lettered before any call: the spans of its earlier
/// deliveries died with those workers, so this one has a span of its own,
/// in the producer's trace, that says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_dead_lettered_before_its_call_has_a_span_that_says_so() {
    let collector = Collector::start();
    let mut settings = settings_for("tracing-comes-back", &collector);
    settings.worker.max_deliveries = 3;
    settings.worker.claim_idle = Duration::from_millis(100);
    settings.worker.claim_interval = Duration::from_millis(50);
    let tracing = start_tracing(&settings);
    let mut redis = connect(&settings).await;
    create_group(&mut redis, &settings).await;
    let (parent, trace, span) = producer_context();
    let id = add(
        &mut redis,
        &settings,
        "*",
        &[("kind", "ok"), ("traceparent", &parent)],
    )
    .await;
    // Delivered three times to consumers that never finished it.
    let _: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg(&settings.redis.consumer_group)
        .arg("crashed")
        .arg("STREAMS")
        .arg(&settings.redis.stream)
        .arg(">")
        .query_async(&mut redis)
        .await
        .unwrap();
    let _: redis::Value = redis::cmd("XCLAIM")
        .arg(&settings.redis.stream)
        .arg(&settings.redis.consumer_group)
        .arg("crashed")
        .arg(0)
        .arg(&id)
        .arg("RETRYCOUNT")
        .arg(3)
        .arg("JUSTID")
        .query_async(&mut redis)
        .await
        .unwrap();
    let handler = Traced::plain();
    let running = spawn_traced(&settings, handler.clone(), &tracing);
    at_least_dead_letters(&mut redis, &settings, 1).await;
    running.stop().await;
    assert_eq!(handler.succeeded("ok"), 0, "never called");
    let spans = flushed(&tracing, &collector).await;
    let delivery = deliveries_of(&spans, &settings, &id);
    assert_eq!(delivery.len(), 1, "{spans:#?}");
    assert_eq!(
        first_outcome(&spans, &settings, &id),
        (2, ["dead-lettered".to_owned()].as_slice())
    );
    assert_eq!(
        (
            delivery[0].trace_id.as_str(),
            delivery[0].parent_span_id.as_str()
        ),
        (trace.as_str(), span.as_str())
    );
    assert_eq!(
        delivery[0].attribute("messaging.redis.message.delivery_count"),
        "4"
    );
}
