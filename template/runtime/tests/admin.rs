//! The operator's commands against a real Redis, through the library and
//! through the binary as a person would run it.
//!
//! Needs Redis at `REDIS_URL` (default `redis://127.0.0.1:6379`).

mod common;

use std::io::Write;
use std::process::{Command, Output, Stdio};

use common::{Recorder, add, connect, create_group, dead_letters, pending, read_as, settings};
use redis::AsyncCommands;

use redis_streams_runtime::admin::{Admin, AdminError, Status, TrimRequest, TrimTo};
use redis_streams_runtime::{ProcessError, Settings, Worker};

/// The worker's binary, built for the tests.
const BIN: &str = env!("CARGO_BIN_EXE_echo-worker");

/// Runs the binary with the test's stream, group and Redis.
fn cli(settings: &Settings, args: &[&str], stdin: Option<&str>) -> Output {
    let mut command = Command::new(BIN);
    command
        .args(args)
        .env("REDIS_URL", settings.redis.url.expose())
        .env("REDIS_STREAM", &settings.redis.stream)
        .env("REDIS_CONSUMER_GROUP", &settings.redis.consumer_group)
        .env("WORKER_DEAD_LETTER_STREAM", settings.dead_letter_stream())
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("the binary starts");
    let mut input = child.stdin.take().expect("stdin is piped");
    input.write_all(stdin.unwrap_or("").as_bytes()).unwrap();
    drop(input);
    child.wait_with_output().unwrap()
}

fn stdout(output: &Output) -> String {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test]
async fn status_matches_what_redis_reports() {
    let settings = settings("status");
    let mut redis = connect(&settings).await;
    let (stream, group) = (&settings.redis.stream, &settings.redis.consumer_group);
    create_group(&mut redis, &settings).await;
    let ids = add(&mut redis, stream, &["{}"; 8]).await;
    read_as(&mut redis, &settings, "reader", 5).await;
    let _: () = redis.xack(stream, group, &ids[..2]).await.unwrap();
    let _: String = redis
        .xadd(settings.dead_letter_stream(), "*", &[("data", "x")])
        .await
        .unwrap();

    let status = Admin::connect(&settings)
        .await
        .unwrap()
        .status()
        .await
        .unwrap();
    assert_eq!(status.length, 8);
    assert_eq!(status.first_entry_id.as_deref(), Some(ids[0].as_str()));
    assert_eq!(status.last_entry_id.as_deref(), Some(ids[7].as_str()));
    assert_eq!(status.dead_letters, 1);
    let group_status = &status.groups[0];
    assert_eq!(group_status.name, *group);
    assert_eq!((group_status.pending, group_status.lag), (3, Some(3)));
    assert_eq!(group_status.last_delivered_id, ids[4]);
    assert_eq!(group_status.consumers.len(), 1);
    assert_eq!(group_status.consumers[0].name, "reader");
    assert_eq!(group_status.consumers[0].pending, 3);

    let json: serde_json::Value =
        serde_json::from_str(&stdout(&cli(&settings, &["status", "--json"], None))).unwrap();
    assert_eq!(json["length"], 8);
    assert_eq!(json["groups"][0]["pending"], 3);
    assert_eq!(json["groups"][0]["lag"], 3);
    assert_eq!(json["dead_letters"], 1);
    let text = stdout(&cli(&settings, &["status"], None));
    assert!(text.contains("lag 3, pending 3"), "{text}");
}

#[tokio::test]
async fn status_of_a_missing_stream_is_empty_not_an_error() {
    let settings = settings("status-empty");
    let status: Status = Admin::connect(&settings)
        .await
        .unwrap()
        .status()
        .await
        .unwrap();
    assert_eq!(
        (status.length, status.groups.len(), status.dead_letters),
        (0, 0, 0)
    );
}

