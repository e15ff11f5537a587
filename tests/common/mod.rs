//! Helpers shared by the template's tests.
//!
//! - [`Variant`], [`VARIANTS`] and [`selected`]: the option combinations the
//!   suite generates, and the `TEMPLATE_VARIANTS` filter for a quick loop.
//! - [`generate`] and [`try_generate`]: cargo-generate as a library, into a
//!   temporary directory outside the repository.
//! - [`cargo`] and [`cargo_with_env`]: cargo inside a generated project, one
//!   at a time, with one target directory shared by every variant.
//! - [`Process`] and [`wait_until`]: child processes that are killed when the
//!   test ends, however it ends, and conditions awaited with a deadline.
//! - [`RedisServer`]: a private `redis-server` per test on a free port, with
//!   the stream assertions the tests need (`XLEN`, `XINFO GROUPS`, ...).
//! - [`note`]: progress lines that show up even for passing tests.
//!
//! Nothing here touches the machine's own Redis on port 6379.

#![allow(dead_code)] // Each test file uses a different part.

use std::collections::HashSet;
use std::fmt::Display;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use cargo_generate::{GenerateArgs, TemplatePath, Vcs};
use redis::Commands;
pub use redis::streams::{StreamInfoConsumer, StreamInfoGroup};
use tempfile::TempDir;

// ---------------------------------------------------------------------------
// Paths and output
// ---------------------------------------------------------------------------

/// The repository root: the template source.
pub fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The `CARGO_TARGET_DIR` of every generated project, so their dependencies
/// compile once for the whole suite.
pub fn variants_target_dir() -> PathBuf {
    repo_root().join("target").join("variants")
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

/// Removes ANSI colour sequences, which cargo-generate adds to its messages
/// when standard output is a terminal.
pub fn strip_ansi(text: &str) -> String {
    let mut plain = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            chars.next();
            // Parameters, then one final byte in `@`..=`~`.
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) {
                    break;
                }
            }
        } else {
            plain.push(c);
        }
    }
    plain
}

// ---------------------------------------------------------------------------
// Variants
// ---------------------------------------------------------------------------

/// One combination of answers to the template's questions.
#[derive(Debug, Clone, Copy)]
pub struct Variant {
    /// Its name in `TEMPLATE_VARIANTS` and in messages.
    pub label: &'static str,
    /// The project name given to cargo-generate (`--name`).
    pub name: &'static str,
    /// The project's directory and package name: the kebab-case of `name`.
    pub project_name: &'static str,
    /// `--define key=value` answers; unset keys take the template's default.
    pub defines: &'static [(&'static str, &'static str)],
    /// Whether the serde validation module is generated.
    pub use_serde_validation: bool,
    /// Whether the metrics module is generated.
    pub add_metrics: bool,
    /// The stream the generated worker consumes by default.
    pub stream: &'static str,
    /// Its consumer group by default.
    pub consumer_group: &'static str,
    /// Its consumer name by default; `None`: `<host>-<pid>`.
    pub consumer_name: Option<&'static str>,
}

impl Variant {
    /// The dead-letter stream the worker uses by default.
    pub fn dead_letter_stream(&self) -> String {
        format!("{}:dlq", self.stream)
    }
}

