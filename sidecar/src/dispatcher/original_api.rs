//! The original ChatUp's server endpoints (`original_api = true`), so that a
//! site's existing server code keeps working while it moves to the new
//! server API (docs/migration.md):
//!
//! - `POST /ban`: the body is a JWT whose payload is an array of `{name,
//!   channel, expire?}` (seconds; absent or 0: for good);
//! - `POST /post`: a JWT whose payload is an array of `{channel, msg?, ev?,
//!   data?, user?}`;
//! - `GET /messages/{channel}`: the history, newest first, each message as
//!   the original stored it (`{user, msg, i, d}`);
//! - `GET /stats/{channel}`: `{subCount, pubCount, limit, skip, clients}`.
//!
//! Their tokens are signed with the server key, like the new server API's,
//! but carry no `act` or `jti` and, being arrays, no `exp`: they are
//! accepted only with `accept_tokens_without_exp`, and a captured one can
//! be replayed. Errors carry both shapes: the original's `{"status":
//! "error", "err"}` and ChatUp's `{"error"}`.

use std::time::SystemTime;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chatup_wire::id::unix_millis;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::api_error::ApiError;
use crate::bans::Ban;
use crate::dispatcher::api::{self, AppState};
use crate::dispatcher::params::RoomRequest;
use crate::dispatcher::server_api::{
    self, check_target, remove_messages, ServerApi, ServerItem, MAX_BAN_SECS,
};
use crate::store;

#[derive(Clone)]
pub struct OriginalApi {
    pub server: ServerApi,
    pub app: AppState,
    pub accept_tokens_without_exp: bool,
}

/// An error in both shapes.
pub struct OriginalError {
    status: StatusCode,
    err: String,
}

impl OriginalError {
    fn new(status: StatusCode, err: impl Into<String>) -> Self {
        Self {
            status,
            err: err.into(),
        }
    }
}

impl From<ApiError> for OriginalError {
    fn from(e: ApiError) -> Self {
        Self::new(e.status(), e.message())
    }
}

impl IntoResponse for OriginalError {
    fn into_response(self) -> Response {
        let body = json!({ "status": "error", "err": self.err, "error": self.err });
        (self.status, Json(body)).into_response()
    }
}

/// The original's answer to a server request that worked.
fn ok() -> Response {
    (StatusCode::OK, "OK").into_response()
}

