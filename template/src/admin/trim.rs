//! `trim`: trims the stream by length, ID or age, refusing to drop entries
//! a group has not processed unless forced.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::streams::{StreamInfoGroupsReply, StreamPendingReply};
use serde::Serialize;

use super::{Admin, AdminError, PAGE};
use crate::consumer::reply::parse_range;

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
    /// Whether this was only a dry run.
    pub dry_run: bool,
}

impl fmt::Display for TrimReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (verb, count) = if self.dry_run {
            ("dry run: would remove", self.would_drop)
        } else {
            ("removed", self.removed)
        };
        writeln!(
            f,
            "{verb} {count} entries (at most {} dropped, {} of them not yet processed by every group)",
            self.would_drop, self.unprocessed
        )
    }
}

/// A trim as the operator asked for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrimRequest {
    /// What to keep.
    pub to: TrimTo,
    /// Trim exactly instead of to the nearest node boundary.
    pub exact: bool,
    /// Drop entries even if a group has not processed them.
    pub force: bool,
    /// Only say what would be dropped.
    pub dry_run: bool,
}

impl Admin {
    /// Trims the stream as `request` says; refuses, unless `force`, when
    /// that would drop entries a group has not processed (pending, or not
    /// yet delivered). With `dry_run` it only reports.
    pub async fn trim(&mut self, request: &TrimRequest) -> Result<TrimReport, AdminError> {
        let TrimRequest {
            to,
            exact,
            force,
            dry_run,
        } = request;
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
        if unprocessed > 0 && !*force {
            return Err(AdminError::WouldDropUnprocessed {
                unprocessed,
                groups: groups.join(", "),
            });
        }
        let removed = if *dry_run || would_drop == 0 {
            0
        } else {
            redis::cmd("XTRIM")
                .arg(&self.stream)
                .arg(kind)
                .arg(if *exact { "=" } else { "~" })
                .arg(threshold)
                .query_async(&mut self.connection)
                .await?
        };
        Ok(TrimReport {
            would_drop,
            unprocessed,
            removed,
            dry_run: *dry_run,
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
            return Ok(self.edge("XREVRANGE").await?.map(Cut::Through));
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
            let pending: StreamPendingReply = redis::cmd("XPENDING")
                .arg(&self.stream)
                .arg(&group.name)
                .query_async(&mut self.connection)
                .await?;
            let oldest_needed = match &pending {
                StreamPendingReply::Data(data) if data.count > 0 => data.start_id.clone(),
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
}