/// Every variant the suite checks: the four combinations of the two options,
/// and one with unusual names that must survive every case conversion.
pub const VARIANTS: &[Variant] = &[
    Variant {
        label: "default",
        name: "variant-default",
        project_name: "variant-default",
        defines: &[("use_serde_validation", "true"), ("add_metrics", "true")],
        use_serde_validation: true,
        add_metrics: true,
        stream: "my-stream",
        consumer_group: "my-group",
        consumer_name: None,
    },
    Variant {
        label: "no-metrics",
        name: "variant-no-metrics",
        project_name: "variant-no-metrics",
        defines: &[("use_serde_validation", "true"), ("add_metrics", "false")],
        use_serde_validation: true,
        add_metrics: false,
        stream: "my-stream",
        consumer_group: "my-group",
        consumer_name: None,
    },
    Variant {
        label: "raw",
        name: "variant-raw",
        project_name: "variant-raw",
        defines: &[("use_serde_validation", "false"), ("add_metrics", "true")],
        use_serde_validation: false,
        add_metrics: true,
        stream: "my-stream",
        consumer_group: "my-group",
        consumer_name: None,
    },
    Variant {
        label: "raw-no-metrics",
        name: "variant-raw-no-metrics",
        project_name: "variant-raw-no-metrics",
        defines: &[("use_serde_validation", "false"), ("add_metrics", "false")],
        use_serde_validation: false,
        add_metrics: false,
        stream: "my-stream",
        consumer_group: "my-group",
        consumer_name: None,
    },
    Variant {
        label: "awkward",
        name: "Billing_Events2",
        project_name: "billing-events2",
        defines: &[
            ("worker_name", "Billing_Events2"),
            ("stream", "orders:v1"),
            ("consumer_group", "billing-workers"),
            ("consumer_name", "billing-1"),
            ("block_timeout", "250"),
        ],
        use_serde_validation: true,
        add_metrics: true,
        stream: "orders:v1",
        consumer_group: "billing-workers",
        consumer_name: Some("billing-1"),
    },
];

/// The variant called `label`.
pub fn variant(label: &str) -> &'static Variant {
    VARIANTS
        .iter()
        .find(|variant| variant.label == label)
        .unwrap_or_else(|| panic!("no variant is called `{label}`"))
}

/// Whether `TEMPLATE_VARIANTS` (comma-separated labels; unset or empty: all)
/// selects `label`. A variant left out is announced on the terminal as
/// skipped; an unknown label fails, so a typo does not skip everything.
pub fn selected(label: &str) -> bool {
    let Ok(list) = std::env::var("TEMPLATE_VARIANTS") else {
        return true;
    };
    let wanted: HashSet<&str> = list
        .split(',')
        .map(str::trim)
        .filter(|label| !label.is_empty())
        .collect();
    if wanted.is_empty() {
        return true;
    }
    let known: Vec<&str> = VARIANTS.iter().map(|variant| variant.label).collect();
    let mut unknown: Vec<&str> = wanted
        .iter()
        .copied()
        .filter(|label| !known.contains(label))
        .collect();
    unknown.sort_unstable();
    assert!(
        unknown.is_empty(),
        "TEMPLATE_VARIANTS={list:?} names unknown variant(s) {unknown:?}; known: {known:?}"
    );
    let selected = wanted.contains(label);
    if !selected {
        note(format!(
            "SKIPPED variant `{label}`: not selected by TEMPLATE_VARIANTS={list:?} (this test did nothing)"
        ));
    }
    selected
}

// ---------------------------------------------------------------------------
// Generation
// ---------------------------------------------------------------------------

/// cargo-generate runs one at a time: it is cheap, and this keeps any global
/// state it has (terminal, progress bars) out of the picture.
static GENERATE_LOCK: Mutex<()> = Mutex::new(());

/// A generated project in its own temporary directory, removed on drop
/// unless the test is failing (then its path is printed, for a look).
#[derive(Debug)]
pub struct GeneratedProject {
    project: PathBuf,
    temp: Option<TempDir>,
}

impl GeneratedProject {
    /// The project directory (with `Cargo.toml` in it).
    pub fn path(&self) -> &Path {
        &self.project
    }

