//! Messages in Redis: one atomic transaction appends a message to its
//! room's history (trimmed, with expiry) and publishes it to the room's
//! channel. A message is acknowledged only after that transaction. Room
//! events (joins, leaves) are published the same way but kept out of the
//! history.

use redis::AsyncCommands;

use crate::db::{Db, DbError};
use crate::keys;

#[derive(Clone)]
pub struct Store {
    db: Db,
    history_length: usize,
    history_ttl_secs: u64,
}

impl Store {
    pub fn new(db: Db, history_length: usize, history_ttl_secs: u64) -> Self {
        Self {
            db,
            history_length,
            history_ttl_secs,
        }
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
