//! `status`: the stream, its groups and consumers and the dead-letter
//! count, as text or JSON, once or refreshed in place with rates.

use std::collections::HashMap;
use std::fmt;
use std::io::Write;
use std::time::{Duration, Instant};

use redis::streams::{StreamInfoConsumersReply, StreamInfoGroupsReply};
use serde::Serialize;

use super::{Admin, AdminError};
use crate::shutdown;

/// What `status` prints: the state as text, or as JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusReport {
    /// The state.
    pub status: Status,
    /// Print JSON instead of text.
    pub json: bool,
}

impl fmt::Display for StatusReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.json {
            let json = serde_json::to_string_pretty(&self.status).map_err(|_| fmt::Error)?;
            writeln!(f, "{json}")
        } else {
            write!(f, "{}", self.status)
        }
    }
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

impl Admin {
    /// The stream, its groups and consumers, and the dead-letter count.
    pub async fn status(&mut self) -> Result<Status, AdminError> {
        let length: u64 = redis::cmd("XLEN")
            .arg(&self.stream)
            .query_async(&mut self.connection)
            .await?;
        let first = self.edge("XRANGE").await?;
        let last = self.edge("XREVRANGE").await?;
        let c = &mut self.connection;
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

    /// Prints the status to `out` every `interval`, with the processing
    /// rate and the lag trend of each group, until SIGINT or SIGTERM.
    pub async fn watch(
        &mut self,
        interval: Duration,
        out: &mut impl Write,
    ) -> Result<(), AdminError> {
        let mut previous = (self.status().await?, Instant::now());
        loop {
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = shutdown::signals() => return Ok(()),
            }
            let status = self.status().await?;
            let trend = Trend::between(&previous.0, &status, previous.1.elapsed());
            write!(out, "\x1b[2J\x1b[H{status}{trend}")?;
            writeln!(
                out,
                "\nrefreshing every {}s; Ctrl-C to stop",
                interval.as_secs()
            )?;
            out.flush()?;
            previous = (status, Instant::now());
        }
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
    /// The groups, in the order of the status.
    pub groups: Vec<String>,
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
            groups: after
                .groups
                .iter()
                .map(|group| group.name.clone())
                .collect(),
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

impl fmt::Display for Trend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for group in &self.groups {
            let acked = self.acked_per_sec.get(group).copied().unwrap_or(0.0);
            let lag = self.lag_per_sec.get(group).copied().unwrap_or(0.0);
            let arrow = if lag > 0.5 {
                "growing"
            } else if lag < -0.5 {
                "shrinking"
            } else {
                "steady"
            };
            writeln!(
                f,
                "\n{group}: {acked:.0} acknowledged/s, lag {arrow} ({lag:+.0}/s)"
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
