//! The benchmark's command line (`cargo bench --bench worker -- --help`):
//! how many runs and entries, which phases, how calm the machine must be,
//! and which worker builds or settings to try instead of the shipped ones.

use std::path::PathBuf;
use std::str::FromStr;

use clap::{CommandFactory, FromArgMatches, Parser};

/// What to measure and how; every figure's size has a default that matches
/// the targets in the README.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "worker",
    bin_name = "cargo bench --bench worker --",
    about = "Throughput, latency, memory and start-up of the generated worker",
    // As with most command lines, an option given twice takes the last value.
    args_override_self = true
)]
pub struct Options {
    /// Drain runs per figure, medians reported
    #[arg(
        long,
        value_name = "N",
        env = "BENCH_RUNS",
        default_value_t = 3,
        value_parser = at_least_one::<usize>,
    )]
    pub runs: usize,

    /// Entries per drain
    #[arg(
        long,
        value_name = "N",
        default_value_t = 1_000_000,
        value_parser = at_least_one::<usize>,
    )]
    pub entries: usize,

    /// Latency producer, entries per second
    #[arg(long, value_name = "N", default_value_t = 10_000, value_parser = at_least_one::<u64>)]
    pub rate: u64,

    /// Latency producer, duration in seconds
    #[arg(long, value_name = "N", default_value_t = 30)]
    pub seconds: u64,

    /// Start-up measurements
    #[arg(long, value_name = "N", default_value_t = 5, value_parser = at_least_one::<usize>)]
    pub starts: usize,

    /// Also time a cold `cargo build --release` (minutes)
    #[arg(long = "build")]
    pub cold_build: bool,

    /// Comma-separated phases: drain, latency, startup, build
    #[arg(long, value_name = "LIST", value_parser = Phases::parse)]
    pub only: Option<Phases>,

    /// Repeat a measurement if other processes used more CPU than this, in cores
    #[arg(long, value_name = "F", default_value_t = 0.3)]
    pub max_other_cores: f64,

    /// At most this many repeats per measurement
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub retries: usize,

    /// Total time in seconds the run may spend waiting for calm and repeating
    #[arg(long, value_name = "SECS", default_value_t = 180)]
    pub calm_budget: u64,

    /// Run the drain's worker under CMD (e.g. "valgrind --tool=callgrind")
    #[arg(long, value_name = "CMD")]
    pub worker_wrapper: Option<String>,

    /// Extra environment of every worker, e.g. WORKER_BATCH_SIZE=1000 (repeatable)
    #[arg(long, value_name = "K=V", value_parser = key_value)]
    pub worker_env: Vec<(String, String)>,

    /// Also drain with this worker binary (a modified build), after the others
    #[arg(long, value_name = "PATH")]
    pub extra_worker: Option<PathBuf>,

    /// Measure latency with this binary instead (a modified build of the
    /// latency copy, which recording needs)
    #[arg(long, value_name = "PATH")]
    pub latency_worker: Option<PathBuf>,

    /// Passed by `cargo bench` to every bench target; nothing to do with it.
    #[arg(long = "bench", hide = true)]
    _bench: bool,
}

/// The phases `--only` selects.
#[derive(Debug, Clone, Copy)]
pub struct Phases {
    drain: bool,
    latency: bool,
    startup: bool,
    build: bool,
}

impl Phases {
    fn parse(list: &str) -> Result<Phases, String> {
        let phases: Vec<&str> = list.split(',').map(str::trim).collect();
        if let Some(unknown) = phases
            .iter()
            .find(|phase| !["drain", "latency", "startup", "build"].contains(phase))
        {
            return Err(format!("unknown phase `{unknown}`"));
        }
        Ok(Phases {
            drain: phases.contains(&"drain"),
            latency: phases.contains(&"latency"),
            startup: phases.contains(&"startup"),
            build: phases.contains(&"build"),
        })
    }
}

impl Options {
    /// The options of this run, from the command line and `BENCH_RUNS`; on
    /// `--help` or a bad option, prints and exits (status 2 for an error).
    pub fn from_command_line() -> Options {
        let mut command = Options::command();
        // An empty BENCH_RUNS (`BENCH_RUNS= cargo bench ...`) means unset.
        if std::env::var_os("BENCH_RUNS").is_some_and(|runs| runs.is_empty()) {
            command = command.mut_arg("runs", |arg| arg.env(None));
        }
        let matches = command.get_matches();
        Options::from_arg_matches(&matches).unwrap_or_else(|error| error.exit())
    }

    /// Whether the drains run (all phases do without `--only`).
    pub fn drain(&self) -> bool {
        self.only.is_none_or(|phases| phases.drain)
    }

    /// Whether latency is measured.
    pub fn latency(&self) -> bool {
        self.only.is_none_or(|phases| phases.latency)
    }

    /// Whether start-up and idle memory are measured.
    pub fn startup(&self) -> bool {
        self.only.is_none_or(|phases| phases.startup)
    }

    /// Whether the cold build is timed: `--build`, or `build` in `--only`.
    pub fn build(&self) -> bool {
        self.cold_build || self.only.is_some_and(|phases| phases.build)
    }

    /// `--worker-wrapper` split into the program and its arguments; empty
    /// without one.
    pub fn wrapper(&self) -> Vec<String> {
        self.worker_wrapper
            .as_deref()
            .unwrap_or_default()
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    }
}

/// A whole number of at least 1.
fn at_least_one<T: FromStr + PartialOrd + From<u8>>(text: &str) -> Result<T, String> {
    text.parse()
        .ok()
        .filter(|number| *number >= T::from(1))
        .ok_or_else(|| format!("`{text}` is not a whole number of at least 1"))
}

/// `KEY=VALUE` as its two halves.
fn key_value(text: &str) -> Result<(String, String), String> {
    let (key, value) = text
        .split_once('=')
        .ok_or_else(|| format!("`{text}` is not KEY=VALUE"))?;
    Ok((key.to_owned(), value.to_owned()))
}
