//! Room membership on this worker, from nchan's subscribe and unsubscribe
//! hooks (`GET /v1/hooks/join`, `GET /v1/hooks/leave`).
//!
//! A reader whose URL carries `?token=` is a member of the room with the
//! token's `public` data; one without is only counted (nchan counts it).
//! nginx verified the token before letting the reader in (nchan's
//! authorize step runs first), so the hooks only read who it names.
//!
//! A member's first connection over all live workers publishes a `join`
//! event, its last one a `leave` event, unless the room is busy (see
//! `presence_threshold`): then count events stand in for them. Two
//! workers seeing the same member's first connection at the same instant
//! may both publish a join; clients key members by id.
//!
//! nchan does not call these hooks for long-poll readers: they are counted
//! (nchan counts them) but are not listed as members.

use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use chatup_gate::query::query_param;
use chatup_gate::token::identity_of_verified_token;
use chatup_wire::id::unix_millis;
use chatup_wire::{validate_room, EventKind, MessageIdGenerator, RoomEvent, User};

use crate::db::DbError;
use crate::presence::{Member, Presence};
use crate::store::Store;
use crate::worker::rooms::Rooms;

pub struct Membership {
    pub worker_id: String,
    pub presence: Presence,
    pub store: Store,
    pub rooms: Arc<Rooms>,
    pub ttl_ms: u64,
    pub threshold: u64,
    /// The live workers, as the last heartbeat saw them.
    pub live_workers: RwLock<Vec<String>>,
    ids: Mutex<MessageIdGenerator>,
}

#[derive(Debug, thiserror::Error)]
enum HookError {
    #[error("missing X-Chatup-Room")]
    MissingRoom,
    #[error("invalid room name: {0}")]
    Room(#[from] chatup_wire::RoomNameError),
    #[error("unreadable token: {0}")]
    Token(chatup_gate::GateError),
    #[error("membership not recorded: {0}")]
    Store(#[from] DbError),
}

/// Whether a hook is a reader arriving or leaving.
#[derive(Debug, Clone, Copy)]
enum Change {
    Join,
    Leave,
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

    fn other_live_workers(&self) -> Vec<String> {
        self.live_workers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|id| **id != self.worker_id)
            .cloned()
            .collect()
    }

    async fn apply(&self, change: Change, room: &str, member: Member) -> Result<(), HookError> {
        let left_here = match change {
            Change::Join => {
                self.presence
                    .join(room, &self.worker_id, &member, self.ttl_ms)
                    .await?
            }
            Change::Leave => {
                self.presence
                    .leave(room, &self.worker_id, &member.id)
                    .await?
            }
        };
        let first_or_last_here = match change {
            Change::Join => left_here == 1,
            Change::Leave => left_here == 0,
        };
        if !first_or_last_here || self.rooms.is_busy(room, self.threshold) {
            return Ok(());
        }
        let elsewhere = self
            .presence
            .is_member_anywhere(room, &member.id, &self.other_live_workers())
            .await?;
        if elsewhere {
            return Ok(());
        }
        let kind = match change {
            Change::Join => EventKind::Join {
                user: User {
                    id: member.id,
                    public: member.public,
                    role: None,
                },
            },
            Change::Leave => EventKind::Leave {
                user: User {
                    id: member.id,
                    public: None,
                    role: None,
                },
            },
        };
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

/// The room and the member (if the reader presented a token) of a hook.
fn reader(headers: &HeaderMap) -> Result<(String, Option<Member>), HookError> {
    let room = headers
        .get("x-chatup-room")
        .and_then(|v| v.to_str().ok())
        .ok_or(HookError::MissingRoom)?;
    validate_room(room)?;
    let uri = headers
        .get("x-original-uri")
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    let member = match query_param(uri, "token").filter(|t| !t.is_empty()) {
        None => None,
        Some(token) => {
            let identity = identity_of_verified_token(&token).map_err(HookError::Token)?;
            Some(Member {
                id: identity.sub,
                public: identity.public,
            })
        }
    };
    Ok((room.to_owned(), member))
}

/// Always answers 200: nchan has been seen to crash a worker process when
/// a subscribe/unsubscribe hook answers anything else, and the reader's
/// subscription must not depend on membership anyway. Failures are logged.
async fn hook(membership: &Membership, change: Change, headers: &HeaderMap) -> StatusCode {
    let outcome = match reader(headers) {
        Ok((room, member)) => {
            let connected = matches!(change, Change::Join);
            membership.rooms.count_connection(&room, connected);
            match member {
                Some(member) => membership.apply(change, &room, member).await,
                None => Ok(()),
            }
        }
        Err(e) => Err(e),
    };
    if let Err(e) = outcome {
        tracing::warn!(?change, error = %e, "membership hook failed");
    }
    StatusCode::OK
}

pub async fn join_hook(
    State(membership): State<Arc<Membership>>,
    headers: HeaderMap,
) -> StatusCode {
    hook(&membership, Change::Join, &headers).await
}

pub async fn leave_hook(
    State(membership): State<Arc<Membership>>,
    headers: HeaderMap,
) -> StatusCode {
    hook(&membership, Change::Leave, &headers).await
}