    /// The text of a file of the project; panics if it is missing.
    pub fn read(&self, relative: &str) -> String {
        let path = self.project.join(relative);
        fs::read_to_string(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
    }

    /// Whether the project has this file.
    pub fn has(&self, relative: &str) -> bool {
        self.project.join(relative).exists()
    }

    /// Every file of the project, relative to it, sorted.
    pub fn files(&self) -> Vec<PathBuf> {
        let mut files = Vec::new();
        walk_files(&self.project, &mut files);
        let mut files: Vec<PathBuf> = files
            .into_iter()
            .map(|file| file.strip_prefix(&self.project).unwrap().to_owned())
            .collect();
        files.sort();
        files
    }
}

impl Deref for GeneratedProject {
    type Target = Path;

    fn deref(&self) -> &Path {
        &self.project
    }
}

impl Drop for GeneratedProject {
    fn drop(&mut self) {
        if thread::panicking()
            && let Some(temp) = self.temp.take()
        {
            let kept = temp.keep();
            note(format!(
                "generated project kept for inspection: {}",
                kept.display()
            ));
        }
    }
}

/// Every regular file under `dir`, recursively.
pub fn walk_files(dir: &Path, files: &mut Vec<PathBuf>) {
    let entries = fs::read_dir(dir).unwrap_or_else(|error| panic!("{}: {error}", dir.display()));
    for entry in entries {
        let entry = entry.unwrap();
        let kind = entry.file_type().unwrap();
        if kind.is_dir() {
            walk_files(&entry.path(), files);
        } else {
            files.push(entry.path());
        }
    }
}

/// Generates `variant` into a new temporary directory outside the
/// repository; panics with cargo-generate's error if it refuses.
pub fn generate(variant: &Variant) -> GeneratedProject {
    generate_with(variant.name, variant.defines)
}

/// Generates a project called `name` with these answers (the rest default)
/// into a new temporary directory; panics if cargo-generate refuses.
pub fn generate_with(name: &str, defines: &[(&str, &str)]) -> GeneratedProject {
    let temp = tempfile::Builder::new()
        .prefix("template-test-")
        .tempdir_in(std::env::temp_dir())
        .expect("a temporary directory");
    let project = try_generate(name, defines, temp.path())
        .unwrap_or_else(|error| panic!("generating `{name}` with {defines:?} failed:\n{error}"));
    GeneratedProject {
        project,
        temp: Some(temp),
    }
}

/// Runs cargo-generate as `cargo generate --path <repo> template --name
/// <name> --silent --vcs none --bin -d key=value...` with the project
/// created under `destination`. Returns the project directory, or the error
/// text without colours.
///
/// The harness controls every input: the user's
/// `$CARGO_HOME/cargo-generate.toml` is replaced by an empty one, and values
/// from the environment (`CARGO_GENERATE_VALUE_*`) are refused up front.
pub fn try_generate(
    name: &str,
    defines: &[(&str, &str)],
    destination: &Path,
) -> Result<PathBuf, String> {
    let leaked: Vec<String> = std::env::vars()
        .map(|(key, _)| key)
        .filter(|key| {
            key.starts_with("CARGO_GENERATE_VALUE_") || key == "CARGO_GENERATE_TEMPLATE_VALUES_FILE"
        })
        .collect();
    assert!(
        leaked.is_empty(),
        "unset {leaked:?}: cargo-generate would take template values from them"
    );

    // cargo-generate copies the whole `--path` directory before rendering the
    // subfolder, and the repository's `target/` holds gigabytes of builds
    // (and changes while other tests run). Generate from a copy without it,
    // like the checkout a `--git` user gets.
    let source = tempfile::Builder::new()
        .prefix("template-source-")
        .tempdir_in(std::env::temp_dir())
        .expect("a temporary directory");
    let template = source.path().join("template-repo");
    copy_template_source(repo_root(), &template);
    let app_config = source.path().join("cargo-generate-app.toml");
    fs::write(&app_config, "").unwrap();

    let args = GenerateArgs {
        template_path: TemplatePath {
            path: Some(template.to_string_lossy().into_owned()),
            subfolder: Some("template".to_owned()),
            ..TemplatePath::default()
        },
        name: Some(name.to_owned()),
        silent: true,
        config: Some(app_config),
        vcs: Some(Vcs::None),
        lib: false,
        bin: true,
        define: defines
            .iter()
            .map(|(key, value)| format!("{key}={value}"))
            .collect(),
        destination: Some(destination.to_owned()),
        force_git_init: false,
        no_workspace: true,
        ..GenerateArgs::default()
    };
    let _serial = lock(&GENERATE_LOCK);
    cargo_generate::generate(args).map_err(|error| strip_ansi(&format!("{error:#}")))
}

/// Copies the template repository without `.git` and `target`.
fn copy_template_source(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        if name == ".git" || (from == repo_root() && name == "target") {
            continue;
        }
        let kind = entry.file_type().unwrap();
        if kind.is_dir() {
            copy_template_source(&entry.path(), &to.join(&name));
        } else if kind.is_file() {
            fs::copy(entry.path(), to.join(&name)).unwrap();
        }
    }
}

