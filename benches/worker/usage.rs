//! What one measurement cost: the CPU used by the processes it started, by
//! this benchmark and by everything else on the machine (`/proc/stat`,
//! `/proc/<pid>/stat`), and a process's memory (`/proc/<pid>/status`).

use std::fs;
use std::time::Instant;

use crate::machine::load_average;

pub fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf only reads a configuration value.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

/// Busy CPU time of the whole machine, in clock ticks (`/proc/stat`).
pub fn machine_busy_ticks() -> u64 {
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
pub fn process_ticks(pid: &str) -> u64 {
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
pub fn status_kb(pid: u32, key: &str) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(key)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// The CPU used during one measurement: by the processes it started, by this
/// benchmark, and by everything else on the machine.
pub struct CpuWatch {
    pub started: Instant,
    pub load_before: f64,
    pub machine: u64,
    pub processes: Vec<(&'static str, String, u64)>,
}

/// What a [`CpuWatch`] saw, in cores (1.0 = one core busy all the time).
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuUse {
    /// The worker (or 0 for the reference, which runs in this process).
    pub worker: f64,
    /// Its Redis.
    pub redis: f64,
    /// This benchmark: the reference consumer, the producer, the polling.
    pub bench: f64,
    /// Everything else on the machine.
    pub others: f64,
    /// The 1-minute load average before the measurement.
    pub load_before: f64,
}

impl CpuWatch {
    pub fn start() -> CpuWatch {
        CpuWatch {
            started: Instant::now(),
            load_before: load_average(),
            machine: machine_busy_ticks(),
            processes: vec![("bench", "self".to_owned(), process_ticks("self"))],
        }
    }

    /// Counts `pid` as `label`; a process started after [`CpuWatch::start`]
    /// is added with its whole CPU time so far.
    pub fn watch(&mut self, label: &'static str, pid: u32, since_start: bool) {
        let pid = pid.to_string();
        let ticks = if since_start { 0 } else { process_ticks(&pid) };
        self.processes.push((label, pid, ticks));
    }

    /// Reads the counters again; call while the watched processes still run.
    pub fn finish(&self) -> CpuUse {
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
    pub fn describe(&self) -> String {
        format!(
            "cpu: worker {:.2}, redis {:.2}, bench {:.2}, other processes {:.2} cores; load before {:.2}",
            self.worker, self.redis, self.bench, self.others, self.load_before
        )
    }
}
