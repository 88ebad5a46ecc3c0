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
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, ConnectionAddr, ErrorKind, Pipeline, RedisFuture, Value};
use tokio::sync::Notify;

use crate::topology::{ClusterUrl, Topology};

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
    #[error("unexpected data in redis: {0}")]
    Corrupt(String),
    #[error("only {got} of the {wanted} redis replicas wanted have the write")]
    NotReplicated { wanted: u32, got: u32 },
}

/// A handle to run commands on (cheap to clone: the connection is shared).
#[derive(Clone)]
pub enum DbConn {
    Ready(ConnectionManager),
    /// A Redis Cluster: routes each command to the shard of its key, and
    /// follows slot moves and failovers (MOVED) by itself.
    Cluster(ClusterConnection),
    /// A Sentinel group whose master is not known yet, or a cluster not
    /// reached yet: commands fail at once (503) until then.
    NoMaster,
}

impl DbConn {
    fn no_master() -> redis::RedisError {
        (
            ErrorKind::Io,
            "not connected to redis yet (no master known, or the cluster not reached)",
        )
            .into()
    }
}

impl ConnectionLike for DbConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            DbConn::Ready(conn) => conn.req_packed_command(cmd),
            DbConn::Cluster(conn) => conn.req_packed_command(cmd),
            DbConn::NoMaster => Box::pin(async { Err(Self::no_master()) }),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            DbConn::Ready(conn) => conn.req_packed_commands(pipeline, offset, count),
            DbConn::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
            DbConn::NoMaster => Box::pin(async { Err(Self::no_master()) }),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            DbConn::Ready(conn) => conn.get_db(),
            DbConn::Cluster(_) | DbConn::NoMaster => 0,
        }
    }
}

struct Current {
    conn: DbConn,
    /// Where `conn` goes (a Sentinel group's master of the moment).
    addr: Option<ConnectionAddr>,
    since: Instant,
}

#[derive(Clone)]
pub struct Db {
    topology: Topology,
    current: Arc<Mutex<Current>>,
    timeout: Duration,
    /// Wakes the task that asks the sentinels where the master is.
    trouble: Arc<Notify>,
}

/// How often a Sentinel group is asked where its master is, trouble or not
/// (a master demoted while its connections stay up only shows as refused
/// writes).
const SENTINEL_CHECK_INTERVAL: Duration = Duration::from_secs(1);

impl Db {
    /// Connects lazily: the process starts, and answers 503, while Redis is
    /// down; the manager reconnects with backoff. For a Sentinel group, a
    /// task (living as long as this `Db`) finds the master and follows it
    /// when the group fails over.
    pub fn connect_lazy(topology: Topology, timeout: Duration) -> Result<Self, DbError> {
        let (conn, addr) = match &topology {
            Topology::Server(client) => (
                DbConn::Ready(Self::manager(client, timeout)?),
                Some(client.get_connection_info().addr().clone()),
            ),
            Topology::Sentinel(_) | Topology::Cluster(_) => (DbConn::NoMaster, None),
        };
        let db = Self {
            topology,
            current: Arc::new(Mutex::new(Current {
                conn,
                addr,
                since: Instant::now(),
            })),
            timeout,
            trouble: Arc::new(Notify::new()),
        };
        if let Topology::Cluster(url) = &db.topology {
            tokio::spawn(connect_cluster(
                url.clone(),
                Arc::downgrade(&db.current),
                timeout,
            ));
        }
        if db.topology.follows_failovers() {
            tokio::spawn(follow_master(
                db.topology.clone(),
                Arc::downgrade(&db.current),
                db.trouble.clone(),
                timeout,
            ));
        }
        Ok(db)
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
        lock(&self.current)
    }

    /// A handle to run commands on (cheap: the connection is shared).
    pub fn conn(&self) -> DbConn {
        self.lock().conn.clone()
    }

