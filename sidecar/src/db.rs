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
//!
//! The master of a Sentinel group is only ever reached at an address the
//! sentinels name at that moment: its connection does not reconnect by
//! itself. A master that dies and is started again while the group fails
//! over comes back as a master with what it had, until the sentinels make
//! it a replica (seconds later); a connection that went back to it by
//! itself would read and write stale data there. So any connection error
//! forgets the master, and the sentinels are asked again.

use std::future::Future;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use redis::aio::{
    ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection,
};
use redis::cluster_async::ClusterConnection;
use redis::{
    AsyncConnectionConfig, Cmd, ConnectionAddr, ErrorKind, Pipeline, RedisFuture, ServerErrorKind,
    Value,
};
use tokio::sync::{watch, Notify};

use crate::telemetry::names;
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
    /// A Sentinel group's master, as the sentinels named it: never
    /// reconnected by itself (see the module's comment).
    Master(MultiplexedConnection),
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
            DbConn::Master(conn) => conn.req_packed_command(cmd),
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
            DbConn::Master(conn) => conn.req_packed_commands(pipeline, offset, count),
            DbConn::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
            DbConn::NoMaster => Box::pin(async { Err(Self::no_master()) }),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            DbConn::Ready(conn) => conn.get_db(),
            DbConn::Master(conn) => conn.get_db(),
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
    /// Counts the moves to a new master (a Sentinel group's): what was read
    /// before one may have come from a server that was no longer the
    /// master.
    moves: watch::Receiver<u64>,
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
        let (moved, moves) = watch::channel(0);
        let db = Self {
            topology,
            current: Arc::new(Mutex::new(Current {
                conn,
                addr,
                since: Instant::now(),
            })),
            timeout,
            trouble: Arc::new(Notify::new()),
            moves,
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
                moved,
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

    /// Changes each time the connection moves to a new master (a Sentinel
    /// group's; never for one server or a cluster).
    pub fn master_moves(&self) -> watch::Receiver<u64> {
        self.moves.clone()
    }

    /// Runs `op`, failing with [`DbError::Timeout`] past the timeout (and
    /// then replacing the connection, which may be half-open). Any failure
    /// makes a Sentinel group's master be asked for again.
    pub async fn bounded<T>(
        &self,
        op: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, DbError> {
        let started = Instant::now();
        let outcome = tokio::time::timeout(self.timeout, op).await;
        metrics::histogram!(names::REDIS_COMMAND_SECONDS).record(started.elapsed());
        match outcome {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => {
                let kind = if e.is_timeout() { "timeout" } else { "error" };
                metrics::counter!(names::REDIS_ERRORS, "kind" => kind).increment(1);
                if e.is_timeout() {
                    self.replace_connection();
                } else if self.topology.follows_failovers() && connection_lost(&e) {
                    self.forget_master();
                }
                self.trouble.notify_one();
                Err(e.into())
            }
            Err(_) => {
                metrics::counter!(names::REDIS_ERRORS, "kind" => "timeout").increment(1);
                self.replace_connection();
                self.trouble.notify_one();
                Err(DbError::Timeout(self.timeout))
            }
        }
    }

    /// Drops the connection to a Sentinel group's master: commands fail at
    /// once (503) until the sentinels name a master again.
    fn forget_master(&self) {
        let mut current = self.lock();
        if current.addr.is_some() {
            tracing::warn!("lost the redis master: asking the sentinels again");
            current.conn = DbConn::NoMaster;
            current.addr = None;
            current.since = Instant::now();
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
                drop(current);
                self.forget_master();
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

/// Whether `e` means the connection (or the master role of the server at
/// its end) is gone: broken, refused, or a write refused by a replica.
fn connection_lost(e: &redis::RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_unrecoverable_error()
        || e.kind() == ErrorKind::Server(ServerErrorKind::ReadOnly)
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
    moved: watch::Sender<u64>,
    timeout: Duration,
) {
    let mut failing = false;
    let budget = topology.resolve_budget(timeout);
    loop {
        if current.strong_count() == 0 {
            return;
        }
        // The master named now, connected to now: the connection is made
        // before anything is sent on it, so it reaches the server that was
        // just named (and that answered ROLE as a master).
        let named = async {
            let client = topology.master().await?;
            let addr = client.get_connection_info().addr().clone();
            let known = current
                .upgrade()
                .is_some_and(|shared| lock(&shared).addr.as_ref() == Some(&addr));
            if known {
                return Ok(None);
            }
            let config = AsyncConnectionConfig::new()
                .set_connection_timeout(Some(timeout))
                .set_response_timeout(Some(timeout));
            let conn = client
                .get_multiplexed_async_connection_with_config(&config)
                .await?;
            Ok::<_, redis::RedisError>(Some((addr, conn)))
        };
        match tokio::time::timeout(budget, named).await {
            Ok(Ok(found)) => {
                if let (Some((addr, conn)), Some(shared)) = (found, current.upgrade()) {
                    tracing::warn!(master = %addr, "redis master (from the sentinels): connected");
                    *lock(&shared) = Current {
                        conn: DbConn::Master(conn),
                        addr: Some(addr),
                        since: Instant::now(),
                    };
                    moved.send_modify(|count| *count += 1);
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
