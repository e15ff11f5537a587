//! The layout of a dead letter: an entry that will not be processed, kept
//! with everything needed to understand and replay it.
//!
//! A dead letter is an entry of the dead-letter stream whose fields are the
//! `dlq.*` metadata below followed by the original fields, unchanged; with
//! tracing on, an entry without a `traceparent` field gets the failed
//! delivery's after them (see [`crate::otel`]), so that a replay joins
//! that trace.

use crate::entry::Entry;
use crate::replay;

/// Prefix of the metadata fields; original fields follow them unchanged.
pub const FIELD_PREFIX: &str = "dlq.";
/// The ID of the delivery that failed, in the source stream; for a
/// replayed entry the producer's first ID is its `replay.original_id`.
pub const ORIGINAL_ID: &str = "dlq.original_id";
/// The source stream.
pub const STREAM: &str = "dlq.stream";
/// The consumer group that gave up on it.
pub const GROUP: &str = "dlq.group";
/// The consumer that gave up on it.
pub const CONSUMER: &str = "dlq.consumer";
/// How many times it was delivered.
pub const DELIVERIES: &str = "dlq.deliveries";
/// The last error.
pub const REASON: &str = "dlq.reason";
/// When it was dead-lettered, in milliseconds since the Unix epoch.
pub const FAILED_AT_MS: &str = "dlq.failed_at_ms";

/// An entry on its way to the dead-letter stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// The entry as it was read.
    pub entry: Entry,
    /// The last error.
    pub reason: String,
    /// Deliveries so far, as Redis counted them.
    pub deliveries: u64,
    /// When the worker gave up, in milliseconds since the Unix epoch.
    pub failed_at_ms: u64,
}

impl DeadLetter {
    /// A dead letter for `entry`, failed now.
    pub fn new(entry: Entry, reason: impl Into<String>, deliveries: u64) -> Self {
        let failed_at_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| {
                u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
            });
        Self {
            entry,
            reason: reason.into(),
            deliveries,
            failed_at_ms,
        }
    }

    /// The fields of the dead-letter entry: metadata, then the original fields.
    pub fn fields(&self, stream: &str, group: &str, consumer: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
        let metadata = [
            (ORIGINAL_ID, self.entry.id.clone()),
            (STREAM, stream.to_owned()),
            (GROUP, group.to_owned()),
            (CONSUMER, consumer.to_owned()),
            (DELIVERIES, self.deliveries.to_string()),
            (REASON, self.reason.clone()),
            (FAILED_AT_MS, self.failed_at_ms.to_string()),
        ];
        metadata
            .into_iter()
            .map(|(name, value)| (name.as_bytes().to_vec(), value.into_bytes()))
            .chain(self.entry.fields.iter().cloned())
            .collect()
    }
}

/// The producer's entry inside a dead-letter entry: the ID it first had
/// (before any replay) and the fields the producer wrote, without the
/// `dlq.*` and `replay.*` metadata.
pub fn original(dead_letter: &Entry) -> Entry {
    let text = |name| dead_letter.text(name).and_then(Result::ok);
    let id = text(replay::ORIGINAL_ID)
        .or_else(|| text(ORIGINAL_ID))
        .unwrap_or_default()
        .to_owned();
    let fields = dead_letter
        .fields
        .iter()
        .filter(|(name, _)| {
            !name.starts_with(FIELD_PREFIX.as_bytes())
                && !name.starts_with(replay::FIELD_PREFIX.as_bytes())
        })
        .cloned();
    Entry::new(id, fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_comes_first_and_the_original_survives_the_round_trip() {
        let entry = Entry::new("5-1", [("data", "{}"), ("user_id", "7")]);
        let letter = DeadLetter::new(entry.clone(), "boom", 3);
        let fields = letter.fields("s", "g", "c");
        assert_eq!(fields[0], (b"dlq.original_id".to_vec(), b"5-1".to_vec()));
        let stored = Entry::new("99-0", fields);
        assert_eq!(stored.text(REASON).unwrap().unwrap(), "boom");
        assert_eq!(stored.text(DELIVERIES).unwrap().unwrap(), "3");
        assert_eq!(original(&stored), entry);
    }

    #[test]
    fn a_replayed_entry_that_fails_again_keeps_its_first_id() {
        let replayed = Entry::new(
            "9-0",
            [
                ("data", "{}"),
                (replay::ORIGINAL_ID, "5-1"),
                (replay::GROUP, "g"),
            ],
        );
        let letter = DeadLetter::new(replayed, "again", 1);
        let stored = Entry::new("99-1", letter.fields("s", "g", "c"));
        assert_eq!(original(&stored), Entry::new("5-1", [("data", "{}")]));
    }
}
