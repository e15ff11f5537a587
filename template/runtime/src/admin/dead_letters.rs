//! `dlq`: lists dead letters with their group and reason, moves them back
//! onto the stream (each exactly once, to its own group: see
//! [`crate::replay`]) or deletes them all once confirmed.

use std::fmt;
use std::io::IsTerminal;

use serde::Serialize;

use super::{Admin, AdminError, PAGE};
use crate::consumer::reply::parse_range;
use crate::dead_letter::{self, DELIVERIES, FAILED_AT_MS, GROUP, REASON, STREAM};
use crate::entry::Entry;
use crate::replay::{self, Moved};

/// A dead letter as `dlq list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeadLetterView {
    /// Its ID in the dead-letter stream (what `dlq replay` takes).
    pub id: String,
    /// The ID the producer's entry first had in the source stream (before
    /// any replay).
    pub original_id: String,
    /// The consumer group that gave up on it; a replay goes to it alone.
    pub group: String,
    /// Deliveries before it was given up on.
    pub deliveries: String,
    /// The last error.
    pub reason: String,
    /// When, in milliseconds since the Unix epoch.
    pub failed_at_ms: String,
    /// The original fields, as text where they are UTF-8.
    pub fields: Vec<(String, String)>,
}

/// What `dlq list` prints: each dead letter with its fields, or JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetterList {
    /// The dead letters, oldest first.
    pub letters: Vec<DeadLetterView>,
    /// Print JSON instead of text.
    pub json: bool,
}

impl fmt::Display for DeadLetterList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.json {
            let json = serde_json::to_string_pretty(&self.letters).map_err(|_| fmt::Error)?;
            return writeln!(f, "{json}");
        }
        for letter in &self.letters {
            writeln!(
                f,
                "{}  original {}  group {}  deliveries {}  reason: {}",
                letter.id, letter.original_id, letter.group, letter.deliveries, letter.reason
            )?;
            for (name, value) in &letter.fields {
                writeln!(f, "    {name} = {value}")?;
            }
        }
        Ok(())
    }
}

/// What `dlq replay` did, or with `--dry-run` would do, to one dead letter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReplayedLetter {
    /// The dead letter's ID.
    pub dead_letter_id: String,
    /// The ID the producer's entry first had.
    pub original_id: String,
    /// The only group that processes the replayed entry.
    pub group: String,
    /// Its new ID in the stream; `None` in a dry run, when another replay
    /// (or a purge) took the dead letter first, or when it was kept.
    pub new_id: Option<String>,
    /// Why it stayed in the dead-letter stream, untouched, if it did: it
    /// came from another stream, or no group of this one would process it.
    pub kept: Option<String>,
}

/// What `dlq replay` prints: each dead letter, then the count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replayed {
    /// The dead letters it took up.
    pub letters: Vec<ReplayedLetter>,
    /// The stream they went back to.
    pub stream: String,
    /// Whether this was only a dry run.
    pub dry_run: bool,
}

impl fmt::Display for Replayed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for letter in &self.letters {
            let outcome = match (&letter.kept, &letter.new_id, self.dry_run) {
                (Some(why), _, _) => format!("kept: {why}"),
                (None, _, true) => "would move".to_owned(),
                (None, Some(new_id), false) => format!("moved to {new_id}"),
                (None, None, false) => "already taken by another replay".to_owned(),
            };
            writeln!(
                f,
                "{}  original {}  group {}: {outcome}",
                letter.dead_letter_id, letter.original_id, letter.group
            )?;
        }
        if self.dry_run {
            writeln!(
                f,
                "dry run: would move {} dead letters back onto {}, each for its own group only",
                self.letters.len(),
                self.stream
            )
        } else {
            let moved = self.letters.iter().filter(|letter| letter.new_id.is_some());
            writeln!(
                f,
                "moved {} dead letters back onto {}, each for its own group only",
                moved.count(),
                self.stream
            )?;
            match self.kept() {
                0 => Ok(()),
                kept => writeln!(
                    f,
                    "kept {kept} dead letters that no group of {} would process",
                    self.stream
                ),
            }
        }
    }
}

impl Replayed {
    /// How many dead letters stayed where they were, refused.
    pub fn kept(&self) -> usize {
        self.letters
            .iter()
            .filter(|letter| letter.kept.is_some())
            .count()
    }
}

/// What `dlq purge` prints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Purged {
    /// Dead letters deleted.
    pub count: u64,
    /// From this stream.
    pub dead_letter_stream: String,
}

