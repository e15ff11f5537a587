//! Settings, layered from lowest to highest precedence: built-in defaults, a
//! config file (`--config config.yaml` or `config.toml`), environment
//! variables, command-line flags.
//!
//! Every key knows where its value came from, so an invalid value is refused
//! at start with the key, its source and the reason, and `config` can print
//! the effective settings with their sources.

use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Format, Toml, Yaml};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};
use serde::{Deserialize, Serialize};

// Defaults chosen when the project was generated.
const WORKER_NAME: &str = "{{worker_name}}";
const REDIS_URL: &str = "{{redis_url}}";
const STREAM: &str = "{{stream}}";
const CONSUMER_GROUP: &str = "{{consumer_group}}";
/// Empty: unset, so each process names itself `<host>-<pid>`.
const CONSUMER_NAME: &str = "{{consumer_name}}";
const BLOCK_TIMEOUT_MS: u64 = {{block_timeout}};

/// Environment variables and the setting each one sets. Anything else in the
/// environment is ignored, so unrelated `REDIS_*` variables do no harm; an
/// empty value counts as unset.
pub const ENV_VARS: &[(&str, &str)] = &[
    ("WORKER_NAME", "worker_name"),
    ("LOG_LEVEL", "log_level"),
    ("LOG_FORMAT", "log_format"),
    ("REDIS_URL", "redis.url"),
    ("REDIS_STREAM", "redis.stream"),
    ("REDIS_CONSUMER_GROUP", "redis.consumer_group"),
    ("REDIS_CONSUMER_NAME", "redis.consumer_name"),
    ("REDIS_BLOCK_TIMEOUT", "redis.block_timeout"),
    ("WORKER_CONCURRENCY", "worker.concurrency"),
    ("WORKER_BATCH_SIZE", "worker.batch_size"),
    ("WORKER_SHUTDOWN_TIMEOUT_MS", "worker.shutdown_timeout_ms"),
    ("WORKER_DEAD_LETTER_STREAM", "worker.dead_letter_stream"),
    ("WORKER_MAX_DELIVERIES", "worker.max_deliveries"),
    ("WORKER_RETRY_BACKOFF_MS", "worker.retry_backoff_ms"),
    ("WORKER_RETRY_BACKOFF_MAX_MS", "worker.retry_backoff_max_ms"),
    ("WORKER_CLAIM_IDLE_MS", "worker.claim_idle_ms"),
    ("WORKER_CLAIM_INTERVAL_MS", "worker.claim_interval_ms"),
    ("WORKER_RECONNECT_BACKOFF_MS", "worker.reconnect_backoff_ms"),
    (
        "WORKER_RECONNECT_BACKOFF_MAX_MS",
        "worker.reconnect_backoff_max_ms",
    ),
    ("WORKER_GROUP_START_ID", "worker.group_start_id"),
    (
        "WORKER_DELETE_IDLE_CONSUMERS_MS",
        "worker.delete_idle_consumers_ms",
    ),
    {%- if add_metrics %}
    ("METRICS_ADDR", "metrics.addr"),
    {%- endif %}
];

/// The effective settings of the worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Name used in logs{% if add_metrics %} and metrics{% endif %}.
    pub worker_name: String,
    /// Default log level (`error`, `warn`, `info`, `debug`, `trace`);
    /// `RUST_LOG` overrides it with full directives.
    pub log_level: String,
    /// `pretty` for people, `json` for log collectors.
    pub log_format: LogFormat,
    /// Kept for config files written for the original template; the only
    /// broker is Redis Streams.
    pub broker_type: BrokerType,
    /// Where to read from.
    pub redis: RedisSettings,
    /// How to process and recover.
    pub worker: WorkerSettings,
    {%- if add_metrics %}
    /// The Prometheus and health endpoints.
    pub metrics: crate::metrics::MetricsSettings,
    {%- endif %}
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Pretty,
    /// One JSON object per line.
    Json,
}

/// The kind of broker; only one exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BrokerType {
    /// Redis Streams with consumer groups.
    RedisStreams,
}

/// The stream, the group and this process's place in it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSettings {
    /// `redis://[user:password@]host:port[/db]` or `rediss://` for TLS.
    pub url: RedisUrl,
    /// The stream to consume.
    pub stream: String,
    /// The consumer group shared by every instance of this worker.
    pub consumer_group: String,
    /// This process's name in the group. Unset: `<host>-<pid>`, unique per
    /// process, so scaling out is starting more processes.
    pub consumer_name: Option<String>,
    /// How long one `XREADGROUP` waits for new entries, in milliseconds.
    pub block_timeout: u64,
}

