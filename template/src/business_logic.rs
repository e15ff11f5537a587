//! The business logic of {{worker_name}}: **the one file to edit.**
//!
//! [`{{worker_pascal}}Message`] says what a valid entry looks like,
//! [`BusinessLogic::process`] what happens to it, and [`LogicSettings`] what
//! the logic can be told at start (the `logic` section of the config file,
//! `LOGIC_*` environment variables). The runtime around it (reading,
//! acknowledging, retrying, dead-lettering, shutdown, loading settings) needs
//! no change when this file does.
//!
//! What the result means:
//! - `Ok(())`: the entry is acknowledged.
//! - `Err(ProcessError::retry(e))`: the entry stays pending and is delivered
//!   again after a backoff; after `max_deliveries` deliveries it goes to the
//!   dead-letter stream with the last error.
//! - `Err(ProcessError::permanent(e))`: straight to the dead-letter stream.
//!   An entry that fails validation takes this path.
//! - A panic counts as a retryable failure; the worker keeps running.

use chrono::{DateTime, Utc};
use redis_streams_runtime::settings::Refusal;
use redis_streams_runtime::validation::{self, ValidationError};
use redis_streams_runtime::{BoxError, Entry, Handler, Logic, ProcessError};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The message type under a short name.
pub type Message = {{worker_pascal}}Message;

/// One validated message of the stream.
///
/// Producers write it as `XADD <stream> * data '<json object>'`, optionally
/// with `user_id` and an RFC 3339 `timestamp` field.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct {{worker_pascal}}Message {
    /// The entry's original ID, unique within the stream: the same after
    /// a replay from the dead-letter stream, so deduplicate on it.
    pub id: String,
    /// The `timestamp` field if present, otherwise the time Redis added the entry.
    pub timestamp: DateTime<Utc>,
    /// The JSON object in the `data` field. Replace `Map` with your own
    /// `#[derive(Deserialize)]` type to validate its shape too.
    pub data: Map<String, Value>,
    /// The `user_id` field, or `user_id` inside `data`.
    pub user_id: Option<String>,
}

impl TryFrom<&Entry> for Message {
    type Error = ValidationError;

    fn try_from(entry: &Entry) -> Result<Self, Self::Error> {
        let data: Map<String, Value> = validation::json(entry, "data")?;
        let user_id = match validation::optional_text(entry, "user_id")? {
            Some(user_id) => Some(user_id),
            None => data
                .get("user_id")
                .and_then(Value::as_str)
                .map(str::to_owned),
        };
        Ok(Self {
            id: entry.original_id().to_owned(),
            timestamp: validation::timestamp(entry)?,
            data,
            user_id,
        })
    }
}

/// The logic's own settings: the `logic` section of the config file, and
/// environment variables named `LOGIC_<FIELD>` (`api_url` is
/// `LOGIC_API_URL`). Add fields here; they are loaded, layered and printed by
/// `config` like every other setting, and [`LogicSettings::validate`] checks
/// them at start.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogicSettings {
    /// An example: where processed messages would be sent; unset, they are
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

/// The handler the worker runs: validates each entry, then calls
/// [`BusinessLogic::process`].
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
    /// Does the work for one message. Replace the body with yours.
    pub async fn process(&self, message: &Message) -> Result<(), ProcessError> {
        // Per entry at debug: the worker logs a summary at info every 10 s.
        tracing::debug!(
            user_id = message.user_id.as_deref(),
            produced_at = %message.timestamp,
            api_url = self.settings.api_url.as_deref(),
            "message processed"
        );
        Ok(())
    }
}

impl Handler for BusinessLogic {
    async fn handle(&self, entry: &Entry) -> Result<(), ProcessError> {
        let message = Message::try_from(entry)?;
        self.process(&message).await
    }
}

#[cfg(test)]
mod tests {
    use redis_streams_runtime::Defaults;
    use redis_streams_runtime::settings::load_with;

    use super::*;

    #[test]
    fn a_well_formed_entry_becomes_a_message() {
        let entry = Entry::new(
            "1700000000000-1",
            [("data", r#"{"user_id":"123","action":"login"}"#)],
        );
        let message = Message::try_from(&entry).unwrap();
        assert_eq!(message.id, "1700000000000-1");
        assert_eq!(message.user_id.as_deref(), Some("123"));
        assert_eq!(message.data["action"], "login");
        assert_eq!(message.timestamp.timestamp_millis(), 1_700_000_000_000);
    }

    #[test]
    fn a_replayed_entry_keeps_its_original_id_and_time() {
        let entry = Entry::new(
            "1800000000000-0",
            [
                ("data", r#"{"a":1}"#),
                ("replay.original_id", "1700000000000-1"),
                ("replay.group", "g"),
            ],
        );
        let message = Message::try_from(&entry).unwrap();
        assert_eq!(message.id, "1700000000000-1");
        assert_eq!(message.timestamp.timestamp_millis(), 1_700_000_000_000);
    }

    #[test]
    fn a_user_id_field_wins_over_the_one_in_data() {
        let entry = Entry::new("1-0", [("data", r#"{"user_id":"a"}"#), ("user_id", "b")]);
        let message = Message::try_from(&entry).unwrap();
        assert_eq!(message.user_id.as_deref(), Some("b"));
    }

    #[test]
    fn data_must_be_a_json_object() {
        for data in ["[1,2]", "\"text\"", "{broken"] {
            let entry = Entry::new("1-0", [("data", data)]);
            assert!(Message::try_from(&entry).is_err(), "{data}");
        }
        let no_data = Entry::new("1-0", [("other", "x")]);
        assert!(Message::try_from(&no_data).is_err());
    }

    #[tokio::test]
    async fn invalid_entries_are_permanent_failures() {
        let error = BusinessLogic::default()
            .handle(&Entry::new("1-0", [("data", "42")]))
            .await
            .unwrap_err();
        assert!(!error.is_retryable());
        assert!(error.to_string().contains("`data`"), "{error}");
    }

    #[tokio::test]
    async fn valid_entries_are_processed() {
        let entry = Entry::new("1-0", [("data", r#"{"test":"message"}"#)]);
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
