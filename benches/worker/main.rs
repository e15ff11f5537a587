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
//!   turn, and once more with the default at `LOG_LEVEL=info LOG_FORMAT=json`
//!   (what logging costs a deployment with a log collector); figures are
//!   medians over the runs;
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
//!
//! Layout (this file builds the workers, runs the phases in order and hands
//! the results to `report`):
//!
//! - `options`: the command line, parsed with clap.
//! - `builds`: generating and building the measured workers, and the cold
//!   build.
//! - `workload`: the stream, its entries, the progress queries and starting
//!   or stopping a worker, shared by the measurements below.
//! - `drain`, `latency`, `startup`: one measurement each.
//! - `calm`: waiting for a calm machine and repeating disturbed
//!   measurements, within the run's budget.
//! - `usage`: the CPU and memory a measurement used, from `/proc`.
//! - `machine`: what the run measured on, for the report.
//! - `report`: the table on stdout, with its statistics and number formats.
//! - `common` (`tests/common/`): the test suite's generation, cargo,
//!   process and redis-server helpers, shared rather than copied.

#[path = "../../tests/common/mod.rs"]
mod common;

mod builds;
mod calm;
mod drain;
mod latency;
mod machine;
mod options;
mod report;
mod startup;
mod traces;
mod usage;
mod workload;

use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use builds::{Built, LATENCY_LOGIC, build, cold_build};
use calm::least_disturbed;
use common::note;
use drain::{
    Drains, INFO_JSON, Topology, describe_drain, drain_reference, drain_worker, drain_worker_on,
};
use latency::Latency;
use machine::{Machine, load_averages};
use options::Options;
use report::{Results, mib, ms, thousands};
use startup::Startup;
use traces::TraceSink;

fn main() -> ExitCode {
    let options = Options::from_command_line();
    let began = Instant::now();
    calm::start_budget(&options);
    let machine = Machine::probe();
    let load_at_start = load_averages();
    note(format!(
        "machine: {} cores, {}, redis-server {}, Linux {}; load average {load_at_start}",
        machine.cores, machine.cpu_model, machine.redis_version, machine.kernel
    ));
    note(format!("template: {}", machine.template_state));

    let needs_workers = options.drain() || options.startup();
    note("building (cargo build --release, target/variants):");
    let default =
        (needs_workers || options.latency()).then(|| build("bench-default", "default", None));
    let raw = needs_workers.then(|| build("bench-raw", "raw", None));
    let latency_worker = options.latency().then(|| match &options.latency_worker {
        Some(path) => given_binary("--latency-worker", path),
        None => build("bench-latency", "default", Some(LATENCY_LOGIC)),
    });
    let extra = options
        .extra_worker
        .as_ref()
        .filter(|_| options.drain())
        .map(|path| given_binary("--extra-worker", path));

    let mut drains = Drains::default();
    if options.drain() {
        let (default, raw) = (default.as_ref().unwrap(), raw.as_ref().unwrap());
        drains = measure_drains(&options, default, raw, extra.as_ref());
    }
    let latency = latency_worker
        .as_ref()
        .map(|built| measure_latency(&options, built));
    let mut startups = Vec::new();
    if options.startup() {
        for built in [default.as_ref().unwrap(), raw.as_ref().unwrap()] {
            startups.push((built.name, measure_startups(&options, built)));
        }
    }
    let cold = options.build().then(cold_build);
    if let Some(cold) = &cold {
        note(format!(
            "  cold build: {:.0}s, {} crates compiled; load before {:.2}",
            cold.seconds, cold.compiled, cold.cpu.load_before
        ));
    }

    report::print(
        &options,
        &Results {
            machine,
            load_at_start,
            default,
            raw,
            latency_worker,
            extra,
            drains,
            latency,
            startups,
            cold,
        },
    );
    note(format!(
        "\nbenchmark took {:.0}s",
        began.elapsed().as_secs_f64()
    ));
    ExitCode::SUCCESS
}

/// A worker binary given on the command line (`flag`), measured as it is.
fn given_binary(flag: &str, path: &Path) -> Built {
    assert!(path.is_file(), "{flag}: no file {}", path.display());
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    Built {
        name: Box::leak(name.into_boxed_str()),
        binary: path.to_owned(),
        dependencies: 0,
    }
}

