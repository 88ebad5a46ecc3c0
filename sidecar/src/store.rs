//! Messages in Redis: one atomic transaction appends a message to its
//! room's history (trimmed, with expiry) and publishes it to the room's
//! channel. A message is acknowledged only after that transaction, and,
//! with replicas wanted (`redis_min_replicas`: a Sentinel group), only once
//! that many replicas have it (`WAIT`), so that a failover cannot lose it.
//! Room events (joins, leaves) are published the same way but kept out of
//! the history.
//!
//! `WAIT` covers the writes of its own connection and holds that
//! connection until the replicas answer, so messages are written through a
//! connection of their own (`writer`), never the one everything else
//! shares.

use redis::{AsyncCommands, Script};

use crate::db::{Db, DbError};
use crate::keys;

#[derive(Clone)]
pub struct Store {
    db: Db,
    /// Where messages are written (and waited for): `db` unless replicas
    /// are wanted.
    writer: Db,
    /// Replicas that must have a message before it is acknowledged.
    min_replicas: u32,
    history_length: usize,
    history_ttl_secs: u64,
    append_once: Script,
}

// KEYS: history, idempotency key. ARGV: message, history length, history
// ttl, channel, answer, key ttl, publish command (PUBLISH, or SPUBLISH on a
// cluster). The same transaction as `append`, unless the key was used: then
// nothing is stored and the first answer returned.
const APPEND_ONCE: &str = r#"
local first = redis.call('GET', KEYS[2])
if first then return first end
redis.call('RPUSH', KEYS[1], ARGV[1])
redis.call('LTRIM', KEYS[1], -tonumber(ARGV[2]), -1)
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call(ARGV[7], ARGV[4], ARGV[1])
redis.call('SET', KEYS[2], ARGV[5], 'EX', ARGV[6])
return false
"#;

impl Store {
    pub fn new(db: Db, history_length: usize, history_ttl_secs: u64) -> Self {
        Self {
            writer: db.clone(),
            min_replicas: 0,
            db,
            history_length,
            history_ttl_secs,
            append_once: Script::new(APPEND_ONCE),
        }
    }

