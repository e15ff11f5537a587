//! The workers measured: the template generated as `bench-default`,
//! `bench-raw` and `bench-latency` and built in release mode (kept between
//! runs so an unchanged template rebuilds nothing), and the cold build.

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::common::{
    cargo, cargo_with_env, generate_with, note, release_binary, variant, walk_files,
};
use crate::usage::{CpuUse, CpuWatch};

/// The business logic of the latency copy.
pub const LATENCY_LOGIC: &str = include_str!("../fixtures/latency_business_logic.rs");

/// A generated project built in release mode.
pub struct Built {
    pub name: &'static str,
    pub binary: PathBuf,
    /// Dependency crates (`cargo tree -e normal,build`, unique name and
    /// version, the project itself not counted).
    pub dependencies: usize,
}

/// Where the benchmark keeps its generated projects between runs, outside
/// the repository: an unchanged file keeps its modification time, so cargo
/// rebuilds a project only when the template changed.
pub fn projects_dir() -> PathBuf {
    // SAFETY: getuid cannot fail and has no memory effects.
    let uid = unsafe { libc::getuid() };
    std::env::temp_dir().join(format!("redis-streams-worker-bench-{uid}"))
}

/// Runs `generate` with standard output sent to standard error: the
/// template's post hook prints its "next steps" there, and standard output
/// is kept for the table.
pub fn to_stderr<T>(generate: impl FnOnce() -> T) -> T {
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
    // SAFETY: plain descriptor calls on 1 and 2, which stay open; the saved
    // copy is put back and closed below.
    let saved = unsafe { libc::dup(1) };
    if saved < 0 {
        return generate();
    }
    unsafe { libc::dup2(2, 1) };
    let result = generate();
    let _ = std::io::stdout().flush();
    unsafe {
        libc::dup2(saved, 1);
        libc::close(saved);
    }
    result
}

/// Makes `to` hold exactly the files of `from` (apart from `target/`),
/// rewriting only the files whose content differs.
pub fn sync_tree(from: &Path, to: &Path) {
    let mut files = Vec::new();
    walk_files(from, &mut files);
    let mut wanted = HashSet::new();
    for file in files {
        let relative = file.strip_prefix(from).unwrap().to_owned();
        let destination = to.join(&relative);
        let content = fs::read(&file).unwrap();
        if fs::read(&destination).ok().as_deref() != Some(content.as_slice()) {
            fs::create_dir_all(destination.parent().unwrap()).unwrap();
            fs::write(&destination, content).unwrap();
        }
        wanted.insert(relative);
    }
    let mut present = Vec::new();
    if to.is_dir() {
        walk_files(to, &mut present);
    }
    for file in present {
        let relative = file.strip_prefix(to).unwrap();
        if !relative.starts_with("target") && !wanted.contains(relative) {
            fs::remove_file(&file).unwrap();
        }
    }
}

/// Generates `name` with the answers of the variant `label`, optionally
/// replaces its business logic, and builds it with `cargo build --release`.
pub fn build(name: &'static str, label: &str, logic: Option<&str>) -> Built {
    let started = Instant::now();
    let generated = to_stderr(|| generate_with(name, variant(label).defines));
    if let Some(logic) = logic {
        let path = generated.path().join("src").join("business_logic.rs");
        assert!(path.is_file(), "no {}", path.display());
        fs::write(&path, logic).unwrap();
    }
    let project = projects_dir().join(name);
    sync_tree(generated.path(), &project);
    cargo(&project, &["build", "--release"]);
    let tree = cargo(
        &project,
        &["tree", "-e", "normal,build", "--prefix", "none"],
    );
    let dependencies = count_crates(&tree).saturating_sub(1);
    note(format!(
        "  {name}: generated and built in {:.1}s",
        started.elapsed().as_secs_f64()
    ));
    Built {
        name,
        binary: release_binary(name),
        dependencies,
    }
}

/// Unique `name version` pairs in `cargo tree --prefix none` output.
pub fn count_crates(tree: &str) -> usize {
    let mut crates: Vec<(&str, &str)> = tree
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let name = words.next()?;
            let version = words.next()?;
            version.starts_with('v').then_some((name, version))
        })
        .collect();
    crates.sort_unstable();
    crates.dedup();
    crates.len()
}

/// What the cold build took.
pub struct ColdBuild {
    pub seconds: f64,
    pub compiled: usize,
    pub cpu: CpuUse,
}

/// `cargo build --release` of a fresh default variant into an empty target
/// directory.
pub fn cold_build() -> ColdBuild {
    let project = to_stderr(|| generate_with("bench-cold", variant("default").defines));
    let target = tempfile::Builder::new()
        .prefix("bench-cold-target-")
        .tempdir_in(std::env::temp_dir())
        .expect("a temporary directory");
    let target_dir = target.path().to_string_lossy().into_owned();
    note(format!(
        "  cold build: cargo build --release into empty {target_dir} (minutes)"
    ));
    let watch = CpuWatch::start();
    let started = Instant::now();
    let output = cargo_with_env(
        &project,
        &["build", "--release"],
        &[("CARGO_TARGET_DIR", &target_dir)],
    );
    let seconds = started.elapsed().as_secs_f64();
    let mut cpu = watch.finish();
    // The build's own processes were children of this one: count them as
    // the measured work, not as other load.
    cpu.others = f64::NAN;
    let compiled = output
        .lines()
        .filter(|line| line.trim_start().starts_with("Compiling "))
        .count()
        .saturating_sub(1);
    ColdBuild {
        seconds,
        compiled,
        cpu,
    }
}
