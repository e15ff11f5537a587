//! Benchmark of the generated worker: drain throughput against a minimal
//! reference consumer, end-to-end latency at a steady rate, memory, start-up
//! time and (optionally) a cold release build.
//!
//! From the repository root:
//!
//! ```text
//! cargo bench --bench worker                     # everything but the cold build
//! cargo bench --bench worker -- --build          # and the cold build (minutes)
//! cargo bench --bench worker -- --runs 5         # or BENCH_RUNS=5
//! cargo bench --bench worker -- --help
//! ```
//!
//! Progress goes to stderr; the Markdown table at the end goes to stdout.
//! It is not a test: a missed target is reported, never an error. It exits
//! non-zero only when something cannot run (a build, Redis, the worker).
//!
//! What it does:
//!
//! - generates the default variant (validation and metrics on) as
//!   `bench-default` and the validation-off variant as `bench-raw`, and a
//!   third copy of the default, `bench-latency`, whose `src/business_logic.rs`
//!   is replaced by `benches/fixtures/latency_business_logic.rs`; builds all
//!   three with `cargo build --release` into the suite's shared target
//!   directory (`target/variants`). The generated files are kept between
//!   runs in `$TMPDIR/redis-streams-worker-bench-<uid>/`, rewritten only
//!   where the template changed, so a second run rebuilds nothing;
//! - every measurement gets a fresh `redis-server --save "" --appendonly no`
//!   on a free port;
//! - drain: 1,000,000 entries, each a `data` field of 100 bytes of JSON, are
//!   added with pipelined `XADD`s (10,000 per round trip); the worker is
//!   started (`LOG_LEVEL=warn`, the shipped no-op business logic) and timed
//!   from its start until `XINFO GROUPS` shows every entry read, lag 0 and
//!   nothing pending (polled every 10 ms). The reference consumer does the
//!   same drain in this process: one connection, `XREADGROUP GROUP g c COUNT
//!   1000 STREAMS s >` then one `XACK` of the batch, until the read is empty.
//!   Each run drains with the reference, the default and the raw variant in
//!   turn; figures are medians over the runs;
//! - latency: a producer adds entries at a steady rate (10,000/s for 30 s),
//!   each with its send time (`sent_us`) in `data`; `bench-latency` records
//!   receive time minus send time per entry, and the percentiles are taken
//!   over every entry;
//! - memory: the worker's `VmRSS` and `VmHWM` (`/proc/<pid>/status`) 2 s
//!   after start with nothing to do, and `VmHWM` at the end of each drain;
//! - start-up: from spawning the worker to the first `XREADGROUP` Redis
//!   counted (`INFO commandstats`, polled every 1 ms); median of `--starts`;
//! - build (`--build`): `cargo build --release` of a freshly generated
//!   default variant into an empty `CARGO_TARGET_DIR`, and the number of
//!   crates it compiled.
//!
//! Every measurement notes the load: the 1-minute load average before it,
//! and the CPU that processes other than this benchmark, its worker and its
//! Redis used during it (from `/proc/stat`). Before each measurement the
//! benchmark waits (up to 15 s) for other processes to use less than
//! `--max-other-cores`; a measurement they disturbed anyway is repeated (at
//! most `--retries` times) and the least disturbed attempt is kept. Waiting
//! and repeating stop once `--calm-budget` seconds are spent, so a busy
//! machine lengthens a run by at most that much; its figures then say how
//! busy it was.
//!
//! Profiling: `--worker-wrapper` runs the drain's workers under another
//! program, e.g. `cargo bench --bench worker -- --only drain --runs 1
//! --entries 50000 --worker-wrapper "valgrind --tool=callgrind
//! --callgrind-out-file=/tmp/callgrind.%p.out"` (the release profile of the
//! generated project keeps line tables). `--worker-env KEY=VALUE` tries a
//! setting, e.g. `WORKER_BATCH_SIZE=1000`.

#[path = "../tests/common/mod.rs"]
mod common;

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{
    Process, RedisServer, cargo, cargo_with_env, generate_with, note, release_binary, repo_root,
    scrub_env, variant,
};
use redis::Value;
use redis::streams::{StreamInfoGroup, StreamInfoGroupsReply};

// ---------------------------------------------------------------------------
// Settings
// ---------------------------------------------------------------------------

/// The stream and group of every measurement.
const STREAM: &str = "bench";
const GROUP: &str = "bench-group";
/// Size of each entry's `data` field.
const DATA_BYTES: usize = 100;
/// Entries per pipelined round trip of the pre-fill.
const PREFILL_BATCH: usize = 10_000;
/// `COUNT` of the reference consumer's reads.
const REFERENCE_COUNT: usize = 1_000;
/// How often the drain is checked.
const DRAIN_POLL: Duration = Duration::from_millis(10);
/// How often start-up looks for the first read.
const STARTUP_POLL: Duration = Duration::from_millis(1);
/// The longest one drain may take before the benchmark gives up.
const DRAIN_DEADLINE: Duration = Duration::from_secs(900);
/// How long the worker sits idle before its memory is read.
const IDLE_WAIT: Duration = Duration::from_secs(2);
/// How long one measurement waits at most for other processes to calm down.
const CALM_WAIT: Duration = Duration::from_secs(15);
/// How long the worker may take to stop after SIGTERM.
const STOP_DEADLINE: Duration = Duration::from_secs(30);

/// The business logic of the latency copy.
const LATENCY_LOGIC: &str = include_str!("fixtures/latency_business_logic.rs");

const USAGE: &str = "\
cargo bench --bench worker [-- OPTIONS]

  --runs N              drain runs per figure, medians reported (default 3; env BENCH_RUNS)
  --entries N           entries per drain (default 1000000)
  --rate N              latency producer, entries per second (default 10000)
  --seconds N           latency producer, duration (default 30)
  --starts N            start-up measurements (default 5)
  --build               also time a cold `cargo build --release` (minutes)
  --only LIST           comma-separated phases: drain, latency, startup, build
  --max-other-cores F   repeat a measurement if other processes used more CPU than this (default 0.3)
  --retries N           at most this many repeats per measurement (default 1)
  --calm-budget SECS    total time the run may spend waiting for calm and repeating (default 180)
  --worker-wrapper CMD  run the drain's worker under CMD (e.g. \"valgrind --tool=callgrind\")
  --worker-env K=V      extra environment of every worker, e.g. WORKER_BATCH_SIZE=1000 (repeatable)
  --extra-worker PATH   also drain with this worker binary (a modified build), after the others
  --latency-worker PATH measure latency with this binary instead (a modified build of the
                        latency copy, which recording needs)
