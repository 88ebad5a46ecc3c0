//! Moderator actions from the client: `POST /rooms/{room}/moderation` with
//! the moderator's own user token (`Authorization: Bearer`), so that a
//! widget can delete a message, time out or ban its author without a round
//! trip through the site's server.
//!
//! The same checks as everywhere else decide: the token is verified with
//! the workers' user key, must carry `role: "moderator"`, and its `rooms`
//! claim must allow the room (`Identity::may_use`, as for posting). A
//! moderator acts in that room only: bans and mutes for every room stay
//! with the site's server (the server API).
//!
//! Actions (the JSON body, `action` names one):
//! - `delete {id}`: removes the message from the room's history and sends
//!   readers an `rmMsg` event (sent even when the history no longer has it:
//!   screens may still show it);
//! - `mute {user, duration, reason?}`, `ban {user, duration?, reason?}`:
//!   as the server API's `POST /bans` for this room (a ban also removes
//!   the user's messages and sends `rmUserMsg`);
//! - `unmute {user}`, `unban {user}`: as `DELETE /bans` for this room.

use std::sync::Arc;
use std::time::SystemTime;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use chatup_gate::token::MODERATOR;
use chatup_gate::Identity;
use chatup_wire::envelope::SYSTEM_USER;
use chatup_wire::id::unix_millis;
use chatup_wire::EventKind;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::api_error::ApiError;
use crate::bans::Ban;
use crate::dispatcher::api::ReadRule;
use crate::dispatcher::params::RoomRequest;
use crate::dispatcher::server_api::{
    check_target, describe, remove_messages, unavailable, ServerApi, MAX_BAN_SECS,
};
use crate::store;

#[derive(Clone)]
pub struct ModeratorApi {
    /// Verifies user tokens (the workers' key).
    pub read: Arc<ReadRule>,
    /// Where bans, history and room events are.
    pub server: ServerApi,
}

/// Longest message id accepted (ours are 26-character ULIDs).
const MAX_ID_LEN: usize = 64;

/// Longest ban or mute reason, in characters.
const MAX_REASON_CHARS: usize = 500;

#[derive(Debug, Deserialize, PartialEq)]
#[serde(tag = "action", rename_all = "lowercase", deny_unknown_fields)]
enum Action {
    Delete {
        id: String,
    },
    Mute {
        user: String,
        duration: u64,
        reason: Option<String>,
    },
    Ban {
        user: String,
        /// Seconds; absent: for good.
        duration: Option<u64>,
        reason: Option<String>,
    },
    Unmute {
        user: String,
    },
    Unban {
        user: String,
    },
}

impl Action {
    fn name(&self) -> &'static str {
        match self {
            Action::Delete { .. } => "delete",
            Action::Mute { .. } => "mute",
            Action::Ban { .. } => "ban",
            Action::Unmute { .. } => "unmute",
            Action::Unban { .. } => "unban",
        }
    }

    /// Refuses what does not fit, before anything changes.
    fn check(&self, room: &str) -> Result<(), ApiError> {
        match self {
            Action::Delete { id } => {
                let valid = !id.is_empty()
                    && id.len() <= MAX_ID_LEN
                    && id
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
                if !valid {
                    return Err(ApiError::bad_request("delete: id must be a message id"));
                }
                Ok(())
            }
            Action::Mute {
                user,
                duration,
                reason,
            } => {
                check_user(user, room)?;
                check_duration(Some(*duration))?;
                check_reason(reason.as_deref())
            }
            Action::Ban {
                user,
                duration,
                reason,
            } => {
                check_user(user, room)?;
                check_duration(*duration)?;
                check_reason(reason.as_deref())
            }
            Action::Unmute { user } | Action::Unban { user } => check_user(user, room),
        }
    }
}

fn check_user(user: &str, room: &str) -> Result<(), ApiError> {
    check_target(user, room)?;
    if user == SYSTEM_USER {
        return Err(ApiError::bad_request(
            "the system user cannot be muted or banned",
        ));
    }
    Ok(())
}

fn check_duration(duration: Option<u64>) -> Result<(), ApiError> {
    if duration.is_some_and(|d| d == 0 || d > MAX_BAN_SECS) {
        return Err(ApiError::bad_request(format!(
            "duration must be from 1 to {MAX_BAN_SECS} seconds"
        )));
    }
    Ok(())
}