/// `--runs` rounds of drains; each round drains with the reference, the
/// default (at warn, then at info as JSON, then exporting traces of every
/// entry and of 1 %) and the raw variant (and
/// `--extra-worker`) in turn, so that
/// neighbours share the machine's mood.
fn measure_drains(
    options: &Options,
    default: &Built,
    raw: &Built,
    extra: Option<&Built>,
) -> Drains {
    let mut drains = Drains::default();
    let sink = TraceSink::start();
    for run in 1..=options.runs {
        note(format!(
            "drain run {run}/{}: {} entries each (pre-fill, then drain)",
            options.runs,
            thousands(options.entries as f64)
        ));
        let (drain, _) = least_disturbed(options, "reference", || drain_reference(options));
        note(format!("  reference:     {}", describe_drain(&drain)));
        drains.reference.push(drain);
        let (drain, _) = least_disturbed(options, default.name, || {
            drain_worker(default, options, &[])
        });
        note(format!("  validation on:  {}", describe_drain(&drain)));
        drains.default.push(drain);
        let (drain, _) = least_disturbed(options, default.name, || {
            drain_worker(default, options, INFO_JSON)
        });
        note(format!(
            "  validation on, info as JSON: {}",
            describe_drain(&drain)
        ));
        drains.default_info_json.push(drain);
        for (ratio, label) in [(1.0, "traces, 100 %"), (0.01, "traces, 1 %  ")] {
            let env = sink.env(ratio);
            let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let received = sink.bytes();
            let (drain, _) = least_disturbed(options, default.name, || {
                drain_worker(default, options, &env)
            });
            note(format!(
                "  {label}:  {}; {} KiB of spans exported",
                describe_drain(&drain),
                (sink.bytes() - received) / 1024
            ));
            if ratio < 1.0 {
                drains.traced_sampled.push(drain);
            } else {
                drains.traced_all.push(drain);
            }
        }
        let (drain, _) = least_disturbed(options, raw.name, || drain_worker(raw, options, &[]));
        note(format!("  validation off: {}", describe_drain(&drain)));
        drains.raw.push(drain);
        let (drain, _) = least_disturbed(options, "cluster", || {
            drain_worker_on(default, options, Topology::Cluster, &[])
        });
        note(format!("  cluster:        {}", describe_drain(&drain)));
        drains.cluster.push(drain);
        let (drain, _) = least_disturbed(options, "tls", || {
            drain_worker_on(default, options, Topology::Tls, &[])
        });
        note(format!("  TLS:            {}", describe_drain(&drain)));
        drains.tls.push(drain);
        if let Some(extra) = extra {
            let (drain, _) =
                least_disturbed(options, extra.name, || drain_worker(extra, options, &[]));
            note(format!("  {}: {}", extra.name, describe_drain(&drain)));
            drains.extra.push(drain);
        }
    }
    drains
}

/// Latency with the latency copy `built`, noted as it is measured.
fn measure_latency(options: &Options, built: &Built) -> Latency {
    note(format!(
        "latency: {}/s for {}s",
        thousands(options.rate as f64),
        options.seconds
    ));
    let (result, _) = least_disturbed(options, "latency", || latency::latency(built, options));
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
}

/// `--starts` start-ups of `built`, noted as they are measured.
fn measure_startups(options: &Options, built: &Built) -> Vec<Startup> {
    note(format!(
        "start-up and idle memory: {} ({} starts)",
        built.name, options.starts
    ));
    let mut results = Vec::new();
    for start in 1..=options.starts {
        let (result, cpu) =
            least_disturbed(options, "start-up", || startup::startup(built, options));
        note(format!(
            "  start {start}: first XREADGROUP after {:.1} ms; idle VmRSS {}, VmHWM {}; other processes {:.2} cores",
            result.to_first_read.as_secs_f64() * 1000.0,
            result.idle_rss_kb.map_or("?".into(), mib),
            result.idle_hwm_kb.map_or("?".into(), mib),
            cpu.others
        ));
        results.push(result);
    }
    results
}
