//! What every settings section shares, whichever module owns it: the
//! [`Refusal`] its `validate` returns, and durations written as
//! milliseconds. The lowest module of the settings: it imports none of the
//! crate's.

/// A value of a section that breaks a rule, as a section's `validate`
/// reports it; loading adds the section and where the value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The key within its section.
    pub key: &'static str,
    /// The rule it breaks.
    pub reason: String,
}

impl Refusal {
    /// `key` breaks the rule `reason`.
    pub fn new(key: &'static str, reason: impl Into<String>) -> Self {
        Self {
            key,
            reason: reason.into(),
        }
    }
}

/// Durations written as whole milliseconds, for `#[serde(with = "millis")]`.
pub mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes `duration` as milliseconds.
    pub fn serialize<S: Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(u64::try_from(duration.as_millis()).unwrap_or(u64::MAX))
    }

    /// Reads milliseconds into a duration.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        u64::deserialize(deserializer).map(Duration::from_millis)
    }

    /// The same for an optional duration; unset stays `None`.
    pub mod optional {
        use std::time::Duration;

        use serde::{Deserialize, Deserializer, Serializer};

        /// Writes `duration` as milliseconds, or nothing.
        pub fn serialize<S: Serializer>(
            duration: &Option<Duration>,
            serializer: S,
        ) -> Result<S::Ok, S::Error> {
            match duration {
                Some(duration) => super::serialize(duration, serializer),
                None => serializer.serialize_none(),
            }
        }

        /// Reads optional milliseconds.
        pub fn deserialize<'de, D: Deserializer<'de>>(
            deserializer: D,
        ) -> Result<Option<Duration>, D::Error> {
            Option::<u64>::deserialize(deserializer).map(|ms| ms.map(Duration::from_millis))
        }
    }
}