/// Processing, acknowledgement and recovery.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerSettings {
    /// Entries processed at the same time.
    pub concurrency: usize,
    /// Entries fetched by one read (`COUNT`).
    pub batch_size: usize,
    /// After SIGTERM/SIGINT, how long in-flight entries may still take.
    pub shutdown_timeout_ms: u64,
    /// Where failed entries go; unset: `<stream>:dlq`.
    pub dead_letter_stream: Option<String>,
    /// Deliveries of one entry before it is dead-lettered.
    pub max_deliveries: u64,
    /// Delay before the first retry of a failed entry; doubles each time.
    pub retry_backoff_ms: u64,
    /// Upper bound of the retry delay.
    pub retry_backoff_max_ms: u64,
    /// How long an entry must sit unacknowledged with another consumer before
    /// this one takes it over. Must exceed the longest processing time, or
    /// entries still being processed are processed twice.
    pub claim_idle_ms: u64,
    /// How often to look for entries of dead consumers.
    pub claim_interval_ms: u64,
    /// First delay before reconnecting to Redis; doubles up to the maximum.
    pub reconnect_backoff_ms: u64,
    /// Upper bound of the reconnect delay.
    pub reconnect_backoff_max_ms: u64,
    /// Where a newly created group starts: `0` (the whole stream), `$` (only
    /// new entries) or an entry ID.
    pub group_start_id: String,
    /// Remove consumers of the group idle longer than this and holding no
    /// pending entries; unset: never.
    pub delete_idle_consumers_ms: Option<u64>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            worker_name: WORKER_NAME.to_owned(),
            log_level: "info".to_owned(),
            log_format: LogFormat::Pretty,
            broker_type: BrokerType::RedisStreams,
            redis: RedisSettings {
                url: RedisUrl(REDIS_URL.to_owned()),
                stream: STREAM.to_owned(),
                consumer_group: CONSUMER_GROUP.to_owned(),
                consumer_name: Some(CONSUMER_NAME)
                    .filter(|name| !name.is_empty())
                    .map(str::to_owned),
                block_timeout: BLOCK_TIMEOUT_MS,
            },
            worker: WorkerSettings {
                concurrency: 64,
                batch_size: 500,
                shutdown_timeout_ms: 30_000,
                dead_letter_stream: None,
                max_deliveries: 5,
                retry_backoff_ms: 1_000,
                retry_backoff_max_ms: 30_000,
                claim_idle_ms: 60_000,
                claim_interval_ms: 5_000,
                reconnect_backoff_ms: 100,
                reconnect_backoff_max_ms: 10_000,
                group_start_id: "0".to_owned(),
                delete_idle_consumers_ms: None,
            },
            {%- if add_metrics %}
            metrics: crate::metrics::MetricsSettings::default(),
            {%- endif %}
        }
    }
}

impl RedisSettings {
    /// The `XREADGROUP` block time.
    pub fn block_timeout(&self) -> Duration {
        Duration::from_millis(self.block_timeout)
    }

    /// The configured consumer name, or `<host>-<pid>`.
    pub fn consumer_name(&self) -> String {
        self.consumer_name.clone().unwrap_or_else(|| {
            let host = gethostname::gethostname();
            format!("{}-{}", host.to_string_lossy(), std::process::id())
        })
    }
}

impl WorkerSettings {
    /// See [`WorkerSettings::shutdown_timeout_ms`].
    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_millis(self.shutdown_timeout_ms)
    }
    /// See [`WorkerSettings::retry_backoff_ms`].
    pub fn retry_backoff(&self) -> Duration {
        Duration::from_millis(self.retry_backoff_ms)
    }
    /// See [`WorkerSettings::retry_backoff_max_ms`].
    pub fn retry_backoff_max(&self) -> Duration {
        Duration::from_millis(self.retry_backoff_max_ms)
    }
    /// See [`WorkerSettings::claim_idle_ms`].
    pub fn claim_idle(&self) -> Duration {
        Duration::from_millis(self.claim_idle_ms)
    }
    /// See [`WorkerSettings::claim_interval_ms`].
    pub fn claim_interval(&self) -> Duration {
        Duration::from_millis(self.claim_interval_ms)
    }
    /// See [`WorkerSettings::reconnect_backoff_ms`].
    pub fn reconnect_backoff(&self) -> Duration {
        Duration::from_millis(self.reconnect_backoff_ms)
    }
    /// See [`WorkerSettings::reconnect_backoff_max_ms`].
    pub fn reconnect_backoff_max(&self) -> Duration {
        Duration::from_millis(self.reconnect_backoff_max_ms)
    }
    /// See [`WorkerSettings::delete_idle_consumers_ms`].
    pub fn delete_idle_consumers(&self) -> Option<Duration> {
        self.delete_idle_consumers_ms.map(Duration::from_millis)
    }
}