#[tokio::test]
async fn send_adds_exactly_what_it_is_given() {
    let settings = settings("send");
    let mut redis = connect(&settings).await;
    let stream = &settings.redis.stream;

    let out = stdout(&cli(&settings, &["send", "--count", "2500"], None));
    assert!(out.contains("added 2500 entries"), "{out}");
    let length: usize = redis.xlen(stream).await.unwrap();
    assert_eq!(length, 2500);

    stdout(&cli(&settings, &["send", r#"{"test":"message"}"#], None));
    stdout(&cli(&settings, &["send"], Some("{\"a\":1}\n\n{\"b\":2}\n")));
    let length: usize = redis.xlen(stream).await.unwrap();
    assert_eq!(length, 2503);

    let refused = cli(&settings, &["send"], Some("{\"ok\":1}\nnot json\n"));
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("line 2"));
    // Blank lines count: the refusal names the line an editor shows.
    let refused = cli(
        &settings,
        &["send"],
        Some("{\"ok\":1}\n\n\n{\"ok\":2}\nnot json\n"),
    );
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("line 5"), "{said}");
    let length: usize = redis.xlen(stream).await.unwrap();
    assert_eq!(length, 2503, "nothing is sent when a line is bad");
}

/// Two streams share one dead-letter stream under one group name: a
/// replay puts each letter back only onto the stream it came from, and
/// keeps (refusing, with the reason) a letter of the other stream or one
/// whose group no longer exists; nothing is lost either way.
#[tokio::test]
async fn a_replay_puts_letters_back_only_where_a_group_processes_them() {
    let orders = settings("dlq-shared-a");
    let mut refunds_owned = settings("dlq-shared-b");
    let mut orders_settings = (*orders).clone();
    let shared = format!("{}:shared-dlq", orders.redis.stream);
    orders_settings.worker.dead_letter_stream = Some(shared.clone());
    let mut refunds = (*refunds_owned).clone();
    refunds.worker.dead_letter_stream = Some(shared.clone());
    refunds.redis.consumer_group = orders.redis.consumer_group.clone();
    refunds_owned.redis.consumer_group = refunds.redis.consumer_group.clone();
    let mut redis = connect(&orders).await;

    let mut letter_ids = Vec::new();
    for settings in [&orders_settings, &refunds] {
        let failing = Recorder::new(|_, _| Err(ProcessError::permanent("no")));
        let mut worker = Worker::new(settings, failing).unwrap();
        worker.step().await.unwrap();
        add(&mut redis, &settings.redis.stream, &["x"]).await;
        while dead_letters(&mut redis, settings).await.len() < letter_ids.len() + 1 {
            worker.step().await.unwrap();
        }
        letter_ids.push(
            dead_letters(&mut redis, settings)
                .await
                .last()
                .unwrap()
                .id
                .clone(),
        );
    }
    let (orders_letter, refunds_letter) = (&letter_ids[0], &letter_ids[1]);
    let length = |redis: &mut redis::aio::MultiplexedConnection, key: String| {
        let mut redis = redis.clone();
        async move { redis.xlen::<_, usize>(key).await.unwrap() }
    };

    // The group's letters, as the refunds stream sees them: its own only.
    let out = stdout(&cli(&refunds, &["dlq", "replay"], None));
    assert!(out.contains("moved 1 dead letters"), "{out}");
    assert_eq!(length(&mut redis, shared.clone()).await, 1);
    assert_eq!(length(&mut redis, orders.redis.stream.clone()).await, 1);
    assert_eq!(length(&mut redis, refunds.redis.stream.clone()).await, 2);
    let left = dead_letters(&mut redis, &orders_settings).await;
    assert_eq!(&left[0].id, orders_letter);
    assert_ne!(orders_letter, refunds_letter);

    // Named explicitly from the wrong stream: kept, and said so.
    let refused = cli(&refunds, &["dlq", "replay", orders_letter], None);
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stdout);
    assert!(
        said.contains(&format!("it came from stream {}", orders.redis.stream)),
        "{said}"
    );
    assert_eq!(length(&mut redis, shared.clone()).await, 1);
    assert_eq!(length(&mut redis, refunds.redis.stream.clone()).await, 2);

    // Its group gone from its stream: kept, in a dry run as in a replay.
    let _: () = redis
        .xgroup_destroy(&orders.redis.stream, &orders.redis.consumer_group)
        .await
        .unwrap();
    let dry = stdout(&cli(
        &orders_settings,
        &["dlq", "replay", "--dry-run", orders_letter],
        None,
    ));
    assert!(dry.contains("no longer exists"), "{dry}");
    let refused = cli(&orders_settings, &["dlq", "replay", orders_letter], None);
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stdout);
    assert!(said.contains("no longer exists"), "{said}");
    assert_eq!(length(&mut redis, shared.clone()).await, 1);
    assert_eq!(length(&mut redis, orders.redis.stream.clone()).await, 1);

    // With the group back, it goes home.
    create_group(&mut redis, &orders_settings).await;
    let out = stdout(&cli(
        &orders_settings,
        &["dlq", "replay", orders_letter],
        None,
    ));
    assert!(out.contains("moved 1 dead letters"), "{out}");
    assert_eq!(length(&mut redis, shared.clone()).await, 0);
    assert_eq!(length(&mut redis, orders.redis.stream.clone()).await, 2);
    let _: () = redis.del(&shared).await.unwrap();
}