/// Lines of generated files that still hold Liquid (`{{` or `{%`), as
/// `path:line: text`. GitHub Actions expressions (`${{ ... }}`, rendered
/// from `{% raw %}` blocks) are not Liquid and do not count.
pub fn unrendered_liquid(project: &GeneratedProject) -> Vec<String> {
    let mut found = Vec::new();
    for file in project.files() {
        let Ok(text) = fs::read_to_string(project.join(&file)) else {
            continue; // not text
        };
        for (number, line) in text.lines().enumerate() {
            let rest = without_github_expressions(line);
            if rest.contains("{{") || rest.contains("{%") {
                found.push(format!("{}:{}: {line}", file.display(), number + 1));
            }
        }
    }
    found
}

/// `line` without its `${{ ... }}` spans (an unclosed one stays).
fn without_github_expressions(line: &str) -> String {
    let mut rest = line;
    let mut kept = String::with_capacity(line.len());
    while let Some(start) = rest.find("${{") {
        let Some(length) = rest[start..].find("}}") else {
            break;
        };
        kept.push_str(&rest[..start]);
        rest = &rest[start + length + 2..];
    }
    kept.push_str(rest);
    kept
}

// ---------------------------------------------------------------------------
// Cargo inside generated projects
// ---------------------------------------------------------------------------

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
    command
        .args(args)
        .current_dir(project)
        .env("CARGO_TARGET_DIR", variants_target_dir())
        .env("CARGO_TERM_COLOR", "never");
    scrub_env(&mut command);
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

// ---------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------

