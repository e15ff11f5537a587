//! The worker against a real Redis: processing and acknowledgement, retries,
//! dead letters, recovery of pending entries and graceful shutdown.
//!
//! Needs Redis at `REDIS_URL` (default `redis://127.0.0.1:6379`). Each test
//! uses a stream, group and consumer of its own.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{
    DEADLINE, Recorder, add, connect, create_group, dead_letters, pending, read_as, settings,
    spawn, until,
};
use redis::AsyncCommands;

use redis_streams_runtime::dead_letter;
use redis_streams_runtime::dead_letter::{DELIVERIES, ORIGINAL_ID, REASON};
use redis_streams_runtime::worker::{Source, StepReport};
use redis_streams_runtime::{Handler, ProcessError, Worker};

/// Steps `worker` until `done` holds for the recorder.
async fn step_until<H: Handler>(
    worker: &mut Worker<H>,
    what: &str,
    mut done: impl FnMut() -> bool,
) {
    let give_up = tokio::time::Instant::now() + DEADLINE;
    while !done() {
        assert!(tokio::time::Instant::now() < give_up, "timed out: {what}");
        worker.step().await.expect("step");
    }
    // One more step acknowledges nothing new but proves nothing is left over.
    worker.step().await.expect("step");
}

/// Steps `worker` past the group creation, the replay pass and the first
/// scans; returns the report of the first step that read new entries.
async fn step_to_new_entries<H: Handler>(worker: &mut Worker<H>) -> StepReport {
    loop {
        let report = worker.step().await.unwrap();
        if report.source == Source::New {
            return report;
        }
        assert_eq!(report.processed, 0);
    }
}

/// Takes `id` over for a consumer named `other`, as another worker would
/// once this one stopped answering.
async fn claim_for_other(
    redis: &mut redis::aio::MultiplexedConnection,
    settings: &redis_streams_runtime::Settings,
    id: &str,
) {
    let _: redis::Value = redis::cmd("XCLAIM")
        .arg(&settings.redis.stream)
        .arg(&settings.redis.consumer_group)
        .arg("other")
        .arg(0)
        .arg(id)
        .arg("JUSTID")
        .query_async(redis)
        .await
        .unwrap();
}

/// Each pending entry of the group with the consumer that holds it.
async fn holders(
    redis: &mut redis::aio::MultiplexedConnection,
    settings: &redis_streams_runtime::Settings,
) -> Vec<(String, String)> {
    let held: redis::streams::StreamPendingCountReply = redis::cmd("XPENDING")
        .arg(&settings.redis.stream)
        .arg(&settings.redis.consumer_group)
        .arg("-")
        .arg("+")
        .arg(10)
        .query_async(redis)
        .await
        .unwrap();
    held.ids
        .into_iter()
        .map(|pending| (pending.id, pending.consumer))
        .collect()
}

#[tokio::test]
async fn processes_and_acknowledges_each_entry_once() {
    let settings = settings("ack");
    let mut redis = connect(&settings).await;
    let recorder = Recorder::succeeding();
    let mut worker = Worker::new(&settings, recorder.clone()).unwrap();
    worker.step().await.unwrap(); // creates the group

    let data: Vec<String> = (0..50)
        .map(|n| serde_json::json!({ "n": n }).to_string())
        .collect();
    let refs: Vec<&str> = data.iter().map(String::as_str).collect();
    let ids = add(&mut redis, &settings.redis.stream, &refs).await;

    step_until(&mut worker, "50 entries", || {
        recorder.finished().len() == 50
    })
    .await;
    let seen = recorder.seen();
    assert!(ids.iter().all(|id| seen.get(id) == Some(&1)), "{seen:?}");
    assert_eq!(pending(&mut redis, &settings).await, 0);
    assert!(dead_letters(&mut redis, &settings).await.is_empty());
}