#[tokio::test]
async fn dead_letters_can_be_listed_replayed_and_processed() {
    let settings = settings("dlq");
    let mut redis = connect(&settings).await;
    let failing = Recorder::new(|_, _| Err(ProcessError::permanent("downstream said no")));
    let mut worker = Worker::new(&settings, failing).unwrap();
    worker.step().await.unwrap();
    let ids = add(&mut redis, &settings.redis.stream, &["one", "two", "three"]).await;
    while dead_letters(&mut redis, &settings).await.len() < 3 {
        worker.step().await.unwrap();
    }

    let mut admin = Admin::connect(&settings).await.unwrap();
    let letters = admin.dead_letters(10).await.unwrap();
    assert_eq!(letters.len(), 3);
    assert_eq!(letters[0].original_id, ids[0]);
    assert_eq!(letters[0].reason, "downstream said no");
    assert_eq!(letters[0].fields, [("data".to_owned(), "one".to_owned())]);
    assert_eq!(letters[0].group, settings.redis.consumer_group);
    let listed = stdout(&cli(&settings, &["dlq", "list"], None));
    assert!(listed.contains("reason: downstream said no"), "{listed}");
    let group = format!("group {}", settings.redis.consumer_group);
    assert!(listed.contains(&group), "{listed}");

    // A dry run moves nothing; then one by its dead-letter ID, then the rest.
    let dry = stdout(&cli(&settings, &["dlq", "replay", "--dry-run"], None));
    assert!(dry.contains("would move 3 dead letters"), "{dry}");
    assert_eq!(dead_letters(&mut redis, &settings).await.len(), 3);
    let one = admin
        .replay(std::slice::from_ref(&letters[1].id), false)
        .await
        .unwrap();
    assert_eq!(one.len(), 1);
    assert!(one[0].new_id.is_some());
    assert_eq!(one[0].original_id, ids[1]);
    assert!(matches!(
        admin.replay(&["1-1".to_owned()], false).await,
        Err(AdminError::NoSuchDeadLetter(_))
    ));
    let out = stdout(&cli(&settings, &["dlq", "replay"], None));
    assert!(out.contains("moved 2 dead letters"), "{out}");
    assert!(dead_letters(&mut redis, &settings).await.is_empty());

    let recorder = Recorder::succeeding();
    let mut worker = Worker::new(&settings, recorder.clone()).unwrap();
    while recorder.finished().len() < 3 {
        worker.step().await.unwrap();
    }
    worker.step().await.unwrap();
    assert_eq!(pending(&mut redis, &settings).await, 0);
    assert!(dead_letters(&mut redis, &settings).await.is_empty());
    // The business logic saw the producer's IDs and fields again.
    let mut original_ids = recorder.original_ids();
    original_ids.sort();
    assert_eq!(original_ids, ids);
}