fn check_reason(reason: Option<&str>) -> Result<(), ApiError> {
    if reason.is_some_and(|r| r.chars().count() > MAX_REASON_CHARS) {
        return Err(ApiError::bad_request(format!(
            "reason must have at most {MAX_REASON_CHARS} characters"
        )));
    }
    Ok(())
}

impl ModeratorApi {
    /// The user the request's token (`Authorization: Bearer`) names;
    /// `who` says what token is wanted, in the 401.
    fn user(&self, headers: &HeaderMap, who: &str) -> Result<Identity, ApiError> {
        let verifier = self.read.verifier.as_ref().ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_IMPLEMENTED,
                "this dispatcher has no user key (user_public_key)",
            )
        })?;
        let authorization = headers
            .get(axum::http::header::AUTHORIZATION)
            .map(|v| v.as_bytes());
        let token = chatup_gate::post::bearer_token(authorization).map_err(|_| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                format!("missing Authorization: Bearer <{who} token>"),
            )
        })?;
        verifier
            .verify(token)
            .map_err(|e| ApiError::new(StatusCode::UNAUTHORIZED, e.to_string()))
    }

    /// The moderator the request's token names, if it may moderate `room`.
    fn moderator(&self, room: &str, headers: &HeaderMap) -> Result<Identity, ApiError> {
        let identity = self.user(headers, "moderator")?;
        // The role comes only with a rooms claim (`chatup_gate::token`):
        // a moderator moderates the rooms it names.
        if identity.role.as_deref() != Some(MODERATOR) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "only moderators may do this (role claim \"moderator\")",
            ));
        }
        if !identity.may_use(room) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "this token does not give access to this room",
            ));
        }
        Ok(identity)
    }
}

impl ModeratorApi {
    /// Stores `ban` unless the site's ban (or mute) is in force there, or a
    /// moderator's that lasts at least as long: 409 then. (Read, then
    /// written: a ban the site stores in between is overwritten; the site
    /// can set it again.)
    async fn put_unless_outlasted(&self, ban: &Ban, now: SystemTime) -> Result<(), ApiError> {
        let now_ms = unix_millis(now);
        let existing = self
            .server
            .bans
            .get(&ban.user, &ban.room, ban.mute, now_ms)
            .await
            .map_err(unavailable)?;
        if existing.as_ref().is_some_and(|e| e.by.is_none()) {
            let what = if ban.mute { "mute" } else { "ban" };
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!("the site's {what} is in force here: only its server can change it"),
            ));
        }
        if let Some(existing) = existing.filter(|e| e.outlasts(ban)) {
            let what = if ban.mute { "mute" } else { "ban" };
            let until = match existing.seconds_left(now_ms) {
                Some(secs) => format!("for {secs} s more"),
                None => "for good".into(),
            };
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!("a {what} at least as long is in force ({until})"),
            ));
        }
        self.server
            .bans
            .put(std::slice::from_ref(ban))
            .await
            .map_err(unavailable)
    }
}

/// `GET /rooms/{room}/me`: what the room holds against the user of the
/// request's token: `{"user", "banned": false | {ttl, reason?},
/// "muted": false | {ttl, reason?}}` (a ban or mute for this room or for
/// every room, the longest). Any valid user token, moderator or not.
pub async fn me(
    State(api): State<ModeratorApi>,
    RoomRequest { room, .. }: RoomRequest,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let identity = api.user(&headers, "user")?;
    let now_ms = unix_millis(SystemTime::now());
    let mut answer = json!({ "user": identity.sub });
    for (mute, key) in [(false, "banned"), (true, "muted")] {
        let mut found: Option<Ban> = None;
        for scope in [room.as_str(), "*"] {
            let ban = api
                .server
                .bans
                .get(&identity.sub, scope, mute, now_ms)
                .await
                .map_err(unavailable)?;
            if let Some(ban) = ban {
                if found.as_ref().is_none_or(|f| ban.outlasts(f)) {
                    found = Some(ban);
                }
            }
        }
        answer[key] = match found {
            None => json!(false),
            Some(ban) => {
                let mut held = json!({ "ttl": ban.seconds_left(now_ms) });
                if let Some(reason) = ban.reason {
                    held["reason"] = json!(reason);
                }
                held
            }
        };
    }
    Ok(Json(answer))
}