#[tokio::test]
async fn a_step_reads_a_whole_batch_with_bounded_concurrency() {
    let mut settings = settings("batch");
    settings.worker.batch_size = 20;
    settings.worker.concurrency = 5;
    let mut redis = connect(&settings).await;
    let recorder = Recorder::succeeding().slow(Duration::from_millis(50));
    let mut worker = Worker::new(&settings, recorder.clone()).unwrap();
    add(&mut redis, &settings.redis.stream, &["{}"; 30]).await;

    // Past the group creation, the replay pass and the first scans, none of
    // which sees never-delivered entries.
    let (report, elapsed) = loop {
        let started = std::time::Instant::now();
        let report = worker.step().await.unwrap();
        if report.source == Source::New {
            break (report, started.elapsed());
        }
        assert_eq!(report.processed, 0);
    };
    assert_eq!(report.processed, 20);
    assert_eq!(report.succeeded, report.processed);
    // 5 at a time, 50 ms each: 4 rounds, not 1 (unbounded) nor 20 (serial).
    assert!(elapsed >= Duration::from_millis(200), "{elapsed:?}");
    assert!(elapsed < Duration::from_millis(900), "{elapsed:?}");
}

#[tokio::test]
async fn a_retryable_failure_is_retried_after_a_backoff_then_succeeds() {
    let settings = settings("retry");
    let mut redis = connect(&settings).await;
    let recorder = Recorder::new(|_, seen| {
        if seen <= 2 {
            Err(ProcessError::retry("flaky"))
        } else {
            Ok(())
        }
    });
    let mut worker = Worker::new(&settings, recorder.clone()).unwrap();
    worker.step().await.unwrap();
    let ids = add(&mut redis, &settings.redis.stream, &["{}"]).await;

    step_until(&mut worker, "three deliveries", || {
        recorder.seen().get(&ids[0]) == Some(&3)
    })
    .await;
    assert_eq!(pending(&mut redis, &settings).await, 0);
    assert!(dead_letters(&mut redis, &settings).await.is_empty());
}

#[tokio::test]
async fn an_entry_that_keeps_failing_is_dead_lettered_after_max_deliveries() {
    let mut settings = settings("poison");
    settings.worker.max_deliveries = 3;
    let mut redis = connect(&settings).await;
    let recorder = Recorder::new(|entry, _| match entry.get("data") {
        Some(b"poison") => Err(ProcessError::retry("always fails")),
        _ => Ok(()),
    });
    let mut worker = Worker::new(&settings, recorder.clone()).unwrap();
    worker.step().await.unwrap();
    let ids = add(&mut redis, &settings.redis.stream, &["ok", "poison", "ok"]).await;

    step_until(&mut worker, "a dead letter", || {
        recorder.seen().get(&ids[1]) == Some(&3)
    })
    .await;
    let letters = dead_letters(&mut redis, &settings).await;
    assert_eq!(letters.len(), 1);
    let letter = &letters[0];
    assert_eq!(letter.text(ORIGINAL_ID).unwrap().unwrap(), ids[1]);
    assert_eq!(letter.text(DELIVERIES).unwrap().unwrap(), "3");
    assert!(
        letter
            .text(REASON)
            .unwrap()
            .unwrap()
            .contains("always fails")
    );
    assert_eq!(
        dead_letter::original(letter).get("data"),
        Some(&b"poison"[..])
    );
    let seen = recorder.seen();
    assert_eq!((seen[&ids[0]], seen[&ids[1]], seen[&ids[2]]), (1, 3, 1));
    assert_eq!(pending(&mut redis, &settings).await, 0);
}

#[tokio::test]
async fn a_permanent_failure_is_dead_lettered_at_once() {
    let settings = settings("permanent");
    let mut redis = connect(&settings).await;
    let recorder = Recorder::new(|_, _| Err(ProcessError::permanent("cannot ever work")));
    let mut worker = Worker::new(&settings, recorder.clone()).unwrap();
    worker.step().await.unwrap();
    let ids = add(&mut redis, &settings.redis.stream, &["x"]).await;

    step_until(&mut worker, "one delivery", || {
        !recorder.finished().is_empty()
    })
    .await;
    let letters = dead_letters(&mut redis, &settings).await;
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].text(ORIGINAL_ID).unwrap().unwrap(), ids[0]);
    assert_eq!(letters[0].text(DELIVERIES).unwrap().unwrap(), "1");
    assert_eq!(recorder.seen()[&ids[0]], 1);
    assert_eq!(pending(&mut redis, &settings).await, 0);
}

