//! Reads sent ahead: a non-blocking `XREADGROUP` sent while the worker
//! processes a batch, its reply taken by the next step.

use tokio::task::JoinHandle;

use super::reply::{parse_read, unexpected};
use super::{Consumer, Delivery};
use crate::error::Error;

/// A read of new entries sent ahead, its reply not yet taken; see
/// [`Consumer::read_ahead`].
#[derive(Debug)]
pub struct ReadAhead(AheadState);

#[derive(Debug)]
enum AheadState {
    Sent(JoinHandle<Result<Vec<Delivery>, Error>>),
    Arrived(Result<Vec<Delivery>, Error>),
}

impl ReadAhead {
    /// The IDs of the entries read ahead, once the reply has arrived
    /// (never waiting for it): they are this consumer's from then on, and
    /// the heartbeat keeps them so while they wait.
    pub async fn arrived_ids(&mut self) -> Vec<String> {
        if let AheadState::Sent(handle) = &mut self.0
            && handle.is_finished()
        {
            let result = handle
                .await
                .unwrap_or_else(|failed| Err(unexpected("XREADGROUP", failed.to_string())));
            self.0 = AheadState::Arrived(result);
        }
        match &self.0 {
            AheadState::Arrived(Ok(deliveries)) => deliveries
                .iter()
                .map(|delivery| match delivery {
                    Delivery::Entry(entry) => entry.id.clone(),
                    Delivery::Deleted(id) => id.clone(),
                })
                .collect(),
            _ => Vec::new(),
        }
    }

    /// Drops the entry `id` from an arrived reply, so it is not processed
    /// here: another consumer took it over while it waited.
    pub fn forget(&mut self, id: &str) {
        if let AheadState::Arrived(Ok(deliveries)) = &mut self.0 {
            deliveries.retain(|delivery| match delivery {
                Delivery::Entry(entry) => entry.id != id,
                Delivery::Deleted(deleted) => deleted != id,
            });
        }
    }
}

impl Consumer {
    /// Sends a read of up to `count` new entries, without blocking, and
    /// returns at once; [`Consumer::take`] gives its entries. Those entries
    /// are delivered to this consumer as soon as Redis runs the read, so the
    /// reply must be taken: left untaken, they stay in this consumer's
    /// pending list until a replay or a claim. `None` when not connected.
    pub fn read_ahead(&mut self, count: usize) -> Option<ReadAhead> {
        let cmd = self.read_group(count, None, ">");
        let mut reader = self.connections.as_ref()?.reader.clone();
        Some(ReadAhead(AheadState::Sent(tokio::spawn(async move {
            parse_read(cmd.query_async(&mut reader).await?)
        }))))
    }

    /// The entries of a read sent ahead, waiting for its reply if need be.
    pub async fn take(&mut self, read: ReadAhead) -> Result<Vec<Delivery>, Error> {
        let result = match read.0 {
            AheadState::Sent(handle) => handle
                .await
                .unwrap_or_else(|failed| Err(unexpected("XREADGROUP", failed.to_string()))),
            AheadState::Arrived(result) => result,
        };
        self.check(result)
    }
}