";

#[derive(Debug, Clone)]
struct Options {
    runs: usize,
    entries: usize,
    rate: u64,
    seconds: u64,
    starts: usize,
    drain: bool,
    latency: bool,
    startup: bool,
    build: bool,
    max_other_cores: f64,
    retries: usize,
    calm_budget: u64,
    wrapper: Vec<String>,
    worker_env: Vec<(String, String)>,
    extra_worker: Option<PathBuf>,
    latency_worker: Option<PathBuf>,
}

impl Options {
    fn parse() -> Result<Options, String> {
        let mut options = Options {
            runs: 3,
            entries: 1_000_000,
            rate: 10_000,
            seconds: 30,
            starts: 5,
            drain: true,
            latency: true,
            startup: true,
            build: false,
            max_other_cores: 0.3,
            retries: 1,
            calm_budget: 180,
            wrapper: Vec::new(),
            worker_env: Vec::new(),
            extra_worker: None,
            latency_worker: None,
        };
        if let Ok(runs) = std::env::var("BENCH_RUNS")
            && !runs.is_empty()
        {
            options.runs = number("BENCH_RUNS", &runs)?;
        }
        let mut build_flag = false;
        let mut only: Option<String> = None;
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            let (name, inline) = match arg.split_once('=') {
                Some((name, value)) if name.starts_with("--") => {
                    (name.to_owned(), Some(value.to_owned()))
                }
                _ => (arg.clone(), None),
            };
            let mut value = || {
                inline
                    .clone()
                    .or_else(|| args.next())
                    .ok_or_else(|| format!("{name} needs a value"))
            };
            match name.as_str() {
                // cargo bench passes --bench to every bench target.
                "--bench" => {}
                "--help" | "-h" => return Err(String::new()),
                "--runs" => options.runs = number(&name, &value()?)?,
                "--entries" => options.entries = number(&name, &value()?)?,
                "--rate" => options.rate = number(&name, &value()?)?,
                "--seconds" => options.seconds = number(&name, &value()?)?,
                "--starts" => options.starts = number(&name, &value()?)?,
                "--build" => build_flag = true,
                "--only" => only = Some(value()?),
                "--max-other-cores" => {
                    let text = value()?;
                    options.max_other_cores = text
                        .parse()
                        .map_err(|_| format!("{name}: `{text}` is not a number"))?;
                }
                "--retries" => options.retries = number(&name, &value()?)?,
                "--calm-budget" => options.calm_budget = number(&name, &value()?)?,
                "--worker-wrapper" => {
                    options.wrapper = value()?.split_whitespace().map(str::to_owned).collect();
                }
                "--worker-env" => {
                    let text = value()?;
                    let (key, value) = text
                        .split_once('=')
                        .ok_or_else(|| format!("{name}: `{text}` is not KEY=VALUE"))?;
                    options.worker_env.push((key.to_owned(), value.to_owned()));
                }
                "--extra-worker" => options.extra_worker = Some(PathBuf::from(value()?)),
                "--latency-worker" => options.latency_worker = Some(PathBuf::from(value()?)),
                other => return Err(format!("unknown argument `{other}`")),
            }
        }
        if let Some(list) = only {
            let phases: Vec<&str> = list.split(',').map(str::trim).collect();
            for phase in &phases {
                if !["drain", "latency", "startup", "build"].contains(phase) {
                    return Err(format!("--only: unknown phase `{phase}`"));
                }
            }
            options.drain = phases.contains(&"drain");
            options.latency = phases.contains(&"latency");
            options.startup = phases.contains(&"startup");
            options.build = phases.contains(&"build");
        }
        options.build |= build_flag;
        if options.runs == 0 || options.entries == 0 || options.rate == 0 || options.starts == 0 {
            return Err("--runs, --entries, --rate and --starts must be at least 1".into());
        }
        Ok(options)
    }
}

fn number<T: std::str::FromStr>(name: &str, text: &str) -> Result<T, String> {
    text.parse()
        .map_err(|_| format!("{name}: `{text}` is not a whole number"))
}

// ---------------------------------------------------------------------------
// The machine, its load and the CPU each process used
// ---------------------------------------------------------------------------

fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf only reads a configuration value.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

/// Busy CPU time of the whole machine, in clock ticks (`/proc/stat`).
fn machine_busy_ticks() -> u64 {
    let stat = fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = stat.lines().find(|line| line.starts_with("cpu ")) else {
        return 0;
    };
    // user nice system idle iowait irq softirq steal (guest is in user).
    line.split_whitespace()
        .skip(1)
        .take(8)
        .enumerate()
        .filter(|(index, _)| *index != 3 && *index != 4)
        .filter_map(|(_, value)| value.parse::<u64>().ok())
        .sum()
}

/// CPU time of process `pid` (`self` for this one), user plus system, in
/// clock ticks; 0 if it is gone.
fn process_ticks(pid: &str) -> u64 {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    let Some(after_comm) = stat.rfind(')').map(|end| &stat[end + 1..]) else {
        return 0;
    };
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    // Fields 14 and 15 of stat(5); the first after the command is field 3.
    let field = |index: usize| -> u64 {
        fields
            .get(index - 3)
            .and_then(|value| value.parse().ok())
            .unwrap_or(0)
    };
    field(14) + field(15)
}

/// A value in kB of `/proc/<pid>/status`, such as `VmRSS` or `VmHWM`.
fn status_kb(pid: u32, key: &str) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(key)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// The 1-minute load average.
fn load_average() -> f64 {
    fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

fn load_averages() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|_| "?".into())
}