impl fmt::Display for Purged {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "deleted {} dead letters from {}",
            self.count, self.dead_letter_stream
        )
    }
}

impl Admin {
    /// `dlq list`: up to `count` dead letters.
    pub async fn list_dead_letters(
        &mut self,
        count: usize,
        json: bool,
    ) -> Result<DeadLetterList, AdminError> {
        Ok(DeadLetterList {
            letters: self.dead_letters(count).await?,
            json,
        })
    }

    /// `dlq replay`: the given dead letters (none: the configured group's)
    /// back onto the stream, each to its own group; with `dry_run` nothing
    /// moves.
    pub async fn replay_dead_letters(
        &mut self,
        ids: &[String],
        dry_run: bool,
    ) -> Result<Replayed, AdminError> {
        Ok(Replayed {
            letters: self.replay(ids, dry_run).await?,
            stream: self.stream.clone(),
            dry_run,
        })
    }

    /// `dlq purge`: deletes every dead letter once the operator confirmed,
    /// with `--yes` or by answering on the terminal. Without a terminal to
    /// ask on it refuses at once rather than wait for an answer.
    pub async fn purge_dead_letters(&mut self, confirmed: bool) -> Result<Purged, AdminError> {
        if !confirmed {
            if !std::io::stdin().is_terminal() {
                return Err(AdminError::NoTerminalToConfirm(
                    self.dead_letter_stream.clone(),
                ));
            }
            let question = format!("Delete every dead letter in {}?", self.dead_letter_stream);
            if !confirm(&question)? {
                return Err(AdminError::NotConfirmed);
            }
        }
        Ok(Purged {
            count: self.purge().await?,
            dead_letter_stream: self.dead_letter_stream.clone(),
        })
    }

    /// Up to `count` dead letters, oldest first.
    pub async fn dead_letters(&mut self, count: usize) -> Result<Vec<DeadLetterView>, AdminError> {
        let reply: redis::Value = redis::cmd("XRANGE")
            .arg(&self.dead_letter_stream)
            .arg("-")
            .arg("+")
            .arg("COUNT")
            .arg(count)
            .query_async(&mut self.connection)
            .await?;
        Ok(parse_range(reply)?.iter().map(view).collect())
    }

    /// Moves dead letters back onto the stream, each to the group that gave
    /// up on it (see [`crate::replay`]): those with the given dead-letter
    /// IDs, or with none every dead letter of the configured group. Each
    /// moves atomically and at most once, however many replays run at once;
    /// one that another replay took first comes back with no new ID. With
    /// `dry_run` nothing moves.
    pub async fn replay(
        &mut self,
        ids: &[String],
        dry_run: bool,
    ) -> Result<Vec<ReplayedLetter>, AdminError> {
        let letters = if ids.is_empty() {
            // The configured group's letters from this stream (or from
            // before letters named their stream).
            let mut letters = self.all_dead_letters().await?;
            letters.retain(|letter| {
                letter.get(GROUP) == Some(self.group.as_bytes())
                    && letter
                        .get(STREAM)
                        .is_none_or(|stream| stream == self.stream.as_bytes())
            });
            letters
        } else {
            let mut letters = Vec::new();
            for id in ids {
                let reply: redis::Value = redis::cmd("XRANGE")
                    .arg(&self.dead_letter_stream)
                    .arg(id)
                    .arg(id)
                    .query_async(&mut self.connection)
                    .await?;
                let found = parse_range(reply)?;
                letters.push(
                    found
                        .into_iter()
                        .next()
                        .ok_or_else(|| AdminError::NoSuchDeadLetter(id.clone()))?,
                );
            }
            letters
        };
        let mut replayed: Vec<ReplayedLetter> = letters
            .iter()
            .map(|letter| {
                let view = view(letter);
                ReplayedLetter {
                    dead_letter_id: view.id,
                    original_id: view.original_id,
                    group: view.group,
                    new_id: None,
                    kept: None,
                }
            })
            .collect();
        if dry_run {
            let groups = self.group_names().await?;
            for (letter, entry) in replayed.iter_mut().zip(&letters) {
                letter.kept = self.would_keep(entry, &groups);
            }
            return Ok(replayed);
        }
        let ids: Vec<String> = letters.iter().map(|letter| letter.id.clone()).collect();
        let outcomes = replay::move_back(
            &mut self.connection,
            &self.stream,
            &self.dead_letter_stream,
            &ids,
        )
        .await?;
        for (letter, outcome) in replayed.iter_mut().zip(outcomes) {
            if let Moved::To(new_id) = &outcome {
                letter.new_id = Some(new_id.clone());
            }
            letter.kept = self.kept_because(outcome);
        }
        Ok(replayed)
    }