/// Polls `probe` every 20 ms until it returns `Ok`; panics after `timeout`
/// with `what` and the last `Err`, which should say what was seen instead.
pub fn wait_until<T>(
    timeout: Duration,
    what: &str,
    mut probe: impl FnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        match probe() {
            Ok(value) => return value,
            Err(last) if Instant::now() >= deadline => {
                panic!("timed out after {timeout:?} waiting for {what}; last seen: {last}")
            }
            Err(_) => thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Output collected from a child's stdout and stderr.
#[derive(Debug, Default)]
struct Captured {
    stdout: String,
    stderr: String,
    /// Both, in the order the lines arrived.
    both: String,
}

/// A child process whose output is collected as it runs, and which is
/// killed, with everything it started, when dropped: a failing test leaves
/// nothing running.
#[derive(Debug)]
pub struct Process {
    name: String,
    child: Child,
    status: Option<ExitStatus>,
    captured: Arc<Mutex<Captured>>,
    readers: Vec<JoinHandle<()>>,
}

impl Process {
    /// Starts `command` with piped output; `name` is used in messages.
    pub fn spawn(name: &str, mut command: Command) -> Process {
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {name} ({command:?}): {error}"));
        let captured = Arc::new(Mutex::new(Captured::default()));
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let readers = vec![
            collect(stdout, Arc::clone(&captured), false),
            collect(stderr, Arc::clone(&captured), true),
        ];
        Process {
            name: name.to_owned(),
            child,
            status: None,
            captured,
            readers,
        }
    }

    /// Its process ID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything it printed so far, stdout and stderr interleaved by line.
    pub fn output(&self) -> String {
        lock(&self.captured).both.clone()
    }

    /// What it printed on stdout so far.
    pub fn stdout(&self) -> String {
        lock(&self.captured).stdout.clone()
    }

    /// What it printed on stderr so far.
    pub fn stderr(&self) -> String {
        lock(&self.captured).stderr.clone()
    }

    /// Its exit status if it has exited.
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().expect("waitpid");
        }
        self.status
    }

    /// Panics with its output if it has exited: for checks while waiting on
    /// something it should be doing.
    pub fn assert_running(&mut self) {
        if let Some(status) = self.try_status() {
            self.finish_reading();
            panic!("{} exited early ({status}):\n{}", self.name, self.output());
        }
    }

    /// Sends `signal` (such as `libc::SIGTERM`) to it.
    pub fn signal(&mut self, signal: libc::c_int) {
        if self.try_status().is_some() {
            return;
        }
        // SAFETY: `kill` has no memory effects; the child is not reaped
        // yet (`try_status` is `None`), so its PID still names it.
        let result = unsafe { libc::kill(self.pid() as libc::pid_t, signal) };
        assert_eq!(result, 0, "kill({}, {signal}) failed", self.pid());
    }

    /// Asks it to stop with SIGTERM.
    pub fn terminate(&mut self) {
        self.signal(libc::SIGTERM);
    }

    /// Waits until it exits and returns its status; panics with its output
    /// if it is still running after `timeout` (it is then killed).
    pub fn wait_for_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_status() {
                self.finish_reading();
                return status;
            }
            if Instant::now() >= deadline {
                self.kill();
                panic!(
                    "{} still running after {timeout:?}; killed. Output:\n{}",
                    self.name,
                    self.output()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills it and what it started with SIGKILL (`kill -9`), then reaps it.
    pub fn kill(&mut self) {
        if self.try_status().is_none() {
            for pid in descendants(self.pid()) {
                // SAFETY: as in `signal`; a descendant that exited meanwhile
                // makes this fail harmlessly.
                unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            }
            let _ = self.child.kill();
            self.status = self.child.wait().ok();
        }
        self.finish_reading();
    }

    /// Lets the reader threads take in the last output, without hanging if
    /// a grandchild still holds the pipes open.
    fn finish_reading(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(2);
        while self.readers.iter().any(|reader| !reader.is_finished()) && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(5));
        }
        self.readers.retain(|reader| !reader.is_finished());
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Reads `pipe` line by line into `captured`.
fn collect(
    pipe: impl Read + Send + 'static,
    captured: Arc<Mutex<Captured>>,
    is_stderr: bool,
) -> JoinHandle<()> {
    thread::spawn(move || {
        let mut reader = BufReader::new(pipe);
        let mut line = Vec::new();
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let text = String::from_utf8_lossy(&line);
                    let mut captured = lock(&captured);
                    if is_stderr {
                        captured.stderr.push_str(&text);
                    } else {
                        captured.stdout.push_str(&text);
                    }
                    captured.both.push_str(&text);
                    if !text.ends_with('\n') {
                        captured.both.push('\n');
                    }
                }
            }
        }
    })
}

/// The processes descended from `pid`, deepest first (from `/proc`).
fn descendants(pid: u32) -> Vec<u32> {
    let mut parents: Vec<(u32, u32)> = Vec::new();
    if let Ok(entries) = fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(child) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
                continue;
            };
            // `pid (comm) state ppid ...`; comm may hold spaces and parens.
            let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            let Some(after_comm) = stat.rfind(')').map(|end| &stat[end + 1..]) else {
                continue;
            };
            if let Some(parent) = after_comm
                .split_whitespace()
                .nth(1)
                .and_then(|p| p.parse().ok())
            {
                parents.push((child, parent));
            }
        }
    }
    let mut found = Vec::new();
    let mut frontier = vec![pid];
    while let Some(parent) = frontier.pop() {
        for &(child, _) in parents.iter().filter(|(_, p)| *p == parent) {
            found.push(child);
            frontier.push(child);
        }
    }
    found.reverse();
    found
}

