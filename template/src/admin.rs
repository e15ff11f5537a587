//! The operator's commands: `status`, `send`, `dlq` and `trim`, as library
//! functions that return data; the binary only prints it.

use std::collections::HashMap;
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::aio::MultiplexedConnection;
use redis::streams::{StreamInfoConsumersReply, StreamInfoGroupsReply};
use serde::Serialize;

use crate::consumer::parse_range;
use crate::dead_letter::{self, DELIVERIES, FAILED_AT_MS, ORIGINAL_ID, REASON};
use crate::entry::Entry;
use crate::error::Error;
use crate::settings::Settings;

/// Entries per pipelined round trip in `send`.
const SEND_CHUNK: usize = 1_000;
/// Entries per page when counting or replaying.
const PAGE: usize = 1_000;

/// Moves one dead letter back atomically: `XADD` to the stream, then `XDEL`
/// from the dead-letter stream. If the `XADD` fails the script stops, so the
/// dead letter is never deleted without its copy being written.
const REPLAY: &str = r"
local id = redis.call('XADD', KEYS[1], '*', unpack(ARGV, 2))
redis.call('XDEL', KEYS[2], ARGV[1])
return id
";

/// Why an operator command failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// Redis failed.
    #[error(transparent)]
    Redis(#[from] Error),
    /// Input to `send` is not JSON.
    #[error("line {line}: not a JSON document: {source}")]
    NotJson {
        /// 1-based line (or argument) number.
        line: usize,
        /// What serde found.
        source: serde_json::Error,
    },
    /// `trim` would drop entries some group has not processed.
    #[error(
        "refusing to trim: {unprocessed} of the entries it would drop are still pending or \
         undelivered in group(s) {groups}; use --force to drop them anyway"
    )]
    WouldDropUnprocessed {
        /// Entries at risk.
        unprocessed: u64,
        /// Groups that have not processed them.
        groups: String,
    },
    /// A dead-letter ID given to `dlq replay` does not exist.
    #[error("no dead letter with ID {0}")]
    NoSuchDeadLetter(String),
}

impl From<redis::RedisError> for AdminError {
    fn from(error: redis::RedisError) -> Self {
        Self::Redis(error.into())
    }
}

/// A connection for the operator's commands.
pub struct Admin {
    connection: MultiplexedConnection,
    stream: String,
    group: String,
    dead_letter_stream: String,
}

/// The state of the stream, its groups and the dead-letter stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Status {
    /// The stream.
    pub stream: String,
    /// Entries in the stream.
    pub length: u64,
    /// ID of the oldest entry.
    pub first_entry_id: Option<String>,
    /// ID of the newest entry.
    pub last_entry_id: Option<String>,
    /// Every consumer group of the stream.
    pub groups: Vec<GroupStatus>,
    /// The dead-letter stream.
    pub dead_letter_stream: String,
    /// Entries in the dead-letter stream.
    pub dead_letters: u64,
}

/// One consumer group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GroupStatus {
    /// The group.
    pub name: String,
    /// Entries not yet delivered to the group (unknown after some deletions).
    pub lag: Option<u64>,
    /// Entries delivered and not yet acknowledged.
    pub pending: u64,
    /// Entries delivered so far (the group's read counter).
    pub entries_read: Option<u64>,
    /// The last entry delivered to the group.
    pub last_delivered_id: String,
    /// Its consumers.
    pub consumers: Vec<ConsumerStatus>,
}

/// One consumer of a group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConsumerStatus {
    /// The consumer.
    pub name: String,
    /// Entries it holds unacknowledged.
    pub pending: u64,
    /// Milliseconds since it last interacted with the group.
    pub idle_ms: u64,
}

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

/// What to keep when trimming.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrimTo {
    /// Keep the newest N entries.
    MaxLen(u64),
    /// Keep entries with IDs from this one on.
    MinId(String),
    /// Keep entries younger than this.
    MaxAge(Duration),
}

/// What `trim` found, and did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TrimReport {
    /// Entries that the trim drops at most (approximate trimming drops fewer).
    pub would_drop: u64,
    /// Of those, entries some group has not processed yet.
    pub unprocessed: u64,
    /// Entries actually removed.
    pub removed: u64,
}

