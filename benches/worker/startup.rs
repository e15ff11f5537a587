//! Start-up time (spawn to the first `XREADGROUP` Redis counted) and the
//! worker's memory while it sits idle.

use std::thread;
use std::time::{Duration, Instant};

use crate::builds::Built;
use crate::common::RedisServer;
use crate::options::Options;
use crate::usage::{CpuUse, CpuWatch, status_kb};
use crate::workload::{STARTUP_POLL, spawn_worker, stop, xreadgroup_calls};

/// How long the worker sits idle before its memory is read.
const IDLE_WAIT: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Copy)]
pub struct Startup {
    pub to_first_read: Duration,
    pub idle_rss_kb: Option<u64>,
    pub idle_hwm_kb: Option<u64>,
}

pub fn startup(built: &Built, options: &Options) -> (Startup, CpuUse) {
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
