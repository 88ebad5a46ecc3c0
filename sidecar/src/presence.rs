//! Who is in a room: readers and signed-in members, per worker, in Redis.
//!
//! Each worker keeps, per room it serves, its reader count and a hash of
//! its members (user id → connections) with their `public` data. These
//! keys expire with the worker's heartbeat TTL and are refreshed by each
//! heartbeat, so the members and counts of a worker that dies vanish on
//! their own; readers also only look at live workers' keys.

use std::collections::BTreeMap;

use redis::AsyncCommands;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::db::{Db, DbError};
use crate::keys;

fn add_member(
    pipe: &mut redis::Pipeline,
    room: &str,
    worker: &str,
    member: &Member,
    connections: u64,
    ttl_ms: u64,
) -> Result<(), DbError> {
    let (conns, public) = (
        keys::member_connections(room, worker),
        keys::member_public(room, worker),
    );
    pipe.hset(&conns, &member.id, connections)
        .ignore()
        .pexpire(&conns, ttl_ms as i64)
        .ignore();
    match &member.public {
        Some(map) => {
            let json = serde_json::to_string(map).map_err(|e| DbError::Corrupt(e.to_string()))?;
            pipe.hset(&public, &member.id, json).ignore();
        }
        None => {
            pipe.hdel(&public, &member.id).ignore();
        }
    }
    pipe.pexpire(&public, ttl_ms as i64).ignore();
    Ok(())
}

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
}

impl Presence {
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    /// Records that `member` has `connections` to `room` on `worker` (as
    /// the nginx module counts them: absolute, so a repeated or late update
    /// is harmless).
    pub async fn set_member(
        &self,
        room: &str,
        worker: &str,
        member: &Member,
        connections: u64,
        ttl_ms: u64,
    ) -> Result<(), DbError> {
        let mut pipe = redis::pipe();
        add_member(&mut pipe, room, worker, member, connections, ttl_ms)?;
        let mut conn = self.db.conn();
        self.db.bounded(pipe.query_async::<()>(&mut conn)).await
    }

    /// Replaces `worker`'s members of `room` with `members` (after the
    /// sidecar started: whoever left meanwhile goes).
    pub async fn replace_members(
        &self,
        room: &str,
        worker: &str,
        members: &[(Member, u64)],
        ttl_ms: u64,
    ) -> Result<(), DbError> {
        let mut pipe = redis::pipe();
        pipe.atomic()
            .del(keys::member_connections(room, worker))
            .ignore()
            .del(keys::member_public(room, worker))
            .ignore();
        for (member, connections) in members {
            add_member(&mut pipe, room, worker, member, *connections, ttl_ms)?;
        }
        let mut conn = self.db.conn();
        self.db.bounded(pipe.query_async::<()>(&mut conn)).await
    }

    /// `user_id` has no connection left to `room` on `worker`.
    pub async fn remove_member(
        &self,
        room: &str,
        worker: &str,
        user_id: &str,
    ) -> Result<(), DbError> {
        let mut pipe = redis::pipe();
        pipe.hdel(keys::member_connections(room, worker), user_id)
            .ignore()
            .hdel(keys::member_public(room, worker), user_id)
            .ignore();
        let mut conn = self.db.conn();
        self.db.bounded(pipe.query_async::<()>(&mut conn)).await
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
        let pipelines = readers
            .iter()
            .map(|(room, count)| {
                let mut pipe = redis::pipe();
                pipe.cmd("SET")
                    .arg(keys::subscriber_count(room, worker))
                    .arg(count)
                    .arg("PX")
                    .arg(ttl_ms);
                pipe.pexpire(keys::member_connections(room, worker), ttl_ms as i64);
                pipe.pexpire(keys::member_public(room, worker), ttl_ms as i64);
                pipe
            })
            .collect();
        self.db.query_pipelines(pipelines).await.map(drop)
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
        let pipelines = rooms
            .iter()
            .map(|room| {
                let mut pipe = redis::pipe();
                for worker in workers {
                    pipe.get(keys::subscriber_count(room, worker));
                    pipe.hlen(keys::member_connections(room, worker));
                }
                pipe
            })
            .collect();
        let replies = self.db.query_pipelines(pipelines).await?;
        let values: Vec<Option<u64>> = replies
            .into_iter()
            .map(redis::from_redis_value)
            .collect::<Result<_, _>>()
            .map_err(|e| DbError::Corrupt(e.to_string()))?;
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
