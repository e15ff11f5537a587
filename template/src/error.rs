//! The runtime's error type.

/// What can go wrong talking to Redis.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A command failed, or the connection did.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// Redis answered with something this worker does not understand.
    #[error("unexpected reply to {command}: {detail}")]
    Reply {
        /// The command that was sent.
        command: &'static str,
        /// What was wrong with the reply.
        detail: String,
    },
}

impl Error {
    /// The stream or the group no longer exists (`NOGROUP`): deleted, evicted
    /// or flushed. Recreating the group fixes it.
    pub fn is_no_group(&self) -> bool {
        matches!(self, Self::Redis(error) if error.code() == Some("NOGROUP"))
    }

    /// The connection is broken or Redis is not answering; a new connection,
    /// after a pause, may succeed.
    pub fn is_connection(&self) -> bool {
        match self {
            Self::Redis(error) => connection_failed(error),
            Self::Reply { .. } => false,
        }
    }
}

/// See [`Error::is_connection`].
pub(crate) fn connection_failed(error: &redis::RedisError) -> bool {
    error.is_io_error()
        || error.is_connection_dropped()
        || error.is_connection_refusal()
        || error.is_timeout()
        || error.is_unrecoverable_error()
        || error.code() == Some("LOADING")
}
