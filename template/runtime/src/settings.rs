//! The settings' types and their defaults.
//!
//! Settings are layered, lowest to highest precedence: these defaults, a
//! config file (`--config config.yaml` or `config.toml`), environment
//! variables, command-line flags. [`load`] builds the layers and remembers
//! where each key came from; validation refuses a value with its key, its
//! source and the reason. Every key has one environment variable, its dotted
//! name in upper case with `_` for `.` (`redis.block_timeout_ms` is
//! `REDIS_BLOCK_TIMEOUT_MS`), so a new setting cannot be left out of a table.
//!
//! Durations are milliseconds in files and the environment (keys end in
//! `_ms`) and [`Duration`]s in code.

mod load;
mod modules;
mod traces;
mod validate;

use std::path::PathBuf;
use std::time::Duration;

use redis::IntoConnectionInfo;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::redact::{Redactor, redact_url, secrets_in_url, seeds};

pub use crate::section::{Refusal, millis};
pub use load::{Loaded, Overrides, SettingsError, load, load_with};
#[cfg(not(feature = "metrics"))]
pub use modules::HeartbeatSettings;
#[cfg(feature = "metrics")]
pub use modules::MetricsSettings;
pub use modules::Modules;
pub use traces::{OTEL_VARIABLES, ParentMode, SAMPLERS, TraceSettings};

/// The defaults a project chose when it was generated: the answers to the
/// template's questions. Every other default is the runtime's.
///
/// A constant, so that a project states its own in one place and takes
/// the rest from [`Defaults::BASE`]:
///
/// ```
/// use redis_streams_runtime::Defaults;
///
/// const DEFAULTS: Defaults = Defaults {
///     worker_name: "orders-worker",
///     stream: "orders",
///     consumer_group: "orders-workers",
///     ..Defaults::BASE
/// };
/// assert_eq!(DEFAULTS.redis_url, "redis://127.0.0.1:6379");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Defaults {
    /// The name this worker reports itself by (`worker_name`).
    pub worker_name: &'static str,
    /// `redis.url`.
    pub redis_url: &'static str,
    /// `redis.stream`.
    pub stream: &'static str,
    /// `redis.consumer_group`.
    pub consumer_group: &'static str,
    /// `redis.consumer_name`; empty: unset, so each process names itself
    /// `<host>-<pid>-<random>`.
    pub consumer_name: &'static str,
    /// `redis.block_timeout_ms`.
    pub block_timeout_ms: u64,
    /// `metrics.addr`, where `/metrics`, `/healthz` and `/readyz` listen
    /// (with the `metrics` feature).
    pub metrics_addr: &'static str,
    /// `heartbeat.file`, which `healthcheck` reads (without the `metrics`
    /// feature).
    pub heartbeat_file: &'static str,
}

impl Defaults {
    /// The template's own answers, for whatever a project does not set.
    pub const BASE: Defaults = Defaults {
        worker_name: "worker",
        redis_url: "redis://127.0.0.1:6379",
        stream: "my-stream",
        consumer_group: "my-group",
        consumer_name: "",
        block_timeout_ms: 1_000,
        metrics_addr: "127.0.0.1:9464",
        heartbeat_file: "/tmp/worker.heartbeat",
    };
}

impl Default for Defaults {
    fn default() -> Self {
        Self::BASE
    }
}

/// The business logic's own settings: the `logic` section of the config
/// file and the `LOGIC_*` environment variables. Loaded, layered, printed
/// by `config` and refused with key and source like the runtime's own.
pub trait LogicSettings:
    Serialize + DeserializeOwned + Default + Clone + std::fmt::Debug + Send + Sync + 'static
{
    /// The rules of these settings, checked once at start; a [`Refusal`]
    /// names the key within the section.
    fn validate(&self) -> Result<(), Refusal> {
        Ok(())
    }
}

/// Settings of a business logic that takes none: an empty `logic` section.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoLogicSettings {}

impl LogicSettings for NoLogicSettings {}