#[tokio::test]
async fn a_panic_is_caught_and_counts_as_a_retryable_failure() {
    let mut settings = settings("panic");
    settings.worker.max_deliveries = 2;
    let mut redis = connect(&settings).await;
    let recorder = Recorder::new(|entry, _| {
        if entry.get("data") == Some(b"boom") {
            panic!("business logic bug");
        }
        Ok(())
    });
    let mut worker = Worker::new(&settings, recorder.clone()).unwrap();
    worker.step().await.unwrap();
    let ids = add(&mut redis, &settings.redis.stream, &["boom", "fine"]).await;

    step_until(&mut worker, "two deliveries", || {
        recorder.seen().get(&ids[0]) == Some(&2)
    })
    .await;
    let letters = dead_letters(&mut redis, &settings).await;
    assert_eq!(letters.len(), 1);
    assert!(
        letters[0]
            .text(REASON)
            .unwrap()
            .unwrap()
            .contains("panicked: business logic bug")
    );
    assert_eq!(recorder.seen()[&ids[1]], 1);
    assert_eq!(pending(&mut redis, &settings).await, 0);
}

#[tokio::test]
async fn own_pending_entries_are_replayed_on_start() {
    let settings = settings("replay");
    let mut redis = connect(&settings).await;
    let stream = &settings.redis.stream;
    let consumer = settings.redis.consumer_name.clone().unwrap();
    create_group(&mut redis, &settings).await;
    let ids = add(&mut redis, stream, &["a", "b"]).await;
    // A previous run of this consumer read them and died before acknowledging.
    read_as(&mut redis, &settings, &consumer, 100).await;
    assert_eq!(pending(&mut redis, &settings).await, 2);

    let recorder = Recorder::succeeding();
    let mut worker = Worker::new(&settings, recorder.clone()).unwrap();
    worker.step().await.unwrap(); // group exists already
    let report = worker.step().await.unwrap();
    assert_eq!(report.source, Source::Replay);
    assert_eq!(report.succeeded, 2);
    assert_eq!(recorder.seen().len(), 2);
    assert!(ids.iter().all(|id| recorder.seen().contains_key(id)));
    assert_eq!(pending(&mut redis, &settings).await, 0);
}

#[tokio::test]
async fn entries_of_a_dead_consumer_are_taken_over_after_claim_idle() {
    let mut settings = settings("claim");
    settings.worker.claim_idle = Duration::from_millis(200);
    settings.worker.claim_interval = Duration::from_millis(50);
    let mut redis = connect(&settings).await;
    let stream = &settings.redis.stream;
    create_group(&mut redis, &settings).await;
    let ids = add(&mut redis, stream, &["a", "b", "c"]).await;
    read_as(&mut redis, &settings, "dead-consumer", 100).await;

    let recorder = Recorder::succeeding();
    let mut worker = Worker::new(&settings, recorder.clone()).unwrap();
    let started = std::time::Instant::now();
    step_until(&mut worker, "the takeover", || {
        recorder.finished().len() == 3
    })
    .await;
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "claimed before claim_idle"
    );
    assert!(ids.iter().all(|id| recorder.seen().get(id) == Some(&1)));
    assert_eq!(pending(&mut redis, &settings).await, 0);
}

