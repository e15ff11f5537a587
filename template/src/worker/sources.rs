//! The sources of a step other than new entries: the replay of this
//! consumer's own pending entries, takeover of dead consumers' entries and this consumer's own
//! retries, with the delivery count each entry has now.

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;
use tracing::{info, warn};

use super::{StepReport, Worker};
use crate::consumer::Delivery;
use crate::error::Error;
use crate::handler::Handler;

/// At most this many pages of the own pending list are read per retry check.
const RETRY_SCAN_PAGES: usize = 10;

impl<H: Handler> Worker<H> {
    /// Asks Redis how often each entry was delivered (after a replay or a
    /// takeover the count is not known locally).
    pub(super) async fn with_delivery_counts(
        &mut self,
        deliveries: Vec<Delivery>,
    ) -> Result<Vec<(Delivery, u64)>, Error> {
        let ids: Vec<&str> = deliveries.iter().map(delivery_id).collect();
        let counts = self.consumer.delivery_counts(&ids).await?;
        Ok(deliveries.into_iter().zip(counts).collect())
    }

    /// One page of this consumer's own pending list (IDs after `after`;
    /// `0` for the start), entry by entry: each is claimed again (counting
    /// a delivery), processed alone and its outcome recorded before the
    /// next is claimed. A previous run left these unfinished, and one of
    /// them may be what killed it: claimed and processed together, an
    /// entry that kills the process on every delivery would carry its
    /// whole batch to `max_deliveries` with it. Alone, it reaches the limit
    /// alone, and every entry before it is acknowledged.
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
            let claimed = self
                .consumer
                .claim(&[pending.id.as_str()], Duration::ZERO)
                .await?;
            if claimed.is_empty() {
                // Redis 7 drops an entry deleted from the stream from the
                // pending list when it is claimed, and returns nothing.
                warn!(id = %pending.id, "a pending entry was deleted from the stream before it was processed; dropped from the pending list");
                report.deleted += 1;
                self.replay_after = Some(pending.id);
                continue;
            }
            let deliveries = claimed
                .into_iter()
                .map(|delivery| (delivery, pending.deliveries + 1))
                .collect();
            let one = self.process(deliveries).await;
            if one.retrying > 0 || one.abandoned > 0 {
                self.own_failures = true;
            }
            report.absorb(one);
            self.flush().await?;
            self.replay_after = Some(pending.id);
        }
        if complete {
            self.replay_after = None;
        }
        Ok(report)
    }

    /// One page of `XAUTOCLAIM`; the walk of the pending list goes on at the
    /// next step until it is complete, then waits `claim_interval`.
    pub(super) async fn claim_from_dead_consumers(
        &mut self,
        now: Instant,
    ) -> Result<Vec<(Delivery, u64)>, Error> {
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
        if !page.entries.is_empty() {
            info!(
                count = page.entries.len(),
                "took over entries of consumers idle longer than claim_idle"
            );
            self.observer.claimed(page.entries.len());
        }
        let deliveries = page.entries.into_iter().map(Delivery::Entry).collect();
        self.with_delivery_counts(deliveries).await
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
                if due.len() < batch && pending.idle >= self.policy.delay(pending.deliveries) {
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
