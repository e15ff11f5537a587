//! The sources of a step other than new entries: the replay of this
//! consumer's own pending entries, takeover of dead consumers' entries
//! (both one entry at a time where a crash may be to blame) and this
//! consumer's own retries, with the delivery count each entry has now.

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::{StepReport, Worker};
use crate::consumer::{ClaimedOwn, Delivery};
use crate::error::Error;
use crate::handler::Handler;

/// At most this many pages of the own pending list are read per retry check.
const RETRY_SCAN_PAGES: usize = 10;

impl<H: Handler> Worker<H> {
    /// One page of this consumer's own pending list (IDs after `after`;
    /// `0` for the start), entry by entry (see [`Worker::process_alone`]):
    /// a previous run left these unfinished, and one of them may be what
    /// killed it.
    pub(super) async fn replay(&mut self, after: &str) -> Result<StepReport, Error> {
        let batch = self.settings.batch_size;
        let after = (after != "0").then_some(after);
        let page = self
            .consumer
            .own_pending(Duration::ZERO, after, batch)
            .await?;
        let complete = page.len() < batch;
        let mut report = StepReport::default();
        for pending in page {
            if self.shutdown.deadline().is_some() {
                return Ok(report);
            }
            if self.is_held(&pending.id) {
                // Finished here; its dead letter waits to be written.
                self.replay_after = Some(pending.id);
                continue;
            }
            let one = self.process_alone(&pending.id).await?;
            report.absorb(one);
            self.replay_after = Some(pending.id);
        }
        if complete {
            self.replay_after = None;
        }
        Ok(report)
    }

    /// Claims `id` if it is still this consumer's, processes it alone
    /// and records its outcome before anything else is claimed.
    ///
    /// For entries whose holder died with them: claimed and processed
    /// together, an entry that kills the process on every delivery would
    /// carry its whole batch to `max_deliveries` with it (each claim counts
    /// a delivery for every entry claimed). Alone, it reaches the limit
    /// alone, and every entry before it is acknowledged.
    ///
    /// The entries of a list worked through this way wait their turn
    /// without a heartbeat, so one may be taken over meanwhile by another
    /// live consumer; it is left to that consumer, never claimed back, and
    /// the delivery count the retry policy sees is the one Redis has now.
    async fn process_alone(&mut self, id: &str) -> Result<StepReport, Error> {
        let (delivery, deliveries) = match self.consumer.claim_own(id).await? {
            ClaimedOwn::Delivered(delivery, deliveries) => (delivery, deliveries),
            ClaimedOwn::NotOwn => {
                debug!(id = %id, "taken over by another consumer before its turn; left to it");
                return Ok(StepReport {
                    taken_over: 1,
                    ..StepReport::default()
                });
            }
        };
        if let Delivery::Deleted(id) = &delivery {
            // Redis 7 drops an entry deleted from the stream from the
            // pending list when it is claimed, and returns nothing.
            warn!(id = %id, "a pending entry was deleted from the stream before it was processed; dropped from the pending list");
            return Ok(StepReport {
                deleted: 1,
                ..StepReport::default()
            });
        }
        let report = self.process(vec![(delivery, deliveries)]).await;
        if report.retrying > 0 || report.abandoned > 0 {
            self.own_failures = true;
        }
        self.flush().await?;
        Ok(report)
    }

