//! The runtime's error type.

use std::path::PathBuf;

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
    /// The password file (`redis.password_file`) cannot be read.
    #[error("cannot read the Redis password file {}: {source}", path.display())]
    PasswordFile {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
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
            Self::Reply { .. } | Self::PasswordFile { .. } => false,
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