/// The CPU used during one measurement: by the processes it started, by this
/// benchmark, and by everything else on the machine.
struct CpuWatch {
    started: Instant,
    load_before: f64,
    machine: u64,
    processes: Vec<(&'static str, String, u64)>,
}

/// What a [`CpuWatch`] saw, in cores (1.0 = one core busy all the time).
#[derive(Debug, Clone, Copy, Default)]
struct CpuUse {
    /// The worker (or 0 for the reference, which runs in this process).
    worker: f64,
    /// Its Redis.
    redis: f64,
    /// This benchmark: the reference consumer, the producer, the polling.
    bench: f64,
    /// Everything else on the machine.
    others: f64,
    /// The 1-minute load average before the measurement.
    load_before: f64,
}

impl CpuWatch {
    fn start() -> CpuWatch {
        CpuWatch {
            started: Instant::now(),
            load_before: load_average(),
            machine: machine_busy_ticks(),
            processes: vec![("bench", "self".to_owned(), process_ticks("self"))],
        }
    }

    /// Counts `pid` as `label`; a process started after [`CpuWatch::start`]
    /// is added with its whole CPU time so far.
    fn watch(&mut self, label: &'static str, pid: u32, since_start: bool) {
        let pid = pid.to_string();
        let ticks = if since_start { 0 } else { process_ticks(&pid) };
        self.processes.push((label, pid, ticks));
    }

    /// Reads the counters again; call while the watched processes still run.
    fn finish(&self) -> CpuUse {
        let seconds = self.started.elapsed().as_secs_f64().max(1e-9);
        let hz = clock_ticks_per_second();
        let cores = |ticks: u64| ticks as f64 / hz / seconds;
        let mut used = CpuUse {
            load_before: self.load_before,
            ..CpuUse::default()
        };
        let mut ours = 0;
        for (label, pid, before) in &self.processes {
            let delta = process_ticks(pid).saturating_sub(*before);
            ours += delta;
            match *label {
                "worker" => used.worker += cores(delta),
                "redis" => used.redis += cores(delta),
                _ => used.bench += cores(delta),
            }
        }
        used.others = cores(machine_busy_ticks().saturating_sub(self.machine + ours));
        used
    }
}

impl CpuUse {
    fn describe(&self) -> String {
        format!(
            "cpu: worker {:.2}, redis {:.2}, bench {:.2}, other processes {:.2} cores; load before {:.2}",
            self.worker, self.redis, self.bench, self.others, self.load_before
        )
    }
}

/// Time left for waiting on other processes and for repeating disturbed
/// measurements, in milliseconds (`--calm-budget`); once spent, the run
/// measures on whatever the load and only reports it.
static CALM_BUDGET_MS: AtomicU64 = AtomicU64::new(0);

/// Takes `spent` from the budget.
fn spend(spent: Duration) {
    let spent = u64::try_from(spent.as_millis()).unwrap_or(u64::MAX);
    let _ = CALM_BUDGET_MS.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
        Some(left.saturating_sub(spent))
    });
}

fn budget_left() -> bool {
    CALM_BUDGET_MS.load(Ordering::Relaxed) > 0
}

/// Runs `measure` once, after waiting for other processes to calm down; if
/// they still used more than `--max-other-cores` during it, runs it again
/// (at most `--retries` times, while the budget lasts) and returns the least
/// disturbed attempt.
fn least_disturbed<T>(
    options: &Options,
    what: &str,
    mut measure: impl FnMut() -> (T, CpuUse),
) -> (T, CpuUse) {
    let mut best: Option<(T, CpuUse)> = None;
    for attempt in 0..=options.retries {
        wait_for_calm(options);
        let started = Instant::now();
        let (result, cpu) = measure();
        let calm = cpu.others <= options.max_other_cores;
        if attempt > 0 {
            spend(started.elapsed());
        }
        let again = !calm && attempt < options.retries && budget_left();
        if !calm {
            note(format!(
                "    {what}: other processes used {:.2} cores (limit {:.2}){}",
                cpu.others,
                options.max_other_cores,
                if again { "; measuring again" } else { "" }
            ));
        }
        if best
            .as_ref()
            .is_none_or(|(_, kept)| cpu.others < kept.others)
        {
            best = Some((result, cpu));
        }
        if !again {
            break;
        }
    }
    best.expect("at least one attempt")
}

/// Waits, up to [`CALM_WAIT`] and while the budget lasts, until other
/// processes use less CPU than `--max-other-cores` over half a second.
fn wait_for_calm(options: &Options) {
    let started = Instant::now();
    let deadline = started + CALM_WAIT;
    let mut waited = false;
    loop {
        let watch = CpuWatch::start();
        thread::sleep(Duration::from_millis(500));
        let others = watch.finish().others;
        let calm = others <= options.max_other_cores;
        if calm || Instant::now() >= deadline || !budget_left() {
            if waited {
                note(format!(
                    "    waited {:.1}s for other processes to calm down; now {others:.2} cores",
                    started.elapsed().as_secs_f64()
                ));
            }
            return;
        }
        spend(Duration::from_millis(500));
        waited = true;
    }
}

struct Machine {
    cores: usize,
    cpu_model: String,
    redis_version: String,
    kernel: String,
    template_state: String,
}