impl OriginalApi {
    /// The items of a server token: its signature checked with the server
    /// key, an `exp` if it has one (none only when allowed), an array.
    fn items<T: serde::de::DeserializeOwned>(&self, body: &Bytes) -> Result<Vec<T>, OriginalError> {
        let verifier = self.server.verifier.as_ref().ok_or_else(|| {
            OriginalError::new(
                StatusCode::NOT_IMPLEMENTED,
                "server API disabled: no server key configured",
            )
        })?;
        let token = std::str::from_utf8(body)
            .map(str::trim)
            .ok()
            .filter(|t| !t.is_empty())
            .ok_or_else(|| OriginalError::new(StatusCode::BAD_REQUEST, "Wrong format"))?;
        let (payload, exp) = verifier.verify_signature(token).map_err(|e| {
            tracing::info!(error = %e, "original API: token refused");
            OriginalError::new(StatusCode::UNAUTHORIZED, "Wrong JWT")
        })?;
        if exp.is_none() && !self.accept_tokens_without_exp {
            return Err(OriginalError::new(
                StatusCode::UNAUTHORIZED,
                "Wrong JWT: tokens without exp are refused (accept_tokens_without_exp is off)",
            ));
        }
        serde_json::from_value(payload).map_err(|e| {
            OriginalError::new(StatusCode::BAD_REQUEST, format!("Wrong JWT content: {e}"))
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OriginalBan {
    name: String,
    channel: String,
    /// Seconds; absent or 0: for good.
    #[serde(default)]
    expire: Option<u64>,
}

/// `POST /ban`: bans each `name` (the user id: with original tokens, their
/// `name` claim) from `channel`, and removes their messages there.
pub async fn ban(State(api): State<OriginalApi>, body: Bytes) -> Result<Response, OriginalError> {
    let items: Vec<OriginalBan> = api.items(&body)?;
    let now = SystemTime::now();
    let now_ms = unix_millis(now);
    let mut bans = Vec::new();
    for item in items {
        check_target(&item.name, &item.channel)?;
        let expire = item.expire.filter(|&secs| secs > 0);
        if expire.is_some_and(|secs| secs > MAX_BAN_SECS) {
            return Err(OriginalError::new(
                StatusCode::BAD_REQUEST,
                format!("Wrong JWT content: expire must be at most {MAX_BAN_SECS} seconds"),
            ));
        }
        bans.push(Ban {
            until_ms: expire.map(|secs| now_ms + secs * 1000),
            user: item.name,
            room: item.channel,
            reason: None,
            mute: false,
            by: None,
        });
    }
    api.server
        .bans
        .put(&bans)
        .await
        .map_err(server_api::unavailable)?;
    for ban in &bans {
        remove_messages(&api.server, ban, now).await?;
        tracing::info!(user = %ban.user, room = %ban.room, until_ms = ?ban.until_ms, "banned (original API)");
    }
    Ok(ok())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OriginalPost {
    channel: String,
    msg: Option<String>,
    ev: Option<String>,
    #[serde(default)]
    data: Value,
    user: Option<Map<String, Value>>,
}

/// `POST /post`: messages and events from the site's server, as
/// `POST /messages` publishes them.
pub async fn post(State(api): State<OriginalApi>, body: Bytes) -> Result<Response, OriginalError> {
    let items: Vec<OriginalPost> = api.items(&body)?;
    let items = items
        .into_iter()
        .map(|item| ServerItem {
            room: item.channel,
            msg: item.msg,
            ev: item.ev,
            data: item.data,
            user: item.user,
        })
        .collect();
    server_api::publish_items(&api.server, items).await?;
    Ok(ok())
}

/// A stored message as the original stored it: the poster's public data,
/// the text, its id as `i` and its time as `d` (seconds since the epoch).
fn original_message(message: &Value) -> Value {
    let user = match message["user"].get("public") {
        Some(public) if public.is_object() => public.clone(),
        _ => json!({ "name": message["user"]["id"] }),
    };
    let seconds = message["ts"].as_u64().unwrap_or(0) as f64 / 1000.0;
    json!({ "user": user, "msg": message["msg"], "i": message["id"], "d": seconds })
}

/// `GET /messages/{channel}`: the room's history, newest first.
pub async fn messages(
    State(api): State<OriginalApi>,
    RoomRequest { room, .. }: RoomRequest,
    headers: HeaderMap,
) -> Result<Response, OriginalError> {
    api.app.read.check(&room, &headers)?;
    let stored = store::all(&api.app.db, &room)
        .await
        .map_err(api::unavailable)?;
    let messages: Vec<Value> = stored
        .iter()
        .rev()
        .filter_map(|raw| serde_json::from_str::<Value>(raw).ok())
        .map(|message| original_message(&message))
        .collect();
    Ok(Json(messages).into_response())
}

/// `GET /stats/{channel}?limit=&skip=`: readers (`subCount`), signed-in
/// members (`pubCount`) and a page of their public data (`clients`).
pub async fn stats(
    State(api): State<OriginalApi>,
    RoomRequest { room, params }: RoomRequest,
    headers: HeaderMap,
) -> Result<Response, OriginalError> {
    api.app.read.check(&room, &headers)?;
    let max = api.app.max_page;
    let limit = params.number("limit", 50.min(max), max)?;
    let skip = params.number("skip", 0, usize::MAX)?;
    let live = api::live_ids(&api.app).await?;
    let counts = api::room_counts(&api.app, &room, &live).await?;
    let members = api
        .app
        .presence
        .members(&room, &live)
        .await
        .map_err(api::unavailable)?;
    let total = members.len();
    let clients: Vec<Value> = members
        .into_iter()
        .skip(skip)
        .take(limit)
        .map(|user| {
            let user = serde_json::to_value(user).unwrap_or_default();
            match user.get("public") {
                Some(public) if public.is_object() => public.clone(),
                _ => json!({ "name": user["id"] }),
            }
        })
        .collect();
    Ok(Json(json!({
        "subCount": counts.subscribers,
        "pubCount": total,
        "limit": limit,
        "skip": skip,
        "clients": clients,
    }))
    .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_messages_take_the_originals_shape() {
        let stored = json!({"id": "01M", "room": "r", "user": {"id": "ann", "public": {"name": "Ann"}}, "msg": "hi", "ts": 1_700_000_000_500u64});
        assert_eq!(
            original_message(&stored),
            json!({"user": {"name": "Ann"}, "msg": "hi", "i": "01M", "d": 1_700_000_000.5})
        );
        let plain = json!({"id": "01N", "user": {"id": "bob"}, "msg": "yo", "ts": 0});
        assert_eq!(original_message(&plain)["user"], json!({"name": "bob"}));
    }
}