// ---------------------------------------------------------------------------
// Redis
// ---------------------------------------------------------------------------

/// How to run a [`RedisServer`].
#[derive(Debug, Clone, Copy, Default)]
pub struct RedisOptions {
    /// `--appendonly yes`: writes survive a kill and a [`RedisServer::restart`].
    pub appendonly: bool,
}

/// A `redis-server` of the test's own on a free port of 127.0.0.1, with a
/// fresh data directory; killed on drop.
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    dir: TempDir,
    options: RedisOptions,
    process: Option<Process>,
}

/// How long a starting redis-server may take to answer PING.
const REDIS_START_DEADLINE: Duration = Duration::from_secs(20);

impl RedisServer {
    /// Starts one that keeps nothing on disk.
    pub fn start() -> RedisServer {
        RedisServer::start_with(RedisOptions::default())
    }

    /// Starts one with `options`.
    pub fn start_with(options: RedisOptions) -> RedisServer {
        let dir = tempfile::Builder::new()
            .prefix("template-test-redis-")
            .tempdir_in(std::env::temp_dir())
            .expect("a temporary directory");
        // The free port is found by binding port 0 and letting it go, so
        // another process may take it before redis-server does: try again.
        let mut last_error = String::new();
        for _ in 0..5 {
            let port = free_port();
            match launch_redis(port, dir.path(), options) {
                Ok(process) => {
                    return RedisServer {
                        port,
                        dir,
                        options,
                        process: Some(process),
                    };
                }
                Err(error) => last_error = error,
            }
        }
        panic!("redis-server did not start: {last_error}");
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its data directory (and `redis.log`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir().join("redis.log")).unwrap_or_default()
    }