impl Machine {
    fn probe() -> Machine {
        let cores = thread::available_parallelism().map_or(0, |n| n.get());
        let cpu_model = fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|text| {
                text.lines()
                    .find(|line| line.starts_with("model name"))
                    .and_then(|line| line.split_once(':'))
                    .map(|(_, model)| model.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown".into());
        let redis_version = command_output("redis-server", &["--version"])
            .and_then(|text| {
                text.split_whitespace()
                    .find_map(|word| word.strip_prefix("v="))
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| "unknown".into());
        let kernel = fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|text| text.trim().to_owned())
            .unwrap_or_else(|_| "unknown".into());
        let root = repo_root().to_string_lossy().into_owned();
        let commit = command_output("git", &["-C", &root, "rev-parse", "--short", "HEAD"])
            .map(|text| text.trim().to_owned())
            .unwrap_or_else(|| "unknown commit".into());
        let dirty = command_output(
            "git",
            &[
                "-C",
                &root,
                "status",
                "--porcelain",
                "--",
                "template",
                "hooks",
            ],
        )
        .is_some_and(|text| !text.trim().is_empty());
        let template_state = if dirty {
            format!("{commit} with uncommitted changes under template/ or hooks/")
        } else {
            commit
        };
        Machine {
            cores,
            cpu_model,
            redis_version,
            kernel,
            template_state,
        }
    }
}

fn command_output(program: &str, args: &[&str]) -> Option<String> {
    let output = Command::new(program).args(args).output().ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
}

// ---------------------------------------------------------------------------
// Builds
// ---------------------------------------------------------------------------

/// A generated project built in release mode.
struct Built {
    name: &'static str,
    binary: PathBuf,
    /// Dependency crates (`cargo tree -e normal,build`, unique name and
    /// version, the project itself not counted).
    dependencies: usize,
}

/// Where the benchmark keeps its generated projects between runs, outside
/// the repository: an unchanged file keeps its modification time, so cargo
/// rebuilds a project only when the template changed.
fn projects_dir() -> PathBuf {
    // SAFETY: getuid cannot fail and has no memory effects.
    let uid = unsafe { libc::getuid() };
    std::env::temp_dir().join(format!("redis-streams-worker-bench-{uid}"))
}

/// Runs `generate` with standard output sent to standard error: the
/// template's post hook prints its "next steps" there, and standard output
/// is kept for the table.
fn to_stderr<T>(generate: impl FnOnce() -> T) -> T {
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
fn sync_tree(from: &Path, to: &Path) {
    let mut files = Vec::new();
    common::walk_files(from, &mut files);
    let mut wanted = std::collections::HashSet::new();
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
        common::walk_files(to, &mut present);
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
fn build(name: &'static str, label: &str, logic: Option<&str>) -> Built {
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
fn count_crates(tree: &str) -> usize {
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
struct ColdBuild {
    seconds: f64,
    compiled: usize,
    cpu: CpuUse,
}

/// `cargo build --release` of a fresh default variant into an empty target
/// directory.
fn cold_build() -> ColdBuild {
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

// ---------------------------------------------------------------------------
// Redis helpers
// ---------------------------------------------------------------------------

/// The `data` of the `n`th pre-filled entry: a JSON object of
/// [`DATA_BYTES`] bytes.
fn drain_data(n: usize) -> String {
    padded(format!(
        r#"{{"n":{n},"user_id":"u{}","action":"login","note":""#,
        n % 1000
    ))
}

/// The `data` of the `n`th latency entry, sent at `sent_us`.
fn latency_data(n: u64, sent_us: u64) -> String {
    padded(format!(
        r#"{{"sent_us":{sent_us},"n":{n},"user_id":"u{}","note":""#,
        n % 1000
    ))
}

/// Closes `head` (which ends inside a string) after padding it to
/// [`DATA_BYTES`].
fn padded(mut head: String) -> String {
    while head.len() < DATA_BYTES - 2 {
        head.push('x');
    }
    head.push_str("\"}");
    head
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_micros() as u64)
}

/// Adds `entries` entries to [`STREAM`] with pipelined `XADD`s.
fn prefill(redis: &RedisServer, entries: usize) {
    let mut connection = redis.connect();
    let mut added = 0;
    while added < entries {
        let batch = PREFILL_BATCH.min(entries - added);
        let mut pipe = redis::pipe();
        for n in added..added + batch {
            pipe.cmd("XADD")
                .arg(STREAM)
                .arg("*")
                .arg("data")
                .arg(drain_data(n))
                .ignore();
        }
        pipe.query::<()>(&mut connection)
            .unwrap_or_else(|error| panic!("pre-fill XADD failed: {error}"));
        added += batch;
    }
}

/// [`GROUP`] of [`STREAM`], if both exist.
fn group_info(connection: &mut redis::Connection) -> Option<StreamInfoGroup> {
    let reply: redis::RedisResult<StreamInfoGroupsReply> = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(STREAM)
        .query(connection);
    reply
        .ok()?
        .groups
        .into_iter()
        .find(|group| group.name == GROUP)
}

/// Whether the group has read all `entries` and acknowledged them.
fn drained(connection: &mut redis::Connection, entries: usize) -> bool {
    group_info(connection).is_some_and(|group| {
        group.lag == Some(0) && group.pending == 0 && group.entries_read == Some(entries)
    })
}

/// How many `XREADGROUP`s the server ran (`INFO commandstats`).
fn xreadgroup_calls(connection: &mut redis::Connection) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(connection)
        .unwrap_or_default();
    info.lines()
        .find_map(|line| line.strip_prefix("cmdstat_xreadgroup:calls="))
        .and_then(|rest| rest.split(',').next()?.parse().ok())
        .unwrap_or(0)
}

/// Starts the worker `binary` on `redis`, optionally under `wrapper`.
fn spawn_worker(
    name: &str,
    binary: &Path,
    redis: &RedisServer,
    options: &Options,
    wrapper: &[String],
    env: &[(&str, &str)],
) -> Process {
    let mut command = match wrapper.split_first() {
        Some((program, args)) => {
            let mut command = Command::new(program);
            command.args(args).arg(binary);
            command
        }
        None => Command::new(binary),
    };
    command.current_dir(std::env::temp_dir());
    scrub_env(&mut command);
    command
        .env("REDIS_URL", redis.url())
        .env("REDIS_STREAM", STREAM)
        .env("REDIS_CONSUMER_GROUP", GROUP)
        .env("METRICS_ADDR", "127.0.0.1:0")
        .env("LOG_LEVEL", "warn")
        .envs(options.worker_env.iter().map(|(k, v)| (k, v)))
        .envs(env.iter().copied());
    Process::spawn(name, command)
}

/// Stops the worker with SIGTERM and checks that it exits cleanly.
fn stop(mut worker: Process) {
    worker.terminate();
    let status = worker.wait_for_exit(STOP_DEADLINE);
    if !status.success() {
        note(format!(
            "    the worker exited with {status} after SIGTERM:\n{}",
            worker.output()
        ));
    }
}

// ---------------------------------------------------------------------------
// Drain
// ---------------------------------------------------------------------------

/// One drain of the pre-filled stream.
#[derive(Debug, Clone, Copy)]
struct Drain {
    seconds: f64,
    rate: f64,
    /// The worker's `VmHWM` at the end, kB.
    peak_rss_kb: Option<u64>,
    cpu: CpuUse,
}

fn drain_worker(built: &Built, options: &Options) -> (Drain, CpuUse) {
    let redis = RedisServer::start();
    prefill(&redis, options.entries);
    let mut poll = redis.connect();
    let mut watch = CpuWatch::start();
    if let Some(pid) = redis.pid() {
        watch.watch("redis", pid, false);
    }
    let started = Instant::now();
    let mut worker = spawn_worker(
        built.name,
        &built.binary,
        &redis,
        options,
        &options.wrapper,
        &[],
    );
    watch.watch("worker", worker.pid(), true);
    loop {
        worker.assert_running();
        if drained(&mut poll, options.entries) {
            break;
        }
        assert!(
            started.elapsed() < DRAIN_DEADLINE,
            "{} did not drain {} entries within {DRAIN_DEADLINE:?}; group: {:?}",
            built.name,
            options.entries,
            group_info(&mut poll)
        );
        thread::sleep(DRAIN_POLL);
    }
    let seconds = started.elapsed().as_secs_f64();
    let peak_rss_kb = status_kb(worker.pid(), "VmHWM");
    let cpu = watch.finish();
    stop(worker);
    let drain = Drain {
        seconds,
        rate: options.entries as f64 / seconds,
        peak_rss_kb,
        cpu,
    };
    (drain, cpu)
}

/// The IDs of an `XREADGROUP` reply (RESP2 array or RESP3 map).
fn entry_ids(reply: Value) -> Vec<String> {
    let streams: Vec<Value> = match reply {
        Value::Nil => Vec::new(),
        Value::Map(pairs) => pairs.into_iter().map(|(_, entries)| entries).collect(),
        Value::Array(streams) => streams
            .into_iter()
            .filter_map(|stream| match stream {
                Value::Array(mut pair) => pair.pop(),
                _ => None,
            })
            .collect(),
        other => panic!("unexpected XREADGROUP reply {other:?}"),
    };
    let mut ids = Vec::new();
    for entries in streams {
        let Value::Array(entries) = entries else {
            continue;
        };
        for entry in entries {
            if let Value::Array(parts) = entry
                && let Some(Value::BulkString(id)) = parts.into_iter().next()
            {
                ids.push(String::from_utf8(id).expect("an ASCII entry ID"));
            }
        }
    }
    ids
}

fn drain_reference(options: &Options) -> (Drain, CpuUse) {
    let redis = RedisServer::start();
    prefill(&redis, options.entries);
    let mut watch = CpuWatch::start();
    if let Some(pid) = redis.pid() {
        watch.watch("redis", pid, false);
    }
    let started = Instant::now();
    let mut connection = redis.connect();
    redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(STREAM)
        .arg(GROUP)
        .arg("0")
        .exec(&mut connection)
        .expect("XGROUP CREATE");
    let mut consumed = 0;
    loop {
        let reply: Value = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(GROUP)
            .arg("c")
            .arg("COUNT")
            .arg(REFERENCE_COUNT)
            .arg("STREAMS")
            .arg(STREAM)
            .arg(">")
            .query(&mut connection)
            .expect("XREADGROUP");
        let ids = entry_ids(reply);
        if ids.is_empty() {
            break;
        }
        consumed += ids.len();
        let _: u64 = redis::cmd("XACK")
            .arg(STREAM)
            .arg(GROUP)
            .arg(&ids)
            .query(&mut connection)
            .expect("XACK");
    }
    let seconds = started.elapsed().as_secs_f64();
    let cpu = watch.finish();
    assert_eq!(consumed, options.entries, "the reference consumer's count");
    assert!(
        drained(&mut connection, options.entries),
        "the reference consumer left work: {:?}",
        group_info(&mut connection)
    );
    let drain = Drain {
        seconds,
        rate: options.entries as f64 / seconds,
        peak_rss_kb: None,
        cpu,
    };
    (drain, cpu)
}

fn describe_drain(drain: &Drain) -> String {
    let peak = drain
        .peak_rss_kb
        .map(|kb| format!(", peak RSS {}", mib(kb)))
        .unwrap_or_default();
    format!(
        "{:.2}s = {}/s{peak}; {}",
        drain.seconds,
        thousands(drain.rate),
        drain.cpu.describe()
    )
}

// ---------------------------------------------------------------------------
// Latency
// ---------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Latency {
    sent: u64,
    recorded: usize,
    /// What the producer achieved, entries per second.
    achieved_rate: f64,
    p50_us: i64,
    p99_us: i64,
    p999_us: i64,
    max_us: i64,
    /// The slowest entries: seconds into the run, latency in µs.
    worst: Vec<(f64, i64)>,
    /// The worker's `VmHWM` at the end, kB.
    peak_rss_kb: Option<u64>,
    cpu: CpuUse,
}

fn latency(built: &Built, options: &Options) -> (Latency, CpuUse) {
    let redis = RedisServer::start();
    let dir = tempfile::Builder::new()
        .prefix("bench-latency-")
        .tempdir_in(std::env::temp_dir())
        .expect("a temporary directory");
    let file = dir.path().join("latency.txt");
    let file_text = file.to_string_lossy().into_owned();
    let mut worker = spawn_worker(
        built.name,
        &built.binary,
        &redis,
        options,
        &[],
        &[("LATENCY_FILE", &file_text)],
    );
    let mut poll = redis.connect();
    let deadline = Instant::now() + Duration::from_secs(30);
    while xreadgroup_calls(&mut poll) == 0 {
        worker.assert_running();
        assert!(Instant::now() < deadline, "the worker never read");
        thread::sleep(STARTUP_POLL);
    }
    // Let it settle into its blocking read.
    thread::sleep(Duration::from_millis(500));

    let mut watch = CpuWatch::start();
    if let Some(pid) = redis.pid() {
        watch.watch("redis", pid, false);
    }
    watch.watch("worker", worker.pid(), false);
    let total = options.rate * options.seconds;
    let interval = 1.0 / options.rate as f64;
    let mut producer = redis.connect();
    let started = Instant::now();
    let mut sent = 0_u64;
    while sent < total {
        let due = ((started.elapsed().as_secs_f64() / interval) as u64 + 1).min(total);
        if due > sent {
            let mut pipe = redis::pipe();
            for n in sent..due {
                pipe.cmd("XADD")
                    .arg(STREAM)
                    .arg("*")
                    .arg("data")
                    .arg(latency_data(n, now_us()))
                    .ignore();
            }
            pipe.query::<()>(&mut producer)
                .unwrap_or_else(|error| panic!("XADD failed: {error}"));
            sent = due;
        }
        let next = Duration::from_secs_f64(sent as f64 * interval);
        let elapsed = started.elapsed();
        if next > elapsed {
            thread::sleep(next - elapsed);
        }
    }
    let achieved_rate = total as f64 / started.elapsed().as_secs_f64();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !drained(&mut poll, total as usize) {
        worker.assert_running();
        assert!(
            Instant::now() < deadline,
            "the latency worker did not catch up: {:?}",
            group_info(&mut poll)
        );
        thread::sleep(DRAIN_POLL);
    }
    let cpu = watch.finish();
    let peak_rss_kb = status_kb(worker.pid(), "VmHWM");
    stop(worker);

    let text =
        fs::read_to_string(&file).unwrap_or_else(|error| panic!("{}: {error}", file.display()));
    let mut samples: Vec<i64> = text
        .lines()
        .map(|line| {
            line.trim()
                .parse()
                .unwrap_or_else(|_| panic!("bad latency line {line:?}"))
        })
        .collect();
    assert!(!samples.is_empty(), "no latency was recorded");
    // Lines come in processing order, close to send order: the position of
    // the slowest entries says when in the run they happened.
    let mut by_latency: Vec<(i64, usize)> = samples
        .iter()
        .enumerate()
        .map(|(index, latency)| (*latency, index))
        .collect();
    by_latency.sort_unstable_by(|a, b| b.cmp(a));
    let worst = by_latency
        .iter()
        .take(5)
        .map(|(latency, index)| (*index as f64 / options.rate as f64, *latency))
        .collect();
    samples.sort_unstable();
    let result = Latency {
        sent: total,
        recorded: samples.len(),
        achieved_rate,
        p50_us: percentile(&samples, 0.50),
        p99_us: percentile(&samples, 0.99),
        p999_us: percentile(&samples, 0.999),
        max_us: *samples.last().unwrap(),
        worst,
        peak_rss_kb,
        cpu,
    };
    (result, cpu)
}

/// The nearest-rank percentile of sorted `samples`.
fn percentile(samples: &[i64], fraction: f64) -> i64 {
    let rank = (fraction * samples.len() as f64).ceil() as usize;
    samples[rank.clamp(1, samples.len()) - 1]
}

// ---------------------------------------------------------------------------
// Start-up and idle memory
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
struct Startup {
    to_first_read: Duration,
    idle_rss_kb: Option<u64>,
    idle_hwm_kb: Option<u64>,
}

fn startup(built: &Built, options: &Options) -> (Startup, CpuUse) {
    let redis = RedisServer::start();
    let mut poll = redis.connect();
    let mut watch = CpuWatch::start();
    if let Some(pid) = redis.pid() {
        watch.watch("redis", pid, false);
    }
    let started = Instant::now();
    let mut worker = spawn_worker(built.name, &built.binary, &redis, options, &[], &[]);
    watch.watch("worker", worker.pid(), true);
    let to_first_read = loop {
        if xreadgroup_calls(&mut poll) > 0 {
            break started.elapsed();
        }
        worker.assert_running();
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{} never read",
            built.name
        );
        thread::sleep(STARTUP_POLL);
    };
    thread::sleep(IDLE_WAIT);
    let cpu = watch.finish();
    let result = Startup {
        to_first_read,
        idle_rss_kb: status_kb(worker.pid(), "VmRSS"),
        idle_hwm_kb: status_kb(worker.pid(), "VmHWM"),
    };
    stop(worker);
    (result, cpu)
}

// ---------------------------------------------------------------------------
// Statistics and formatting
// ---------------------------------------------------------------------------

fn median(values: &[f64]) -> f64 {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| !v.is_nan()).collect();
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted.sort_by(f64::total_cmp);
    let middle = sorted.len() / 2;
    if sorted.len() % 2 == 1 {
        sorted[middle]
    } else {
        (sorted[middle - 1] + sorted[middle]) / 2.0
    }
}

fn max(values: &[f64]) -> f64 {
    values
        .iter()
        .copied()
        .filter(|v| !v.is_nan())
        .fold(f64::NAN, f64::max)
}

/// `1234567.8` as `1,234,568`.
fn thousands(value: f64) -> String {
    let digits = format!("{:.0}", value.max(0.0));
    let mut out = String::new();
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index) % 3 == 0 {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

fn mib(kb: u64) -> String {
    format!("{:.1} MiB", kb as f64 / 1024.0)
}

fn ms(us: i64) -> String {
    format!("{:.2}", us as f64 / 1000.0)
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "**missed**" }
}

/// Medians of the drains of one consumer.
struct DrainSummary {
    rate: f64,
    seconds: f64,
    peak_rss_kb: f64,
    peak_rss_max_kb: f64,
    worker_cores: f64,
    redis_cores: f64,
    others_max: f64,
}

fn summarize(drains: &[Drain]) -> DrainSummary {
    let get = |f: fn(&Drain) -> f64| drains.iter().map(f).collect::<Vec<f64>>();
    let peaks = get(|d| d.peak_rss_kb.map_or(f64::NAN, |kb| kb as f64));
    DrainSummary {
        rate: median(&get(|d| d.rate)),
        seconds: median(&get(|d| d.seconds)),
        peak_rss_kb: median(&peaks),
        peak_rss_max_kb: max(&peaks),
        worker_cores: median(&get(|d| d.cpu.worker)),
        redis_cores: median(&get(|d| d.cpu.redis)),
        others_max: max(&get(|d| d.cpu.others)),
    }
}

// ---------------------------------------------------------------------------
// Main
// ---------------------------------------------------------------------------

fn main() -> ExitCode {
    let options = match Options::parse() {
        Ok(options) => options,
        Err(error) if error.is_empty() => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(error) => {
            eprintln!("error: {error}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let began = Instant::now();
    CALM_BUDGET_MS.store(options.calm_budget * 1000, Ordering::Relaxed);
    let machine = Machine::probe();
    let load_at_start = load_averages();
    note(format!(
        "machine: {} cores, {}, redis-server {}, Linux {}; load average {load_at_start}",
        machine.cores, machine.cpu_model, machine.redis_version, machine.kernel
    ));
    note(format!("template: {}", machine.template_state));

    // Builds.
    let needs_workers = options.drain || options.startup;
    note("building (cargo build --release, target/variants):");
    let default =
        (needs_workers || options.latency).then(|| build("bench-default", "default", None));
    let raw = needs_workers.then(|| build("bench-raw", "raw", None));
    let latency_worker = options.latency.then(|| match &options.latency_worker {
        Some(path) => {
            assert!(
                path.is_file(),
                "--latency-worker: no file {}",
                path.display()
            );
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            Built {
                name: Box::leak(name.into_boxed_str()),
                binary: path.clone(),
                dependencies: 0,
            }
        }
        None => build("bench-latency", "default", Some(LATENCY_LOGIC)),
    });
    let extra = options
        .extra_worker
        .as_ref()
        .filter(|_| options.drain)
        .map(|path| {
            assert!(path.is_file(), "--extra-worker: no file {}", path.display());
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            Built {
                name: Box::leak(name.into_boxed_str()),
                binary: path.clone(),
                dependencies: 0,
            }
        });

    // Drain.
    let mut reference_drains = Vec::new();
    let mut default_drains = Vec::new();
    let mut raw_drains = Vec::new();
    let mut extra_drains = Vec::new();
    if options.drain {
        let (default, raw) = (default.as_ref().unwrap(), raw.as_ref().unwrap());
        for run in 1..=options.runs {
            note(format!(
                "drain run {run}/{}: {} entries each (pre-fill, then drain)",
                options.runs,
                thousands(options.entries as f64)
            ));
            let (drain, _) = least_disturbed(&options, "reference", || drain_reference(&options));
            note(format!("  reference:     {}", describe_drain(&drain)));
            reference_drains.push(drain);
            let (drain, _) =
                least_disturbed(&options, default.name, || drain_worker(default, &options));
            note(format!("  validation on:  {}", describe_drain(&drain)));
            default_drains.push(drain);
            let (drain, _) = least_disturbed(&options, raw.name, || drain_worker(raw, &options));
            note(format!("  validation off: {}", describe_drain(&drain)));
            raw_drains.push(drain);
            if let Some(extra) = &extra {
                let (drain, _) =
                    least_disturbed(&options, extra.name, || drain_worker(extra, &options));
                note(format!("  {}: {}", extra.name, describe_drain(&drain)));
                extra_drains.push(drain);
            }
        }
    }

    // Latency.
    let latency_result = latency_worker.as_ref().map(|built| {
        note(format!(
            "latency: {}/s for {}s",
            thousands(options.rate as f64),
            options.seconds
        ));
        let (result, _) = least_disturbed(&options, "latency", || latency(built, &options));
        note(format!(
            "  {} sent ({}/s achieved), {} recorded: p50 {} ms, p99 {} ms, p99.9 {} ms, max {} ms; worker VmHWM {}; {}",
            result.sent,
            thousands(result.achieved_rate),
            result.recorded,
            ms(result.p50_us),
            ms(result.p99_us),
            ms(result.p999_us),
            ms(result.max_us),
            result.peak_rss_kb.map_or("?".into(), mib),
            result.cpu.describe()
        ));
        let worst: Vec<String> = result
            .worst
            .iter()
            .map(|(at, latency)| format!("{} ms at {at:.2}s", ms(*latency)))
            .collect();
        note(format!("  slowest: {}", worst.join(", ")));
        result
    });

    // Start-up and idle memory.
    let mut startups: Vec<(&'static str, Vec<Startup>)> = Vec::new();
    if options.startup {
        for built in [default.as_ref().unwrap(), raw.as_ref().unwrap()] {
            note(format!(
                "start-up and idle memory: {} ({} starts)",
                built.name, options.starts
            ));
            let mut results = Vec::new();
            for start in 1..=options.starts {
                let (result, cpu) =
                    least_disturbed(&options, "start-up", || startup(built, &options));
                note(format!(
                    "  start {start}: first XREADGROUP after {:.1} ms; idle VmRSS {}, VmHWM {}; other processes {:.2} cores",
                    result.to_first_read.as_secs_f64() * 1000.0,
                    result.idle_rss_kb.map_or("?".into(), mib),
                    result.idle_hwm_kb.map_or("?".into(), mib),
                    cpu.others
                ));
                results.push(result);
            }
            startups.push((built.name, results));
        }
    }

    // Cold build.
    let cold = options.build.then(cold_build);
    if let Some(cold) = &cold {
        note(format!(
            "  cold build: {:.0}s, {} crates compiled; load before {:.2}",
            cold.seconds, cold.compiled, cold.cpu.load_before
        ));
    }

    // The table.
    let mut table = String::new();
    let _ = writeln!(table, "| Figure | Value | Target | Met? |");
    let _ = writeln!(table, "|---|---|---|---|");
    let mut others: Vec<f64> = Vec::new();
    if options.drain {
        let reference = summarize(&reference_drains);
        others.push(reference.others_max);
        let _ = writeln!(
            table,
            "| Drain, reference consumer (COUNT {REFERENCE_COUNT}, one XACK per batch) | {}/s ({:.2} s; Redis {:.2} cores) | | |",
            thousands(reference.rate),
            reference.seconds,
            reference.redis_cores
        );
        let extra_label = extra
            .as_ref()
            .map(|extra| format!("`{}` (--extra-worker)", extra.name));
        let mut rows = vec![
            ("validation on".to_owned(), &default_drains),
            ("validation off".to_owned(), &raw_drains),
        ];
        if let Some(label) = extra_label {
            rows.push((label, &extra_drains));
        }
        for (label, drains) in rows {
            let summary = summarize(drains);
            others.push(summary.others_max);
            let ratio = summary.rate / reference.rate;
            // Each run's worker against the reference drained just before
            // it: neighbours share the machine's mood.
            let per_run: Vec<String> = drains
                .iter()
                .zip(&reference_drains)
                .map(|(worker, reference)| format!("{:.2}", worker.rate / reference.rate))
                .collect();
            let _ = writeln!(
                table,
                "| Drain, worker, {label} | {}/s ({:.2} s; worker {:.2} cores, Redis {:.2}) = **{ratio:.2}x** reference (per run: {}) | >= 0.8x | {} |",
                thousands(summary.rate),
                summary.seconds,
                summary.worker_cores,
                summary.redis_cores,
                per_run.join(", "),
                verdict(ratio >= 0.8)
            );
        }
    }
    if let Some(latency) = &latency_result {
        others.push(latency.cpu.others);
        let _ = writeln!(
            table,
            "| Latency at {}/s for {} s (send to business logic{}), p50 / p99 / max | {} / **{}** / {} ms (p99.9 {} ms; {} entries) | p99 <= 5 ms | {} |",
            thousands(options.rate as f64),
            options.seconds,
            options
                .latency_worker
                .as_ref()
                .map(|path| format!(", `{}`", path.display()))
                .unwrap_or_default(),
            ms(latency.p50_us),
            ms(latency.p99_us),
            ms(latency.max_us),
            ms(latency.p999_us),
            thousands(latency.recorded as f64),
            verdict(latency.p99_us <= 5_000)
        );
    }
    for (name, results) in &startups {
        let label = if *name == "bench-default" {
            "validation on"
        } else {
            "validation off"
        };
        let rss: Vec<f64> = results
            .iter()
            .map(|r| r.idle_rss_kb.map_or(f64::NAN, |kb| kb as f64))
            .collect();
        let idle = median(&rss);
        let _ = writeln!(
            table,
            "| Idle RSS (VmRSS 2 s after start), {label} | {} | <= 15 MB | {} |",
            mib(idle as u64),
            verdict(idle / 1024.0 <= 15.0)
        );
    }
    if options.drain {
        for (label, drains) in [
            ("validation on", &default_drains),
            ("validation off", &raw_drains),
        ] {
            let summary = summarize(drains);
            let _ = writeln!(
                table,
                "| Peak RSS during the {} drain (VmHWM), {label} | {} (max of runs {}) | <= 64 MB | {} |",
                short_count(options.entries),
                mib(summary.peak_rss_kb as u64),
                mib(summary.peak_rss_max_kb as u64),
                verdict(summary.peak_rss_kb / 1024.0 <= 64.0)
            );
        }
    }
    for (name, results) in &startups {
        let label = if *name == "bench-default" {
            "validation on"
        } else {
            "validation off"
        };
        let times: Vec<f64> = results
            .iter()
            .map(|r| r.to_first_read.as_secs_f64() * 1000.0)
            .collect();
        let median_ms = median(&times);
        let _ = writeln!(
            table,
            "| Start-up to first XREADGROUP, {label} (median of {}) | {median_ms:.1} ms (max {:.1}) | <= 100 ms | {} |",
            times.len(),
            max(&times),
            verdict(median_ms <= 100.0)
        );
    }
    if let Some(built) = default
        .as_ref()
        .or(latency_worker.as_ref())
        .filter(|built| built.dependencies > 0)
    {
        let _ = writeln!(
            table,
            "| Dependency crates, validation on (`cargo tree -e normal,build`, unique) | {} | | |",
            built.dependencies
        );
    }
    if let Some(raw) = &raw {
        let _ = writeln!(
            table,
            "| Dependency crates, validation off (same count) | {} | | |",
            raw.dependencies
        );
    }
    if let Some(cold) = &cold {
        let _ = writeln!(
            table,
            "| Cold `cargo build --release`, validation on (empty target dir) | {:.0} s, {} crates compiled (load before {:.2}) | | |",
            cold.seconds, cold.compiled, cold.cpu.load_before
        );
    }

    let others_max = max(&others);
    println!();
    println!(
        "Machine: {} cores (nproc), {}, redis-server {}, Linux {}. Template: {}.",
        machine.cores,
        machine.cpu_model,
        machine.redis_version,
        machine.kernel,
        machine.template_state
    );
    println!(
        "Load average at start {load_at_start}, at end {}; other processes used at most {} cores during a kept measurement.",
        load_averages(),
        if others_max.is_nan() {
            "?".to_owned()
        } else {
            format!("{others_max:.2}")
        }
    );
    if options.drain {
        println!(
            "Drain figures are medians of {} runs; the worker runs with LOG_LEVEL=warn and its shipped no-op business logic.",
            options.runs
        );
    }
    if !options.worker_env.is_empty() {
        let settings: Vec<String> = options
            .worker_env
            .iter()
            .map(|(key, value)| format!("{key}={value}"))
            .collect();
        println!("Worker environment: {}.", settings.join(" "));
    }
    if !options.wrapper.is_empty() {
        println!(
            "Drain workers ran under `{}`: their figures are not comparable.",
            options.wrapper.join(" ")
        );
    }
    println!();
    print!("{table}");
    note(format!(
        "\nbenchmark took {:.0}s",
        began.elapsed().as_secs_f64()
    ));
    ExitCode::SUCCESS
}

/// `1000000` as `1M`, `50000` as `50k`.
fn short_count(count: usize) -> String {
    if count.is_multiple_of(1_000_000) {
        format!("{}M", count / 1_000_000)
    } else if count.is_multiple_of(1_000) {
        format!("{}k", count / 1_000)
    } else {
        count.to_string()
    }
}
