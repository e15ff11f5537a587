//! `trim`: trims the stream by length, ID or age, exactly where it checked,
//! refusing to drop entries a group has not processed unless forced.
//!
//! Producers keep writing while an operator trims, so "keep the newest N"
//! names a different entry from one moment to the next. A trim therefore
//! first fixes its cut as an entry ID ([`Cut`]), then one Lua script
//! (`trim.lua`) checks every consumer group against that ID and trims with
//! `XTRIM MINID` at it, atomically: no entry can be delivered, added or
//! forgotten between the check and the trim, and the count it reports is
//! `XTRIM`'s own. An approximate trim (`~`) removes whole nodes only and
//! never passes the cut either.
//!
//! A group needs an entry before the cut if the entry is pending (delivered
//! but not acknowledged) or not yet delivered to it; without `force`, such
//! a trim removes nothing.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use super::{Admin, AdminError, PAGE};
use crate::consumer::reply::parse_range;

/// See the module documentation.
const CHECK_AND_TRIM: &str = include_str!("trim.lua");

/// What to keep when trimming.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrimTo {
    /// Keep the newest N entries (those that exist when the cut is fixed;
    /// entries added later are kept too).
    MaxLen(u64),
    /// Keep entries with IDs from this one on.
    MinId(String),
    /// Keep entries younger than this.
    MaxAge(Duration),
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

/// Where a trim cuts: entries with smaller IDs go, this one and later stay.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(into = "String")]
pub struct Cut {
    ms: u64,
    seq: u64,
}

impl Cut {
    /// The cut at a complete (`1700000000000-5`) or millisecond-only
    /// (`1700000000000`, meaning `-0`) entry ID.
    pub fn at(id: &str) -> Option<Self> {
        let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
        Some(Self {
            ms: ms.parse().ok()?,
            seq: seq.parse().ok()?,
        })
    }

    /// The cut just after `id`: it goes too.
    fn after(id: &str) -> Option<Self> {
        let cut = Self::at(id)?;
        Some(match cut.seq.checked_add(1) {
            Some(seq) => Self { seq, ..cut },
            None => Self {
                ms: cut.ms.saturating_add(1),
                seq: 0,
            },
        })
    }

    /// Whether nothing can be before it.
    fn is_start(&self) -> bool {
        self.ms == 0 && self.seq == 0
    }
}

impl fmt::Display for Cut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

impl From<Cut> for String {
    fn from(cut: Cut) -> Self {
        cut.to_string()
    }
}

/// What `trim` found, and did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TrimReport {
    /// Where it cut; `None` when there was nothing to cut.
    pub cut: Option<Cut>,
    /// Entries before the cut when it was fixed: what an exact trim removes.
    pub before_cut: u64,
    /// Entries `XTRIM` removed (0 for a dry run).
    pub removed: u64,
    /// Groups that had not processed entries before the cut (pending or
    /// not yet delivered); with `force` they were removed all the same.
    pub groups_needing: Vec<String>,
    /// Whether this was only a dry run.
    pub dry_run: bool,
    /// Whether `force` was given.
    pub force: bool,
}

impl fmt::Display for TrimReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(cut) = &self.cut else {
            return writeln!(f, "removed 0 entries: nothing to cut");
        };
        if self.dry_run {
            writeln!(
                f,
                "dry run: would remove {} entries with IDs before {cut}",
                self.before_cut
            )?;
        } else {
            writeln!(f, "removed {} entries with IDs before {cut}", self.removed)?;
            if self.removed < self.before_cut {
                writeln!(
                    f,
                    "{} entries before {cut} remain: an approximate trim removes whole nodes only, \
                     at most 10,000 entries by default (--exact for all)",
                    self.before_cut - self.removed
                )?;
            }
        }
        let groups = self.groups_needing.join(", ");
        match (groups.is_empty(), self.dry_run, self.force) {
            (true, _, _) => Ok(()),
            (false, true, false) => writeln!(
                f,
                "including entries not yet processed by group(s) {groups}: without --force the trim would refuse"
            ),
            (false, true, true) => writeln!(
                f,
                "including entries not yet processed by group(s) {groups}"
            ),
            (false, false, _) => writeln!(
                f,
                "forced: these included entries not yet processed by group(s) {groups}"
            ),
        }
    }
}

impl Admin {
    /// Trims the stream as `request` says, at a cut fixed first, checked
    /// and trimmed in one step; see the module documentation. With
    /// `dry_run` it only checks and counts.
    pub async fn trim(&mut self, request: &TrimRequest) -> Result<TrimReport, AdminError> {
        let mut report = TrimReport {
            cut: None,
            before_cut: 0,
            removed: 0,
            groups_needing: Vec::new(),
            dry_run: request.dry_run,
            force: request.force,
        };
        let Some(cut) = self.fix_cut(&request.to).await? else {
            return Ok(report);
        };
        report.before_cut = self.count_range("-", &format!("({cut}")).await?;
        let action = match (request.dry_run, request.force) {
            (true, _) => "check",
            (false, true) => "force",
            (false, false) => "trim",
        };
        let (removed, groups, _oldest): (i64, Vec<String>, Vec<String>) =
            redis::Script::new(CHECK_AND_TRIM)
                .key(&self.stream)
                .arg(cut.to_string())
                .arg(if request.exact { "=" } else { "~" })
                .arg(action)
                .invoke_async(&mut self.connection)
                .await?;
        if !groups.is_empty() && action == "trim" {
            // Nothing was removed, so these entries are still there to count.
            let mut unprocessed = 0;
            for group in &groups {
                unprocessed = unprocessed.max(self.unprocessed_before(group, &cut).await?);
            }
            return Err(AdminError::WouldDropUnprocessed {
                cut: cut.to_string(),
                unprocessed,
                groups: groups.join(", "),
            });
        }
        report.cut = Some(cut);
        report.removed = u64::try_from(removed).unwrap_or(0);
        report.groups_needing = groups;
        Ok(report)
    }

