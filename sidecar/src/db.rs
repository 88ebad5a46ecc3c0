//! The Redis connection every part shares: one multiplexed connection that
//! reconnects by itself, and a bound on how long any command may take, so
//! that a Redis outage turns into a quick error (and a 503) instead of a
//! hanging request.

use std::future::Future;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
    #[error("unexpected data in redis: {0}")]
    Corrupt(String),
}

#[derive(Clone)]
pub struct Db {
    conn: ConnectionManager,
    timeout: Duration,
}

impl Db {
    /// Connects lazily: the process starts, and answers 503, while Redis is
    /// down; the manager reconnects with backoff.
    pub fn connect_lazy(client: redis::Client, timeout: Duration) -> Result<Self, DbError> {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(2));
        let conn = ConnectionManager::new_lazy_with_config(client, config)?;
        Ok(Self { conn, timeout })
    }

    /// A handle to run commands on (cheap: the connection is shared).
    pub fn conn(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// Runs `op`, failing with [`DbError::Timeout`] past the timeout.
    pub async fn bounded<T>(
        &self,
        op: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, DbError> {
        tokio::time::timeout(self.timeout, op)
            .await
            .map_err(|_| DbError::Timeout(self.timeout))?
            .map_err(Into::into)
    }

    pub async fn ping(&self) -> Result<(), DbError> {
        let mut conn = self.conn();
        self.bounded(redis::cmd("PING").query_async::<String>(&mut conn))
            .await
            .map(drop)
    }
}
