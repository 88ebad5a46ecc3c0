//! The server API of the dispatcher: what a site's own servers may do,
//! each request carrying a JWT signed with the site's server key (the same
//! trust model as user tokens).
//!
//! - `POST /bans`, `DELETE /bans`: the body is a JWT whose `bans` claim
//!   lists `{user, room ("*": every room), duration? (seconds), reason?}`;
//! - `GET /rooms/{room}/bans`: with `Authorization: Bearer <server JWT>`;
//! - `POST /messages`: the body is a JWT whose `items` claim lists
//!   `{room, msg, user?}` (a message) or `{room, ev, data?, user?}` (a
//!   custom event), published like user messages.
//!
//! Every item is checked before anything changes: one bad item refuses the
//! whole request with 400.
//!
//! A server token authorizes one request, once: its `act` claim names the
//! action (`ban`, `lift`, `list`, `post`), a `list` token names its `room`,
//! and its `jti` (a unique id) is remembered in Redis until the token
//! expires, so a captured token can neither do something else nor be
//! replayed.

use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use chatup_gate::TokenVerifier;
use chatup_wire::id::unix_millis;
use chatup_wire::rule::MAX_LABEL_CHARS;
use chatup_wire::{
    validate_room, CustomEvent, Envelope, EventKind, MessageIdGenerator, RoomEvent, RoomRule, User,
    RESERVED_EVENTS,
};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::api_error::ApiError;
use crate::bans::{Ban, BanStore};
use crate::db::DbError;
use crate::dispatcher::params::RoomRequest;
use crate::dispatcher::replay::UsedTokens;
use crate::moderation::slowmode::MAX_SLOW_MODE_SECS;
use crate::store::{self, Store};

/// Longest server message, in characters.
const MAX_SERVER_MESSAGE_CHARS: usize = 16 * 1024;
/// Longest ban: ten years.
pub(crate) const MAX_BAN_SECS: u64 = 10 * 365 * 24 * 3600;

#[derive(Clone)]
pub struct ServerApi {
    pub verifier: Option<Arc<TokenVerifier>>,
    pub max_ttl_secs: u64,
    pub bans: BanStore,
    pub used_tokens: UsedTokens,
    pub store: Store,
    pub ids: Arc<Mutex<MessageIdGenerator>>,
}

pub(crate) fn unavailable(e: DbError) -> ApiError {
    tracing::warn!(error = %e, "redis unavailable");
    ApiError::unavailable("chat service unavailable (redis)")
}

fn unauthorized(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, message)
}

/// A server token's claims: its expiry, action, id and the request's own.
#[derive(Deserialize)]
struct Claims<T> {
    exp: u64,
    act: Option<String>,
    jti: Option<String>,
    #[serde(flatten)]
    request: T,
}

/// What a server token may authorize: its `act` claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Ban,
    Lift,
    List,
    Post,
    Slow,
    Rule,
}

impl Action {
    fn name(self) -> &'static str {
        match self {
            Action::Ban => "ban",
            Action::Lift => "lift",
            Action::List => "list",
            Action::Post => "post",
            Action::Slow => "slow",
            Action::Rule => "rule",
        }
    }
}

/// Longest `jti`: it becomes part of a Redis key.
const MAX_JTI_LEN: usize = 128;