    /// One page of `XAUTOCLAIM`; the walk of the pending list goes on at the
    /// next step until it is complete, then waits `claim_interval`.
    ///
    /// Entries delivered once (their holder died while holding them, for
    /// the first time) are claimed together and processed as a batch.
    /// Entries delivered more often are processed one at a time, like a
    /// replay: their holders may have died of them.
    pub(super) async fn claim_from_dead_consumers(
        &mut self,
        now: Instant,
    ) -> Result<StepReport, Error> {
        let page = self
            .consumer
            .autoclaim(
                self.settings.claim_idle,
                &self.claim_cursor,
                self.settings.batch_size,
            )
            .await?;
        if page.next_cursor == "0-0" {
            self.next_claim = now + self.settings.claim_interval;
            // Housekeeping only: a failure (an ACL without XINFO or
            // scripts, a timeout) must not drop the page just claimed,
            // which is this consumer's now and would wait for the next
            // takeover, failing the same way.
            if let Some(idle) = self.settings.delete_idle_consumers {
                match self.consumer.remove_idle_consumers(idle).await {
                    Ok(removed) if removed.is_empty() => {}
                    Ok(removed) => info!(
                        ?removed,
                        "removed idle consumers that held no pending entries"
                    ),
                    Err(error) => warn!(
                        %error,
                        "cannot remove idle consumers; the entries taken over are processed anyway"
                    ),
                }
            }
        }
        self.claim_cursor = page.next_cursor;
        for id in &page.deleted {
            warn!(id = %id, "a pending entry was deleted from the stream before it was processed; dropped from the pending list");
        }
        let mut report = StepReport::default();
        if page.ids.is_empty() {
            return Ok(report);
        }
        info!(
            count = page.ids.len(),
            "took over entries of consumers idle longer than claim_idle"
        );
        self.observer.claimed(page.ids.len());
        let ids: Vec<&str> = page.ids.iter().map(String::as_str).collect();
        let counts = self.consumer.delivery_counts(&ids).await?;
        // Delivered at most once (0: given back unstarted at a stop).
        let (once, more): (Vec<_>, Vec<_>) = ids
            .into_iter()
            .zip(counts)
            .filter_map(|(id, count)| Some((id, count?)))
            .partition(|(_, count)| *count <= 1);
        if !once.is_empty() {
            let ids: Vec<&str> = once.iter().map(|(id, _)| *id).collect();
            let claimed = self.consumer.claim(&ids, Duration::ZERO).await?;
            let counts: HashMap<&str, u64> = once.into_iter().collect();
            let deliveries = claimed
                .into_iter()
                .map(|delivery| {
                    let before = counts.get(delivery_id(&delivery)).copied().unwrap_or(1);
                    (delivery, before + 1)
                })
                .collect();
            report.absorb(self.process(deliveries).await);
            if report.retrying > 0 || report.abandoned > 0 {
                self.own_failures = true;
            }
            self.flush().await?;
        }
        for (id, _) in more {
            if self.shutdown.deadline().is_some() {
                break;
            }
            let one = self.process_alone(id).await?;
            report.absorb(one);
        }
        Ok(report)
    }

    /// Whether `id` finished here and waits for its dead letter to be
    /// written: pending to this consumer, but not to be delivered again.
    fn is_held(&self, id: &str) -> bool {
        self.ledger.held().any(|held| held == id)
    }

    /// This consumer's failed entries whose retry delay has passed, claimed
    /// again (which counts a delivery).
    pub(super) async fn due_retries(&mut self) -> Result<Vec<(Delivery, u64)>, Error> {
        let batch = self.settings.batch_size;
        let mut due: HashMap<String, u64> = HashMap::new();
        let mut after: Option<String> = None;
        let mut any = false;
        for _ in 0..RETRY_SCAN_PAGES {
            let page = self
                .consumer
                .own_pending(Duration::ZERO, after.as_deref(), batch)
                .await?;
            any |= !page.is_empty();
            let complete = page.len() < batch;
            after = page.last().map(|pending| pending.id.clone());
            for pending in page {
                if due.len() < batch
                    && pending.idle >= self.policy.delay(pending.deliveries)
                    && !self.is_held(&pending.id)
                {
                    due.insert(pending.id, pending.deliveries);
                }
            }
            if complete || due.len() >= batch {
                break;
            }
        }
        // Nothing of ours is pending: no scans until something fails again.
        self.own_failures = any;
        if due.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<&str> = due.keys().map(String::as_str).collect();
        let claimed = self.consumer.claim(&ids, self.policy.min_delay()).await?;
        self.observer.retried(claimed.len());
        Ok(claimed
            .into_iter()
            .map(|delivery| {
                let deliveries = due.get(delivery_id(&delivery)).copied().unwrap_or(0) + 1;
                (delivery, deliveries)
            })
            .collect())
    }
}

/// Entries read as new: delivered for the first time.
pub(super) fn first_deliveries(deliveries: Vec<Delivery>) -> Vec<(Delivery, u64)> {
    deliveries
        .into_iter()
        .map(|delivery| (delivery, 1))
        .collect()
}

pub(super) fn delivery_id(delivery: &Delivery) -> &str {
    match delivery {
        Delivery::Entry(entry) => &entry.id,
        Delivery::Deleted(id) => id,
    }
}
