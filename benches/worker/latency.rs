//! End-to-end latency: a producer adds entries at a steady rate, each with
//! its send time, and the latency copy of the worker records receive time
//! minus send time per entry.

use std::fs;
use std::thread;
use std::time::{Duration, Instant};

use crate::builds::Built;
use crate::common::RedisServer;
use crate::options::Options;
use crate::usage::{CpuUse, CpuWatch, status_kb};
use crate::workload::{
    DRAIN_POLL, STARTUP_POLL, STREAM, drained, group_info, latency_data, now_us, spawn_worker,
    stop, xreadgroup_calls,
};

#[derive(Debug, Clone)]
pub struct Latency {
    pub sent: u64,
    pub recorded: usize,
    /// What the producer achieved, entries per second.
    pub achieved_rate: f64,
    pub p50_us: i64,
    pub p99_us: i64,
    pub p999_us: i64,
    pub max_us: i64,
    /// The slowest entries: seconds into the run, latency in µs.
    pub worst: Vec<(f64, i64)>,
    /// The worker's `VmHWM` at the end, kB.
    pub peak_rss_kb: Option<u64>,
    pub cpu: CpuUse,
}

pub fn latency(built: &Built, options: &Options) -> (Latency, CpuUse) {
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
pub fn percentile(samples: &[i64], fraction: f64) -> i64 {
    let rank = (fraction * samples.len() as f64).ceil() as usize;
    samples[rank.clamp(1, samples.len()) - 1]
}
