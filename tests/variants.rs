//! Every variant of the template, generated and checked the way a user's CI
//! would: nothing left unrendered, the right optional files, `cargo fmt
//! --check`, `cargo clippy --workspace --all-targets -- -D warnings` (the
//! runtime with the variant's features too), the project's own `cargo test
//! --workspace` against a Redis of its own (which it must leave empty), then
//! the built worker consuming 1,000 entries and stopping cleanly on SIGTERM.
//!
//! `TEMPLATE_VARIANTS=default,awkward cargo test --test variants` checks only
//! those (labels in `common::VARIANTS`); the others say they were skipped.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{
    GeneratedProject, Process, RedisServer, Variant, cargo, cargo_with_env, debug_binary, generate,
    note, scrub_env, selected, unrendered_liquid, variant, wait_until,
};

#[test]
fn default() {
    check_variant("default");
}

#[test]
fn no_metrics() {
    check_variant("no-metrics");
}

#[test]
fn raw() {
    check_variant("raw");
}

#[test]
fn raw_no_metrics() {
    check_variant("raw-no-metrics");
}

#[test]
fn awkward() {
    check_variant("awkward");
}

/// Entries the end-to-end run adds, half before the worker starts (the
/// group starts at `0`, so they must be processed too) and half while it
/// runs.
const ENTRIES: usize = 1_000;

/// How long the worker may take to consume them all.
const CONSUME_DEADLINE: Duration = Duration::from_secs(60);

/// How long the worker may take to exit after SIGTERM.
const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(10);

fn check_variant(label: &str) {
    if !selected(label) {
        return;
    }
    let variant = variant(label);
    let started = Instant::now();
    note(format!("variant `{label}`: generating `{}`", variant.name));
    let project = generate(variant);
    check_files(variant, &project);

    cargo(&project, &["fmt", "--check", "--all"]);
    cargo(
        &project,
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ],
    );
    {
        let redis = RedisServer::start();
        let output = cargo_with_env(
            &project,
            &["test", "--workspace"],
            &[("REDIS_URL", &redis.url())],
        );
        note(format!(
            "  variant `{label}`: its own tests: {}",
            test_counts(&output)
        ));
        // The tests run against the user's Redis: they must leave nothing.
        let left: Vec<String> = redis::cmd("KEYS")
            .arg("*")
            .query(&mut redis.connect())
            .expect("KEYS answers");
        assert!(
            left.is_empty(),
            "`{label}`: the project's tests left {} keys in Redis: {left:?}",
            left.len()
        );
    }
    cargo(&project, &["build"]);
    end_to_end(variant, &project);
    note(format!(
        "variant `{label}`: ok in {:.1}s",
        started.elapsed().as_secs_f64()
    ));
}

/// Everything rendered, and the optional modules there exactly when chosen.
fn check_files(variant: &Variant, project: &GeneratedProject) {
    let leftovers = unrendered_liquid(project);
    assert!(
        leftovers.is_empty(),
        "unrendered Liquid in `{}`:\n{}",
        variant.label,
        leftovers.join("\n")
    );
    for file in project.files() {
        let name = file.to_string_lossy();
        assert!(
            !name.ends_with(".liquid") && !name.ends_with(".rhai"),
            "template machinery in the output: {name}"
        );
    }
    let expect = |file: &str, present: bool| {
        assert_eq!(
            project.has(file),
            present,
            "`{}`: {file} should be {}",
            variant.label,
            if present { "present" } else { "absent" }
        );
    };
    expect("Cargo.toml", true);
    expect("src/main.rs", true);
    expect("src/lib.rs", true);
    expect("src/business_logic.rs", true);
    expect("src/business_logic_raw.rs", false);
    expect("tests/validation.rs", variant.use_serde_validation);
    // The runtime is whole in every variant; the options are its features.
    expect("runtime/Cargo.toml", true);
    expect("runtime/src/metrics.rs", true);
    expect("runtime/src/validation.rs", true);
    let features = project
        .read("Cargo.toml")
        .lines()
        .find(|line| line.starts_with("redis-streams-runtime = "))
        .map(str::to_owned)
        .unwrap_or_default();
    assert_eq!(
        features.contains("\"metrics\""),
        variant.add_metrics,
        "`{}`: {features}",
        variant.label
    );
    assert_eq!(
        features.contains("\"validation\""),
        variant.use_serde_validation,
        "`{}`: {features}",
        variant.label
    );
}

