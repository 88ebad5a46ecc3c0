//! Message storage in Redis: one atomic transaction appends a message to
//! its room's history (trimmed, with expiry) and publishes it to the room's
//! channel. A message is acknowledged only after that transaction.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::AsyncCommands;

use crate::keys;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
}

#[derive(Clone)]
pub struct Store {
    conn: ConnectionManager,
    history_length: usize,
    history_ttl_secs: u64,
    timeout: Duration,
}

impl Store {
    /// Connects lazily: the worker starts, and answers 503, while Redis is
    /// down; the manager reconnects with backoff.
    pub fn new(
        client: redis::Client,
        timeout: Duration,
        history_length: usize,
        history_ttl_secs: u64,
    ) -> Result<Self, StoreError> {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(2));
        let conn = ConnectionManager::new_lazy_with_config(client, config)?;
        Ok(Self {
            conn,
            history_length,
            history_ttl_secs,
            timeout,
        })
    }

    async fn bounded<T>(
        &self,
        op: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, StoreError> {
        tokio::time::timeout(self.timeout, op)
            .await
            .map_err(|_| StoreError::Timeout(self.timeout))?
            .map_err(Into::into)
    }

    /// Stores `message` (a serialized envelope) in `room`'s history and
    /// publishes it to every worker subscribed to the room.
    pub async fn append(&self, room: &str, message: &str) -> Result<(), StoreError> {
        let history = keys::history(room);
        let mut pipe = redis::pipe();
        pipe.atomic()
            .rpush(&history, message)
            .ignore()
            .ltrim(&history, -(self.history_length as isize), -1)
            .ignore()
            .expire(&history, self.history_ttl_secs as i64)
            .ignore()
            .publish(keys::room_channel(room), message)
            .ignore();
        let mut conn = self.conn.clone();
        self.bounded(pipe.query_async::<()>(&mut conn)).await
    }

    /// The last `count` messages of `room`, oldest first.
    pub async fn recent(&self, room: &str, count: usize) -> Result<Vec<String>, StoreError> {
        let mut conn = self.conn.clone();
        let start = -(count.max(1) as isize);
        self.bounded(conn.lrange(keys::history(room), start, -1))
            .await
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        self.bounded(redis::cmd("PING").query_async::<String>(&mut conn))
            .await
            .map(drop)
    }
}
