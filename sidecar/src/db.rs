//! The Redis connection every part shares: one multiplexed connection that
//! reconnects by itself, and a bound on how long any command may take, so
//! that a Redis outage turns into a quick error (and a 503) instead of a
//! hanging request.
//!
//! A connection that stops answering without closing (half-open: after a
//! NAT or load-balancer idle timeout, a lost host) is not noticed by the
//! redis crate's `ConnectionManager`, which reconnects only when the socket
//! reports an error. So a command that times out replaces the connection:
//! the next command uses a new one (at most one replacement per timeout
//! period, however many commands time out together).

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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

struct Current {
    conn: ConnectionManager,
    since: Instant,
}

#[derive(Clone)]
pub struct Db {
    client: redis::Client,
    current: Arc<Mutex<Current>>,
    timeout: Duration,
}

impl Db {
    /// Connects lazily: the process starts, and answers 503, while Redis is
    /// down; the manager reconnects with backoff.
    pub fn connect_lazy(client: redis::Client, timeout: Duration) -> Result<Self, DbError> {
        let conn = Self::manager(&client, timeout)?;
        Ok(Self {
            client,
            current: Arc::new(Mutex::new(Current {
                conn,
                since: Instant::now(),
            })),
            timeout,
        })
    }

    fn manager(client: &redis::Client, timeout: Duration) -> Result<ConnectionManager, DbError> {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(2));
        Ok(ConnectionManager::new_lazy_with_config(
            client.clone(),
            config,
        )?)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Current> {
        self.current.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A handle to run commands on (cheap: the connection is shared).
    pub fn conn(&self) -> ConnectionManager {
        self.lock().conn.clone()
    }

    /// Runs `op`, failing with [`DbError::Timeout`] past the timeout (and
    /// then replacing the connection, which may be half-open).
    pub async fn bounded<T>(
        &self,
        op: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, DbError> {
        match tokio::time::timeout(self.timeout, op).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => {
                if e.is_timeout() {
                    self.replace_connection();
                }
                Err(e.into())
            }
            Err(_) => {
                self.replace_connection();
                Err(DbError::Timeout(self.timeout))
            }
        }
    }

    /// Starts over with a new connection, unless it was replaced less than
    /// a timeout ago (commands that timed out together replace it once).
    fn replace_connection(&self) {
        let mut current = self.lock();
        if current.since.elapsed() < self.timeout {
            return;
        }
        match Self::manager(&self.client, self.timeout) {
            Ok(conn) => {
                tracing::warn!("redis did not answer in time: replacing the connection");
                *current = Current {
                    conn,
                    since: Instant::now(),
                };
            }
            Err(e) => tracing::warn!(error = %e, "cannot make a new redis connection"),
        }
    }

    pub async fn ping(&self) -> Result<(), DbError> {
        let mut conn = self.conn();
        self.bounded(redis::cmd("PING").query_async::<String>(&mut conn))
            .await
            .map(drop)
    }
}