impl Admin {
    /// Connects with the settings' URL and names.
    pub async fn connect(settings: &Settings) -> Result<Self, AdminError> {
        let client = redis::Client::open(settings.redis.url.expose())?;
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(5)))
            .set_response_timeout(Some(Duration::from_secs(30)));
        let connection = client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        Ok(Self {
            connection,
            stream: settings.redis.stream.clone(),
            group: settings.redis.consumer_group.clone(),
            dead_letter_stream: settings.dead_letter_stream(),
        })
    }

    /// The stream, its groups and consumers, and the dead-letter count.
    pub async fn status(&mut self) -> Result<Status, AdminError> {
        let c = &mut self.connection;
        let length: u64 = redis::cmd("XLEN").arg(&self.stream).query_async(c).await?;
        let first = edge(c, "XRANGE", &self.stream, "-", "+").await?;
        let last = edge(c, "XREVRANGE", &self.stream, "+", "-").await?;
        let dead_letters: u64 = redis::cmd("XLEN")
            .arg(&self.dead_letter_stream)
            .query_async(c)
            .await?;
        let mut groups = Vec::new();
        if length > 0 || first.is_some() || self.stream_exists().await? {
            let c = &mut self.connection;
            let reply: StreamInfoGroupsReply = redis::cmd("XINFO")
                .arg("GROUPS")
                .arg(&self.stream)
                .query_async(c)
                .await?;
            for group in reply.groups {
                let consumers: StreamInfoConsumersReply = redis::cmd("XINFO")
                    .arg("CONSUMERS")
                    .arg(&self.stream)
                    .arg(&group.name)
                    .query_async(c)
                    .await?;
                groups.push(GroupStatus {
                    lag: group.lag.map(|lag| lag as u64),
                    pending: group.pending as u64,
                    entries_read: group.entries_read.map(|read| read as u64),
                    last_delivered_id: group.last_delivered_id,
                    consumers: consumers
                        .consumers
                        .into_iter()
                        .map(|consumer| ConsumerStatus {
                            name: consumer.name,
                            pending: consumer.pending as u64,
                            idle_ms: consumer.idle as u64,
                        })
                        .collect(),
                    name: group.name,
                });
            }
        }
        Ok(Status {
            stream: self.stream.clone(),
            length,
            first_entry_id: first,
            last_entry_id: last,
            groups,
            dead_letter_stream: self.dead_letter_stream.clone(),
            dead_letters,
        })
    }

    async fn stream_exists(&mut self) -> Result<bool, AdminError> {
        let exists: bool = redis::cmd("EXISTS")
            .arg(&self.stream)
            .query_async(&mut self.connection)
            .await?;
        Ok(exists)
    }

    /// Adds one entry per document (a `data` field holding it), pipelined;
    /// every document is checked to be JSON before anything is sent.
    /// `progress` hears how many were added so far.
    pub async fn send(
        &mut self,
        documents: &[String],
        mut progress: impl FnMut(usize),
    ) -> Result<usize, AdminError> {
        for (index, document) in documents.iter().enumerate() {
            if let Err(source) = serde_json::from_str::<serde_json::Value>(document) {
                return Err(AdminError::NotJson {
                    line: index + 1,
                    source,
                });
            }
        }
        let mut sent = 0;
        for chunk in documents.chunks(SEND_CHUNK) {
            let mut pipe = redis::pipe();
            for document in chunk {
                pipe.cmd("XADD")
                    .arg(&self.stream)
                    .arg("*")
                    .arg("data")
                    .arg(document)
                    .ignore();
            }
            pipe.query_async::<()>(&mut self.connection).await?;
            sent += chunk.len();
            progress(sent);
        }
        Ok(sent)
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

    /// Trims the stream to `to`; refuses, unless `force`, when that would
    /// drop entries a group has not processed (pending, or not yet
    /// delivered). With `dry_run` it only reports.
    pub async fn trim(
        &mut self,
        to: &TrimTo,
        exact: bool,
        force: bool,
        dry_run: bool,
    ) -> Result<TrimReport, AdminError> {
        let (kind, threshold, cut) = match to {
            TrimTo::MaxLen(keep) => ("MAXLEN", keep.to_string(), self.cut_keeping(*keep).await?),
            TrimTo::MinId(id) => ("MINID", id.clone(), Some(Cut::Before(id.clone()))),
            TrimTo::MaxAge(age) => {
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default();
                let cutoff = format!("{}-0", now.saturating_sub(*age).as_millis());
                ("MINID", cutoff.clone(), Some(Cut::Before(cutoff)))
            }
        };
        let (would_drop, unprocessed, groups) = match &cut {
            Some(cut) => {
                let would_drop = self.count_range("-", &cut.range_end()).await?;
                let (unprocessed, groups) = self.unprocessed_before(cut).await?;
                (would_drop, unprocessed, groups)
            }
            None => (0, 0, Vec::new()),
        };
        if unprocessed > 0 && !force {
            return Err(AdminError::WouldDropUnprocessed {
                unprocessed,
                groups: groups.join(", "),
            });
        }
        let removed = if dry_run || would_drop == 0 {
            0
        } else {
            redis::cmd("XTRIM")
                .arg(&self.stream)
                .arg(kind)
                .arg(if exact { "=" } else { "~" })
                .arg(threshold)
                .query_async(&mut self.connection)
                .await?
        };
        Ok(TrimReport {
            would_drop,
            unprocessed,
            removed,
        })
    }

    /// Where `MAXLEN keep` cuts: before the `keep`-th newest entry, or
    /// through the newest one when `keep` is 0; `None` if the stream is not
    /// longer than `keep`.
    async fn cut_keeping(&mut self, keep: u64) -> Result<Option<Cut>, AdminError> {
        let length: u64 = redis::cmd("XLEN")
            .arg(&self.stream)
            .query_async(&mut self.connection)
            .await?;
        if length <= keep {
            return Ok(None);
        }
        if keep == 0 {
            return Ok(
                edge(&mut self.connection, "XREVRANGE", &self.stream, "+", "-")
                    .await?
                    .map(Cut::Through),
            );
        }
        let reply: redis::Value = redis::cmd("XREVRANGE")
            .arg(&self.stream)
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(keep)
            .query_async(&mut self.connection)
            .await?;
        Ok(parse_range(reply)?
            .last()
            .map(|entry| Cut::Before(entry.id.clone())))
    }

    /// Entries with IDs from `start` to `end`, as `XRANGE` takes them.
    async fn count_range(&mut self, start: &str, end: &str) -> Result<u64, AdminError> {
        let mut count = 0;
        let mut from = start.to_owned();
        loop {
            let reply: redis::Value = redis::cmd("XRANGE")
                .arg(&self.stream)
                .arg(&from)
                .arg(end)
                .arg("COUNT")
                .arg(PAGE)
                .query_async(&mut self.connection)
                .await?;
            let page = parse_range(reply)?;
            count += page.len() as u64;
            match page.last() {
                Some(last) if page.len() == PAGE => from = format!("({}", last.id),
                _ => return Ok(count),
            }
        }
    }

    /// Entries `cut` drops that some group still needs: pending, or after
    /// its last delivered ID. Returns the count and the groups.
    async fn unprocessed_before(&mut self, cut: &Cut) -> Result<(u64, Vec<String>), AdminError> {
        let reply: StreamInfoGroupsReply = match redis::cmd("XINFO")
            .arg("GROUPS")
            .arg(&self.stream)
            .query_async(&mut self.connection)
            .await
        {
            Ok(reply) => reply,
            Err(_) if !self.stream_exists().await? => return Ok((0, Vec::new())),
            Err(error) => return Err(error.into()),
        };
        let end = cut.range_end();
        let mut worst = 0;
        let mut groups = Vec::new();
        for group in reply.groups {
            let pending: redis::streams::StreamPendingReply = redis::cmd("XPENDING")
                .arg(&self.stream)
                .arg(&group.name)
                .query_async(&mut self.connection)
                .await?;
            let oldest_needed = match &pending {
                redis::streams::StreamPendingReply::Data(data) if data.count > 0 => {
                    data.start_id.clone()
                }
                _ => format!("({}", group.last_delivered_id),
            };
            let at_risk = self.count_range(&oldest_needed, &end).await?;
            // Acknowledged entries between the oldest pending one and the
            // cut are counted too: an upper bound, on the safe side.
            if at_risk > 0 {
                worst = worst.max(at_risk);
                groups.push(group.name);
            }
        }
        Ok((worst, groups))
    }

    /// The configured group's name, for messages.
    pub fn group(&self) -> &str {
        &self.group
    }
}

