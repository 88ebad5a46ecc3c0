//! Room membership on this worker: the nginx module lists the signed-in
//! readers of each room (see `readers`), and this records them in Redis
//! (`presence`) and announces them.
//!
//! A member's first connection over all live workers publishes a `join`
//! event, its last one a `leave` event, unless the room is busy (see
//! `presence_threshold`): then count events stand in for them. Two
//! workers seeing the same member's first connection at the same instant
//! may both publish a join; clients key members by id.

use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use chatup_wire::id::unix_millis;
use chatup_wire::{EventKind, MessageIdGenerator, RoomEvent, User};

use crate::db::DbError;
use crate::presence::{Member, Presence};
use crate::store::Store;
use crate::worker::rooms::Rooms;

pub struct Membership {
    worker_id: String,
    presence: Presence,
    store: Store,
    rooms: Arc<Rooms>,
    ttl_ms: u64,
    threshold: u64,
    /// The live workers, as the last heartbeat saw them.
    live_workers: RwLock<Vec<String>>,
    ids: Mutex<MessageIdGenerator>,
}

impl Membership {
    pub fn new(
        worker_id: String,
        presence: Presence,
        store: Store,
        rooms: Arc<Rooms>,
        ttl_ms: u64,
        threshold: u64,
    ) -> Self {
        Self {
            worker_id,
            presence,
            store,
            rooms,
            ttl_ms,
            threshold,
            live_workers: RwLock::new(Vec::new()),
            ids: Mutex::new(MessageIdGenerator::new()),
        }
    }

    /// A new event of `room`, serialized.
    pub fn event(&self, room: &str, kind: EventKind) -> String {
        let now = SystemTime::now();
        let id = self
            .ids
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .next_id(now);
        let event = RoomEvent {
            id,
            room: room.to_owned(),
            kind,
            ts: unix_millis(now),
        };
        serde_json::to_string(&event).expect("events serialize")
    }

    /// The live workers, as the heartbeat last read them from the registry.
    pub fn set_live_workers(&self, live: Vec<String>) {
        *self.live_workers.write().unwrap_or_else(|p| p.into_inner()) = live;
    }

    fn other_live_workers(&self) -> Vec<String> {
        self.live_workers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|id| **id != self.worker_id)
            .cloned()
            .collect()
    }

    /// `member` is connected to `room` here now, `connections` times;
    /// `arrived`: it was not before.
    pub async fn member_connected(
        &self,
        room: &str,
        member: Member,
        connections: u64,
        arrived: bool,
    ) -> Result<(), DbError> {
        self.presence
            .set_member(room, &self.worker_id, &member, connections, self.ttl_ms)
            .await?;
        if !arrived {
            return Ok(());
        }
        self.announce(
            room,
            &member.id,
            EventKind::Join {
                user: User {
                    id: member.id.clone(),
                    public: member.public,
                    role: None,
                },
            },
        )
        .await
    }

    /// `user_id` has no connection left to `room` here; `public`: its
    /// display data, so that a page can say who left.
    pub async fn member_left(
        &self,
        room: &str,
        user_id: &str,
        public: Option<serde_json::Map<String, serde_json::Value>>,
    ) -> Result<(), DbError> {
        self.presence
            .remove_member(room, &self.worker_id, user_id)
            .await?;
        self.announce(
            room,
            user_id,
            EventKind::Leave {
                user: User {
                    id: user_id.to_owned(),
                    public,
                    role: None,
                },
            },
        )
        .await
    }

    /// Publishes a join or leave, unless the room is busy or the member is
    /// connected through another live worker.
    async fn announce(&self, room: &str, user_id: &str, kind: EventKind) -> Result<(), DbError> {
        if self.rooms.is_busy(room, self.threshold) {
            return Ok(());
        }
        let elsewhere = self
            .presence
            .is_member_anywhere(room, user_id, &self.other_live_workers())
            .await?;
        if elsewhere {
            return Ok(());
        }
        if let Err(e) = self
            .store
            .publish_event(room, &self.event(room, kind))
            .await
        {
            tracing::warn!(room, error = %e, "membership event not published");
        }
        Ok(())
    }
}