impl Settings {
    /// The dead-letter stream: the configured one or `<stream>:dlq`.
    pub fn dead_letter_stream(&self) -> String {
        self.worker
            .dead_letter_stream
            .clone()
            .unwrap_or_else(|| format!("{}:dlq", self.redis.stream))
    }
}

/// A Redis URL whose password never reaches a log line or a printout.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct RedisUrl(String);

impl RedisUrl {
    /// The URL as given, password included: only for connecting.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL with its password replaced by `***`.
    pub fn redacted(&self) -> String {
        let Some((scheme, rest)) = self.0.split_once("://") else {
            return self.0.clone();
        };
        match rest.rsplit_once('@') {
            Some((userinfo, host)) => {
                let user = userinfo.split_once(':').map_or("", |(user, _)| user);
                format!("{scheme}://{user}:***@{host}")
            }
            None => self.0.clone(),
        }
    }
}

impl From<&str> for RedisUrl {
    fn from(url: &str) -> Self {
        Self(url.to_owned())
    }
}

impl std::fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl std::fmt::Display for RedisUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl Serialize for RedisUrl {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.redacted())
    }
}

/// Why the settings were refused.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// The config file named on the command line does not exist.
    #[error("config file {0} not found")]
    FileNotFound(PathBuf),
    /// The config file's extension names no known format.
    #[error("config file {0}: unknown format (use .yaml, .yml or .toml)")]
    UnknownFormat(PathBuf),
    /// A value could not be read: a wrong type, an unknown key, bad syntax.
    #[error("{}", describe_figment(.0))]
    Load(#[source] Box<figment::Error>),
    /// A value was read but breaks a rule.
    #[error("invalid `{key}` from {source_name}: {reason}")]
    Invalid {
        /// The dotted key, as in the config file.
        key: &'static str,
        /// Where the value came from.
        source_name: String,
        /// The rule it breaks.
        reason: String,
    },
}

