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

use redis::{AsyncCommands, Script, Value};

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
    /// A store on the Redis at `url` (which need not run), as the tests
    /// use it: 100 messages of history, kept an hour.
    #[cfg(test)]
    pub fn for_tests(url: &str) -> Self {
        let client = redis::Client::open(url).expect("a Redis URL");
        let db = Db::connect_lazy(
            crate::topology::Topology::Server(Box::new(client)),
            std::time::Duration::from_secs(2),
        )
        .expect("a lazy connection");
        Self::new(db, 100, 3600)
    }

    pub fn new(db: Db, history_length: usize, history_ttl_secs: u64) -> Self {
        Self {
            writer: db.clone(),
            min_replicas: 0,
            db,
            history_length,
            history_ttl_secs,
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

    /// Runs `write` and, with replicas wanted, `WAIT` right behind it in the
    /// same pipeline: one connection and one batch, so that the `WAIT`
    /// covers that write (a `WAIT` sent later could go out on a new
    /// connection, after a reconnection or a move to a new master, and
    /// answer at once for writes it never saw). Returns the write's replies.
    async fn write_replicated(&self, mut write: redis::Pipeline) -> Result<Vec<Value>, DbError> {
        if self.min_replicas > 0 {
            let wait_ms = (self.writer.timeout() / 2).as_millis().max(1) as u64;
            write.cmd("WAIT").arg(self.min_replicas).arg(wait_ms);
        }
        let mut conn = self.writer.conn();
        let mut replies: Vec<Value> = self.writer.bounded(write.query_async(&mut conn)).await?;
        if self.min_replicas > 0 {
            let got: u32 = replies
                .pop()
                .map(redis::from_redis_value)
                .transpose()
                .map_err(|e| DbError::Corrupt(e.to_string()))?
                .unwrap_or(0);
            if got < self.min_replicas {
                return Err(DbError::NotReplicated {
                    wanted: self.min_replicas,
                    got,
                });
            }
        }
        Ok(replies)
    }

    /// Before a retried post is answered as the first one was: makes sure
    /// the replicas have that first one. A write of the key comes after the
    /// message in the replication stream, so waiting for it waits for the
    /// message too (which another worker may have written).
    pub async fn first_answer_replicated(&self, idempotency_key: &str) -> Result<(), DbError> {
        if self.min_replicas == 0 {
            return Ok(());
        }
        let mut write = redis::pipe();
        write.expire(
            idempotency_key,
            chatup_wire::idempotency::IDEMPOTENCY_TTL_SECS as i64,
        );
        let replies = self.write_replicated(write).await?;
        // 0: the key is gone, so the first answer cannot be confirmed.
        let kept: i64 = replies
            .into_iter()
            .next()
            .map(redis::from_redis_value)
            .transpose()
            .map_err(|e| DbError::Corrupt(e.to_string()))?
            .unwrap_or(0);
        if kept == 0 {
            return Err(DbError::Corrupt(
                "the idempotency key expired while confirming it".into(),
            ));
        }
        Ok(())
    }

    /// Stores `message` (a serialized envelope) in `room`'s history and
    /// publishes it to every worker subscribed to the room, in one
    /// transaction (MULTI/EXEC, spelled out so that `WAIT` can follow it in
    /// the same pipeline).
    pub async fn append(&self, room: &str, message: &str) -> Result<(), DbError> {
        let history = keys::history(room);
        let mut pipe = redis::pipe();
        pipe.cmd("MULTI")
            .ignore()
            .rpush(&history, message)
            .ignore()
            .ltrim(&history, -(self.history_length as isize), -1)
            .ignore()
            .expire(&history, self.history_ttl_secs as i64)
            .ignore()
            .cmd(self.writer.publish_command())
            .arg(keys::room_channel(room))
            .arg(message)
            .ignore()
            .cmd("EXEC")
            .ignore();
        self.write_replicated(pipe).await.map(drop)
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
        // EVAL, not EVALSHA: in a pipeline there is no NOSCRIPT fallback.
        let mut pipe = redis::pipe();
        pipe.cmd("EVAL")
            .arg(APPEND_ONCE)
            .arg(2)
            .arg(keys::history(room))
            .arg(idempotency_key)
            .arg(message)
            .arg(self.history_length)
            .arg(self.history_ttl_secs)
            .arg(keys::room_channel(room))
            .arg(ack)
            .arg(chatup_wire::idempotency::IDEMPOTENCY_TTL_SECS)
            .arg(self.writer.publish_command());
        let replies = self.write_replicated(pipe).await?;
        let first: Option<String> = replies
            .into_iter()
            .next()
            .map(redis::from_redis_value)
            .transpose()
            .map_err(|e| DbError::Corrupt(e.to_string()))?
            .flatten();
        match first {
            None => Ok(None),
            // A retry of itself was stored first (maybe not by us): the
            // WAIT above covered nothing of it.
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

// KEYS: a room's history. ARGV: a message id. Removes the message with
// that id (the first found: ids are unique); returns 1, or 0 when the
// history no longer has it.
const REMOVE_MESSAGE: &str = r#"
local items = redis.call('LRANGE', KEYS[1], 0, -1)
for _, item in ipairs(items) do
  local ok, message = pcall(cjson.decode, item)
  if ok and type(message) == 'table' and message.id == ARGV[1] and message.ev == nil then
    return redis.call('LREM', KEYS[1], 1, item)
  end
end
return 0
"#;

/// Removes the message `id` from `room`'s history; false when the history
/// does not have it (trimmed away, or never there).
pub async fn remove_message(db: &Db, room: &str, id: &str) -> Result<bool, DbError> {
    let script = Script::new(REMOVE_MESSAGE);
    let mut invocation = script.prepare_invoke();
    invocation.key(keys::history(room)).arg(id);
    let mut conn = db.conn();
    let removed: u64 = db.bounded(invocation.invoke_async(&mut conn)).await?;
    Ok(removed > 0)
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