/// `POST /rooms/{room}/moderation`.
pub async fn act(
    State(api): State<ModeratorApi>,
    RoomRequest { room, .. }: RoomRequest,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let moderator = api.moderator(&room, &headers)?;
    let action: Action = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("invalid moderation request: {e}")))?;
    action.check(&room)?;
    let name = action.name();
    let now = SystemTime::now();
    let answer = match action {
        Action::Delete { id } => {
            let removed = store::remove_message(api.server.store.db(), &room, &id)
                .await
                .map_err(unavailable)?;
            let deletion = EventKind::RmMsg { msg_id: id.clone() };
            api.server.publish_room_event(&room, deletion, now).await?;
            tracing::info!(moderator = %moderator.sub, %room, %id, removed, "message deleted");
            json!({ "action": name, "id": id, "removed_from_history": removed })
        }
        Action::Mute {
            user,
            duration,
            reason,
        } => {
            let ban = room_ban(&room, user, Some(duration), reason, true, &moderator, now);
            api.put_unless_outlasted(&ban, now).await?;
            tracing::info!(moderator = %moderator.sub, %room, user = %ban.user, duration, "muted");
            json!({ "action": name, "ban": describe(&ban, unix_millis(now)) })
        }
        Action::Ban {
            user,
            duration,
            reason,
        } => {
            let ban = room_ban(&room, user, duration, reason, false, &moderator, now);
            api.put_unless_outlasted(&ban, now).await?;
            let removed = remove_messages(&api.server, &ban, now).await?;
            tracing::info!(moderator = %moderator.sub, %room, user = %ban.user, ?duration, removed, "banned");
            json!({
                "action": name,
                "ban": describe(&ban, unix_millis(now)),
                "removed_messages": removed,
            })
        }
        Action::Unmute { user } | Action::Unban { user } => {
            let mute = name == "unmute";
            let now_ms = unix_millis(now);
            let existing = api
                .server
                .bans
                .get(&user, &room, mute, now_ms)
                .await
                .map_err(unavailable)?;
            if existing.as_ref().is_some_and(|ban| ban.by.is_none()) {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "this was set by the site's server: only it can lift it",
                ));
            }
            let lifted = existing.is_some()
                && api
                    .server
                    .bans
                    .lift(&user, &room, mute)
                    .await
                    .map_err(unavailable)?;
            tracing::info!(moderator = %moderator.sub, %room, %user, mute, lifted, "ban lifted");
            json!({ "action": name, "user": user, "lifted": lifted })
        }
    };
    Ok(Json(answer))
}

fn room_ban(
    room: &str,
    user: String,
    duration: Option<u64>,
    reason: Option<String>,
    mute: bool,
    moderator: &Identity,
    now: SystemTime,
) -> Ban {
    Ban {
        user,
        room: room.to_string(),
        until_ms: duration.map(|d| unix_millis(now) + d * 1000),
        reason,
        mute,
        by: Some(moderator.sub.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: Value) -> Result<Action, String> {
        serde_json::from_value(body).map_err(|e| e.to_string())
    }

    #[test]
    fn actions_parse_by_name_and_refuse_unknown_fields() {
        assert_eq!(
            parse(json!({"action": "delete", "id": "01J"})),
            Ok(Action::Delete { id: "01J".into() })
        );
        assert_eq!(
            parse(json!({"action": "ban", "user": "troll"})),
            Ok(Action::Ban {
                user: "troll".into(),
                duration: None,
                reason: None
            })
        );
        assert!(parse(json!({"action": "mute", "user": "troll"}))
            .unwrap_err()
            .contains("duration"));
        assert!(
            parse(json!({"action": "ban", "user": "troll", "room": "*"}))
                .unwrap_err()
                .contains("unknown field")
        );
        assert!(parse(json!({"action": "purge"})).is_err());
    }

    #[test]
    fn checks_refuse_bad_ids_durations_reasons_and_the_system_user() {
        let refused = |action: Action| action.check("lobby").unwrap_err().message().to_string();
        assert_eq!(
            refused(Action::Delete {
                id: "01J\"; DROP".into()
            }),
            "delete: id must be a message id"
        );
        assert!(refused(Action::Mute {
            user: "ann".into(),
            duration: 0,
            reason: None
        })
        .starts_with("duration must be"));
        assert!(refused(Action::Ban {
            user: "ann".into(),
            duration: None,
            reason: Some("x".repeat(501))
        })
        .starts_with("reason must"));
        assert_eq!(
            refused(Action::Unban {
                user: SYSTEM_USER.into()
            }),
            "the system user cannot be muted or banned"
        );
        assert!(Action::Delete {
            id: "01JDZ3Q4M5N6P7R8S9T0VWXYZA".into()
        }
        .check("lobby")
        .is_ok());
    }
}
