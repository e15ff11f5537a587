//! The report on stdout: the machine and load lines, then the Markdown
//! table of figures against their targets; and the statistics and number
//! formats it uses.

use std::fmt::Write as _;

use crate::builds::{Built, ColdBuild};
use crate::drain::{Drain, Drains, REFERENCE_COUNT};
use crate::latency::Latency;
use crate::machine::{Machine, load_averages};
use crate::options::Options;
use crate::startup::Startup;

/// Everything a run measured; empty or `None` for a phase left out.
pub struct Results {
    pub machine: Machine,
    /// The load averages when the run began.
    pub load_at_start: String,
    /// `bench-default`: the default variant (validation on).
    pub default: Option<Built>,
    /// `bench-raw`: validation off.
    pub raw: Option<Built>,
    /// `bench-latency`, or the `--latency-worker` binary.
    pub latency_worker: Option<Built>,
    /// The `--extra-worker` binary.
    pub extra: Option<Built>,
    pub drains: Drains,
    pub latency: Option<Latency>,
    /// The start-ups of each built worker, by its name.
    pub startups: Vec<(&'static str, Vec<Startup>)>,
    pub cold: Option<ColdBuild>,
}

/// Prints the lines about the run and the table of figures.
pub fn print(options: &Options, results: &Results) {
    let Results {
        machine,
        load_at_start,
        default,
        raw,
        latency_worker,
        extra,
        drains:
            Drains {
                reference: reference_drains,
                default: default_drains,
                default_info_json: info_json_drains,
                raw: raw_drains,
                extra: extra_drains,
                cluster: cluster_drains,
                tls: tls_drains,
                traced_all: traced_all_drains,
                traced_sampled: traced_sampled_drains,
            },
        latency: latency_result,
        startups,
        cold,
    } = results;

    // The table.
    let mut table = String::new();
    let _ = writeln!(table, "| Figure | Value | Target | Met? |");
    let _ = writeln!(table, "|---|---|---|---|");
    let mut others: Vec<f64> = Vec::new();
    if options.drain() {
        let reference = summarize(reference_drains);
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
            (
                "validation on, LOG_LEVEL=info LOG_FORMAT=json".to_owned(),
                &info_json_drains,
            ),
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
                .zip(reference_drains)
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
    if options.drain() {
        // The validation-on worker against its own plain standalone drain
        // of the same run.
        let standalone = summarize(default_drains);
        for (label, drains, target) in [
            ("on a 3-master cluster", cluster_drains, 0.8),
            ("over TLS (rediss://, private CA)", tls_drains, 0.7),
            (
                "exporting a trace of every entry (OTLP/HTTP to a local sink)",
                traced_all_drains,
                0.0,
            ),
            (
                "exporting traces of 1 % (OTEL_TRACES_SAMPLER_ARG=0.01)",
                traced_sampled_drains,
                0.95,
            ),
        ] {
            let summary = summarize(drains);
            others.push(summary.others_max);
            let ratio = summary.rate / standalone.rate;
            let per_run: Vec<String> = drains
                .iter()
                .zip(default_drains)
                .map(|(drain, plain)| format!("{:.2}", drain.rate / plain.rate))
                .collect();
            let _ = writeln!(
                table,
                "| Drain, worker, validation on, {label} | {}/s ({:.2} s; worker {:.2} cores) = **{ratio:.2}x** standalone plain (per run: {}) | {} | {} |",
                thousands(summary.rate),
                summary.seconds,
                summary.worker_cores,
                per_run.join(", "),
                if target > 0.0 {
                    format!(">= {target}x")
                } else {
                    "none".to_owned()
                },
                if target > 0.0 {
                    verdict(ratio >= target)
                } else {
                    ""
                }
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
    for (name, results) in startups {
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
    if options.drain() {
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
    for (name, results) in startups {
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
    if options.drain() {
        println!(
            "Drain figures are medians of {} runs; the worker runs with its shipped no-op business logic and LOG_LEVEL=warn unless the row says otherwise.",
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
    if !options.wrapper().is_empty() {
        println!(
            "Drain workers ran under `{}`: their figures are not comparable.",
            options.wrapper().join(" ")
        );
    }
    println!();
    print!("{table}");
}

pub fn median(values: &[f64]) -> f64 {
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

pub fn max(values: &[f64]) -> f64 {
    values
        .iter()
        .copied()
        .filter(|v| !v.is_nan())
        .fold(f64::NAN, f64::max)
}

/// `1234567.8` as `1,234,568`.
pub fn thousands(value: f64) -> String {
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

pub fn mib(kb: u64) -> String {
    format!("{:.1} MiB", kb as f64 / 1024.0)
}

pub fn ms(us: i64) -> String {
    format!("{:.2}", us as f64 / 1000.0)
}

pub fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "**missed**" }
}

/// Medians of the drains of one consumer.
pub struct DrainSummary {
    pub rate: f64,
    pub seconds: f64,
    pub peak_rss_kb: f64,
    pub peak_rss_max_kb: f64,
    pub worker_cores: f64,
    pub redis_cores: f64,
    pub others_max: f64,
}

pub fn summarize(drains: &[Drain]) -> DrainSummary {
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

/// `1000000` as `1M`, `50000` as `50k`.
pub fn short_count(count: usize) -> String {
    if count.is_multiple_of(1_000_000) {
        format!("{}M", count / 1_000_000)
    } else if count.is_multiple_of(1_000) {
        format!("{}k", count / 1_000)
    } else {
        count.to_string()
    }
}
