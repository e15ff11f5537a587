//! Validation: the rules a loaded value must follow, checked once at start
//! so a bad value stops the worker with its key, source and reason.

use super::load::{Loaded, SettingsError};
use super::{Refusal, Settings};

/// Checks every rule, the sections of the business logic and of optional
/// modules included.
pub(super) fn validate(loaded: &Loaded) -> Result<(), SettingsError> {
    let refuse = |key: &str, reason: String| SettingsError::Invalid {
        key: key.to_owned(),
        source_name: loaded.source_of(key),
        reason,
    };
    let in_section = |section: &str, refusal: Refusal| {
        refuse(&format!("{section}.{}", refusal.key), refusal.reason)
    };
    let s = &loaded.settings;
    core(s).map_err(|refusal| refuse(refusal.key, refusal.reason))?;
    s.logic
        .validate()
        .map_err(|refusal| in_section("logic", refusal))?;
    s.modules
        .validate()
        .map_err(|(section, refusal)| in_section(section, refusal))
}

/// The rules of the runtime's own settings; keys are dotted in full.
fn core(s: &Settings) -> Result<(), Refusal> {
    let url = s.redis.url.expose();
    if !["redis://", "rediss://", "unix://", "redis+unix://"]
        .iter()
        .any(|scheme| url.starts_with(scheme))
    {
        return Err(Refusal::new(
            "redis.url",
            "must start with redis://, rediss://, unix:// or redis+unix://",
        ));
    }
    if let Err(error) = redis::Client::open(url) {
        let reason = error.to_string().replace(url, &s.redis.url.redacted());
        return Err(Refusal::new(
            "redis.url",
            s.redis.redactor().scrub(&reason).into_owned(),
        ));
    }
    if let Err(error) = s.redis.file_password() {
        return Err(Refusal::new("redis.password_file", error.to_string()));
    }
    if url.starts_with("rediss://") && !cfg!(feature = "tls") {
        return Err(Refusal::new(
            "redis.url",
            "rediss:// needs TLS support: build with `--features tls`",
        ));
    }
    for (key, value) in [
        ("redis.stream", &s.redis.stream),
        ("redis.consumer_group", &s.redis.consumer_group),
    ] {
        if value.is_empty() {
            return Err(Refusal::new(key, "must not be empty"));
        }
    }
    if s.redis.consumer_name.as_deref() == Some("") {
        return Err(Refusal::new(
            "redis.consumer_name",
            "must not be empty (unset it for <host>-<pid>-<random>)",
        ));
    }
    if s.worker.dead_letter_stream.as_deref() == Some(s.redis.stream.as_str()) {
        return Err(Refusal::new(
            "worker.dead_letter_stream",
            "must differ from the stream",
        ));
    }
    let w = &s.worker;
    let at_least_one = [
        ("redis.block_timeout_ms", s.redis.block_timeout.is_zero()),
        ("worker.concurrency", w.concurrency == 0),
        ("worker.batch_size", w.batch_size == 0),
        ("worker.process_timeout_ms", w.process_timeout.is_zero()),
        ("worker.max_deliveries", w.max_deliveries == 0),
        ("worker.retry_backoff_ms", w.retry_backoff.is_zero()),
        ("worker.claim_idle_ms", w.claim_idle.is_zero()),
        ("worker.claim_interval_ms", w.claim_interval.is_zero()),
        ("worker.reconnect_backoff_ms", w.reconnect_backoff.is_zero()),
    ];
    if let Some((key, _)) = at_least_one.into_iter().find(|(_, zero)| *zero) {
        let unit = if key.ends_with("_ms") {
            " millisecond"
        } else {
            ""
        };
        return Err(Refusal::new(key, format!("must be at least 1{unit}")));
    }
    if w.retry_backoff_max < w.retry_backoff {
        return Err(Refusal::new(
            "worker.retry_backoff_max_ms",
            "must not be below worker.retry_backoff_ms",
        ));
    }
    if w.reconnect_backoff_max < w.reconnect_backoff {
        return Err(Refusal::new(
            "worker.reconnect_backoff_max_ms",
            "must not be below worker.reconnect_backoff_ms",
        ));
    }
    let start = w.group_start_id.as_str();
    if !(start == "0" || start == "$" || is_entry_id(start)) {
        return Err(Refusal::new(
            "worker.group_start_id",
            "must be 0, $ or an entry ID such as 1700000000000-0",
        ));
    }
    if w.delete_idle_consumers
        .is_some_and(|idle| idle < w.claim_idle)
    {
        return Err(Refusal::new(
            "worker.delete_idle_consumers_ms",
            "must not be below worker.claim_idle_ms",
        ));
    }
    if let Err(error) = s.log_level.parse::<tracing::level_filters::LevelFilter>() {
        return Err(Refusal::new("log_level", error.to_string()));
    }
    Ok(())
}

fn is_entry_id(id: &str) -> bool {
    let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
    ms.parse::<u64>().is_ok() && seq.parse::<u64>().is_ok()
}
