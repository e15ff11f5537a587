//! The operator's commands, one file each: [`status`], [`send`],
//! [`dead_letters`] (`dlq list`, `replay`, `purge`) and [`trim`], plus
//! [`config`]. Each owns its request, its queries and its report, whose
//! `Display` is what the command prints; the binary only parses the command
//! line and dispatches. A new command is one file here and one variant of
//! the binary's `Command`.

pub mod config;
pub mod dead_letters;
pub mod send;
pub mod status;
pub mod trim;

use std::time::Duration;

pub use config::ConfigReport;
pub use dead_letters::{DeadLetterList, DeadLetterView, Purged, Replayed, ReplayedLetter};
pub use send::{Document, Documents, Sent};
pub use status::{ConsumerStatus, GroupStatus, Status, StatusReport, Trend};
pub use trim::{Cut, TrimReport, TrimRequest, TrimTo, parse_age};

use crate::connection::{Connection, Connector};
use crate::consumer::reply::parse_range;
use crate::error::Error;
use crate::settings::Settings;

/// How long one operator command may wait for a reply: trims and replays
/// of large streams take a while.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);
/// Entries per page when counting or replaying.
const PAGE: usize = 1_000;

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
    /// Reading the input or writing the output failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// `trim` would drop entries some group has not processed; it removed
    /// nothing.
    #[error(
        "refusing to trim at {cut}: {unprocessed} of the entries before it are still pending or \
         undelivered in group(s) {groups}; nothing was removed; use --force to drop them anyway"
    )]
    WouldDropUnprocessed {
        /// Where it would have cut.
        cut: String,
        /// Entries at risk (for the group that has the most).
        unprocessed: u64,
        /// Groups that have not processed them.
        groups: String,
    },
    /// `--minid` is not an entry ID.
    #[error("`{0}` is not an entry ID such as 1700000000000-0")]
    NotAnId(String),
    /// A dead-letter ID given to `dlq replay` does not exist.
    #[error("no dead letter with ID {0}")]
    NoSuchDeadLetter(String),
    /// `dlq replay` kept dead letters that no group of the stream would
    /// process (each named in its output, with the reason).
    #[error("{0} dead letters were kept where they are; see above")]
    DeadLettersKept(usize),
    /// `dlq purge` was not confirmed.
    #[error("not confirmed; nothing deleted (use --yes to skip the question)")]
    NotConfirmed,
    /// `dlq purge` without `--yes` and without a terminal to ask on.
    #[error(
        "refusing to purge {0} without confirmation: standard input is not a terminal, \
         so pass --yes (-y) to delete every dead letter"
    )]
    NoTerminalToConfirm(String),
}

impl From<redis::RedisError> for AdminError {
    fn from(error: redis::RedisError) -> Self {
        Self::Redis(error.into())
    }
}

/// A connection for the operator's commands, with the names they act on.
pub struct Admin {
    connection: Connection,
    stream: String,
    group: String,
    dead_letter_stream: String,
    /// Trace-context fields `send` adds to every entry.
    trace_fields: Vec<(String, String)>,
}

impl Admin {
    /// Connects with the settings' URL and names.
    pub async fn connect(settings: &Settings) -> Result<Self, AdminError> {
        let connection = Connector::new(&settings.redis)?
            .connect(RESPONSE_TIMEOUT)
            .await?;
        Ok(Self {
            connection,
            stream: settings.redis.stream.clone(),
            group: settings.redis.consumer_group.clone(),
            dead_letter_stream: settings.dead_letter_stream(),
            trace_fields: Vec::new(),
        })
    }

    /// Has `send` add these trace-context fields (`traceparent`,
    /// `tracestate`; see [`crate::otel`]) to every entry, so that the
    /// worker's spans continue the trace they name.
    pub fn set_trace_context(&mut self, fields: Vec<(String, String)>) {
        self.trace_fields = fields;
    }

    /// The configured group's name, for messages.
    pub fn group(&self) -> &str {
        &self.group
    }

    async fn stream_exists(&mut self) -> Result<bool, AdminError> {
        let exists: bool = redis::cmd("EXISTS")
            .arg(&self.stream)
            .query_async(&mut self.connection)
            .await?;
        Ok(exists)
    }

    /// The first entry ID of the stream in the direction of `command`
    /// (`XRANGE`: the oldest, `XREVRANGE`: the newest).
    async fn edge(&mut self, command: &str) -> Result<Option<String>, AdminError> {
        let (from, to) = if command == "XRANGE" {
            ("-", "+")
        } else {
            ("+", "-")
        };
        let reply: redis::Value = redis::cmd(command)
            .arg(&self.stream)
            .arg(from)
            .arg(to)
            .arg("COUNT")
            .arg(1)
            .query_async(&mut self.connection)
            .await?;
        Ok(parse_range(reply)?.into_iter().next().map(|entry| entry.id))
    }
}
