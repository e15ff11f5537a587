//! The business logic of {{worker_name}}: **the one file to edit.**
//!
//! [`BusinessLogic::process`] receives each entry as Redis stores it: its ID
//! and its fields as bytes; [`LogicSettings`] is what the logic can be told
//! at start (the `logic` section of the config file, `LOGIC_*` environment
//! variables). The runtime around it (reading, acknowledging, retrying,
//! dead-lettering, shutdown, loading settings) needs no change when this file
//! does.
//!
//! An entry replayed from the dead-letter stream has a new ID and `replay.*`
//! fields after the producer's: deduplicate on [`Entry::original_id`], not
//! on `id`.
//!
//! What the result means:
//! - `Ok(())`: the entry is acknowledged.
//! - `Err(ProcessError::retry(e))`: the entry stays pending and is delivered
//!   again after a backoff; after `max_deliveries` deliveries it goes to the
//!   dead-letter stream with the last error.
//! - `Err(ProcessError::permanent(e))`: straight to the dead-letter stream.
//! - A panic counts as a retryable failure; the worker keeps running.

use redis_streams_runtime::settings::Refusal;
use redis_streams_runtime::{BoxError, Entry, Handler, Logic, ProcessError};
use serde::{Deserialize, Serialize};

/// The logic's own settings: the `logic` section of the config file, and
/// environment variables named `LOGIC_<FIELD>` (`api_url` is
/// `LOGIC_API_URL`). Add fields here; they are loaded, layered and printed by
/// `config` like every other setting, and [`LogicSettings::validate`] checks
/// them at start.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogicSettings {
    /// An example: where processed entries would be sent; unset, they are
    /// only logged.
    pub api_url: Option<String>,
}

impl redis_streams_runtime::settings::LogicSettings for LogicSettings {
    /// The rules of these settings, checked once at start.
    fn validate(&self) -> Result<(), Refusal> {
        match &self.api_url {
            Some(url) if !(url.starts_with("http://") || url.starts_with("https://")) => Err(
                Refusal::new("api_url", "must start with http:// or https://"),
            ),
            _ => Ok(()),
        }
    }
}

/// The handler the worker runs: calls [`BusinessLogic::process`].
///
/// Shared state of your logic (an HTTP client, a database pool) goes into
/// this struct, built once at start by [`BusinessLogic::build`].
#[derive(Debug, Default)]
pub struct BusinessLogic {
    settings: LogicSettings,
}

impl Logic for BusinessLogic {
    type Settings = LogicSettings;

    /// Builds the logic's state from its settings; an error stops the start.
    async fn build(settings: &LogicSettings) -> Result<Self, BoxError> {
        Ok(Self {
            settings: settings.clone(),
        })
    }
}

impl BusinessLogic {
    /// Does the work for one entry. Replace the body with yours.
    pub async fn process(&self, entry: &Entry) -> Result<(), ProcessError> {
        // Per entry at debug: the worker logs a summary at info every 10 s.
        tracing::debug!(
            fields = entry.fields.len(),
            api_url = self.settings.api_url.as_deref(),
            "entry processed"
        );
        Ok(())
    }
}

impl Handler for BusinessLogic {
    async fn handle(&self, entry: &Entry) -> Result<(), ProcessError> {
        self.process(entry).await
    }
}

#[cfg(test)]
mod tests {
    use redis_streams_runtime::Defaults;
    use redis_streams_runtime::settings::load_with;

    use super::*;

    #[tokio::test]
    async fn any_entry_is_processed() {
        let entry = Entry::new("1-0", [(b"data".to_vec(), vec![0xff, 0xfe])]);
        BusinessLogic::default().handle(&entry).await.unwrap();
    }

    #[test]
    fn the_logic_settings_load_and_validate_like_the_others() {
        let env = |value: &str| vec![("LOGIC_API_URL".to_owned(), value.to_owned())];
        let load = |env| load_with::<LogicSettings>(&Defaults::BASE, None, env, vec![]);
        let loaded = load(env("https://api.example.com")).unwrap();
        assert_eq!(
            loaded.logic.api_url.as_deref(),
            Some("https://api.example.com")
        );
        let error = load(env("ftp://x")).unwrap_err().to_string();
        assert_eq!(
            error,
            "invalid `logic.api_url` from environment variable LOGIC_API_URL: \
             must start with http:// or https://"
        );
    }
}
