//! Turning a raw [`Entry`] into a typed message with serde.
//!
//! Producers follow the convention of the original template:
//!
//! ```text
//! XADD <stream> * data '{"user_id":"123","action":"login"}' [user_id 123] [timestamp 2024-05-01T12:00:00Z]
//! ```
//!
//! Each helper reads one field and says exactly what is wrong with it. A
//! [`ValidationError`] converts into a permanent [`ProcessError`], so `?` in
//! the business logic sends an invalid entry to the dead-letter stream.

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;

use crate::entry::Entry;
use crate::handler::ProcessError;

/// Why an entry is not a valid message.
#[derive(Debug, thiserror::Error)]
pub enum ValidationError {
    /// A required field is absent.
    #[error("missing field `{0}`")]
    MissingField(String),
    /// A field is not UTF-8 text.
    #[error("field `{0}` is not UTF-8")]
    NotUtf8(String),
    /// A field is not JSON of the expected shape.
    #[error("field `{field}` is not valid: {source}")]
    Json {
        /// The field.
        field: String,
        /// What serde found wrong.
        source: serde_json::Error,
    },
    /// The `timestamp` field is not an RFC 3339 time.
    #[error("field `timestamp` is not an RFC 3339 time: {0}")]
    Timestamp(#[source] chrono::ParseError),
    /// The entry ID does not carry a usable time.
    #[error("entry ID `{0}` carries no timestamp")]
    IdTime(String),
}

impl From<ValidationError> for ProcessError {
    fn from(error: ValidationError) -> Self {
        ProcessError::permanent(error)
    }
}

/// The JSON document in `field`, deserialized into `T`.
pub fn json<T: DeserializeOwned>(entry: &Entry, field: &str) -> Result<T, ValidationError> {
    let bytes = entry
        .get(field)
        .ok_or_else(|| ValidationError::MissingField(field.to_owned()))?;
    serde_json::from_slice(bytes).map_err(|source| ValidationError::Json {
        field: field.to_owned(),
        source,
    })
}

/// The text in `field`, if the entry has that field.
pub fn optional_text(entry: &Entry, field: &str) -> Result<Option<String>, ValidationError> {
    match entry.text(field) {
        None => Ok(None),
        Some(Ok(text)) => Ok(Some(text.to_owned())),
        Some(Err(_)) => Err(ValidationError::NotUtf8(field.to_owned())),
    }
}

/// When the entry was produced: its RFC 3339 `timestamp` field if present,
/// otherwise the millisecond part of its original ID (the time Redis added
/// it, before any replay).
pub fn timestamp(entry: &Entry) -> Result<DateTime<Utc>, ValidationError> {
    match entry.text("timestamp") {
        Some(Ok(text)) => DateTime::parse_from_rfc3339(text)
            .map(|time| time.with_timezone(&Utc))
            .map_err(ValidationError::Timestamp),
        Some(Err(_)) => Err(ValidationError::NotUtf8("timestamp".to_owned())),
        None => entry
            .millis()
            .and_then(|ms| i64::try_from(ms).ok())
            .and_then(DateTime::from_timestamp_millis)
            .ok_or_else(|| ValidationError::IdTime(entry.id.clone())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_json_text_and_time() {
        let entry = Entry::new(
            "1700000000123-0",
            [("data", r#"{"a":1}"#), ("user_id", "42")],
        );
        let data: serde_json::Value = json(&entry, "data").unwrap();
        assert_eq!(data["a"], 1);
        assert_eq!(
            optional_text(&entry, "user_id").unwrap().as_deref(),
            Some("42")
        );
        assert_eq!(optional_text(&entry, "other").unwrap(), None);
        assert_eq!(
            timestamp(&entry).unwrap().timestamp_millis(),
            1_700_000_000_123
        );
    }

    #[test]
    fn a_timestamp_field_wins_over_the_id() {
        let entry = Entry::new("1-0", [("timestamp", "2024-05-01T12:00:00+02:00")]);
        assert_eq!(
            timestamp(&entry).unwrap().to_rfc3339(),
            "2024-05-01T10:00:00+00:00"
        );
    }

    #[test]
    fn errors_name_the_field() {
        let entry = Entry::new("1-0", [("data", "{not json"), ("timestamp", "yesterday")]);
        let missing = json::<serde_json::Value>(&entry, "payload").unwrap_err();
        assert_eq!(missing.to_string(), "missing field `payload`");
        let bad = json::<serde_json::Value>(&entry, "data").unwrap_err();
        assert!(
            bad.to_string().starts_with("field `data` is not valid"),
            "{bad}"
        );
        assert!(
            timestamp(&entry)
                .unwrap_err()
                .to_string()
                .contains("RFC 3339")
        );
        let binary = Entry::new("1-0", [(b"user_id".to_vec(), vec![0xff])]);
        assert!(matches!(
            optional_text(&binary, "user_id"),
            Err(ValidationError::NotUtf8(_))
        ));
    }

    #[test]
    fn validation_failures_are_permanent() {
        let error: ProcessError = ValidationError::MissingField("data".into()).into();
        assert!(!error.is_retryable());
    }
}
