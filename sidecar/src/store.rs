//! Messages in Redis: one atomic transaction appends a message to its
//! room's history (trimmed, with expiry) and publishes it to the room's
//! channel. A message is acknowledged only after that transaction. Room
//! events (joins, leaves) are published the same way but kept out of the
//! history.

use redis::{AsyncCommands, Script};

use crate::db::{Db, DbError};
use crate::keys;

#[derive(Clone)]
pub struct Store {
    db: Db,
    history_length: usize,
    history_ttl_secs: u64,
    append_once: Script,
}

// KEYS: history, idempotency key. ARGV: message, history length, history
// ttl, channel, answer, key ttl. The same transaction as `append`, unless
// the key was used: then nothing is stored and the first answer returned.
const APPEND_ONCE: &str = r#"
local first = redis.call('GET', KEYS[2])
if first then return first end
redis.call('RPUSH', KEYS[1], ARGV[1])
redis.call('LTRIM', KEYS[1], -tonumber(ARGV[2]), -1)
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('PUBLISH', ARGV[4], ARGV[1])
redis.call('SET', KEYS[2], ARGV[5], 'EX', ARGV[6])
return false
"#;

impl Store {
    pub fn new(db: Db, history_length: usize, history_ttl_secs: u64) -> Self {
        Self {
            db,
            history_length,
            history_ttl_secs,
            append_once: Script::new(APPEND_ONCE),
        }
    }

    pub fn db(&self) -> &Db {
        &self.db
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
            .publish(keys::room_channel(room), message)
            .ignore();
        let mut conn = self.db.conn();
        self.db.bounded(pipe.query_async::<()>(&mut conn)).await
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
            .arg(chatup_wire::idempotency::IDEMPOTENCY_TTL_SECS);
        let mut conn = self.db.conn();
        self.db.bounded(invocation.invoke_async(&mut conn)).await
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
            .bounded(conn.publish::<_, _, ()>(keys::room_channel(room), event))
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
