//! The business logic of {{worker_name}}: **the one file to edit.**
//!
//! [`process_business_logic`] receives each entry as Redis stores it: its ID
//! and its fields as bytes. The runtime around it (reading, acknowledging,
//! retrying, dead-lettering, shutdown) needs no change when this file does.
//!
//! What the result means:
//! - `Ok(())`: the entry is acknowledged.
//! - `Err(ProcessError::retry(e))`: the entry stays pending and is delivered
//!   again after a backoff; after `max_deliveries` deliveries it goes to the
//!   dead-letter stream with the last error.
//! - `Err(ProcessError::permanent(e))`: straight to the dead-letter stream.
//! - A panic counts as a retryable failure; the worker keeps running.

use crate::entry::Entry;
use crate::handler::{BoxError, Handler, ProcessError};
use crate::settings::Settings;

/// Does the work for one entry. Replace the body with yours.
pub async fn process_business_logic(entry: &Entry) -> Result<(), ProcessError> {
    tracing::info!(fields = entry.fields.len(), "entry processed");
    Ok(())
}

/// The handler the worker runs: calls [`process_business_logic`].
///
/// Shared state of your logic (an HTTP client, a database pool) goes into
/// this struct, built once at start by [`BusinessLogic::new`].
#[derive(Debug, Default)]
pub struct BusinessLogic;

impl BusinessLogic {
    /// Builds the logic's state from the settings; an error stops the start.
    pub async fn new(_settings: &Settings) -> Result<Self, BoxError> {
        Ok(Self)
    }
}

impl Handler for BusinessLogic {
    async fn handle(&self, entry: &Entry) -> Result<(), ProcessError> {
        process_business_logic(entry).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn any_entry_is_processed() {
        let entry = Entry::new("1-0", [(b"data".to_vec(), vec![0xff, 0xfe])]);
        BusinessLogic.handle(&entry).await.unwrap();
    }
}