impl ServerApi {
    /// The claims of a server token for `action`, checked: signature,
    /// pinned algorithm, `exp`, a lifetime no longer than `max_ttl_secs`,
    /// `act`, and a `jti` never used before (then remembered until the
    /// token expires).
    async fn claims<T: DeserializeOwned>(
        &self,
        token: &str,
        action: Action,
    ) -> Result<T, ApiError> {
        let verifier = self.verifier.as_ref().ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_IMPLEMENTED,
                "server API disabled: no server key configured",
            )
        })?;
        let token = token.trim();
        if token.is_empty() {
            return Err(unauthorized("missing server token"));
        }
        // A token whose signature holds but whose claims do not fit the
        // request is a bad request, not an unauthorized one.
        let claims: Claims<Value> = verifier
            .verify_claims(token)
            .map_err(|e| unauthorized(e.to_string()))?;
        let now = unix_millis(SystemTime::now()) / 1000;
        if claims.exp.saturating_sub(now) > self.max_ttl_secs {
            return Err(unauthorized(format!(
                "server token valid for more than {} seconds",
                self.max_ttl_secs
            )));
        }
        if claims.act.as_deref() != Some(action.name()) {
            return Err(unauthorized(format!(
                "this server token is not for this request: its act claim must be \"{}\"",
                action.name()
            )));
        }
        let jti = claims
            .jti
            .filter(|j| !j.is_empty() && j.len() <= MAX_JTI_LEN)
            .ok_or_else(|| {
                unauthorized(format!(
                    "server tokens need a jti claim (a unique id, at most {MAX_JTI_LEN} bytes)"
                ))
            })?;
        let request = serde_json::from_value(claims.request)
            .map_err(|e| ApiError::bad_request(format!("invalid claims: {e}")))?;
        // Remembered until the token expires (plus the verifier's leeway).
        let keep_secs = claims.exp.saturating_sub(now) + 10;
        if !self
            .used_tokens
            .first_use(&jti, keep_secs)
            .await
            .map_err(unavailable)?
        {
            return Err(unauthorized("this server token was used already"));
        }
        Ok(request)
    }

    pub(crate) fn next_id(&self, now: SystemTime) -> String {
        self.ids
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .next_id(now)
    }

    /// Tells every reader of `room` (on every worker) about `kind`.
    pub(crate) async fn publish_room_event(
        &self,
        room: &str,
        kind: EventKind,
        now: SystemTime,
    ) -> Result<(), ApiError> {
        let event = RoomEvent {
            id: self.next_id(now),
            room: room.to_string(),
            kind,
            ts: unix_millis(now),
        };
        let json = serde_json::to_string(&event)
            .map_err(|e| unavailable(DbError::Corrupt(e.to_string())))?;
        self.store
            .publish_event(room, &json)
            .await
            .map_err(unavailable)
    }
}