    /// The cut for `to`, as an ID that no longer moves; `None` when nothing
    /// would go.
    async fn fix_cut(&mut self, to: &TrimTo) -> Result<Option<Cut>, AdminError> {
        let cut = match to {
            TrimTo::MinId(id) => Cut::at(id).ok_or_else(|| AdminError::NotAnId(id.clone()))?,
            TrimTo::MaxAge(age) => {
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default();
                let ms = u64::try_from(now.saturating_sub(*age).as_millis()).unwrap_or(u64::MAX);
                Cut { ms, seq: 0 }
            }
            TrimTo::MaxLen(keep) => {
                let length: u64 = redis::cmd("XLEN")
                    .arg(&self.stream)
                    .query_async(&mut self.connection)
                    .await?;
                if length <= *keep {
                    return Ok(None);
                }
                let to_drop = length - keep;
                // Walk from whichever end is nearer; entries added meanwhile
                // land after the cut either way.
                let found = if *keep == 0 {
                    self.nth("XREVRANGE", 1)
                        .await?
                        .and_then(|newest| Cut::after(&newest))
                } else if to_drop <= *keep {
                    self.nth("XRANGE", to_drop + 1)
                        .await?
                        .and_then(|oldest_kept| Cut::at(&oldest_kept))
                } else {
                    self.nth("XREVRANGE", *keep)
                        .await?
                        .and_then(|oldest_kept| Cut::at(&oldest_kept))
                };
                // None: the stream shrank meanwhile (another trim); nothing to do.
                let Some(cut) = found else {
                    return Ok(None);
                };
                cut
            }
        };
        Ok((!cut.is_start()).then_some(cut))
    }

    /// The ID of the `n`th entry (1-based) walking with `command` (`XRANGE`
    /// from the oldest, `XREVRANGE` from the newest); `None` if there are
    /// fewer.
    async fn nth(&mut self, command: &str, n: u64) -> Result<Option<String>, AdminError> {
        let (mut from, to) = if command == "XRANGE" {
            ("-".to_owned(), "+")
        } else {
            ("+".to_owned(), "-")
        };
        let mut left = n;
        while left > 0 {
            let page = usize::try_from(left).unwrap_or(PAGE).min(PAGE);
            let reply: redis::Value = redis::cmd(command)
                .arg(&self.stream)
                .arg(&from)
                .arg(to)
                .arg("COUNT")
                .arg(page)
                .query_async(&mut self.connection)
                .await?;
            let entries = parse_range(reply)?;
            let Some(last) = entries.last() else {
                return Ok(None);
            };
            left -= entries.len() as u64;
            if left == 0 {
                return Ok(Some(last.id.clone()));
            }
            if entries.len() < page {
                return Ok(None);
            }
            from = format!("({}", last.id);
        }
        Ok(None)
    }

    /// Entries before `cut` that `group` has not processed: pending to one
    /// of its consumers, or not yet delivered to it (the acknowledged ones
    /// between them do not count).
    async fn unprocessed_before(&mut self, group: &str, cut: &Cut) -> Result<u64, AdminError> {
        let end = format!("({cut}");
        let mut pending = 0;
        let mut from = "-".to_owned();
        loop {
            let page: redis::streams::StreamPendingCountReply = redis::cmd("XPENDING")
                .arg(&self.stream)
                .arg(group)
                .arg(&from)
                .arg(&end)
                .arg(PAGE)
                .query_async(&mut self.connection)
                .await?;
            pending += page.ids.len() as u64;
            match page.ids.last() {
                Some(last) if page.ids.len() == PAGE => from = format!("({}", last.id),
                _ => break,
            }
        }
        let groups: redis::streams::StreamInfoGroupsReply = redis::cmd("XINFO")
            .arg("GROUPS")
            .arg(&self.stream)
            .query_async(&mut self.connection)
            .await?;
        let undelivered = match groups.groups.iter().find(|info| info.name == group) {
            Some(info) => {
                self.count_range(&format!("({}", info.last_delivered_id), &end)
                    .await?
            }
            None => 0,
        };
        Ok(pending + undelivered)
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
    fn cuts_are_complete_ids() {
        assert_eq!(Cut::at("1700-5").unwrap().to_string(), "1700-5");
        assert_eq!(Cut::at("1700").unwrap().to_string(), "1700-0");
        assert_eq!(Cut::after("1700-5").unwrap().to_string(), "1700-6");
        assert_eq!(
            Cut::after(&format!("7-{}", u64::MAX)).unwrap().to_string(),
            "8-0"
        );
        assert!(Cut::at("yesterday").is_none());
        assert!(Cut::at("0-0").unwrap().is_start());
    }

    #[test]
    fn ages_parse_with_units() {
        assert_eq!(parse_age("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_age("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_age("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_age("soon").unwrap_err().contains("not a number"));
        assert!(parse_age("5y").unwrap_err().contains("unit"));
    }
}
