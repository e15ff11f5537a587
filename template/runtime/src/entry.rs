//! A stream entry exactly as Redis stores it: its ID and its fields, as bytes.

use std::str::Utf8Error;

/// The fields a replay from the dead-letter stream adds after the
/// producer's (see the `replay` module, which re-exports them).
pub mod replay_fields {
    /// Prefix of the fields a replay adds; a producer should not use it.
    pub const FIELD_PREFIX: &str = "replay.";
    /// The ID the producer's entry first had.
    pub const ORIGINAL_ID: &str = "replay.original_id";
    /// The only group that processes the replayed entry.
    pub const GROUP: &str = "replay.group";
    /// The dead letter it was replayed from.
    pub const DEAD_LETTER_ID: &str = "replay.dead_letter_id";
}

/// One entry of the stream.
///
/// Field names and values are kept as bytes, in the order Redis returned them,
/// so an entry that is not UTF-8 (or not JSON) can still be handled, and a
/// dead letter carries the original fields unchanged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The entry ID, `<milliseconds>-<sequence>`.
    pub id: String,
    /// Field-value pairs in stream order.
    pub fields: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Entry {
    /// An entry from its ID and fields.
    pub fn new<N, V>(id: impl Into<String>, fields: impl IntoIterator<Item = (N, V)>) -> Self
    where
        N: Into<Vec<u8>>,
        V: Into<Vec<u8>>,
    {
        Self {
            id: id.into(),
            fields: fields
                .into_iter()
                .map(|(name, value)| (name.into(), value.into()))
                .collect(),
        }
    }

    /// The value of the first field called `name`, as bytes.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.fields
            .iter()
            .find(|(field, _)| field == name.as_bytes())
            .map(|(_, value)| value.as_slice())
    }

    /// The value of the first field called `name`, as UTF-8 text.
    pub fn text(&self, name: &str) -> Option<Result<&str, Utf8Error>> {
        self.get(name).map(std::str::from_utf8)
    }

    /// The ID the producer's entry first had: `id`, except for an entry
    /// replayed from the dead-letter stream, which Redis gave a new ID and
    /// which carries its first one in `replay.original_id` (see
    /// [`crate::replay`]). Deduplicate on this one.
    pub fn original_id(&self) -> &str {
        match self.text(replay_fields::ORIGINAL_ID) {
            Some(Ok(original)) if !original.is_empty() => original,
            _ => &self.id,
        }
    }

    /// The millisecond timestamp Redis put in the [original
    /// ID](Self::original_id) (`1700000000000-0`): when the producer added
    /// the entry, also after a replay.
    pub fn millis(&self) -> Option<u64> {
        self.original_id()
            .split_once('-')
            .and_then(|(ms, _)| ms.parse().ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_found_by_name_and_kept_as_bytes() {
        let entry = Entry::new(
            "1700000000123-4",
            [("data", b"{}".to_vec()), ("blob", vec![0xff, 0x00])],
        );
        assert_eq!(entry.get("data"), Some(&b"{}"[..]));
        assert_eq!(entry.get("blob"), Some(&[0xff, 0x00][..]));
        assert!(entry.text("blob").is_some_and(|text| text.is_err()));
        assert_eq!(entry.get("missing"), None);
        assert_eq!(entry.millis(), Some(1_700_000_000_123));
    }

    #[test]
    fn a_replayed_entry_keeps_its_original_id_and_time() {
        let entry = Entry::new(
            "1800000000000-0",
            [
                ("data", "{}"),
                (replay_fields::ORIGINAL_ID, "1700000000123-4"),
            ],
        );
        assert_eq!(entry.original_id(), "1700000000123-4");
        assert_eq!(entry.millis(), Some(1_700_000_000_123));
        let plain = Entry::new("1700000000000-0", [("data", "{}")]);
        assert_eq!(plain.original_id(), "1700000000000-0");
    }

    #[test]
    fn an_id_without_a_timestamp_has_no_millis() {
        assert_eq!(
            Entry::new("garbage", Vec::<(String, String)>::new()).millis(),
            None
        );
    }
}