    /// Its process ID while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(Process::pid)
    }

    /// Whether it is running (it may have been killed).
    pub fn is_running(&mut self) -> bool {
        self.process
            .as_mut()
            .is_some_and(|process| process.try_status().is_none())
    }

    /// Kills it with SIGKILL, as a crash would: nothing is flushed beyond
    /// what the append-only file already has.
    pub fn kill(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.kill();
        }
    }

    /// Starts it again on the same port and data directory (after
    /// [`kill`](Self::kill), or killing it first).
    pub fn restart(&mut self) {
        self.kill();
        let process = launch_redis(self.port, self.dir.path(), self.options)
            .unwrap_or_else(|error| panic!("redis-server did not restart: {error}"));
        self.process = Some(process);
    }

    /// A new connection.
    pub fn connect(&self) -> redis::Connection {
        let client = redis::Client::open(self.url()).unwrap();
        let connection = client
            .get_connection_with_timeout(Duration::from_secs(5))
            .unwrap_or_else(|error| panic!("cannot connect to {}: {error}", self.url()));
        connection
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        connection
            .set_write_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        connection
    }

    /// Adds one entry per element of `data`, each with a single field
    /// `data`, in one pipeline; returns their IDs.
    pub fn xadd_data<S: AsRef<str>>(&self, stream: &str, data: &[S]) -> Vec<String> {
        let mut pipe = redis::pipe();
        for value in data {
            pipe.cmd("XADD")
                .arg(stream)
                .arg("*")
                .arg("data")
                .arg(value.as_ref());
        }
        pipe.query(&mut self.connect())
            .unwrap_or_else(|error| panic!("XADD to {stream} failed: {error}"))
    }

    /// `XLEN stream` (0 for a stream that does not exist).
    pub fn xlen(&self, stream: &str) -> usize {
        self.connect().xlen(stream).unwrap()
    }

    /// `XINFO GROUPS stream`; empty if the stream does not exist.
    pub fn groups(&self, stream: &str) -> Vec<StreamInfoGroup> {
        let mut connection = self.connect();
        let exists: bool = connection.exists(stream).unwrap();
        if !exists {
            return Vec::new();
        }
        let reply: redis::streams::StreamInfoGroupsReply = connection.xinfo_groups(stream).unwrap();
        reply.groups
    }

    /// The group called `group` of `stream`, if it exists.
    pub fn group(&self, stream: &str, group: &str) -> Option<StreamInfoGroup> {
        self.groups(stream)
            .into_iter()
            .find(|info| info.name == group)
    }

    /// `XINFO CONSUMERS stream group`.
    pub fn consumers(&self, stream: &str, group: &str) -> Vec<StreamInfoConsumer> {
        let reply: redis::streams::StreamInfoConsumersReply =
            self.connect().xinfo_consumers(stream, group).unwrap();
        reply.consumers
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

impl RedisServer {
    /// Starts one on `port`, chosen beforehand (with [`unused_port`]) so
    /// that a client can be pointed at it before it exists. Panics if it
    /// cannot start there.
    pub fn start_on(port: u16, options: RedisOptions) -> RedisServer {
        let dir = tempfile::Builder::new()
            .prefix("template-test-redis-")
            .tempdir_in(std::env::temp_dir())
            .expect("a temporary directory");
        let process = launch_redis(port, dir.path(), options)
            .unwrap_or_else(|error| panic!("redis-server did not start on port {port}: {error}"));
        RedisServer {
            port,
            dir,
            options,
            process: Some(process),
        }
    }
}

/// A port of 127.0.0.1 with nothing listening on it a moment ago (never
/// 6379), for [`RedisServer::start_on`].
pub fn unused_port() -> u16 {
    loop {
        let port = free_port();
        if port != 6379 {
            return port;
        }
    }
}

/// A port of 127.0.0.1 that was free a moment ago.
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().unwrap().port()
}

/// Starts redis-server on `port` with its data in `dir` and waits until it
/// answers PING.
fn launch_redis(port: u16, dir: &Path, options: RedisOptions) -> Result<Process, String> {
    assert_ne!(port, 6379, "never the machine's own Redis");
    let log = dir.join("redis.log");
    let mut command = Command::new("redis-server");
    command
        .arg("--port")
        .arg(port.to_string())
        .args(["--bind", "127.0.0.1"])
        .args(["--save", ""])
        .args([
            "--appendonly",
            if options.appendonly { "yes" } else { "no" },
        ])
        .arg("--dir")
        .arg(dir)
        .arg("--logfile")
        .arg(&log)
        .args(["--daemonize", "no"]);
    let mut process = Process::spawn("redis-server", command);
    let deadline = Instant::now() + REDIS_START_DEADLINE;
    loop {
        if let Some(status) = process.try_status() {
            return Err(format!(
                "redis-server on port {port} exited ({status}):\n{}{}",
                process.output(),
                fs::read_to_string(&log).unwrap_or_default()
            ));
        }
        if ping(port) {
            return Ok(process);
        }
        if Instant::now() >= deadline {
            process.kill();
            return Err(format!(
                "no PONG on port {port} within {REDIS_START_DEADLINE:?}:\n{}",
                fs::read_to_string(&log).unwrap_or_default()
            ));
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Whether a server on `port` answers PING (not while it loads its data).
fn ping(port: u16) -> bool {
    let Ok(client) = redis::Client::open(format!("redis://127.0.0.1:{port}")) else {
        return false;
    };
    let Ok(mut connection) = client.get_connection_with_timeout(Duration::from_millis(500)) else {
        return false;
    };
    redis::cmd("PING")
        .query::<String>(&mut connection)
        .is_ok_and(|reply| reply == "PONG")
}