fn body_token(body: &Bytes) -> Result<&str, ApiError> {
    std::str::from_utf8(body).map_err(|_| unauthorized("the body must be a JWT"))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BanItem {
    user: String,
    room: String,
    /// Seconds; absent: for good (a mute needs one).
    duration: Option<u64>,
    reason: Option<String>,
    /// A timeout: the user keeps reading, posts are refused with `muted`,
    /// nothing is removed.
    #[serde(default)]
    mute: bool,
}

#[derive(Deserialize)]
struct BanClaims {
    bans: Vec<BanItem>,
}

pub(crate) fn check_target(user: &str, room: &str) -> Result<(), ApiError> {
    if user.is_empty() || user.len() > chatup_gate::token::MAX_SUB_LEN {
        return Err(ApiError::bad_request("ban: user must be a user id"));
    }
    if room != "*" {
        validate_room(room).map_err(|e| ApiError::bad_request(format!("ban: {e}")))?;
    }
    Ok(())
}

/// `POST /bans`.
pub async fn ban(State(api): State<ServerApi>, body: Bytes) -> Result<impl IntoResponse, ApiError> {
    let claims: BanClaims = api.claims(body_token(&body)?, Action::Ban).await?;
    let now = SystemTime::now();
    let now_ms = unix_millis(now);
    let mut bans = Vec::new();
    for item in claims.bans {
        check_target(&item.user, &item.room)?;
        if item.duration.is_some_and(|d| d == 0 || d > MAX_BAN_SECS) {
            return Err(ApiError::bad_request(format!(
                "ban: duration must be from 1 to {MAX_BAN_SECS} seconds"
            )));
        }
        if item.mute && item.duration.is_none() {
            return Err(ApiError::bad_request(
                "ban: a mute needs a duration (a timeout); ban for good instead",
            ));
        }
        bans.push(Ban {
            until_ms: item.duration.map(|d| now_ms + d * 1000),
            user: item.user,
            room: item.room,
            reason: item.reason,
            mute: item.mute,
            by: None,
        });
    }
    api.bans.put(&bans).await.map_err(unavailable)?;
    let mut removed = 0;
    for ban in &bans {
        if ban.mute {
            tracing::info!(user = %ban.user, room = %ban.room, until_ms = ?ban.until_ms, "muted");
            continue;
        }
        removed += remove_messages(&api, ban, now).await?;
        tracing::info!(user = %ban.user, room = %ban.room, until_ms = ?ban.until_ms, "banned");
    }
    let listed: Vec<Value> = bans.iter().map(|ban| describe(ban, now_ms)).collect();
    Ok(Json(json!({ "bans": listed, "removed_messages": removed })))
}

/// Removes the banned user's messages from the history of the room (every
/// room they posted in, for `*`) and tells the room's readers to.
pub(crate) async fn remove_messages(
    api: &ServerApi,
    ban: &Ban,
    now: SystemTime,
) -> Result<u64, ApiError> {
    let rooms = if ban.room == "*" {
        store::rooms_of_poster(api.store.db(), &ban.user)
            .await
            .map_err(unavailable)?
    } else {
        vec![ban.room.clone()]
    };
    let mut removed = 0;
    for room in rooms {
        removed += store::purge_user(api.store.db(), &room, &ban.user)
            .await
            .map_err(unavailable)?;
        let removal = EventKind::RmUserMsg {
            user: User {
                id: ban.user.clone(),
                public: None,
                role: None,
            },
        };
        api.publish_room_event(&room, removal, now).await?;
    }
    Ok(removed)
}

pub(crate) fn describe(ban: &Ban, now_ms: u64) -> Value {
    let mut described = json!({
        "user": ban.user,
        "room": ban.room,
        "ttl": ban.seconds_left(now_ms),
        "reason": ban.reason,
    });
    if ban.mute {
        described["mute"] = json!(true);
    }
    described
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LiftItem {
    user: String,
    room: String,
    /// Lift the user's mute (timeout) rather than their ban.
    #[serde(default)]
    mute: bool,
}

#[derive(Deserialize)]
struct LiftClaims {
    bans: Vec<LiftItem>,
}

/// `DELETE /bans`.
pub async fn lift(
    State(api): State<ServerApi>,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    let claims: LiftClaims = api.claims(body_token(&body)?, Action::Lift).await?;
    for item in &claims.bans {
        check_target(&item.user, &item.room)?;
    }
    let mut lifted = Vec::new();
    for item in claims.bans {
        if api
            .bans
            .lift(&item.user, &item.room, item.mute)
            .await
            .map_err(unavailable)?
        {
            tracing::info!(user = %item.user, room = %item.room, mute = item.mute, "ban lifted");
            let mut entry = json!({ "user": item.user, "room": item.room });
            if item.mute {
                entry["mute"] = json!(true);
            }
            lifted.push(entry);
        }
    }
    Ok(Json(json!({ "lifted": lifted })))
}

#[derive(Deserialize)]
struct ListClaims {
    /// The room whose bans the token may list.
    room: String,
}

/// `GET /rooms/{room}/bans`: the bans in force there (its own and the
/// ones for every room).
pub async fn list(
    State(api): State<ServerApi>,
    RoomRequest { room, .. }: RoomRequest,
    headers: HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    let token = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| unauthorized("missing Authorization: Bearer <server token>"))?;
    let claims: ListClaims = api.claims(token, Action::List).await?;
    if claims.room != room {
        return Err(unauthorized(
            "this server token lists the bans of another room",
        ));
    }
    let now_ms = unix_millis(SystemTime::now());
    let bans: Vec<Value> = api
        .bans
        .all(now_ms)
        .await
        .map_err(unavailable)?
        .iter()
        .filter(|ban| ban.room == room || ban.room == "*")
        .map(|ban| describe(ban, now_ms))
        .collect();
    Ok(Json(json!({ "room": room, "bans": bans })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ServerItem {
    pub(crate) room: String,
    pub(crate) msg: Option<String>,
    pub(crate) ev: Option<String>,
    #[serde(default)]
    pub(crate) data: Value,
    /// Display data of the sender (`public`).
    pub(crate) user: Option<Map<String, Value>>,
}

#[derive(Deserialize)]
struct PostClaims {
    items: Vec<ServerItem>,
}

/// What one item becomes.
enum Outgoing {
    Message(Envelope),
    Event(CustomEvent),
}

fn system_user(public: Option<Map<String, Value>>) -> User {
    User {
        id: chatup_wire::envelope::SYSTEM_USER.into(),
        public,
        role: Some("system".into()),
    }
}

fn check_event_name(name: &str) -> Result<(), ApiError> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b));
    if !valid {
        return Err(ApiError::bad_request(
            "item: ev must be 1 to 64 letters, digits, '-', '_', '.' or ':'",
        ));
    }
    if RESERVED_EVENTS.contains(&name) {
        return Err(ApiError::bad_request(format!(
            "item: ev \"{name}\" is reserved"
        )));
    }
    Ok(())
}

/// `POST /messages`.
pub async fn post(
    State(api): State<ServerApi>,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    let claims: PostClaims = api.claims(body_token(&body)?, Action::Post).await?;
    let published = publish_items(&api, claims.items).await?;
    Ok(Json(json!({ "items": published })))
}

/// Checks every item (one bad item refuses them all, 400), then stores and
/// publishes them in order; returns `{room, id, ts}` of each.
pub(crate) async fn publish_items(
    api: &ServerApi,
    items: Vec<ServerItem>,
) -> Result<Vec<Value>, ApiError> {
    let now = SystemTime::now();
    let ts = unix_millis(now);
    let mut outgoing = Vec::new();
    for item in items {
        validate_room(&item.room).map_err(|e| ApiError::bad_request(format!("item: {e}")))?;
        outgoing.push(match (item.msg, item.ev) {
            (Some(msg), None) => {
                let msg = msg.trim().to_string();
                if msg.is_empty() || msg.chars().count() > MAX_SERVER_MESSAGE_CHARS {
                    return Err(ApiError::bad_request(format!(
                        "item: msg must have 1 to {MAX_SERVER_MESSAGE_CHARS} characters"
                    )));
                }
                Outgoing::Message(Envelope {
                    id: api.next_id(now),
                    room: item.room,
                    user: system_user(item.user),
                    msg,
                    ts,
                    standing: Default::default(),
                    claims: None,
                })
            }
            (None, Some(ev)) => {
                check_event_name(&ev)?;
                Outgoing::Event(CustomEvent {
                    id: api.next_id(now),
                    room: item.room,
                    ev,
                    data: item.data,
                    user: item.user.map(|public| system_user(Some(public))),
                    ts,
                })
            }
            _ => return Err(ApiError::bad_request("item: give either msg or ev")),
        });
    }
    let mut published = Vec::new();
    for item in outgoing {
        let (room, id, json, in_history) = match &item {
            Outgoing::Message(m) => (&m.room, &m.id, serde_json::to_string(m), true),
            Outgoing::Event(e) => (&e.room, &e.id, serde_json::to_string(e), false),
        };
        let json = json.map_err(|e| unavailable(DbError::Corrupt(e.to_string())))?;
        let result = if in_history {
            api.store.append(room, &json).await
        } else {
            api.store.publish_event(room, &json).await
        };
        result.map_err(unavailable)?;
        published.push(json!({ "room": room, "id": id, "ts": ts }));
    }
    Ok(published)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SlowClaims {
    room: String,
    /// At most one message per user this often; 0: off.
    secs: u64,
}

/// `POST /slow`: switches a room's slow mode (moderators exempt), on every
/// worker within a second, and tells the room's readers (a `slow` event).
pub async fn slow_mode(
    State(api): State<ServerApi>,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    let claims: SlowClaims = api.claims(body_token(&body)?, Action::Slow).await?;
    validate_room(&claims.room).map_err(|e| ApiError::bad_request(format!("slow: {e}")))?;
    if claims.secs > MAX_SLOW_MODE_SECS {
        return Err(ApiError::bad_request(format!(
            "slow: secs must be from 0 (off) to {MAX_SLOW_MODE_SECS}"
        )));
    }
    api.bans
        .set_slow(&claims.room, claims.secs)
        .await
        .map_err(unavailable)?;
    let slow = EventKind::Slow { secs: claims.secs };
    api.publish_room_event(&claims.room, slow, SystemTime::now())
        .await?;
    tracing::info!(room = %claims.room, secs = claims.secs, "slow mode set");
    Ok(Json(json!({ "room": claims.room, "secs": claims.secs })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleClaims {
    room: String,
    /// Who may post; absent or null: everyone.
    #[serde(default)]
    rule: Option<RoomRule>,
}

/// `POST /rules`: sets (or, with no rule, removes) a room's rule for
/// posting (a minimum `tier`, a minimum account age), on every worker
/// within a second, and tells the room's readers (a `rule` event).
pub async fn room_rule(
    State(api): State<ServerApi>,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    let claims: RuleClaims = api.claims(body_token(&body)?, Action::Rule).await?;
    validate_room(&claims.room).map_err(|e| ApiError::bad_request(format!("rule: {e}")))?;
    let rule = claims.rule.filter(|rule| !rule.is_open());
    if let Some(rule) = &rule {
        let label_chars = rule.label.as_deref().map_or(0, |l| l.chars().count());
        if label_chars > MAX_LABEL_CHARS
            || rule.label.as_deref().is_some_and(|l| l.trim().is_empty())
        {
            return Err(ApiError::bad_request(format!(
                "rule: label must have 1 to {MAX_LABEL_CHARS} characters"
            )));
        }
    }
    api.bans
        .set_rule(&claims.room, rule.clone())
        .await
        .map_err(unavailable)?;
    let event = EventKind::Rule { rule: rule.clone() };
    api.publish_room_event(&claims.room, event, SystemTime::now())
        .await?;
    tracing::info!(room = %claims.room, ?rule, "room rule set");
    Ok(Json(json!({ "room": claims.room, "rule": rule })))
}
