//! Helpers shared by the template's tests (and by the benchmark, which
//! includes this module by path).
//!
//! Layout, in the order a test uses them:
//!
//! - [`variants`]: [`Variant`], [`VARIANTS`] and [`selected`], the option
//!   combinations the suite generates and the `TEMPLATE_VARIANTS` filter for
//!   a quick loop.
//! - [`generation`]: [`generate`] and [`try_generate`], cargo-generate as a
//!   library into a temporary directory outside the repository, and the
//!   [`GeneratedProject`] it leaves (kept for a look when a test fails).
//! - [`cargo`]: [`cargo`] and [`cargo_with_env`], cargo inside a generated
//!   project, one at a time, with one target directory shared by every
//!   variant; [`scrub_env`] for anything else started from a test.
//! - [`process`]: [`Process`] and [`wait_until`], child processes that are
//!   killed when the test ends, however it ends, and conditions awaited
//!   with a deadline.
//! - [`redis_server`]: [`RedisServer`], a private `redis-server` per test on
//!   a free port, with the stream assertions the tests need (`XLEN`,
//!   `XINFO GROUPS`, ...).
//! - [`tls`]: certificates made at test time, for TLS servers.
//! - [`cluster`]: a Redis Cluster of private redis-servers.
//! - [`proxy`]: a TCP proxy standing in for a DNS name, for failovers.
//! - Here: [`repo_root`], [`build_fault_worker`], [`number_after`] for the
//!   counts operator commands print, and [`note`] for progress lines that
//!   show up even for passing tests.
//!
//! Nothing here touches the machine's own Redis on port 6379.

// Each test file (and the benchmark) uses a different part of the helpers
// and of the re-exports below.
#![allow(dead_code, unused_imports)]

pub mod cargo;
pub mod cluster;
pub mod generation;
pub mod process;
pub mod proxy;
pub mod redis_server;
pub mod tls;
pub mod variants;

use std::fmt::Display;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

pub use self::cargo::{
    CARGO_DEADLINE, cargo, cargo_with_env, debug_binary, release_binary, scrub_env,
    variant_build_env, variants_target_dir,
};
pub use self::generation::{
    GeneratedProject, copy_template_source, generate, generate_with, strip_ansi, try_generate,
    unrendered_liquid, walk_files,
};
pub use self::process::{Process, wait_until};
pub use self::redis_server::{RedisOptions, RedisServer, free_port, unused_port};
pub use self::variants::{VARIANTS, Variant, selected, variant};
pub use redis::streams::{StreamInfoConsumer, StreamInfoGroup};

/// The repository root: the template source.
pub fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Generates the default variant as `project`, puts the fault-injecting
/// business logic (`tests/fixtures/fault_business_logic.rs`) in place of
/// the generated one, builds it and returns the debug binary.
pub fn build_fault_worker(project: &str) -> PathBuf {
    let generated = generate_with(project, variant("default").defines);
    let logic = generated.path().join("src").join("business_logic.rs");
    assert!(logic.is_file(), "no {}", logic.display());
    std::fs::copy(
        repo_root().join("tests/fixtures/fault_business_logic.rs"),
        &logic,
    )
    .unwrap();
    cargo(&generated, &["build"]);
    debug_binary(project)
}

/// The number after `word` on the first line of a command's `output` that
/// starts with it (`removed 12 entries ...`); a test failure naming the
/// output when there is none.
pub fn number_after(output: &str, word: &str) -> u64 {
    output
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{word} ")))
        .and_then(|rest| rest.split(' ').next())
        .and_then(|digits| digits.parse().ok())
        .unwrap_or_else(|| panic!("no line `{word} <number> ...` in {output}"))
}

/// Prints a line to the terminal at once, even while the test harness
/// captures the output of passing tests (it captures `print!`/`eprint!`,
/// not writes to the stderr handle). For progress and skips.
pub fn note(message: impl Display) {
    let _ = writeln!(std::io::stderr().lock(), "{message}");
}

/// Takes a lock even if a test panicked while holding it: the data behind
/// these locks is `()`, so there is nothing to be left half-updated.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
