//! Who is in a room: readers and signed-in members, per worker, in Redis.
//!
//! Each worker keeps, per room it serves, its reader count and a hash of
//! its members (user id → connections) with their `public` data. These
//! keys expire with the worker's heartbeat TTL and are refreshed by each
//! heartbeat, so the members and counts of a worker that dies vanish on
//! their own; readers also only look at live workers' keys.

use std::collections::BTreeMap;

use redis::{AsyncCommands, Script};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::db::{Db, DbError};
use crate::keys;

// KEYS: connections hash, public hash. ARGV: user id, public JSON ('' for
// none), ttl ms. Returns the member's connections on this worker.
const JOIN: &str = r#"
local n = redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
if ARGV[2] ~= '' then
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
  redis.call('PEXPIRE', KEYS[2], ARGV[3])
end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return n
"#;

// KEYS: connections hash, public hash. ARGV: user id. Returns the member's
// connections left on this worker.
const LEAVE: &str = r#"
local n = redis.call('HINCRBY', KEYS[1], ARGV[1], -1)
if n <= 0 then
  redis.call('HDEL', KEYS[1], ARGV[1])
  redis.call('HDEL', KEYS[2], ARGV[1])
  return 0
end
return n
"#;

/// Readers and members of one room over a set of workers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RoomCounts {
    pub subscribers: u64,
    pub members: u64,
}

/// A signed-in reader of a room.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Member {
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public: Option<Map<String, Value>>,
}

#[derive(Clone)]
pub struct Presence {
    db: Db,
    join: Script,
    leave: Script,
}

impl Presence {
    pub fn new(db: Db) -> Self {
        Self {
            db,
            join: Script::new(JOIN),
            leave: Script::new(LEAVE),
        }
    }

    /// One more connection of `user` to `room` on `worker`; returns how
    /// many that member now has there.
    pub async fn join(
        &self,
        room: &str,
        worker: &str,
        user: &Member,
        ttl_ms: u64,
    ) -> Result<u64, DbError> {
        let public = match &user.public {
            Some(map) => serde_json::to_string(map).map_err(|e| DbError::Corrupt(e.to_string()))?,
            None => String::new(),
        };
        let mut invocation = self.join.prepare_invoke();
        invocation
            .key(keys::member_connections(room, worker))
            .key(keys::member_public(room, worker))
            .arg(&user.id)
            .arg(public)
            .arg(ttl_ms);
        let mut conn = self.db.conn();
        self.db.bounded(invocation.invoke_async(&mut conn)).await
    }

    /// One connection fewer; returns how many the member still has there.
    pub async fn leave(&self, room: &str, worker: &str, user_id: &str) -> Result<u64, DbError> {
        let mut invocation = self.leave.prepare_invoke();
        invocation
            .key(keys::member_connections(room, worker))
            .key(keys::member_public(room, worker))
            .arg(user_id);
        let mut conn = self.db.conn();
        self.db.bounded(invocation.invoke_async(&mut conn)).await
    }

    /// The heartbeat's part: records `worker`'s reader count per room and
    /// keeps its member keys alive for `ttl_ms`.
    pub async fn refresh(
        &self,
        worker: &str,
        readers: &[(String, u64)],
        ttl_ms: u64,
    ) -> Result<(), DbError> {
        if readers.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for (room, count) in readers {
            let (conns, public) = (
                keys::member_connections(room, worker),
                keys::member_public(room, worker),
            );
            pipe.cmd("SET")
                .arg(keys::subscriber_count(room, worker))
                .arg(count)
                .arg("PX")
                .arg(ttl_ms)
                .ignore();
            pipe.pexpire(&conns, ttl_ms as i64).ignore();
            pipe.pexpire(&public, ttl_ms as i64).ignore();
        }
        let mut conn = self.db.conn();
        self.db.bounded(pipe.query_async::<()>(&mut conn)).await
    }

    /// Forgets `worker`'s readers and members of `room` (it stopped serving
    /// it: members whose leave hook was missed, say while the sidecar was
    /// down, go with it).
    pub async fn forget(&self, room: &str, worker: &str) -> Result<(), DbError> {
        let mut conn = self.db.conn();
        let keys = [
            keys::subscriber_count(room, worker),
            keys::member_connections(room, worker),
            keys::member_public(room, worker),
        ];
        self.db.bounded(conn.del::<_, ()>(&keys)).await
    }

    /// Counts of each room over `workers`. A member connected through
    /// several workers counts once per worker here; [`Presence::members`]
    /// is exact.
    pub async fn counts(
        &self,
        rooms: &[String],
        workers: &[String],
    ) -> Result<Vec<RoomCounts>, DbError> {
        if rooms.is_empty() || workers.is_empty() {
            return Ok(vec![RoomCounts::default(); rooms.len()]);
        }
        let mut pipe = redis::pipe();
        for room in rooms {
            for worker in workers {
                pipe.get(keys::subscriber_count(room, worker));
                pipe.hlen(keys::member_connections(room, worker));
            }
        }
        let mut conn = self.db.conn();
        let values: Vec<Option<u64>> = self.db.bounded(pipe.query_async(&mut conn)).await?;
        Ok(values
            .chunks(workers.len() * 2)
            .map(|room| RoomCounts {
                subscribers: room.iter().step_by(2).map(|v| v.unwrap_or(0)).sum(),
                members: room.iter().skip(1).step_by(2).map(|v| v.unwrap_or(0)).sum(),
            })
            .collect())
    }

    /// Every member of `room` over `workers`, each once, sorted by id.
    pub async fn members(&self, room: &str, workers: &[String]) -> Result<Vec<Member>, DbError> {
        if workers.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for worker in workers {
            pipe.hkeys(keys::member_connections(room, worker));
            pipe.hgetall(keys::member_public(room, worker));
        }
        let mut conn = self.db.conn();
        let replies: Vec<redis::Value> = self.db.bounded(pipe.query_async(&mut conn)).await?;
        let mut members: BTreeMap<String, Option<Map<String, Value>>> = BTreeMap::new();
        for pair in replies.chunks(2) {
            let corrupt = |e: redis::ParsingError| DbError::Corrupt(e.to_string());
            let ids: Vec<String> = redis::from_redis_value(pair[0].clone()).map_err(corrupt)?;
            let public: std::collections::HashMap<String, String> =
                redis::from_redis_value(pair[1].clone()).map_err(corrupt)?;
            for id in ids {
                let data = public
                    .get(&id)
                    .and_then(|json| serde_json::from_str::<Map<String, Value>>(json).ok());
                let slot = members.entry(id).or_default();
                if slot.is_none() {
                    *slot = data;
                }
            }
        }
        Ok(members
            .into_iter()
            .map(|(id, public)| Member { id, public })
            .collect())
    }

    /// Whether `user_id` is connected to `room` through any of `workers`.
    pub async fn is_member_anywhere(
        &self,
        room: &str,
        user_id: &str,
        workers: &[String],
    ) -> Result<bool, DbError> {
        if workers.is_empty() {
            return Ok(false);
        }
        let mut pipe = redis::pipe();
        for worker in workers {
            pipe.hexists(keys::member_connections(room, worker), user_id);
        }
        let mut conn = self.db.conn();
        let found: Vec<bool> = self.db.bounded(pipe.query_async(&mut conn)).await?;
        Ok(found.into_iter().any(|f| f))
    }
}
