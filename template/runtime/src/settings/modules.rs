//! The sections of the optional modules, one per feature: settings types
//! only, so that the settings never import the modules they configure.

#[cfg(feature = "metrics")]
use std::net::SocketAddr;
#[cfg(not(feature = "metrics"))]
use std::path::PathBuf;
#[cfg(not(feature = "metrics"))]
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Defaults;
use crate::section::Refusal;
#[cfg(not(feature = "metrics"))]
use crate::section::millis;

/// The sections of the optional modules built in (the crate's features),
/// each a top-level section of the config file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Modules {
    /// The Prometheus and health endpoints.
    #[cfg(feature = "metrics")]
    pub metrics: MetricsSettings,
    /// The heartbeat file that `healthcheck` reads.
    #[cfg(not(feature = "metrics"))]
    pub heartbeat: HeartbeatSettings,
}

impl Default for Modules {
    /// The modules' sections of [`Defaults::BASE`].
    fn default() -> Self {
        Self::new(&Defaults::BASE)
    }
}

impl Modules {
    /// Each module's defaults, from the project's.
    pub fn new(defaults: &Defaults) -> Self {
        Self {
            #[cfg(feature = "metrics")]
            metrics: MetricsSettings::new(defaults.metrics_addr),
            #[cfg(not(feature = "metrics"))]
            heartbeat: HeartbeatSettings::new(defaults.heartbeat_file),
        }
    }

    /// Checks every module's section; the error names the section.
    pub fn validate(&self) -> Result<(), (&'static str, Refusal)> {
        #[cfg(feature = "metrics")]
        self.metrics
            .validate()
            .map_err(|refusal| ("metrics", refusal))?;
        #[cfg(not(feature = "metrics"))]
        self.heartbeat
            .validate()
            .map_err(|refusal| ("heartbeat", refusal))?;
        Ok(())
    }
}

#[cfg(feature = "metrics")]
/// Where the endpoints listen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSettings {
    /// `host:port`; port 0 picks a free port (logged at start).
    pub addr: String,
}

#[cfg(feature = "metrics")]
impl MetricsSettings {
    /// Listening on `addr`.
    pub fn new(addr: &str) -> Self {
        Self {
            addr: addr.to_owned(),
        }
    }

    /// Checks that `addr` is a socket address.
    pub fn validate(&self) -> Result<(), Refusal> {
        self.addr
            .parse::<SocketAddr>()
            .map(|_| ())
            .map_err(|error| {
                Refusal::new(
                    "addr",
                    format!("`{}` is not host:port ({error})", self.addr),
                )
            })
    }
}

#[cfg(not(feature = "metrics"))]
/// Where the heartbeat goes and how old it may get.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeartbeatSettings {
    /// The file the worker touches. Processes on one host need one each.
    pub file: PathBuf,
    /// How long, beyond the block time, the heartbeat may stay silent before
    /// `healthcheck` calls the worker unhealthy. Keep it above the longest
    /// batch and `reconnect_backoff_max_ms`.
    #[serde(rename = "max_age_ms", with = "millis")]
    pub max_age: Duration,
}

#[cfg(not(feature = "metrics"))]
impl HeartbeatSettings {
    /// Beating into `file`.
    pub fn new(file: &str) -> Self {
        Self {
            file: PathBuf::from(file),
            max_age: Duration::from_secs(30),
        }
    }

    /// How old the heartbeat may be: `max_age_ms` beyond `block`, the time
    /// an idle worker waits in one read before it goes round again.
    pub fn allowed_age(&self, block: Duration) -> Duration {
        self.max_age + block
    }

    /// Checks that the file is named and the age is not zero.
    pub fn validate(&self) -> Result<(), Refusal> {
        if self.file.as_os_str().is_empty() {
            return Err(Refusal::new("file", "must not be empty"));
        }
        if self.max_age.is_zero() {
            return Err(Refusal::new("max_age_ms", "must be at least 1 millisecond"));
        }
        Ok(())
    }
}