/// An entry another consumer takes over while its call runs here, as one
/// does when this worker freezes for longer than `claim_idle`, stays that
/// consumer's: the heartbeat does not claim it back, and its failure here
/// is left to its new holder, neither retried nor dead-lettered here.
#[tokio::test]
async fn an_entry_taken_over_while_in_flight_is_left_to_its_new_holder() {
    let mut settings = settings("taken-over");
    // A heartbeat every 50 ms; the call outlasts several.
    settings.worker.claim_idle = Duration::from_millis(200);
    let mut redis = connect(&settings).await;
    let stream = &settings.redis.stream;
    // The call goes on only once the entry is the other consumer's, and
    // then outlasts ten heartbeats: however loaded the machine, the
    // takeover happens while the call runs.
    let taken = Arc::new(AtomicBool::new(false));
    let recorder = Recorder::new(|_, _| Err(ProcessError::retry("failed after the takeover")))
        .gated(taken.clone())
        .slow(Duration::from_millis(500));
    let mut worker = Worker::new(&settings, recorder.clone()).unwrap();
    let ids = add(&mut redis, stream, &["{}"]).await;

    let take_over = async {
        until("the call to start", || recorder.seen().len() == 1).await;
        claim_for_other(&mut redis, &settings, &ids[0]).await;
        taken.store(true, Ordering::SeqCst);
    };
    let (report, ()) = tokio::join!(step_to_new_entries(&mut worker), take_over);
    assert_eq!(report.processed, 1);
    assert_eq!(report.taken_over, 1, "{report:?}");
    assert_eq!(report.retrying + report.dead_lettered, 0, "{report:?}");

    let holders = holders(&mut redis, &settings).await;
    assert_eq!(holders, [(ids[0].clone(), "other".to_owned())]);
    assert!(dead_letters(&mut redis, &settings).await.is_empty());
}

#[tokio::test]
async fn a_pending_entry_deleted_from_the_stream_is_dropped_not_retried() {
    let settings = settings("deleted");
    let mut redis = connect(&settings).await;
    let stream = &settings.redis.stream;
    let consumer = settings.redis.consumer_name.clone().unwrap();
    create_group(&mut redis, &settings).await;
    let ids = add(&mut redis, stream, &["gone", "kept"]).await;
    read_as(&mut redis, &settings, &consumer, 100).await;
    let _: () = redis.xdel(stream, &[&ids[0]]).await.unwrap();

    let recorder = Recorder::succeeding();
    let mut worker = Worker::new(&settings, recorder.clone()).unwrap();
    worker.step().await.unwrap();
    let report = worker.step().await.unwrap();
    assert_eq!((report.deleted, report.succeeded), (1, 1));
    assert!(!recorder.seen().contains_key(&ids[0]));
    assert_eq!(pending(&mut redis, &settings).await, 0);
}

#[tokio::test]
async fn shutdown_lets_in_flight_entries_finish_and_acknowledges_them() {
    let mut settings = settings("drain");
    settings.worker.concurrency = 10;
    let mut redis = connect(&settings).await;
    let recorder = Recorder::succeeding().slow(Duration::from_millis(500));
    let worker = Worker::new(&settings, recorder.clone()).unwrap();
    let ids = add(&mut redis, &settings.redis.stream, &["{}"; 10]).await;

    let running = spawn(worker);
    until("processing to start", || recorder.seen().len() == 10).await;
    assert!(
        recorder.finished().is_empty(),
        "nothing finished before the signal"
    );
    running.stop().await;

    let finished = recorder.finished();
    assert_eq!(finished.len(), 10);
    assert!(ids.iter().all(|id| finished.contains(id)));
    assert_eq!(
        pending(&mut redis, &settings).await,
        0,
        "all in-flight work acknowledged"
    );
}

#[tokio::test]
async fn what_misses_the_shutdown_deadline_stays_pending() {
    let mut settings = settings("deadline");
    settings.worker.shutdown_timeout = Duration::from_millis(200);
    let mut redis = connect(&settings).await;
    let recorder = Recorder::succeeding().slow(Duration::from_secs(30));
    let worker = Worker::new(&settings, recorder.clone()).unwrap();
    add(&mut redis, &settings.redis.stream, &["{}"; 3]).await;

    let running = spawn(worker);
    until("processing to start", || recorder.seen().len() == 3).await;
    let signalled = std::time::Instant::now();
    running.stop().await;
    assert!(
        signalled.elapsed() < Duration::from_secs(2),
        "{:?}",
        signalled.elapsed()
    );
    assert!(recorder.finished().is_empty());
    assert_eq!(
        pending(&mut redis, &settings).await,
        3,
        "unfinished entries are not acknowledged"
    );
}