/// Where a trim cuts the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Cut {
    /// Entries before this ID go; it stays.
    Before(String),
    /// Entries up to and including this ID go.
    Through(String),
}

impl Cut {
    /// The `XRANGE` end that covers exactly the entries that go.
    fn range_end(&self) -> String {
        match self {
            Cut::Before(id) => format!("({id}"),
            Cut::Through(id) => id.clone(),
        }
    }
}

/// The first entry ID in the direction of `command`.
async fn edge(
    connection: &mut MultiplexedConnection,
    command: &str,
    stream: &str,
    from: &str,
    to: &str,
) -> Result<Option<String>, AdminError> {
    let reply: redis::Value = redis::cmd(command)
        .arg(stream)
        .arg(from)
        .arg(to)
        .arg("COUNT")
        .arg(1)
        .query_async(connection)
        .await?;
    Ok(parse_range(reply)?.into_iter().next().map(|entry| entry.id))
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

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let none = || "-".to_owned();
        writeln!(f, "stream      {}", self.stream)?;
        writeln!(f, "length      {}", self.length)?;
        writeln!(
            f,
            "entries     {} .. {}",
            self.first_entry_id.clone().unwrap_or_else(none),
            self.last_entry_id.clone().unwrap_or_else(none)
        )?;
        writeln!(
            f,
            "dead letters {} in {}",
            self.dead_letters, self.dead_letter_stream
        )?;
        if self.groups.is_empty() {
            writeln!(f, "no consumer groups")?;
        }
        for group in &self.groups {
            let lag = group
                .lag
                .map_or_else(|| "?".to_owned(), |lag| lag.to_string());
            writeln!(
                f,
                "\ngroup {}: lag {lag}, pending {}, last delivered {}",
                group.name, group.pending, group.last_delivered_id
            )?;
            for consumer in &group.consumers {
                writeln!(
                    f,
                    "  {:<32} pending {:>8}  idle {}",
                    consumer.name,
                    consumer.pending,
                    human(Duration::from_millis(consumer.idle_ms))
                )?;
            }
        }
        Ok(())
    }
}

