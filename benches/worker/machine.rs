//! The machine the figures were measured on (cores, CPU, Redis, kernel),
//! the state of the template measured, and the load averages that go with
//! the figures.

use std::fs;
use std::process::Command;
use std::thread;

use crate::common::repo_root;

/// The 1-minute load average.
pub fn load_average() -> f64 {
    fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

pub fn load_averages() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|_| "?".into())
}

/// What the figures were measured on, for the lines above the table.
pub struct Machine {
    pub cores: usize,
    pub cpu_model: String,
    pub redis_version: String,
    pub kernel: String,
    pub template_state: String,
}

impl Machine {
    pub fn probe() -> Machine {
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

pub fn command_output(program: &str, args: &[&str]) -> Option<String> {
    let output = Command::new(program).args(args).output().ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
}