/// Sums the `test result:` lines of `cargo test` output.
fn test_counts(output: &str) -> String {
    let (mut passed, mut ignored, mut suites) = (0, 0, 0);
    for line in output
        .lines()
        .filter(|line| line.starts_with("test result:"))
    {
        suites += 1;
        let count = |word: &str| -> u64 {
            line.split(';')
                .find_map(|part| part.trim().strip_suffix(word))
                .and_then(|number| number.trim().rsplit(' ').next()?.parse().ok())
                .unwrap_or(0)
        };
        passed += count("passed");
        ignored += count("ignored");
    }
    format!("{passed} passed, {ignored} ignored in {suites} test binaries")
}

/// The data of the `n`th entry: a small JSON object.
fn entry_data(n: usize) -> String {
    format!(r#"{{"n":{n},"user_id":"u{}"}}"#, n % 7)
}

/// Runs the built worker against a fresh Redis: it must consume every entry,
/// acknowledge it, dead-letter none, and exit 0 on SIGTERM.
fn end_to_end(variant: &Variant, project: &GeneratedProject) {
    let binary = debug_binary(variant.project_name);
    let redis = RedisServer::start();
    let stream = variant.stream;
    let group = variant.consumer_group;
    let before: Vec<String> = (0..ENTRIES / 2).map(entry_data).collect();
    let after: Vec<String> = (ENTRIES / 2..ENTRIES).map(entry_data).collect();
    redis.xadd_data(stream, &before);

    // The generated defaults name the stream and group; only the URL and the
    // run-time settings come from the environment.
    let mut command = Command::new(&binary);
    command.current_dir(project.path());
    scrub_env(&mut command);
    command
        .env("REDIS_URL", redis.url())
        .env("METRICS_ADDR", "127.0.0.1:0")
        .env("LOG_FORMAT", "json");
    let mut worker = Process::spawn(variant.project_name, command);
    let started = Instant::now();

    wait_until(
        Duration::from_secs(30),
        "the worker to create its group",
        || {
            worker.assert_running();
            redis
                .group(stream, group)
                .ok_or_else(|| format!("groups of {stream}: {:?}", redis.groups(stream)))
        },
    );
    redis.xadd_data(stream, &after);

    let done = wait_until(
        CONSUME_DEADLINE,
        &format!("group {group} of {stream} to consume {ENTRIES} entries"),
        || {
            worker.assert_running();
            match redis.group(stream, group) {
                Some(info)
                    if info.lag == Some(0)
                        && info.pending == 0
                        && info.entries_read == Some(ENTRIES) =>
                {
                    Ok(info)
                }
                other => Err(format!("{other:?}")),
            }
        },
    );
    let consumed_in = started.elapsed();
    assert_eq!(
        redis.xlen(stream),
        ENTRIES,
        "entries are acknowledged, not deleted"
    );
    let dead_letters = redis.xlen(&variant.dead_letter_stream());
    assert_eq!(
        dead_letters,
        0,
        "valid entries were dead-lettered to {}; worker output:\n{}",
        variant.dead_letter_stream(),
        worker.output()
    );

    let consumers = redis.consumers(stream, group);
    let names: Vec<&str> = consumers
        .iter()
        .map(|consumer| consumer.name.as_str())
        .collect();
    match variant.consumer_name {
        Some(name) => assert_eq!(names, [name], "consumers of {group}"),
        None => {
            let pid = format!("-{}-", worker.pid());
            let random = |name: &str| {
                name.rsplit_once('-')
                    .is_some_and(|(_, random)| random.len() == 6)
            };
            assert!(
                names.len() == 1 && names[0].contains(&pid) && random(names[0]),
                "consumers of {group}: {names:?}, expected one named <host>{pid}<random>"
            );
        }
    }

    worker.terminate();
    let status = worker.wait_for_exit(SHUTDOWN_DEADLINE);
    assert!(
        status.success(),
        "the worker exited with {status} after SIGTERM; output:\n{}",
        worker.output()
    );
    let after_shutdown = redis
        .group(stream, group)
        .expect("the group is still there");
    assert_eq!(
        after_shutdown.pending, 0,
        "entries left pending at shutdown"
    );

    // LOG_FORMAT=json: every log line is a JSON object.
    let logs = worker.stderr();
    let not_json: Vec<&str> = logs
        .lines()
        .filter(|line| !line.trim().is_empty())
        .filter(|line| !(line.starts_with('{') && line.ends_with('}')))
        .collect();
    assert!(
        not_json.is_empty(),
        "log lines that are not JSON: {not_json:?}"
    );
    assert!(!logs.trim().is_empty(), "the worker logged nothing");

    note(format!(
        "  variant `{}`: worker consumed {ENTRIES} entries in {:.1}s (last delivered {}), exited 0 on SIGTERM",
        variant.label,
        consumed_in.as_secs_f64(),
        done.last_delivered_id
    ));
}