/// Parses an age such as `90s`, `30m`, `24h` or `7d` (`ms` works too).
pub fn parse_age(text: &str) -> Result<Duration, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a number followed by ms, s, m, h or d"))?;
    let seconds = match unit {
        "ms" => return Ok(Duration::from_millis(number)),
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        _ => return Err(format!("`{text}`: the unit must be ms, s, m, h or d")),
    };
    Ok(Duration::from_secs(number.saturating_mul(seconds)))
}

/// `1h02m`, `3m05s`, `4.2s`, `120ms`.
pub fn human(duration: Duration) -> String {
    let secs = duration.as_secs();
    match secs {
        0 => format!("{}ms", duration.as_millis()),
        1..60 => format!("{:.1}s", duration.as_secs_f64()),
        60..3600 => format!("{}m{:02}s", secs / 60, secs % 60),
        _ => format!("{}h{:02}m", secs / 3600, secs % 3600 / 60),
    }
}

/// Rates between two snapshots of the status, for `status --watch`.
#[derive(Debug, Clone, PartialEq)]
pub struct Trend {
    /// Entries acknowledged per second by each group.
    pub acked_per_sec: HashMap<String, f64>,
    /// Change of each group's lag per second (negative: catching up).
    pub lag_per_sec: HashMap<String, f64>,
}

impl Trend {
    /// The rates from `before` to `after`, `elapsed` apart.
    pub fn between(before: &Status, after: &Status, elapsed: Duration) -> Self {
        let secs = elapsed.as_secs_f64().max(f64::EPSILON);
        let mut trend = Self {
            acked_per_sec: HashMap::new(),
            lag_per_sec: HashMap::new(),
        };
        for group in &after.groups {
            let Some(old) = before.groups.iter().find(|old| old.name == group.name) else {
                continue;
            };
            if let (Some(read), Some(old_read)) = (group.entries_read, old.entries_read) {
                let acked =
                    (read as f64 - group.pending as f64) - (old_read as f64 - old.pending as f64);
                trend.acked_per_sec.insert(group.name.clone(), acked / secs);
            }
            if let (Some(lag), Some(old_lag)) = (group.lag, old.lag) {
                trend
                    .lag_per_sec
                    .insert(group.name.clone(), (lag as f64 - old_lag as f64) / secs);
            }
        }
        trend
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_parse_with_units() {
        assert_eq!(parse_age("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_age("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_age("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_age("soon").unwrap_err().contains("not a number"));
        assert!(parse_age("5y").unwrap_err().contains("unit"));
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(human(Duration::from_millis(120)), "120ms");
        assert_eq!(human(Duration::from_millis(4_200)), "4.2s");
        assert_eq!(human(Duration::from_secs(185)), "3m05s");
        assert_eq!(human(Duration::from_secs(3_720)), "1h02m");
    }

    #[test]
    fn the_trend_is_acknowledgements_and_lag_per_second() {
        let status = |read, pending, lag| Status {
            stream: "s".into(),
            length: 0,
            first_entry_id: None,
            last_entry_id: None,
            groups: vec![GroupStatus {
                name: "g".into(),
                lag: Some(lag),
                pending,
                entries_read: Some(read),
                last_delivered_id: "0-0".into(),
                consumers: vec![],
            }],
            dead_letter_stream: "s:dlq".into(),
            dead_letters: 0,
        };
        let trend = Trend::between(
            &status(100, 10, 50),
            &status(300, 10, 30),
            Duration::from_secs(2),
        );
        assert_eq!(trend.acked_per_sec["g"], 100.0);
        assert_eq!(trend.lag_per_sec["g"], -10.0);
    }
}