/// The effective settings of the worker.
///
/// Unknown keys are refused at load: within a section by serde, at the top
/// level by the loader, which knows the optional modules' sections too.
/// The business logic's own section (`logic`) is loaded beside these, into
/// [`Loaded::logic`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    /// The name this worker reports itself by, in logs and labels.
    pub worker_name: String,
    /// Default log level (`error`, `warn`, `info`, `debug`, `trace`);
    /// `RUST_LOG` overrides it with full directives.
    pub log_level: String,
    /// `pretty` for people, `json` for log collectors.
    pub log_format: LogFormat,
    /// Where to read from.
    pub redis: RedisSettings,
    /// How to process and recover.
    pub worker: WorkerSettings,
    /// OpenTelemetry traces; off until a collector is named
    /// (`tracing.endpoint` or `tracing.traces_endpoint`).
    pub tracing: TraceSettings,
    /// The sections of the optional modules generated with this project,
    /// top-level sections of the config file. [`load`] reads them apart:
    /// through a flattened field serde would lose the key and the source of
    /// an error inside them.
    #[serde(flatten, skip_deserializing)]
    pub modules: Modules,
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

/// The stream, the group and this process's place in it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSettings {
    /// `redis://[user:password@]host:port[/db]`, `rediss://` for TLS, or
    /// `unix:///path/to/redis.sock[?user=..&pass=..]`; on a cluster, one or
    /// more seed nodes, comma separated.
    pub url: RedisUrl,
    /// Whether `url` is a Redis Cluster: commands are then routed by key.
    pub cluster: bool,
    /// A file holding the password (one line), used instead of one in the
    /// URL: a secret mounted by the orchestrator never has to sit in the
    /// environment or a config file.
    pub password_file: Option<PathBuf>,
    /// The stream to consume.
    pub stream: String,
    /// The consumer group shared by every instance of this worker.
    pub consumer_group: String,
    /// This process's name in the group. Unset: `<host>-<pid>-<random>`,
    /// unique per process, so scaling out is starting more processes. A
    /// name a live process holds is refused at start.
    pub consumer_name: Option<String>,
    /// How long one `XREADGROUP` waits for new entries.
    #[serde(rename = "block_timeout_ms", with = "millis")]
    pub block_timeout: Duration,
    /// A private CA (PEM) that signed the server's certificate, for
    /// `rediss://`; it replaces the bundled public roots.
    pub tls_ca_file: Option<PathBuf>,
    /// A client certificate (PEM) for servers that require mutual TLS;
    /// goes with `tls_key_file`.
    pub tls_cert_file: Option<PathBuf>,
    /// The private key (PEM) of `tls_cert_file`.
    pub tls_key_file: Option<PathBuf>,
}

/// Processing, acknowledgement and recovery.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerSettings {
    /// Entries processed at the same time.
    pub concurrency: usize,
    /// Entries fetched by one read (`COUNT`).
    pub batch_size: usize,
    /// How long the business logic may take for one entry. A call still
    /// running then is dropped and counts as a retryable failure, so a call
    /// that never returns (an HTTP request without a timeout) cannot freeze
    /// the worker.
    #[serde(rename = "process_timeout_ms", with = "millis")]
    pub process_timeout: Duration,
    /// After SIGTERM/SIGINT, how long in-flight entries may still take.
    #[serde(rename = "shutdown_timeout_ms", with = "millis")]
    pub shutdown_timeout: Duration,
    /// Where failed entries go; unset: `<stream>:dlq`.
    pub dead_letter_stream: Option<String>,
    /// Deliveries of one entry before it is dead-lettered.
    pub max_deliveries: u64,
    /// Delay before the first retry of a failed entry; doubles each time.
    #[serde(rename = "retry_backoff_ms", with = "millis")]
    pub retry_backoff: Duration,
    /// Upper bound of the retry delay.
    #[serde(rename = "retry_backoff_max_ms", with = "millis")]
    pub retry_backoff_max: Duration,
    /// How long an entry must sit idle with another consumer before this
    /// one takes it over. A live worker resets the idle time of the entries
    /// it holds every quarter of this, so only a dead or frozen worker's
    /// entries reach it.
    #[serde(rename = "claim_idle_ms", with = "millis")]
    pub claim_idle: Duration,
    /// How often to look for entries of dead consumers.
    #[serde(rename = "claim_interval_ms", with = "millis")]
    pub claim_interval: Duration,
    /// First delay before reconnecting to Redis; doubles up to the maximum.
    #[serde(rename = "reconnect_backoff_ms", with = "millis")]
    pub reconnect_backoff: Duration,
    /// Upper bound of the reconnect delay.
    #[serde(rename = "reconnect_backoff_max_ms", with = "millis")]
    pub reconnect_backoff_max: Duration,
    /// Where a newly created group starts: `0` (the whole stream), `$` (only
    /// new entries) or an entry ID.
    pub group_start_id: String,
    /// Remove consumers of the group idle longer than this and holding no
    /// pending entries; unset: never.
    #[serde(rename = "delete_idle_consumers_ms", with = "millis::optional")]
    pub delete_idle_consumers: Option<Duration>,
}