    /// Where Redis is.
    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// The command that publishes to a room's channel (`SPUBLISH` on a
    /// cluster: sharded Pub/Sub).
    pub fn publish_command(&self) -> &'static str {
        self.topology.publish_command()
    }

    /// The bound on any command.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Runs `op`, failing with [`DbError::Timeout`] past the timeout (and
    /// then replacing the connection, which may be half-open). Any failure
    /// makes a Sentinel group's master be asked for again.
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
                self.trouble.notify_one();
                Err(e.into())
            }
            Err(_) => {
                self.replace_connection();
                self.trouble.notify_one();
                Err(DbError::Timeout(self.timeout))
            }
        }
    }

    /// Starts over with a new connection to the same server, unless it was
    /// replaced less than a timeout ago (commands that timed out together
    /// replace it once). A Sentinel group's connection is replaced by the
    /// task that follows its master.
    fn replace_connection(&self) {
        let mut current = self.lock();
        if current.since.elapsed() < self.timeout {
            return;
        }
        let Topology::Server(client) = &self.topology else {
            // A Sentinel group's master: forgetting where the connection
            // goes makes the task that follows the master connect anew
            // (a half-open connection is never noticed otherwise).
            if self.topology.follows_failovers() {
                current.addr = None;
                current.since = Instant::now();
            }
            return;
        };
        match Self::manager(client, self.timeout) {
            Ok(conn) => {
                tracing::warn!("redis did not answer in time: replacing the connection");
                current.conn = DbConn::Ready(conn);
                current.since = Instant::now();
            }
            Err(e) => tracing::warn!(error = %e, "cannot make a new redis connection"),
        }
    }

    /// Runs `pipelines` (each about one room: one hash tag) and returns
    /// their replies in order, flattened. One server takes them as one
    /// pipeline; a cluster takes each on its room's shard, concurrently (a
    /// pipeline over several slots would be refused there).
    pub async fn query_pipelines(
        &self,
        pipelines: Vec<redis::Pipeline>,
    ) -> Result<Vec<Value>, DbError> {
        if pipelines.is_empty() {
            return Ok(Vec::new());
        }
        if !self.topology.sharded() {
            let mut all = redis::pipe();
            for pipeline in &pipelines {
                for cmd in pipeline.cmd_iter() {
                    all.add_command(cmd.clone());
                }
            }
            let mut conn = self.conn();
            return self.bounded(all.query_async(&mut conn)).await;
        }
        let each = pipelines.into_iter().map(|pipeline| {
            let mut conn = self.conn();
            async move {
                self.bounded(pipeline.query_async::<Vec<Value>>(&mut conn))
                    .await
            }
        });
        let replies = futures_util::future::try_join_all(each).await?;
        Ok(replies.into_iter().flatten().collect())
    }

    pub async fn ping(&self) -> Result<(), DbError> {
        let mut conn = self.conn();
        self.bounded(redis::cmd("PING").query_async::<String>(&mut conn))
            .await
            .map(drop)
    }
}

fn lock(current: &Mutex<Current>) -> std::sync::MutexGuard<'_, Current> {
    current.lock().unwrap_or_else(|p| p.into_inner())
}

/// Asks the sentinels where the master is, at start, after any trouble and
/// every [`SENTINEL_CHECK_INTERVAL`], and moves the connection when it
/// moved. Ends with the `Db`.
async fn follow_master(
    topology: Topology,
    current: Weak<Mutex<Current>>,
    trouble: Arc<Notify>,
    timeout: Duration,
) {
    let mut failing = false;
    loop {
        let Some(shared) = current.upgrade() else {
            return;
        };
        match tokio::time::timeout(topology.resolve_budget(timeout), topology.master()).await {
            Ok(Ok(client)) => {
                let addr = client.get_connection_info().addr().clone();
                let mut current = lock(&shared);
                if current.addr.as_ref() != Some(&addr) {
                    match Db::manager(&client, timeout) {
                        Ok(conn) => {
                            tracing::warn!(master = %addr, "redis master (from the sentinels): connecting");
                            *current = Current {
                                conn: DbConn::Ready(conn),
                                addr: Some(addr),
                                since: Instant::now(),
                            };
                        }
                        Err(e) => tracing::warn!(error = %e, "cannot connect to the redis master"),
                    }
                }
                if failing {
                    tracing::info!("the sentinels answer again");
                    failing = false;
                }
            }
            Ok(Err(e)) => {
                if !failing {
                    tracing::warn!(error = %e, "cannot ask the sentinels for the redis master");
                    failing = true;
                }
            }
            Err(_) => {
                if !failing {
                    tracing::warn!("the sentinels did not answer in time");
                    failing = true;
                }
            }
        }
        drop(shared);
        tokio::select! {
            _ = trouble.notified() => {
                // Failures come in bursts: one question for each burst.
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            _ = tokio::time::sleep(SENTINEL_CHECK_INTERVAL) => {}
        }
    }
}

/// Connects to a Redis Cluster (once it answers: until then commands fail
/// at once); the connection then follows the cluster by itself. Ends with
/// the `Db`.
async fn connect_cluster(url: Arc<ClusterUrl>, current: Weak<Mutex<Current>>, timeout: Duration) {
    let mut failing = false;
    loop {
        if current.strong_count() == 0 {
            return;
        }
        let connected = match url.client(timeout, None) {
            Ok(client) => tokio::time::timeout(timeout * 5, client.get_async_connection())
                .await
                .unwrap_or_else(|_| Err((ErrorKind::Io, "timed out").into())),
            Err(e) => Err(e),
        };
        match connected {
            Ok(conn) => {
                let Some(shared) = current.upgrade() else {
                    return;
                };
                tracing::info!(nodes = ?url.nodes, "connected to the redis cluster");
                let mut current = lock(&shared);
                current.conn = DbConn::Cluster(conn);
                current.since = Instant::now();
                return;
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(error = %e, "cannot reach the redis cluster yet");
                    failing = true;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}