#[tokio::test]
async fn a_replay_reaches_only_the_group_that_dead_lettered_it() {
    let settings = settings("replay-groups");
    let mut other = settings.clone();
    other.redis.consumer_group = format!("{}-other", settings.redis.consumer_group);
    other.redis.consumer_name = Some("other-consumer".to_owned());
    let mut redis = connect(&settings).await;
    let stream = &settings.redis.stream;

    // Group `settings` fails an entry for good; the other group processes it.
    let failing = Recorder::new(|_, _| Err(ProcessError::permanent("no")));
    let mut worker = Worker::new(&settings, failing).unwrap();
    worker.step().await.unwrap();
    let others = Recorder::succeeding();
    let mut other_worker = Worker::new(&other, others.clone()).unwrap();
    other_worker.step().await.unwrap();
    let ids = add(&mut redis, stream, &[r#"{"n":1}"#]).await;
    while dead_letters(&mut redis, &settings).await.is_empty() {
        worker.step().await.unwrap();
    }
    while others.finished().is_empty() {
        other_worker.step().await.unwrap();
    }

    let replayed = Admin::connect(&settings)
        .await
        .unwrap()
        .replay(&[], false)
        .await
        .unwrap();
    assert_eq!(replayed.len(), 1);
    let new_id = replayed[0].new_id.clone().unwrap();
    assert_ne!(new_id, ids[0]);

    // The other group acknowledges the replay without processing it.
    let report = other_worker.step().await.unwrap();
    assert_eq!((report.skipped, report.processed), (1, 0));
    assert_eq!(others.seen().len(), 1, "the other group saw it once");
    // Its own group processes it, under the original ID and fields.
    let recorder = Recorder::succeeding();
    let mut worker = Worker::new(&settings, recorder.clone()).unwrap();
    while recorder.finished().is_empty() {
        worker.step().await.unwrap();
    }
    assert_eq!(recorder.original_ids(), ids);
    let entry = recorder.entries().pop().unwrap();
    assert_eq!(entry.id, new_id);
    assert_eq!(entry.get("data"), Some(&br#"{"n":1}"#[..]));
    assert_eq!(
        entry.millis(),
        ids[0].split('-').next().unwrap().parse().ok()
    );
}

#[tokio::test]
async fn purge_asks_unless_told_yes() {
    let settings = settings("purge");
    let mut redis = connect(&settings).await;
    let _: String = redis
        .xadd(settings.dead_letter_stream(), "*", &[("data", "x")])
        .await
        .unwrap();
    let refused = cli(&settings, &["dlq", "purge"], None);
    assert!(
        !refused.status.success(),
        "no terminal to confirm on: refused"
    );
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("--yes"), "{stderr}");
    assert_eq!(dead_letters(&mut redis, &settings).await.len(), 1);
    let out = stdout(&cli(&settings, &["dlq", "purge", "-y"], None));
    assert!(out.contains("deleted 1 dead letters"), "{out}");
    assert!(dead_letters(&mut redis, &settings).await.is_empty());
}

/// A refused trim counts what the group has not processed: pending and
/// undelivered entries, not the acknowledged ones between them.
#[tokio::test]
async fn a_refused_trim_counts_only_unprocessed_entries() {
    let settings = settings("trim-count");
    let mut redis = connect(&settings).await;
    let (stream, group) = (&settings.redis.stream, &settings.redis.consumer_group);
    create_group(&mut redis, &settings).await;
    let ids = add(&mut redis, stream, &["{}"; 10]).await;
    read_as(&mut redis, &settings, "reader", 8).await;
    let _: () = redis.xack(stream, group, &ids[1..7]).await.unwrap();
    // Pending: 0 and 7; acknowledged: 1..7; undelivered: 8, 9.

    let mut admin = Admin::connect(&settings).await.unwrap();
    let refused = admin
        .trim(&TrimRequest {
            to: TrimTo::MaxLen(1),
            exact: true,
            force: false,
            dry_run: false,
        })
        .await;
    assert!(
        matches!(
            refused,
            Err(AdminError::WouldDropUnprocessed { unprocessed: 3, .. })
        ),
        "{refused:?}"
    );
    let length: usize = redis.xlen(stream).await.unwrap();
    assert_eq!(length, 10, "a refused trim removes nothing");
}

#[tokio::test]
async fn trim_refuses_to_drop_unprocessed_entries_without_force() {
    let settings = settings("trim");
    let mut redis = connect(&settings).await;
    let (stream, group) = (&settings.redis.stream, &settings.redis.consumer_group);
    create_group(&mut redis, &settings).await;
    let ids = add(&mut redis, stream, &["{}"; 10]).await;
    read_as(&mut redis, &settings, "reader", 6).await;
    let _: () = redis.xack(stream, group, &ids[..4]).await.unwrap();
    // Acknowledged: 0..4; pending: 4, 5; undelivered: 6..10.

    let mut admin = Admin::connect(&settings).await.unwrap();
    let request = |to, dry_run| TrimRequest {
        to,
        exact: true,
        force: false,
        dry_run,
    };
    let safe = admin
        .trim(&request(TrimTo::MaxLen(6), false))
        .await
        .unwrap();
    assert_eq!(safe.cut.unwrap().to_string(), ids[4]);
    assert_eq!((safe.before_cut, safe.removed), (4, 4));

    let refused = admin.trim(&request(TrimTo::MaxLen(3), false)).await;
    assert!(
        matches!(
            refused,
            Err(AdminError::WouldDropUnprocessed { unprocessed: 3, .. })
        ),
        "{refused:?}"
    );
    let length: usize = redis.xlen(stream).await.unwrap();
    assert_eq!(length, 6, "a refused trim drops nothing");

    let minid = format!("--minid={}", ids[6]);
    let out = cli(&settings, &["trim", &minid, "--exact"], None);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--force"));
    let dry = stdout(&cli(&settings, &["trim", &minid, "--dry-run"], None));
    assert!(dry.contains("would remove 2"), "{dry}");
    assert!(
        dry.contains("without --force the trim would refuse"),
        "{dry}"
    );
    let forced = stdout(&cli(
        &settings,
        &["trim", &minid, "--exact", "--force"],
        None,
    ));
    assert!(forced.contains("removed 2"), "{forced}");
    let length: usize = redis.xlen(stream).await.unwrap();
    assert_eq!(length, 4);

    let out = stdout(&cli(&settings, &["trim", "--max-age", "1h"], None));
    assert!(out.contains("removed 0"), "{out}");

    // MAXLEN 0 cuts after the newest entry: all four would go, unread.
    let all = admin.trim(&request(TrimTo::MaxLen(0), true)).await.unwrap();
    assert_eq!((all.before_cut, all.removed), (4, 0));
    assert_eq!(all.groups_needing, std::slice::from_ref(group));
}

/// A password may hold commas (`redis://app:pa,ss@db`): the whole of it is
/// hidden from `config`, and from the message of a command that cannot
/// connect, which goes through the log redactor.
#[test]
fn a_password_with_commas_is_hidden_whole() {
    for (url, parts) in [
        ("redis://app:hun,ter2@127.0.0.1:1/0", &["hun", "ter2"][..]),
        (
            "redis://127.0.0.1:1/0?password=hun,ter2",
            &["hun", "ter2"][..],
        ),
        (
            "redis://app:12,34@127.0.0.1:1/0",
            &["12,34", ":34@", ":12,"][..],
        ),
    ] {
        let mut settings = Settings::default();
        settings.redis.url = url.into();
        let config = stdout(&cli(&settings, &["config"], None));
        assert!(config.contains("127.0.0.1:1/0"), "{config}");
        let status = cli(&settings, &["status"], None);
        assert!(!status.status.success());
        let said = format!(
            "{config}{}{}",
            String::from_utf8_lossy(&status.stdout),
            String::from_utf8_lossy(&status.stderr)
        );
        assert!(said.contains("127.0.0.1:1"), "{said}");
        for part in parts {
            assert!(!said.contains(part), "{url}: `{part}` shown in\n{said}");
        }
    }
}

#[test]
fn config_shows_sources_and_never_the_password() {
    let mut settings = Settings::default();
    settings.redis.url = "redis://user:hunter2@127.0.0.1:1/0".into();
    settings.redis.stream = "from-env".into();
    settings.redis.consumer_group = "group-from-env".into();
    let output = cli(&settings, &["config", "--concurrency", "3"], None);
    let text = stdout(&output);
    assert!(!text.contains("hunter2"), "{text}");
    assert!(text.contains("redis://user:***@127.0.0.1:1/0"), "{text}");
    let line = |key: &str| {
        text.lines()
            .find(|line| line.starts_with(&format!("{key} = ")))
            .unwrap_or_else(|| panic!("no {key} in {text}"))
            .to_owned()
    };
    assert!(line("redis.stream").ends_with("# environment variable REDIS_STREAM"));
    assert!(line("worker.concurrency").ends_with("# command-line flag --concurrency"));
    assert!(line("worker.batch_size").ends_with("# default"));
}

#[test]
fn no_url_form_shows_its_password_in_config_or_errors() {
    let socket = std::env::temp_dir().join(format!("no-redis-{}.sock", std::process::id()));
    let socket = socket.display();
    for url in [
        "redis://app:hunter2@127.0.0.1:1".to_owned(),
        "redis://127.0.0.1:1?password=hunter2".to_owned(),
        format!("unix://{socket}?user=app&pass=hunter2"),
        format!("redis+unix://{socket}?password=hunter2"),
        "redis://app:hunter2@127.0.0.1:1,redis://app:hunter2@127.0.0.1:2".to_owned(),
    ] {
        let mut settings = Settings::default();
        settings.redis.url = url.as_str().into();
        for args in [&["config"][..], &["status"], &["dlq", "list"]] {
            let output = cli(&settings, args, None);
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
            assert!(!text.contains("hunter2"), "{url} {args:?}: {text}");
            if args == ["config"] && output.status.success() && url.contains("app@") {
                assert!(text.contains("app"), "the user name stays: {text}");
            }
        }
    }
}

#[test]
fn an_invalid_setting_stops_the_start_with_key_source_and_reason() {
    let settings = Settings::default();
    let mut command = Command::new(BIN);
    let output = command
        .env("REDIS_URL", settings.redis.url.expose())
        .env("WORKER_BATCH_SIZE", "0")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(
            "invalid `worker.batch_size` from environment variable WORKER_BATCH_SIZE: must be at least 1"
        ),
        "{stderr}"
    );
}
