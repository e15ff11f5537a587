//! Connections to Redis, made in one place for the worker, the operator's
//! commands and the metrics probe, so the URL handling and the timeouts
//! follow one rule.

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client};

use crate::error::Error;
use crate::settings::RedisSettings;

/// How long establishing a connection may take at most.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Makes connections to one Redis; cheap to clone.
#[derive(Debug, Clone)]
pub struct Connector {
    client: Client,
}

impl Connector {
    /// A connector for the URL, with the password from the password file
    /// when one is set; nothing connects yet.
    pub fn new(redis: &RedisSettings) -> Result<Self, Error> {
        Ok(Self {
            client: redis.client()?,
        })
    }

    /// A new connection whose every reply may take up to
    /// `response_timeout`; connecting takes at most that long too, and never
    /// more than five seconds.
    ///
    /// The redis crate's default response timeout (500 ms) would cut short
    /// any blocking read longer than that, so every caller says what it
    /// needs.
    pub async fn connect(
        &self,
        response_timeout: Duration,
    ) -> redis::RedisResult<MultiplexedConnection> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(response_timeout.min(CONNECT_TIMEOUT)))
            .set_response_timeout(Some(response_timeout));
        self.client
            .get_multiplexed_async_connection_with_config(&config)
            .await
    }
}