impl Default for Settings {
    /// The settings of [`Defaults::BASE`].
    fn default() -> Self {
        Self::new(&Defaults::BASE)
    }
}

impl Settings {
    /// Every setting at its default, the project's `defaults` included.
    pub fn new(defaults: &Defaults) -> Self {
        Self {
            worker_name: defaults.worker_name.to_owned(),
            log_level: "info".to_owned(),
            log_format: LogFormat::Pretty,
            redis: RedisSettings::new(defaults),
            worker: WorkerSettings::default(),
            tracing: TraceSettings::default(),
            modules: Modules::new(defaults),
        }
    }
}

impl Default for RedisSettings {
    fn default() -> Self {
        Self::new(&Defaults::BASE)
    }
}

impl RedisSettings {
    /// The section's defaults, the project's included.
    pub fn new(defaults: &Defaults) -> Self {
        Self {
            url: RedisUrl(defaults.redis_url.to_owned()),
            cluster: false,
            password_file: None,
            stream: defaults.stream.to_owned(),
            consumer_group: defaults.consumer_group.to_owned(),
            consumer_name: Some(defaults.consumer_name)
                .filter(|name| !name.is_empty())
                .map(str::to_owned),
            block_timeout: Duration::from_millis(defaults.block_timeout_ms),
            tls_ca_file: None,
            tls_cert_file: None,
            tls_key_file: None,
        }
    }
}

impl Default for WorkerSettings {
    fn default() -> Self {
        Self {
            concurrency: 64,
            batch_size: 500,
            process_timeout: Duration::from_secs(30),
            shutdown_timeout: Duration::from_secs(30),
            dead_letter_stream: None,
            max_deliveries: 5,
            retry_backoff: Duration::from_secs(1),
            retry_backoff_max: Duration::from_secs(30),
            claim_idle: Duration::from_secs(60),
            claim_interval: Duration::from_secs(5),
            reconnect_backoff: Duration::from_millis(100),
            reconnect_backoff_max: Duration::from_secs(10),
            group_start_id: "0".to_owned(),
            delete_idle_consumers: None,
        }
    }
}

impl RedisSettings {
    /// A client for the URL, with the password from `password_file` when
    /// one is set (read here, once per client).
    pub fn client(&self) -> Result<redis::Client, Error> {
        Ok(redis::Client::open(
            self.connection_info(self.url.expose())?,
        )?)
    }

    /// How to reach `node` (the URL, or one seed of a cluster), with the
    /// password from `password_file` when one is set.
    pub fn connection_info(&self, node: &str) -> Result<redis::ConnectionInfo, Error> {
        let info = node.into_connection_info()?;
        Ok(match self.file_password()? {
            Some(password) => {
                let redis = info.redis_settings().clone().set_password(password);
                info.set_redis_settings(redis)
            }
            None => info,
        })
    }

    /// The password in `password_file`, without its line break.
    pub(crate) fn file_password(&self) -> Result<Option<String>, Error> {
        let Some(path) = &self.password_file else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(path).map_err(|source| Error::PasswordFile {
            path: path.clone(),
            source,
        })?;
        Ok(Some(text.trim_end_matches(['\n', '\r']).to_owned()))
    }

    /// Everything that must never be shown: the URL's passwords and the
    /// password file's contents.
    pub fn redactor(&self) -> Redactor {
        let from_file = self.file_password().ok().flatten();
        Redactor::new(
            secrets_in_url(self.url.expose())
                .into_iter()
                .chain(from_file),
        )
    }