    /// The stream's consumer groups.
    async fn group_names(&mut self) -> Result<Vec<String>, AdminError> {
        let exists: bool = redis::cmd("EXISTS")
            .arg(&self.stream)
            .query_async(&mut self.connection)
            .await?;
        if !exists {
            return Ok(Vec::new());
        }
        let reply: redis::streams::StreamInfoGroupsReply = redis::cmd("XINFO")
            .arg("GROUPS")
            .arg(&self.stream)
            .query_async(&mut self.connection)
            .await?;
        Ok(reply.groups.into_iter().map(|group| group.name).collect())
    }

    /// Why a replay would keep `letter` (as `replay.lua` decides), if it
    /// would: for the dry run.
    fn would_keep(&self, letter: &Entry, groups: &[String]) -> Option<String> {
        let outcome = match (letter.get(STREAM), letter.get(GROUP)) {
            (Some(stream), _) if stream != self.stream.as_bytes() => {
                Moved::OtherStream(String::from_utf8_lossy(stream).into_owned())
            }
            (_, Some(group)) if !groups.iter().any(|name| name.as_bytes() == group) => {
                Moved::NoGroup(String::from_utf8_lossy(group).into_owned())
            }
            (_, None) if groups.is_empty() => Moved::NoGroup(String::new()),
            _ => return None,
        };
        self.kept_because(outcome)
    }

    /// The reason a refused replay gives, for the outcomes that keep the
    /// letter.
    fn kept_because(&self, outcome: Moved) -> Option<String> {
        match outcome {
            Moved::To(_) | Moved::Gone => None,
            Moved::OtherStream(stream) => Some(format!(
                "it came from stream {stream}; replay it from there (REDIS_STREAM={stream})"
            )),
            Moved::NoGroup(group) if group.is_empty() => Some(format!(
                "{} has no consumer group to process it",
                self.stream
            )),
            Moved::NoGroup(group) => Some(format!(
                "its group {group} no longer exists on {}; create it again to replay it",
                self.stream
            )),
        }
    }

    async fn all_dead_letters(&mut self) -> Result<Vec<Entry>, AdminError> {
        let mut letters = Vec::new();
        let mut start = "-".to_owned();
        loop {
            let reply: redis::Value = redis::cmd("XRANGE")
                .arg(&self.dead_letter_stream)
                .arg(&start)
                .arg("+")
                .arg("COUNT")
                .arg(PAGE)
                .query_async(&mut self.connection)
                .await?;
            let page = parse_range(reply)?;
            let Some(last) = page.last() else { break };
            start = format!("({}", last.id);
            let full = page.len() == PAGE;
            letters.extend(page);
            if !full {
                break;
            }
        }
        Ok(letters)
    }

    /// Deletes the dead-letter stream; returns how many entries it held.
    pub async fn purge(&mut self) -> Result<u64, AdminError> {
        let (length, _): (u64, u64) = redis::pipe()
            .atomic()
            .cmd("XLEN")
            .arg(&self.dead_letter_stream)
            .cmd("DEL")
            .arg(&self.dead_letter_stream)
            .query_async(&mut self.connection)
            .await?;
        Ok(length)
    }
}

/// Asks `question` on the terminal; only called when standard input is one.
fn confirm(question: &str) -> Result<bool, AdminError> {
    eprint!("{question} [y/N] ");
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}

fn view(letter: &Entry) -> DeadLetterView {
    let text = |name: &str| {
        letter
            .get(name)
            .map(|value| String::from_utf8_lossy(value).into_owned())
            .unwrap_or_default()
    };
    let original = dead_letter::original(letter);
    DeadLetterView {
        id: letter.id.clone(),
        original_id: original.id,
        group: text(GROUP),
        deliveries: text(DELIVERIES),
        reason: text(REASON),
        failed_at_ms: text(FAILED_AT_MS),
        fields: original
            .fields
            .iter()
            .map(|(name, value)| {
                (
                    String::from_utf8_lossy(name).into_owned(),
                    String::from_utf8_lossy(value).into_owned(),
                )
            })
            .collect(),
    }
}
