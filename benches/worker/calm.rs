//! Measuring on a shared machine: wait for other processes to calm down
//! before a measurement, repeat one they disturbed and keep the least
//! disturbed attempt, all within the `--calm-budget` of the run.

use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::common::note;
use crate::options::Options;
use crate::usage::{CpuUse, CpuWatch};

/// How long one measurement waits at most for other processes to calm down.
const CALM_WAIT: Duration = Duration::from_secs(15);

/// Time left for waiting on other processes and for repeating disturbed
/// measurements, in milliseconds (`--calm-budget`); once spent, the run
/// measures on whatever the load and only reports it.
pub static CALM_BUDGET_MS: AtomicU64 = AtomicU64::new(0);

/// Sets the budget to `--calm-budget`, at the start of the run.
pub fn start_budget(options: &Options) {
    CALM_BUDGET_MS.store(options.calm_budget * 1000, Ordering::Relaxed);
}

/// Takes `spent` from the budget.
pub fn spend(spent: Duration) {
    let spent = u64::try_from(spent.as_millis()).unwrap_or(u64::MAX);
    let _ = CALM_BUDGET_MS.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
        Some(left.saturating_sub(spent))
    });
}

pub fn budget_left() -> bool {
    CALM_BUDGET_MS.load(Ordering::Relaxed) > 0
}

/// Runs `measure` once, after waiting for other processes to calm down; if
/// they still used more than `--max-other-cores` during it, runs it again
/// (at most `--retries` times, while the budget lasts) and returns the least
/// disturbed attempt.
pub fn least_disturbed<T>(
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
pub fn wait_for_calm(options: &Options) {
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
