//! `dlq`: lists dead letters, moves them back onto the stream (each
//! atomically) or deletes them all.

use std::fmt;
use std::io::IsTerminal;

use serde::Serialize;

use super::{Admin, AdminError, PAGE};
use crate::consumer::reply::parse_range;
use crate::dead_letter::{self, DELIVERIES, FAILED_AT_MS, ORIGINAL_ID, REASON};
use crate::entry::Entry;

/// Moves one dead letter back atomically: `XADD` to the stream, then `XDEL`
/// from the dead-letter stream. If the `XADD` fails the script stops, so the
/// dead letter is never deleted without its copy being written.
const REPLAY: &str = r"
local id = redis.call('XADD', KEYS[1], '*', unpack(ARGV, 2))
redis.call('XDEL', KEYS[2], ARGV[1])
return id
";

/// A dead letter as `dlq list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeadLetterView {
    /// Its ID in the dead-letter stream (what `dlq replay` takes).
    pub id: String,
    /// Its ID in the source stream.
    pub original_id: String,
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
                "{}  original {}  deliveries {}  reason: {}",
                letter.id, letter.original_id, letter.deliveries, letter.reason
            )?;
            for (name, value) in &letter.fields {
                writeln!(f, "    {name} = {value}")?;
            }
        }
        Ok(())
    }
}

/// What `dlq replay` prints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replayed {
    /// The new entry IDs in the stream.
    pub ids: Vec<String>,
    /// The stream they went back to.
    pub stream: String,
}

impl fmt::Display for Replayed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "moved {} dead letters back onto {}",
            self.ids.len(),
            self.stream
        )
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

    /// `dlq replay`: the given dead letters (none: all) back onto the stream.
    pub async fn replay_dead_letters(&mut self, ids: &[String]) -> Result<Replayed, AdminError> {
        Ok(Replayed {
            ids: self.replay(ids).await?,
            stream: self.stream.clone(),
        })
    }

    /// `dlq purge`: deletes every dead letter once the operator confirmed,
    /// with `--yes` or by answering on the terminal.
    pub async fn purge_dead_letters(&mut self, confirmed: bool) -> Result<Purged, AdminError> {
        let question = format!("Delete every dead letter in {}?", self.dead_letter_stream);
        if !confirmed && !confirm(&question)? {
            return Err(AdminError::NotConfirmed);
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

    /// Moves dead letters back onto the stream (all, or those with the given
    /// dead-letter IDs), each atomically; returns the new entry IDs.
    pub async fn replay(&mut self, ids: &[String]) -> Result<Vec<String>, AdminError> {
        let letters = if ids.is_empty() {
            self.all_dead_letters().await?
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
        let script = redis::Script::new(REPLAY);
        let mut replayed = Vec::new();
        for letter in letters {
            let original = dead_letter::original(&letter);
            let mut invocation = script.prepare_invoke();
            invocation
                .key(&self.stream)
                .key(&self.dead_letter_stream)
                .arg(&letter.id);
            for (name, value) in &original.fields {
                invocation.arg(name).arg(value);
            }
            let id: String = invocation.invoke_async(&mut self.connection).await?;
            replayed.push(id);
        }
        Ok(replayed)
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

/// Asks `question` on the terminal; no terminal means no.
fn confirm(question: &str) -> Result<bool, AdminError> {
    if !std::io::stdin().is_terminal() {
        return Ok(false);
    }
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
    DeadLetterView {
        id: letter.id.clone(),
        original_id: text(ORIGINAL_ID),
        deliveries: text(DELIVERIES),
        reason: text(REASON),
        failed_at_ms: text(FAILED_AT_MS),
        fields: dead_letter::original(letter)
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
