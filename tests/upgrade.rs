//! Upgrading a generated project is replacing one folder: a project made by
//! the previous template version, whose business logic its owner changed,
//! takes the current runtime by the commands of its own README ("Updating
//! a generated project"), run as written; its tests pass, its worker runs
//! the changed logic, and none of its own files changed.
//!
//! The previous version's project is kept as generated (plus the owner's
//! change: orders with a negative amount are refused for good) in
//! `tests/fixtures/upgrade-worker-0.2.0.tar.gz`.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{
    Process, RedisServer, cargo, copy_template_source, note, repo_root, scrub_env,
    variant_build_env, variants_target_dir, wait_until,
};

const FIXTURE: &str = "tests/fixtures/upgrade-worker-0.2.0.tar.gz";
const PROJECT: &str = "upgrade-worker";
const PREVIOUS_VERSION: &str = "0.2.0";

/// Every file of the project that is the owner's: all but the runtime and
/// the lock file, which the upgrade replaces.
fn own_files(project: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = Vec::new();
    common::walk_files(project, &mut files);
    files
        .into_iter()
        .map(|file| file.strip_prefix(project).unwrap().to_owned())
        .filter(|file| !file.starts_with("runtime") && !file.starts_with("target"))
        .filter(|file| file != Path::new("Cargo.lock"))
        .map(|file| {
            let bytes = fs::read(project.join(&file)).unwrap();
            (file, bytes)
        })
        .collect()
}

/// The first ```bash block after `heading` in `readme`.
fn commands_after(readme: &str, heading: &str) -> String {
    let section = &readme[readme
        .find(heading)
        .unwrap_or_else(|| panic!("no `{heading}` in the README"))..];
    let block = &section[section.find("```bash\n").expect("a bash block") + "```bash\n".len()..];
    block[..block.find("```").unwrap()].to_owned()
}

/// This repository as a git repository of its own, with uncommitted
/// changes committed: what `git clone` of the template gives a user.
fn template_repository(into: &Path) -> PathBuf {
    let repository = into.join("template-repository");
    copy_template_source(repo_root(), &repository);
    for args in [
        &["init", "--quiet", "--initial-branch", "main"][..],
        &["add", "--all"],
        &[
            "-c",
            "user.name=Template",
            "-c",
            "user.email=template@example.com",
            "commit",
            "--quiet",
            "--message",
            "template",
        ],
    ] {
        let status = Command::new("git")
            .args(args)
            .current_dir(&repository)
            .status()
            .expect("git runs");
        assert!(status.success(), "git {args:?} failed");
    }
    repository
}

#[test]
fn a_project_of_the_previous_version_takes_the_current_runtime() {
    let temp = tempfile::Builder::new()
        .prefix("template-upgrade-")
        .tempdir_in(std::env::temp_dir())
        .unwrap();
    let status = Command::new("tar")
        .args(["-xzf"])
        .arg(repo_root().join(FIXTURE))
        .current_dir(temp.path())
        .status()
        .expect("tar runs");
    assert!(status.success(), "tar could not unpack {FIXTURE}");
    let project = temp.path().join(PROJECT);
    let before = own_files(&project);
    let runtime_manifest = |dir: &Path| fs::read_to_string(dir.join("runtime/Cargo.toml")).unwrap();
    assert!(
        runtime_manifest(&project).contains(&format!("version = \"{PREVIOUS_VERSION}\"")),
        "the fixture should carry runtime {PREVIOUS_VERSION}"
    );
    let current = env!("CARGO_PKG_VERSION");
    assert_ne!(
        current, PREVIOUS_VERSION,
        "the template's version should have moved on from the fixture's"
    );

    // The README's commands, as written, against this repository.
    let readme = fs::read_to_string(project.join("README.md")).unwrap();
    let commands = commands_after(&readme, "## Updating a generated project");
    assert!(commands.contains("rm -rf runtime"), "{commands}");
    let template = template_repository(temp.path());
    let redis = RedisServer::start();
    let mut shell = Command::new("bash");
    shell
        .args(["-euo", "pipefail", "-c", &commands])
        .current_dir(&project);
    scrub_env(&mut shell);
    variant_build_env(&mut shell);
    shell
        .env("TEMPLATE", &template)
        .env("REDIS_URL", redis.url());
    note("  upgrade: running the README's commands");
    let mut run = Process::spawn("upgrade commands", shell);
    let status = run.wait_for_exit(common::CARGO_DEADLINE);
    let output = run.output();
    assert!(status.success(), "the README's commands failed:\n{output}");
    assert!(
        output.contains("negative_amounts_are_refused_for_good ... ok"),
        "{output}"
    );

    assert_eq!(
        runtime_manifest(&project),
        fs::read_to_string(repo_root().join("template/runtime/Cargo.toml")).unwrap()
    );
    let after = own_files(&project);
    let changed: Vec<_> = before
        .keys()
        .chain(after.keys())
        .filter(|file| before.get(*file) != after.get(*file))
        .collect();
    assert!(
        changed.is_empty(),
        "the upgrade changed the owner's files: {changed:?}"
    );

    // The upgraded worker: both versions in --version, the owner's logic at work.
    cargo(&project, &["build", "--locked"]);
    let binary = variants_target_dir().join("debug").join(PROJECT);
    let version = Command::new(&binary).arg("--version").output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&version.stdout).trim(),
        format!("{PROJECT} 0.1.0 (redis-streams-runtime {current})")
    );
    let data = [r#"{"amount":12.5}"#, r#"{"amount":-3}"#, r#"{"amount":1}"#];
    let ids = redis.xadd_data("my-stream", &data);
    let mut command = Command::new(&binary);
    scrub_env(&mut command);
    command
        .current_dir(&project)
        .env("REDIS_URL", redis.url())
        .env("METRICS_ADDR", "127.0.0.1:0");
    let mut worker = Process::spawn(PROJECT, command);
    let mut connection = redis.connect();
    wait_until(
        Duration::from_secs(30),
        "the three entries to be processed",
        || {
            worker.assert_running();
            let pending: redis::streams::StreamPendingReply = redis::cmd("XPENDING")
                .arg("my-stream")
                .arg("my-group")
                .query(&mut connection)
                .map_err(|error| error.to_string())?;
            let group = redis.group("my-stream", "my-group").ok_or("no group yet")?;
            let letters = redis.xlen("my-stream:dlq");
            (group.last_delivered_id == ids[2] && pending.count() == 0 && letters == 1)
                .then_some(())
                .ok_or(format!(
                    "pending {}, dead letters {letters}",
                    pending.count()
                ))
        },
    );
    let letters: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg("my-stream:dlq")
        .arg("-")
        .arg("+")
        .query(&mut connection)
        .unwrap();
    let letter = &letters.ids[0];
    assert_eq!(
        letter.get::<String>("dlq.original_id").as_deref(),
        Some(ids[1].as_str())
    );
    let reason: String = letter.get("dlq.reason").unwrap();
    assert!(reason.contains("negative amount -3"), "{reason}");
    worker.terminate();
    assert!(worker.wait_for_exit(Duration::from_secs(10)).success());
}