#[tokio::test]
async fn a_deleted_stream_is_recreated_and_consumption_goes_on() {
    let settings = settings("nogroup");
    let mut redis = connect(&settings).await;
    let recorder = Recorder::succeeding();
    let worker = Worker::new(&settings, recorder.clone()).unwrap();
    let running = spawn(worker);
    add(&mut redis, &settings.redis.stream, &["before"]).await;
    until("the first entry", || recorder.finished().len() == 1).await;

    let _: () = redis.del(&settings.redis.stream).await.unwrap();
    add(&mut redis, &settings.redis.stream, &["after"]).await;
    until("the entry after the deletion", || {
        recorder.finished().len() == 2
    })
    .await;
    running.stop().await;
    assert_eq!(pending(&mut redis, &settings).await, 0);
}

#[tokio::test]
async fn a_retry_is_not_held_back_by_a_long_blocking_read() {
    let mut settings = settings("retry-timing");
    settings.redis.block_timeout = Duration::from_millis(5_000);
    settings.worker.retry_backoff = Duration::from_millis(100);
    let mut redis = connect(&settings).await;
    let recorder = Recorder::new(|_, seen| {
        if seen == 1 {
            Err(ProcessError::retry("once"))
        } else {
            Ok(())
        }
    });
    let worker = Worker::new(&settings, recorder.clone()).unwrap();
    let running = spawn(worker);
    let ids = add(&mut redis, &settings.redis.stream, &["x"]).await;
    until("the first delivery", || !recorder.finished().is_empty()).await;
    let failed_at = std::time::Instant::now();
    until("the retry", || recorder.seen().get(&ids[0]) == Some(&2)).await;
    let waited = failed_at.elapsed();
    assert!(
        waited < Duration::from_millis(1_500),
        "retry after {waited:?}, not ~100 ms"
    );
    running.stop().await;
    assert_eq!(pending(&mut redis, &settings).await, 0);
}