    /// The URL of each node to connect to first: the URL itself, or on a
    /// cluster each of its comma-separated seeds (`redis://a:7000,b:7000`:
    /// a seed without a scheme takes the first one's).
    pub fn nodes(&self) -> Vec<String> {
        let url = self.url.expose();
        if !self.cluster {
            return vec![url.to_owned()];
        }
        let scheme = url.split_once("://").map_or("redis", |(scheme, _)| scheme);
        seeds(url)
            .into_iter()
            .map(str::trim)
            .filter(|seed| !seed.is_empty())
            .map(|seed| {
                if seed.contains("://") {
                    seed.to_owned()
                } else {
                    format!("{scheme}://{seed}")
                }
            })
            .collect()
    }

    /// The configured consumer name, or `<host>-<pid>-<random>`: the
    /// random part keeps it unique where host and PID are not (containers
    /// on the host's network, each its own PID 1). Each call makes a new
    /// one: call it once per process.
    pub fn consumer_name(&self) -> String {
        self.consumer_name.clone().unwrap_or_else(|| {
            let host = gethostname::gethostname();
            format!(
                "{}-{}-{:06x}",
                host.to_string_lossy(),
                std::process::id(),
                fastrand::u32(..0x100_0000)
            )
        })
    }
}

impl Settings {
    /// The dead-letter stream: the configured one or `<stream>:dlq`, which
    /// on a cluster keeps the stream's hash slot: a stream with a hash tag
    /// keeps it (`{tenant-7}:events:dlq`), one without becomes the tag
    /// (`{orders}:dlq`). Scripts and transactions that move entries between
    /// the two need one slot.
    pub fn dead_letter_stream(&self) -> String {
        let stream = &self.redis.stream;
        self.worker.dead_letter_stream.clone().unwrap_or_else(|| {
            if self.redis.cluster && hash_tag(stream).is_none() {
                ["{", stream, "}:dlq"].concat()
            } else {
                format!("{stream}:dlq")
            }
        })
    }
}

/// The part of `key` Redis Cluster hashes, if it has one: what lies between
/// the first `{` and the next `}`, when not empty.
pub fn hash_tag(key: &str) -> Option<&str> {
    let (_, after) = key.split_once('{')?;
    let (tag, _) = after.split_once('}')?;
    (!tag.is_empty()).then_some(tag)
}

/// A Redis URL whose password never reaches a log line or a printout:
/// `Debug`, `Display` and `Serialize` all show it redacted.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct RedisUrl(String);

impl RedisUrl {
    /// The URL as given, password included: only for connecting.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL with every password replaced by `***`; see
    /// [`redact_url`].
    pub fn redacted(&self) -> String {
        redact_url(&self.0)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        let url = RedisUrl::from("redis://user:s3cret@db:6379/0");
        assert_eq!(url.redacted(), "redis://user:***@db:6379/0");
        assert!(!format!("{url:?} {url}").contains("s3cret"));
        assert_eq!(RedisUrl::from("redis://:pw@h").redacted(), "redis://:***@h");
        assert_eq!(RedisUrl::from("redis://h:1").redacted(), "redis://h:1");
        let socket = RedisUrl::from("unix:///run/redis.sock?user=app&pass=s3cret");
        assert!(!format!("{socket:?} {socket}").contains("s3cret"));
        assert!(format!("{socket}").contains("user=app"));
    }

    #[test]
    fn the_default_consumer_name_is_host_pid_and_a_random_part() {
        let mut redis = Settings::default().redis;
        redis.consumer_name = None;
        let name = redis.consumer_name();
        let (prefix, random) = name.rsplit_once('-').unwrap();
        assert!(prefix.ends_with(&format!("-{}", std::process::id())));
        assert_eq!(random.len(), 6);
        // Two processes with one host name and one PID still differ.
        assert_ne!(redis.consumer_name(), name);
    }

    #[test]
    fn durations_are_milliseconds_outside() {
        let json = serde_json::to_value(WorkerSettings::default()).unwrap();
        assert_eq!(json["claim_idle_ms"], 60_000);
        assert!(json["delete_idle_consumers_ms"].is_null());
    }
}