    /// Acknowledges messages only once `min_replicas` replicas have them;
    /// `writer` is a connection of the messages' own.
    pub fn with_replicas(self, writer: Db, min_replicas: u32) -> Self {
        Self {
            writer,
            min_replicas,
            ..self
        }
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Waits until the wanted replicas have every write made so far through
    /// `writer` (on a cluster: to `key`'s shard), half the Redis timeout at
    /// most.
    async fn replicated(&self, key: &str) -> Result<(), DbError> {
        if self.min_replicas == 0 {
            return Ok(());
        }
        let wait_ms = (self.writer.timeout() / 2).as_millis() as u64;
        let got = self
            .writer
            .wait_replicas(key, self.min_replicas, wait_ms.max(1))
            .await?;
        if got < self.min_replicas {
            return Err(DbError::NotReplicated {
                wanted: self.min_replicas,
                got,
            });
        }
        Ok(())
    }

    /// Before a retried post is answered as the first one was: makes sure
    /// the replicas have that first one. A write of the key through
    /// `writer` comes after the message in the replication stream, so
    /// waiting for it waits for the message too (which another worker may
    /// have written).
    pub async fn first_answer_replicated(&self, idempotency_key: &str) -> Result<(), DbError> {
        if self.min_replicas == 0 {
            return Ok(());
        }
        let mut conn = self.writer.conn();
        self.writer
            .bounded(conn.expire::<_, ()>(
                idempotency_key,
                chatup_wire::idempotency::IDEMPOTENCY_TTL_SECS as i64,
            ))
            .await?;
        self.replicated(idempotency_key).await
    }

    /// Stores `message` (a serialized envelope) in `room`'s history and
    /// publishes it to every worker subscribed to the room.
    pub async fn append(&self, room: &str, message: &str) -> Result<(), DbError> {
        let history = keys::history(room);
        let mut pipe = redis::pipe();
        pipe.atomic()
            .rpush(&history, message)
            .ignore()
            .ltrim(&history, -(self.history_length as isize), -1)
            .ignore()
            .expire(&history, self.history_ttl_secs as i64)
            .ignore()
            .cmd(self.writer.publish_command())
            .arg(keys::room_channel(room))
            .arg(message)
            .ignore();
        let mut conn = self.writer.conn();
        self.writer
            .bounded(pipe.query_async::<()>(&mut conn))
            .await?;
        self.replicated(&history).await
    }

    /// Like [`append`](Self::append) for a post with an idempotency key,
    /// atomically: if the key was used already, stores nothing and returns
    /// the first answer; else stores the message with `ack` as the answer
    /// to remember, and returns `None`.
    pub async fn append_once(
        &self,
        room: &str,
        message: &str,
        idempotency_key: &str,
        ack: &str,
    ) -> Result<Option<String>, DbError> {
        let mut invocation = self.append_once.prepare_invoke();
        invocation
            .key(keys::history(room))
            .key(idempotency_key)
            .arg(message)
            .arg(self.history_length)
            .arg(self.history_ttl_secs)
            .arg(keys::room_channel(room))
            .arg(ack)
            .arg(chatup_wire::idempotency::IDEMPOTENCY_TTL_SECS)
            .arg(self.writer.publish_command());
        let mut conn = self.writer.conn();
        let first: Option<String> = self
            .writer
            .bounded(invocation.invoke_async(&mut conn))
            .await?;
        match first {
            None => self.replicated(&keys::history(room)).await.map(|()| None),
            Some(first) => self
                .first_answer_replicated(idempotency_key)
                .await
                .map(|()| Some(first)),
        }
    }

    /// The first answer to a post with this idempotency key, if any.
    pub async fn first_answer(&self, idempotency_key: &str) -> Result<Option<String>, DbError> {
        let mut conn = self.db.conn();
        self.db.bounded(conn.get(idempotency_key)).await
    }

    /// Remembers that `user` posted in `room` (for bans in every room).
    /// Not part of the message's transaction: the room's and the user's
    /// keys may live in different Redis Cluster slots.
    pub async fn note_poster(&self, room: &str, user: &str) -> Result<(), DbError> {
        let key = keys::user_rooms(user);
        let mut pipe = redis::pipe();
        pipe.sadd(&key, room)
            .ignore()
            .expire(&key, self.history_ttl_secs as i64)
            .ignore();
        let mut conn = self.db.conn();
        self.db.bounded(pipe.query_async::<()>(&mut conn)).await
    }

    /// Publishes a room event (serialized) to every worker serving the room.
    pub async fn publish_event(&self, room: &str, event: &str) -> Result<(), DbError> {
        let mut conn = self.db.conn();
        self.db
            .bounded(
                redis::cmd(self.db.publish_command())
                    .arg(keys::room_channel(room))
                    .arg(event)
                    .query_async::<()>(&mut conn),
            )
            .await
    }

    /// The last `count` messages of `room`, oldest first.
    pub async fn recent(&self, room: &str, count: usize) -> Result<Vec<String>, DbError> {
        recent(&self.db, room, count).await
    }
}

/// The last `count` messages of `room`, oldest first.
pub async fn recent(db: &Db, room: &str, count: usize) -> Result<Vec<String>, DbError> {
    let mut conn = db.conn();
    let start = -(count.max(1) as isize);
    db.bounded(conn.lrange(keys::history(room), start, -1))
        .await
}

/// The whole history of `room`, oldest first.
pub async fn all(db: &Db, room: &str) -> Result<Vec<String>, DbError> {
    let mut conn = db.conn();
    db.bounded(conn.lrange(keys::history(room), 0, -1)).await
}

/// The rooms `user` posted in while their history lasts.
pub async fn rooms_of_poster(db: &Db, user: &str) -> Result<Vec<String>, DbError> {
    let mut conn = db.conn();
    db.bounded(conn.smembers(keys::user_rooms(user))).await
}

// KEYS: a room's history. ARGV: user id. Rewrites the history without that
// user's messages, keeping its expiry; returns how many were removed.
const PURGE_USER: &str = r#"
local items = redis.call('LRANGE', KEYS[1], 0, -1)
local keep, removed = {}, 0
for _, item in ipairs(items) do
  local ok, message = pcall(cjson.decode, item)
  if ok and type(message) == 'table' and type(message.user) == 'table'
      and message.user.id == ARGV[1] then
    removed = removed + 1
  else
    keep[#keep + 1] = item
  end
end
if removed > 0 then
  local ttl = redis.call('PTTL', KEYS[1])
  redis.call('DEL', KEYS[1])
  for i = 1, #keep, 500 do
    redis.call('RPUSH', KEYS[1], unpack(keep, i, math.min(i + 499, #keep)))
  end
  if ttl > 0 and #keep > 0 then redis.call('PEXPIRE', KEYS[1], ttl) end
end
return removed
"#;

/// Removes `user`'s messages from `room`'s history; returns how many.
pub async fn purge_user(db: &Db, room: &str, user: &str) -> Result<u64, DbError> {
    let script = Script::new(PURGE_USER);
    let mut invocation = script.prepare_invoke();
    invocation.key(keys::history(room)).arg(user);
    let mut conn = db.conn();
    db.bounded(invocation.invoke_async(&mut conn)).await
}

/// `store`, acknowledging messages only once `min_replicas` replicas have
/// them, through a connection of their own.
pub fn durable(
    store: Store,
    topology: &crate::topology::Topology,
    min_replicas: u32,
    timeout: std::time::Duration,
) -> Result<Store, DbError> {
    if min_replicas == 0 {
        return Ok(store);
    }
    tracing::info!(
        min_replicas,
        "messages are acknowledged once on the redis replicas"
    );
    Ok(store.with_replicas(Db::connect_lazy(topology.clone(), timeout)?, min_replicas))
}
