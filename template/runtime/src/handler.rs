//! The contract between the runtime and the business logic.
//!
//! The runtime hands every entry to a [`Handler`]. Returning `Ok` acknowledges
//! the entry; returning a [`ProcessError`] says whether it is worth trying
//! again ([`ProcessError::Retry`]) or never will be ([`ProcessError::Permanent`],
//! which sends it to the dead-letter stream at once). A [`Logic`] is a
//! handler the binary builds at start from its own settings section.

use std::future::Future;

use crate::entry::Entry;
use crate::settings::LogicSettings;

/// Any error the business logic wants to report, with its source chain.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Processes one entry of the stream.
///
/// Called concurrently for up to `concurrency` entries, hence `&self`: keep
/// shared state (clients, pools) in the handler behind something `Sync`.
pub trait Handler: Send + Sync + 'static {
    /// Processes `entry`; the runtime acknowledges it only after `Ok`.
    fn handle(&self, entry: &Entry) -> impl Future<Output = Result<(), ProcessError>> + Send;
}

/// The business logic as the binary runs it: a [`Handler`] built once at
/// start from its own settings, the `logic` section of the config file.
pub trait Logic: Handler + Sized {
    /// The `logic` section; [`NoLogicSettings`](crate::settings::NoLogicSettings)
    /// for a logic that takes none.
    type Settings: LogicSettings;

    /// Builds the logic's state (clients, pools) from its settings; an
    /// error stops the start with the message.
    fn build(settings: &Self::Settings) -> impl Future<Output = Result<Self, BoxError>> + Send;
}

/// Why processing an entry failed, and what the runtime should do about it.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// A passing failure (a timeout, a service that is down): the entry stays
    /// pending and is delivered again after a backoff, up to
    /// `max_deliveries` times in all, then dead-lettered.
    #[error("{0}")]
    Retry(#[source] BoxError),
    /// The entry can never succeed (it is malformed, or refers to something
    /// that does not exist): dead-lettered at once.
    #[error("{0}")]
    Permanent(#[source] BoxError),
}

impl ProcessError {
    /// A failure worth retrying.
    pub fn retry(error: impl Into<BoxError>) -> Self {
        Self::Retry(error.into())
    }

    /// A failure that retrying cannot fix.
    pub fn permanent(error: impl Into<BoxError>) -> Self {
        Self::Permanent(error.into())
    }

    /// Whether the runtime may deliver the entry again.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Retry(_))
    }
}
