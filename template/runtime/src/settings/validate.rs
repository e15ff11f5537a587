//! Validation: the rules a loaded value must follow, checked once at start
//! so a bad value stops the worker with its key, source and reason.

use redis::cluster_routing::Slot;

use super::load::{Loaded, SettingsError};
use super::{LogicSettings, Refusal, Settings};

/// Checks every rule, the sections of the business logic and of optional
/// modules included.
pub(super) fn validate<L: LogicSettings>(loaded: &Loaded<L>) -> Result<(), SettingsError> {
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
    s.tracing
        .validate()
        .map_err(|refusal| in_section("tracing", refusal))?;
    loaded
        .logic
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
    for node in &s.redis.nodes() {
        if let Err(error) = redis::Client::open(node.as_str()) {
            let reason = error.to_string().replace(node, &s.redis.url.redacted());
            return Err(Refusal::new(
                "redis.url",
                s.redis.redactor().scrub(&reason).into_owned(),
            ));
        }
        if s.redis.cluster && node.contains("unix://") {
            return Err(Refusal::new(
                "redis.url",
                "a cluster is reached over TCP, not unix://",
            ));
        }
    }
    if let Err(error) = s.redis.file_password() {
        return Err(Refusal::new("redis.password_file", error.to_string()));
    }
    let tls_files = [
        ("redis.tls_ca_file", &s.redis.tls_ca_file),
        ("redis.tls_cert_file", &s.redis.tls_cert_file),
        ("redis.tls_key_file", &s.redis.tls_key_file),
    ];
    for (key, file) in tls_files {
        if file.is_some() && !url.starts_with("rediss://") {
            return Err(Refusal::new(key, "is only used with a rediss:// URL"));
        }
    }
    match (&s.redis.tls_cert_file, &s.redis.tls_key_file) {
        (Some(_), None) => {
            return Err(Refusal::new(
                "redis.tls_key_file",
                "must be set with redis.tls_cert_file",
            ));
        }
        (None, Some(_)) => {
            return Err(Refusal::new(
                "redis.tls_cert_file",
                "must be set with redis.tls_key_file",
            ));
        }
        _ => {}
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
    if s.redis.cluster && Slot::for_key(s.dead_letter_stream()) != Slot::for_key(&s.redis.stream) {
        return Err(if s.worker.dead_letter_stream.is_some() {
            Refusal::new(
                "worker.dead_letter_stream",
                "must hash to the stream's cluster slot: give both the same hash tag, \
                 such as {orders}:events and {orders}:dlq",
            )
        } else {
            // A name holding `}` without a hash tag hashes whole, and no
            // `{...}` around it can: `{a}b}:dlq` hashes `a`.
            Refusal::new(
                "redis.stream",
                "holds `}` without a hash tag, so no default dead-letter stream shares its \
                 cluster slot: give the stream a hash tag, such as {orders}:events, or set \
                 worker.dead_letter_stream to a name in its slot",
            )
        });
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

#[cfg(test)]
mod tests {
    use super::super::load;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect()
    }

    fn refusal(pairs: &[(&str, &str)]) -> String {
        load(None, env(pairs), vec![]).unwrap_err().to_string()
    }

    #[test]
    fn tls_files_need_rediss_and_come_in_pairs() {
        let error = refusal(&[("REDIS_TLS_CA_FILE", "ca.crt")]);
        assert!(
            error.contains("redis.tls_ca_file") && error.contains("rediss://"),
            "{error}"
        );
        let error = refusal(&[
            ("REDIS_URL", "rediss://localhost:6380"),
            ("REDIS_TLS_CERT_FILE", "client.crt"),
        ]);
        assert!(error.contains("redis.tls_key_file"), "{error}");
    }

    #[test]
    fn a_cluster_takes_seed_nodes_and_keeps_dead_letters_in_the_streams_slot() {
        let loaded = load(
            None,
            env(&[
                ("REDIS_CLUSTER", "true"),
                ("REDIS_URL", "redis://10.0.0.1:7000, 10.0.0.2:7000"),
                ("REDIS_STREAM", "orders"),
            ]),
            vec![],
        )
        .unwrap();
        assert_eq!(
            loaded.settings.redis.nodes(),
            ["redis://10.0.0.1:7000", "redis://10.0.0.2:7000"]
        );
        assert_eq!(loaded.settings.dead_letter_stream(), "{orders}:dlq");

        let mut settings = loaded.settings.clone();
        settings.redis.stream = "{tenant-7}:events".into();
        assert_eq!(settings.dead_letter_stream(), "{tenant-7}:events:dlq");
        settings.redis.cluster = false;
        settings.redis.stream = "orders".into();
        assert_eq!(settings.dead_letter_stream(), "orders:dlq");

        let error = refusal(&[
            ("REDIS_CLUSTER", "true"),
            ("REDIS_STREAM", "orders"),
            ("WORKER_DEAD_LETTER_STREAM", "orders:dlq"),
        ]);
        assert!(
            error.contains("worker.dead_letter_stream") && error.contains("hash tag"),
            "{error}"
        );
    }

    /// Redis hashes what lies between the first `{` and the first `}` after
    /// it; a stream named `a}b` has no tag and hashes whole, and the default
    /// `{a}b}:dlq` would hash `a`: checked like an explicit name.
    #[test]
    fn a_default_dead_letter_stream_in_another_slot_is_refused() {
        use redis::cluster_routing::Slot;
        for stream in ["a}b", "{}x", "x}{"] {
            let error = refusal(&[("REDIS_CLUSTER", "true"), ("REDIS_STREAM", stream)]);
            assert!(
                error.contains("redis.stream") && error.contains("hash tag"),
                "{stream}: {error}"
            );
        }
        for stream in ["orders", "{a}b}", "x{t}y}"] {
            let loaded = load(
                None,
                env(&[("REDIS_CLUSTER", "true"), ("REDIS_STREAM", stream)]),
                vec![],
            )
            .unwrap();
            let dead_letters = loaded.settings.dead_letter_stream();
            assert_eq!(
                Slot::for_key(&dead_letters),
                Slot::for_key(stream),
                "{stream} and {dead_letters}"
            );
        }
    }
}
