//! cargo inside a generated project: one command at a time, every project
//! building into one shared target directory, with the environment of the
//! outer `cargo test` and the worker's own settings removed.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::process::Process;
use super::{lock, note, repo_root};

/// The `CARGO_TARGET_DIR` of every generated project, so their dependencies
/// compile once for the whole suite.
pub fn variants_target_dir() -> PathBuf {
    repo_root().join("target").join("variants")
}

/// One cargo command at a time across the test threads: the machine has two
/// cores, and several builds at once would only fight over them (and over
/// the shared target directory's lock).
static CARGO_LOCK: Mutex<()> = Mutex::new(());

/// The longest one cargo command may take, cold caches included.
pub const CARGO_DEADLINE: Duration = Duration::from_secs(25 * 60);

/// Runs `cargo <args>` in `project`; returns its output and panics with it
/// if cargo fails.
pub fn cargo(project: &Path, args: &[&str]) -> String {
    cargo_with_env(project, args, &[])
}

/// [`cargo`] with extra environment variables.
///
/// Every generated project builds into [`variants_target_dir`]. Variables
/// that the outer `cargo test` set for this crate, and the worker's own
/// settings (`REDIS_*`, `WORKER_*`, ...), are removed first, so the result
/// does not depend on the environment the suite was started from.
pub fn cargo_with_env(project: &Path, args: &[&str], env: &[(&str, &str)]) -> String {
    let program = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(program);
    command.args(args).current_dir(project);
    scrub_env(&mut command);
    variant_build_env(&mut command);
    command.envs(env.iter().copied());

    let what = format!("cargo {}", args.join(" "));
    let _serial = lock(&CARGO_LOCK);
    let started = Instant::now();
    let mut process = Process::spawn(&what, command);
    let status = process.wait_for_exit(CARGO_DEADLINE);
    let output = process.output();
    assert!(
        status.success(),
        "`{what}` in {} failed ({status}):\n{output}",
        project.display()
    );
    note(format!(
        "  {what} ({}): ok in {:.1}s",
        project.file_name().unwrap_or_default().to_string_lossy(),
        started.elapsed().as_secs_f64()
    ));
    output
}

/// How every generated project builds in the suite: into
/// [`variants_target_dir`], without incremental caches and with line tables
/// only as debug information. Each project is built once from a fresh
/// folder, so incremental state is never reused, and full debug
/// information would double the shared directory (about 16 GB for the
/// whole suite with both, against a disk that CI shares).
pub fn variant_build_env(command: &mut Command) {
    command
        .env("CARGO_TARGET_DIR", variants_target_dir())
        .env("CARGO_INCREMENTAL", "0")
        .env("CARGO_PROFILE_DEV_DEBUG", "line-tables-only")
        .env("CARGO_TERM_COLOR", "never");
}

/// Removes inherited variables that would change what a generated project
/// builds or how its worker runs.
pub fn scrub_env(command: &mut Command) {
    const OUTER_CARGO: &[&str] = &[
        "CARGO_PKG_",
        "CARGO_MANIFEST_",
        "CARGO_CRATE_NAME",
        "CARGO_PRIMARY_PACKAGE",
        "CARGO_TARGET_TMPDIR",
        "CARGO_BIN_",
        "CARGO_RUSTC_CURRENT_DIR",
        "CARGO_MAKEFLAGS",
    ];
    const WORKER: &[&str] = &[
        "REDIS_",
        "WORKER_",
        "LOG_LEVEL",
        "LOG_FORMAT",
        "METRICS_",
        "RUST_LOG",
    ];
    for (key, _) in std::env::vars_os() {
        let key_text = key.to_string_lossy();
        if OUTER_CARGO
            .iter()
            .chain(WORKER)
            .any(|prefix| key_text.starts_with(prefix))
        {
            command.env_remove(&key);
        }
    }
}

/// The debug binary of a generated project built with [`cargo`] `build`.
pub fn debug_binary(project_name: &str) -> PathBuf {
    let binary = variants_target_dir().join("debug").join(project_name);
    assert!(binary.is_file(), "no binary at {}", binary.display());
    binary
}

/// The release binary of a generated project built with [`cargo`] `build
/// --release`.
pub fn release_binary(project_name: &str) -> PathBuf {
    let binary = variants_target_dir().join("release").join(project_name);
    assert!(binary.is_file(), "no binary at {}", binary.display());
    binary
}
