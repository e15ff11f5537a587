//! How a dead letter goes back onto the stream: exactly once, to the group
//! that gave up on it, keeping what the producer wrote.
//!
//! A replayed entry is a new entry of the stream (Redis gives it a new ID)
//! with the producer's fields unchanged, followed by:
//! - `replay.original_id`: the ID the producer's entry first had, kept over
//!   repeated replays; [`Entry::original_id`] returns it, and
//!   [`Entry::millis`] takes the production time from it, so deduplicating
//!   on the ID and timestamps from the ID still work;
//! - `replay.group`: the group that dead-lettered it. Every group of the
//!   stream reads the new entry, but the workers of other groups
//!   acknowledge it without processing it ([`is_for_another_group`]), so a
//!   replay for one group is never processed again by the others;
//! - `replay.dead_letter_id`: where it came from, for tracing.
//!
//! The move itself is one Lua script per batch (`replay.lua`): it
//! reads each dead letter, adds it to the stream and deletes it, atomically,
//! and skips a dead letter already gone. However many replays run at once,
//! each dead letter goes back once. The script touches only the stream and
//! the dead-letter stream, so on a Redis Cluster it needs both in one hash
//! slot (`{orders}` and `{orders}:dlq`).

use redis::aio::ConnectionLike;

use crate::entry::Entry;
use crate::error::Error;

pub use crate::entry::replay_fields::{DEAD_LETTER_ID, FIELD_PREFIX, GROUP, ORIGINAL_ID};

/// See the module documentation.
const MOVE_BACK: &str = include_str!("replay.lua");

/// Dead letters moved per script call: a batch runs atomically, so this
/// bounds how long Redis is busy with one call.
pub const BATCH: usize = 100;

/// Whether `entry` is a replay meant for a group other than `group`: its
/// workers acknowledge it without processing.
pub fn is_for_another_group(entry: &Entry, group: &str) -> bool {
    entry
        .get(GROUP)
        .is_some_and(|target| target != group.as_bytes())
}

/// What became of one dead letter in [`move_back`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Moved {
    /// Back on the stream under this new ID.
    To(String),
    /// The dead letter no longer existed: another replay, or a purge, took
    /// it first.
    Gone,
    /// Kept: it came from this other stream (several streams share the
    /// dead-letter stream), and goes back only onto that one.
    OtherStream(String),
    /// Kept: no group of the stream would process it; the group it names
    /// (empty: it names none, and the stream has no group) does not exist.
    NoGroup(String),
}

/// Moves the dead letters with these IDs from `dead_letter_stream` back to
/// `stream`, each atomically and at most once, and only those that came
/// from `stream` and that a group of it would process (see `replay.lua`).
pub async fn move_back(
    connection: &mut impl ConnectionLike,
    stream: &str,
    dead_letter_stream: &str,
    ids: &[String],
) -> Result<Vec<Moved>, Error> {
    let script = redis::Script::new(MOVE_BACK);
    let mut moved = Vec::with_capacity(ids.len());
    for batch in ids.chunks(BATCH) {
        let mut invocation = script.prepare_invoke();
        invocation.key(stream).key(dead_letter_stream).arg(batch);
        let outcomes: Vec<(String, String)> = invocation.invoke_async(connection).await?;
        if outcomes.len() != batch.len() {
            return Err(Error::Reply {
                command: "EVALSHA",
                detail: format!(
                    "the replay script answered {} IDs for {}",
                    outcomes.len(),
                    batch.len()
                ),
            });
        }
        for (kind, value) in outcomes {
            moved.push(match kind.as_str() {
                "moved" => Moved::To(value),
                "gone" => Moved::Gone,
                "stream" => Moved::OtherStream(value),
                "group" => Moved::NoGroup(value),
                other => {
                    return Err(Error::Reply {
                        command: "EVALSHA",
                        detail: format!("the replay script answered `{other}`"),
                    });
                }
            });
        }
    }
    Ok(moved)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_replays_for_other_groups_are_skipped() {
        let plain = Entry::new("1-0", [("data", "{}")]);
        let mine = Entry::new("2-0", [("data", "{}"), (GROUP, "a")]);
        assert!(!is_for_another_group(&plain, "a"));
        assert!(!is_for_another_group(&mine, "a"));
        assert!(is_for_another_group(&mine, "b"));
    }
}