#[tokio::test]
async fn after_a_full_batch_the_next_one_is_read_ahead_and_processed_next() {
    let mut settings = settings("read-ahead");
    settings.worker.batch_size = 10;
    let mut redis = connect(&settings).await;
    let recorder = Recorder::succeeding();
    let mut worker = Worker::new(&settings, recorder.clone()).unwrap();
    let ids = add(&mut redis, &settings.redis.stream, &["{}"; 25]).await;

    assert_eq!(step_to_new_entries(&mut worker).await.processed, 10);
    // The first ten are acknowledged; the next ten are delivered to this
    // consumer already, not yet processed.
    let give_up = tokio::time::Instant::now() + DEADLINE;
    while pending(&mut redis, &settings).await != 10 {
        assert!(tokio::time::Instant::now() < give_up, "no read ahead");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(recorder.seen().len(), 10);

    let second = worker.step().await.unwrap();
    assert_eq!((second.source, second.processed), (Source::New, 10));
    let third = worker.step().await.unwrap();
    assert_eq!((third.source, third.processed), (Source::New, 5));
    let fourth = worker.step().await.unwrap();
    assert_eq!(fourth.processed, 0);

    let seen = recorder.seen();
    assert!(ids.iter().all(|id| seen.get(id) == Some(&1)), "{seen:?}");
    assert_eq!(pending(&mut redis, &settings).await, 0);
}

#[tokio::test]
async fn shutdown_also_finishes_the_entries_read_ahead() {
    let mut settings = settings("read-ahead-drain");
    settings.worker.batch_size = 10;
    settings.worker.concurrency = 10;
    let mut redis = connect(&settings).await;
    let recorder = Recorder::succeeding().slow(Duration::from_millis(300));
    let worker = Worker::new(&settings, recorder.clone()).unwrap();
    let ids = add(&mut redis, &settings.redis.stream, &["{}"; 20]).await;

    let running = spawn(worker);
    until("the first batch to start", || recorder.seen().len() == 10).await;
    running.stop().await;

    let finished = recorder.finished();
    assert_eq!(finished.len(), 20, "both batches finished");
    assert!(ids.iter().all(|id| finished.contains(id)));
    assert_eq!(pending(&mut redis, &settings).await, 0);
}

#[tokio::test]
async fn reading_ahead_does_not_hold_a_retry_back_behind_a_backlog() {
    let mut settings = settings("read-ahead-retry");
    settings.worker.batch_size = 10;
    settings.worker.concurrency = 10;
    settings.worker.retry_backoff = Duration::from_millis(100);
    let mut redis = connect(&settings).await;
    // Only the first entry fails: the rest succeed on their first delivery.
    let first = add(&mut redis, &settings.redis.stream, &["fails once"]).await;
    let recorder = Recorder::new(move |entry, seen| {
        if entry.id == first[0] && seen == 1 {
            Err(ProcessError::retry("once"))
        } else {
            Ok(())
        }
    })
    .slow(Duration::from_millis(20));
    let backlog = add(&mut redis, &settings.redis.stream, &["{}"; 1_000]).await;
    let worker = Worker::new(&settings, recorder.clone()).unwrap();

    // 100 full batches of at least 20 ms each: two seconds or more of
    // backlog, read ahead batch after batch.
    let running = spawn(worker);
    until("the retry", || {
        recorder.seen().values().any(|&seen| seen == 2)
    })
    .await;
    let done = recorder.seen().len();
    assert!(
        done < backlog.len() / 2,
        "the retry waited until {done} entries of the backlog were seen"
    );
    until("the backlog", || recorder.finished().len() == 1_002).await;
    running.stop().await;
    assert_eq!(pending(&mut redis, &settings).await, 0);
}

/// A dead letter Redis refuses (here `WRONGTYPE`: the dead-letter key holds
/// a string) holds back only its own entry: the worker goes on reading and
/// processing, keeps the held entry alive so that a second worker of the
/// group, running at the same time, never takes it over, and writes its
/// one dead letter once Redis accepts it.
#[tokio::test]
async fn a_refused_dead_letter_holds_back_only_its_own_entry() {
    let mut settings = settings("dlq-refused");
    settings.worker.claim_idle = Duration::from_secs(1);
    settings.worker.claim_interval = Duration::from_millis(50);
    settings.redis.block_timeout = Duration::from_millis(50);
    let mut redis = connect(&settings).await;
    let stream = settings.redis.stream.clone();
    let dead_letter_stream = settings.dead_letter_stream();
    let _: () = redis
        .set(&dead_letter_stream, "not a stream")
        .await
        .unwrap();
    let poison = |entry: &redis_streams_runtime::Entry| entry.get("data") == Some(&b"poison"[..]);
    let holder = Recorder::new(move |entry, _| {
        if poison(entry) {
            Err(ProcessError::permanent("poison"))
        } else {
            Ok(())
        }
    });
    let mut worker = Worker::new(&settings, holder.clone()).unwrap();
    worker.step().await.unwrap(); // creates the group
    let poisoned = add(&mut redis, &stream, &["poison"]).await;
    step_until(&mut worker, "the poison entry", || {
        holder.finished().len() == 1
    })
    .await;

    // A second worker of the group, running meanwhile: were the held entry
    // left without heartbeats, it would take it over after 1 s, while the
    // write is retried after 0.5 to 1 s, then 1 to 2 s, then 2 to 4 s.
    let rival = Recorder::succeeding();
    let mut rival_settings = settings.clone();
    rival_settings.redis.consumer_name = Some("rival".into());
    let running = spawn(Worker::new(&rival_settings, rival.clone()).unwrap());

    let more: Vec<String> = (0..20).map(|n| n.to_string()).collect();
    let more: Vec<&str> = more.iter().map(String::as_str).collect();
    add(&mut redis, &stream, &more).await;
    let fine_until = tokio::time::Instant::now() + Duration::from_secs(4);
    while tokio::time::Instant::now() < fine_until
        || holder.finished().len() + rival.finished().len() < 21
    {
        assert!(
            tokio::time::Instant::now() < fine_until + DEADLINE,
            "the other entries were not processed: {} here, {} by the rival",
            holder.finished().len(),
            rival.finished().len()
        );
        worker
            .step()
            .await
            .expect("a refused dead letter stops no step");
    }
    assert!(
        !rival.seen().contains_key(&poisoned[0]),
        "the rival took over the held entry"
    );
    assert_eq!(holder.seen().get(&poisoned[0]), Some(&1));
    running.stop().await;

    // Redis accepts dead letters again: exactly one is written, at the
    // next try (the delay has grown with each refusal, to 30 s at most).
    let _: () = redis.del(&dead_letter_stream).await.unwrap();
    let written_by = tokio::time::Instant::now() + Duration::from_secs(35);
    while dead_letters(&mut redis, &settings).await.is_empty() {
        assert!(
            tokio::time::Instant::now() < written_by,
            "no dead letter written"
        );
        worker.step().await.unwrap();
    }
    for _ in 0..3 {
        worker.step().await.unwrap();
    }
    let letters = dead_letters(&mut redis, &settings).await;
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(pending(&mut redis, &settings).await, 0);
    assert_eq!(holder.seen().get(&poisoned[0]), Some(&1));
}

/// An entry taken over while its call ran here, with no heartbeat in
/// between to notice (the worker was frozen, or the call shorter than a
/// heartbeat period), is not dead-lettered here when the call fails for
/// good: the ownership is checked before the dead-letter write, as before
/// a retry, and the entry stays its new holder's.
#[tokio::test]
async fn a_failure_after_a_takeover_writes_no_dead_letter() {
    let mut settings = settings("taken-over-dlq");
    // A heartbeat only every 2.5 s: none during the call.
    settings.worker.claim_idle = Duration::from_secs(10);
    let mut redis = connect(&settings).await;
    let stream = &settings.redis.stream;
    // The call fails only once the entry is the other consumer's.
    let taken = Arc::new(AtomicBool::new(false));
    let recorder =
        Recorder::new(|_, _| Err(ProcessError::permanent("no use retrying"))).gated(taken.clone());
    let mut worker = Worker::new(&settings, recorder.clone()).unwrap();
    let ids = add(&mut redis, stream, &["{}"]).await;

    let take_over = async {
        until("the call to start", || recorder.seen().len() == 1).await;
        claim_for_other(&mut redis, &settings, &ids[0]).await;
        taken.store(true, Ordering::SeqCst);
    };
    let ((), ()) = tokio::join!(
        async {
            step_to_new_entries(&mut worker).await;
        },
        take_over
    );
    worker.step().await.unwrap();

    assert!(dead_letters(&mut redis, &settings).await.is_empty());
    let holders = holders(&mut redis, &settings).await;
    assert_eq!(
        holders,
        [(ids[0].clone(), "other".to_owned())],
        "left to its new holder"
    );
}

/// Keeps Redis busy for `millis` with a script, as a slow command would:
/// what other clients send meanwhile waits, in the order it arrived.
async fn hold_redis(settings: &redis_streams_runtime::Settings, millis: u64) {
    let mut redis = patient_connection(settings).await;
    let _: () = redis::Script::new(
        "local function now() local t = redis.call('TIME') return t[1] * 1000 + t[2] / 1000 end \
         local until_ms = now() + tonumber(ARGV[1]) while now() < until_ms do end",
    )
    .arg(millis)
    .invoke_async(&mut redis)
    .await
    .unwrap();
}

/// With `max_deliveries` = 1, an entry that a blocking read delivers just
/// as the worker stops (the read is abandoned, its reply never read) was
/// never started: it is given back, and the next start processes it
/// rather than dead-letter it as "delivered once already".
#[tokio::test]
async fn an_entry_delivered_as_the_worker_stops_is_processed_after_a_restart() {
    let mut settings = settings("given-back");
    settings.worker.max_deliveries = 1;
    settings.redis.block_timeout = Duration::from_secs(10);
    let mut redis = connect(&settings).await;
    let recorder = Recorder::succeeding();
    create_group(&mut redis, &settings).await;
    let first = Worker::new(&settings, recorder.clone()).unwrap();
    let running = spawn(first);
    // The worker is blocked in its read once its consumer appears.
    until("the worker to block in its read", || {
        let consumers = redis::cmd("XINFO")
            .arg("CONSUMERS")
            .arg(&settings.redis.stream)
            .arg(&settings.redis.consumer_group)
            .query::<Vec<redis::Value>>(&mut redis_sync(&settings));
        consumers.is_ok_and(|consumers| !consumers.is_empty())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    // While Redis is busy, the entry is added and then the worker stops:
    // Redis serves the blocked read with it before it sees the read's
    // connection closed.
    let mut producer = patient_connection(&settings).await;
    let busy = tokio::spawn({
        let settings = settings.clone();
        async move { hold_redis(&settings, 500).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let adding = tokio::spawn({
        let stream = settings.redis.stream.clone();
        async move { add(&mut producer, &stream, &["{}"]).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    running.stop().await;
    busy.await.unwrap();
    let ids = adding.await.unwrap();
    assert!(recorder.seen().is_empty(), "processed before the stop");
    assert_eq!(
        pending(&mut redis, &settings).await,
        1,
        "the abandoned read delivered the entry"
    );

    let mut second = Worker::new(&settings, recorder.clone()).unwrap();
    step_until(&mut second, "the entry processed", || {
        recorder.finished().len() == 1
    })
    .await;
    assert_eq!(recorder.seen().get(&ids[0]), Some(&1));
    assert!(dead_letters(&mut redis, &settings).await.is_empty());
    assert_eq!(pending(&mut redis, &settings).await, 0);
}

/// A connection that waits for an answer however long Redis is busy (the
/// default gives up after 500 ms).
async fn patient_connection(
    settings: &redis_streams_runtime::Settings,
) -> redis::aio::MultiplexedConnection {
    let config = redis::AsyncConnectionConfig::new().set_response_timeout(None);
    redis::Client::open(settings.redis.url.expose())
        .unwrap()
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .unwrap()
}

fn redis_sync(settings: &redis_streams_runtime::Settings) -> redis::Connection {
    redis::Client::open(settings.redis.url.expose())
        .unwrap()
        .get_connection()
        .unwrap()
}

/// The replay of own pending entries works through its list one entry at
/// a time; an entry still waiting its turn, taken over meanwhile by a
/// second live worker (legitimately: idle longer than `claim_idle`), is
/// left to it and never claimed back, so no entry runs twice at once.
/// The two workers run at the same time.
#[tokio::test]
async fn a_replay_never_takes_back_what_another_worker_took_over() {
    const ENTRIES: usize = 6;
    let mut settings = settings("replay-race");
    settings.worker.claim_idle = Duration::from_secs(1);
    settings.worker.claim_interval = Duration::from_millis(50);
    settings.redis.consumer_name = Some("w1".into());
    let mut redis = connect(&settings).await;
    let stream = settings.redis.stream.clone();
    create_group(&mut redis, &settings).await;
    let data: Vec<String> = (0..ENTRIES).map(|n| n.to_string()).collect();
    let data: Vec<&str> = data.iter().map(String::as_str).collect();
    let ids = add(&mut redis, &stream, &data).await;
    // `w1` read them and died: they wait, idle, for its next start.
    read_as(&mut redis, &settings, "w1", ENTRIES).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;

    // One recorder for both: it counts every call of an entry, and the
    // calls running at once.
    let recorder = Recorder::succeeding().slow(Duration::from_millis(500));
    let w1 = spawn(Worker::new(&settings, recorder.clone()).unwrap());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut w2_settings = (*settings).clone();
    w2_settings.redis.consumer_name = Some("w2".into());
    let w2 = spawn(Worker::new(&w2_settings, recorder.clone()).unwrap());

    until("every entry processed", || {
        recorder.finished().len() >= ENTRIES
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    w1.stop().await;
    w2.stop().await;
    let seen = recorder.seen();
    assert!(
        ids.iter().all(|id| seen.get(id) == Some(&1)),
        "entries called more than once: {seen:?}"
    );
    assert_eq!(pending(&mut redis, &settings).await, 0);
    assert!(dead_letters(&mut redis, &settings).await.is_empty());
}