fn describe_figment(error: &figment::Error) -> String {
    error
        .clone()
        .into_iter()
        .map(|error| error.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

/// A named layer of values: the defaults, or the command-line flags.
struct Layer {
    name: &'static str,
    values: Dict,
}

impl Provider for Layer {
    fn metadata(&self) -> Metadata {
        Metadata::named(self.name)
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Ok(Profile::Default.collect(self.values.clone()))
    }
}

/// Settings given on the command line, as `(dotted key, value)` pairs.
pub type Overrides = Vec<(&'static str, Value)>;

/// Loads and validates the settings.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The effective settings.
    pub settings: Settings,
    figment: Figment,
}

impl Loaded {
    /// Where the value of `key` came from: `default`, the file, the
    /// environment variable or `command-line flag`.
    pub fn source_of(&self, key: &str) -> String {
        describe_source(&self.figment, key)
    }
}

/// Builds the settings from every layer and checks them.
///
/// `env` is the environment to read (`std::env::vars()` in the binary), so
/// tests can pass their own.
pub fn load(
    config_file: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
    flags: Overrides,
) -> Result<Loaded, SettingsError> {
    let defaults = Value::serialize(Settings::default())
        .ok()
        .and_then(|value| value.into_dict())
        .unwrap_or_default();
    let mut figment = Figment::from(Layer {
        name: "default",
        values: defaults,
    });

    if let Some(path) = config_file {
        if !path.is_file() {
            return Err(SettingsError::FileNotFound(path.to_owned()));
        }
        let extension = path.extension().and_then(|ext| ext.to_str()).unwrap_or("");
        figment = match extension {
            "yaml" | "yml" => figment.merge(Yaml::file_exact(path)),
            "toml" => figment.merge(Toml::file_exact(path)),
            _ => return Err(SettingsError::UnknownFormat(path.to_owned())),
        };
    }

    let mut from_env = Dict::new();
    for (name, value) in env {
        if value.is_empty() {
            continue; // `VAR=` in a compose or .env file means unset
        }
        if let Some((_, key)) = ENV_VARS.iter().find(|(var, _)| *var == name) {
            insert(&mut from_env, key, Value::from(value));
        }
    }
    figment = figment.merge(Layer {
        name: "environment",
        values: from_env,
    });

    let mut from_flags = Dict::new();
    for (key, value) in flags {
        insert(&mut from_flags, key, value);
    }
    figment = figment.merge(Layer {
        name: "command-line flag",
        values: from_flags,
    });

    let settings: Settings = figment
        .extract_lossy()
        .map_err(|error| SettingsError::Load(Box::new(error)))?;
    let loaded = Loaded { settings, figment };
    validate(&loaded)?;
    Ok(loaded)
}

/// Puts `value` at the dotted `key` of `dict`.
fn insert(dict: &mut Dict, key: &str, value: Value) {
    match key.split_once('.') {
        None => {
            dict.insert(key.to_owned(), value);
        }
        Some((section, rest)) => {
            let entry = dict
                .entry(section.to_owned())
                .or_insert_with(|| Value::from(Dict::new()));
            if let Value::Dict(_, inner) = entry {
                insert(inner, rest, value);
            }
        }
    }
}

fn describe_source(figment: &Figment, key: &str) -> String {
    let Some(metadata) = figment.find_metadata(key) else {
        return "default".to_owned();
    };
    if metadata.name == "environment" {
        let var = ENV_VARS
            .iter()
            .find(|(_, setting)| *setting == key)
            .map_or("?", |(var, _)| var);
        return format!("environment variable {var}");
    }
    match &metadata.source {
        Some(figment::Source::File(path)) => path.display().to_string(),
        _ => metadata.name.to_string(),
    }
}

fn validate(loaded: &Loaded) -> Result<(), SettingsError> {
    let s = &loaded.settings;
    let refuse = |key: &'static str, reason: String| SettingsError::Invalid {
        key,
        source_name: loaded.source_of(key),
        reason,
    };
    let url = s.redis.url.expose();
    if !(url.starts_with("redis://") || url.starts_with("rediss://") || url.starts_with("unix://"))
    {
        return Err(refuse(
            "redis.url",
            "must start with redis://, rediss:// or unix://".into(),
        ));
    }
    if let Err(error) = redis::Client::open(url) {
        return Err(refuse(
            "redis.url",
            error.to_string().replace(url, &s.redis.url.redacted()),
        ));
    }
    if url.starts_with("rediss://") && !cfg!(feature = "tls") {
        return Err(refuse(
            "redis.url",
            "rediss:// needs TLS support: build with `--features tls`".into(),
        ));
    }
    for (key, value) in [
        ("redis.stream", &s.redis.stream),
        ("redis.consumer_group", &s.redis.consumer_group),
    ] {
        if value.is_empty() {
            return Err(refuse(key, "must not be empty".into()));
        }
    }
    if s.redis.consumer_name.as_deref() == Some("") {
        return Err(refuse(
            "redis.consumer_name",
            "must not be empty (unset it for <host>-<pid>)".into(),
        ));
    }
    if s.worker.dead_letter_stream.as_deref() == Some(s.redis.stream.as_str()) {
        return Err(refuse(
            "worker.dead_letter_stream",
            "must differ from the stream".into(),
        ));
    }
    let at_least_one = [
        ("redis.block_timeout", s.redis.block_timeout),
        ("worker.concurrency", s.worker.concurrency as u64),
        ("worker.batch_size", s.worker.batch_size as u64),
        ("worker.max_deliveries", s.worker.max_deliveries),
        ("worker.retry_backoff_ms", s.worker.retry_backoff_ms),
        ("worker.claim_idle_ms", s.worker.claim_idle_ms),
        ("worker.claim_interval_ms", s.worker.claim_interval_ms),
        ("worker.reconnect_backoff_ms", s.worker.reconnect_backoff_ms),
    ];
    for (key, value) in at_least_one {
        if value == 0 {
            return Err(refuse(key, "must be at least 1".into()));
        }
    }
    if s.worker.retry_backoff_max_ms < s.worker.retry_backoff_ms {
        return Err(refuse(
            "worker.retry_backoff_max_ms",
            "must not be below worker.retry_backoff_ms".into(),
        ));
    }
    if s.worker.reconnect_backoff_max_ms < s.worker.reconnect_backoff_ms {
        return Err(refuse(
            "worker.reconnect_backoff_max_ms",
            "must not be below worker.reconnect_backoff_ms".into(),
        ));
    }
    let start = s.worker.group_start_id.as_str();
    if !(start == "0" || start == "$" || is_entry_id(start)) {
        return Err(refuse(
            "worker.group_start_id",
            "must be 0, $ or an entry ID such as 1700000000000-0".into(),
        ));
    }
    if s.worker
        .delete_idle_consumers_ms
        .is_some_and(|ms| ms < s.worker.claim_idle_ms)
    {
        return Err(refuse(
            "worker.delete_idle_consumers_ms",
            "must not be below worker.claim_idle_ms".into(),
        ));
    }
    if let Err(error) = s.log_level.parse::<tracing::level_filters::LevelFilter>() {
        return Err(refuse("log_level", error.to_string()));
    }
    {%- if add_metrics %}
    if let Err(reason) = s.metrics.validate() {
        return Err(refuse("metrics.addr", reason));
    }
    {%- endif %}
    Ok(())
}

fn is_entry_id(id: &str) -> bool {
    let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
    ms.parse::<u64>().is_ok() && seq.parse::<u64>().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn write(name: &str, text: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("settings-test-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn defaults_are_valid() {
        let loaded = load(None, env(&[]), vec![]).unwrap();
        assert_eq!(loaded.settings, Settings::default());
        assert_eq!(loaded.source_of("worker.concurrency"), "default");
    }

    #[test]
    fn layers_apply_in_order() {
        let file = write(
            "layers.yaml",
            "redis:\n  stream: from-file\n  consumer_group: file-group\nworker:\n  concurrency: 3\n",
        );
        let loaded = load(
            Some(&file),
            env(&[
                ("REDIS_CONSUMER_GROUP", "env-group"),
                ("WORKER_CONCURRENCY", "7"),
                ("REDIS_HOST", "ignored"),
                ("REDIS_STREAM", ""),
            ]),
            vec![("worker.concurrency", Value::from(9_u64))],
        )
        .unwrap();
        assert_eq!(loaded.settings.redis.stream, "from-file");
        assert_eq!(loaded.settings.redis.consumer_group, "env-group");
        assert_eq!(loaded.settings.worker.concurrency, 9);
        assert!(loaded.source_of("redis.stream").ends_with("layers.yaml"));
        assert_eq!(
            loaded.source_of("redis.consumer_group"),
            "environment variable REDIS_CONSUMER_GROUP"
        );
        assert_eq!(loaded.source_of("worker.concurrency"), "command-line flag");
    }

    #[test]
    fn the_shipped_config_file_holds_the_defaults() {
        let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.yaml");
        let loaded = load(Some(&file), env(&[]), vec![]).unwrap();
        assert_eq!(loaded.settings, Settings::default());
    }

    #[test]
    fn toml_files_work_too() {
        let file = write(
            "c.toml",
            "log_level = \"debug\"\n[redis]\nblock_timeout = 250\n",
        );
        let loaded = load(Some(&file), env(&[]), vec![]).unwrap();
        assert_eq!(
            loaded.settings.redis.block_timeout(),
            Duration::from_millis(250)
        );
        assert_eq!(loaded.settings.log_level, "debug");
    }

    #[test]
    fn unknown_keys_and_wrong_types_name_the_key_and_the_file() {
        let file = write("bad.yaml", "worker:\n  concurency: 3\n");
        let error = load(Some(&file), env(&[]), vec![]).unwrap_err().to_string();
        assert!(
            error.contains("concurency") && error.contains("bad.yaml"),
            "{error}"
        );

        let error = load(None, env(&[("REDIS_BLOCK_TIMEOUT", "soon")]), vec![])
            .unwrap_err()
            .to_string();
        assert!(error.contains("block_timeout"), "{error}");
    }

    #[test]
    fn rule_violations_name_key_and_source() {
        let error = load(None, env(&[("WORKER_CONCURRENCY", "0")]), vec![])
            .unwrap_err()
            .to_string();
        assert_eq!(
            error,
            "invalid `worker.concurrency` from environment variable WORKER_CONCURRENCY: must be at least 1"
        );
        let error = load(None, env(&[("REDIS_URL", "http://x")]), vec![])
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("invalid `redis.url` from environment variable REDIS_URL"),
            "{error}"
        );
        let missing = load(
            Some(Path::new("/nonexistent/config.yaml")),
            env(&[]),
            vec![],
        );
        assert!(matches!(missing, Err(SettingsError::FileNotFound(_))));
    }

    #[test]
    fn passwords_are_redacted() {
        let url = RedisUrl::from("redis://user:s3cret@db:6379/0");
        assert_eq!(url.redacted(), "redis://user:***@db:6379/0");
        assert!(!format!("{url:?} {url}").contains("s3cret"));
        assert_eq!(RedisUrl::from("redis://:pw@h").redacted(), "redis://:***@h");
        assert_eq!(RedisUrl::from("redis://h:1").redacted(), "redis://h:1");
    }

    #[test]
    fn the_consumer_name_defaults_to_host_and_pid() {
        let mut redis = Settings::default().redis;
        redis.consumer_name = None;
        assert!(
            redis
                .consumer_name()
                .ends_with(&format!("-{}", std::process::id()))
        );
    }
}
