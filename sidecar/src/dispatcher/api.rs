//! The dispatcher's HTTP API (see docs/http-api.md):
//!
//! - `POST /join/{room}`: a worker for the client, the room's counts and
//!   its recent history;
//!
//! (these three apply the workers' read rule, `chatup_gate::subscribe`:
//! a room in `token_rooms` needs `Authorization: Bearer <user token>`
//! whose `rooms` claim allows it;)
//! - `GET /rooms/{room}/stats`: readers and members over all workers;
//! - `GET /rooms/{room}/messages`: the room's history, paginated;
//! - `GET /healthz`: readiness (Redis reachable);
//! - on the operator listener only (`operator_router`): `GET /workers`, the
//!   live workers, their URLs and load (not for the public: it maps the
//!   cluster), and `GET /healthz`;
//! - the server API (`server_api`): bans and server posts;
//! - `POST /rooms/{room}/moderation` (`moderator`): a moderator's actions
//!   from the client, with their own user token.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use chatup_gate::subscribe::{reader, ReadAccess};
use chatup_gate::ticket::{Ticket, TicketSigner};
use chatup_gate::{Identity, TokenVerifier};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::api_error::ApiError;
use crate::db::{Db, DbError};
use crate::dispatcher::join_cache::{JoinCache, RoomSnapshot};
use crate::dispatcher::moderator::{self, ModeratorApi};
use crate::dispatcher::original_api::{self, OriginalApi};
use crate::dispatcher::params::RoomRequest;
use crate::dispatcher::server_api::{self, ServerApi};
use crate::presence::{Presence, RoomCounts};
use crate::registry::{Pick, Registry};
use crate::store;
use crate::telemetry::names::JoinOutcome;

#[derive(Clone)]
pub struct AppState {
    pub db: Db,
    pub registry: Registry,
    pub capacity: Capacity,
    pub join_cache: Arc<JoinCache>,
    pub presence: Presence,
    pub join_history: usize,
    pub max_page: usize,
    pub read: std::sync::Arc<ReadRule>,
}

/// How many readers a worker takes before joins are refused, and when
/// refused clients should ask again.
#[derive(Clone, Copy)]
pub struct Capacity {
    /// 0: no limit.
    pub readers: u64,
    pub retry_after_secs: u64,
}

/// Who may read which room: the workers' rule, with the same patterns and
/// the site's key for user tokens; and the read tickets that carry a
/// signed-in reader's identity to the workers (`chatup_gate::ticket`).
pub struct ReadRule {
    pub token_rooms: Vec<String>,
    /// Without it, token rooms are closed here.
    pub verifier: Option<TokenVerifier>,
    /// Without it, readers are anonymous on the workers.
    pub tickets: Option<TicketSigner>,
}

impl ReadRule {
    /// Refuses a request about `room` that the workers would refuse a
    /// reader of (401 or 403, JSON).
    pub(crate) fn check(&self, room: &str, headers: &HeaderMap) -> Result<(), ApiError> {
        self.reader(room, headers).map(drop)
    }

    /// Who reads `room` (the member the request's `Authorization` names,
    /// or `None`: anonymous), or why they may not.
    fn reader(&self, room: &str, headers: &HeaderMap) -> Result<Option<Identity>, ApiError> {
        let access = ReadAccess::of(room, &self.token_rooms, ReadAccess::Anyone);
        let Some(verifier) = &self.verifier else {
            return match access {
                ReadAccess::Anyone => Ok(None),
                ReadAccess::TokenOnly => Err(ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "this room needs a token, and this dispatcher has no user key",
                )),
            };
        };
        let authorization = headers
            .get(axum::http::header::AUTHORIZATION)
            .map(|v| v.as_bytes());
        let token = chatup_gate::post::bearer_token(authorization).ok();
        reader(verifier, token, room, access).map_err(|e| {
            let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::UNAUTHORIZED);
            ApiError::new(status, e.to_string())
        })
    }

    /// Whether the request carries a valid user token (whatever its rooms).
    fn has_valid_token(&self, headers: &HeaderMap) -> bool {
        let authorization = headers
            .get(axum::http::header::AUTHORIZATION)
            .map(|v| v.as_bytes());
        let token = chatup_gate::post::bearer_token(authorization).ok();
        matches!((&self.verifier, token), (Some(v), Some(t)) if v.verify(t).is_ok())
    }

    /// Seconds a ticket is valid for.
    fn ticket_lifetime(&self) -> u64 {
        self.tickets.as_ref().map_or(0, |t| t.lifetime_secs())
    }

    /// A read ticket for `identity` in `rooms`, if tickets are configured.
    fn ticket(&self, identity: &Identity, rooms: &[&str]) -> Option<Ticket> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        Some(self.tickets.as_ref()?.issue(identity, rooms, now))
    }

    /// The rooms a reader asks to read over one connection (`room` and
    /// its additional rooms), checked as the workers will. A list that is
    /// not valid (names, too many) is refused (400), and so is a reader
    /// who may not read `room` (401, 403); an additional room it may not
    /// read is left out and said so (`refused`): it does not keep the
    /// reader from its room. Also who the reader is, and the rooms its
    /// ticket names: those where its token makes it the member it is.
    fn readable(
        &self,
        room: &str,
        also: &[String],
        headers: &HeaderMap,
    ) -> Result<Readable, ApiError> {
        let asked = chatup_wire::additional_rooms(room, also.iter().map(String::as_str))
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        let mut identity = self.reader(room, headers)?;
        let mut ticket_rooms = Vec::new();
        if identity.is_some() {
            ticket_rooms.push(room.to_owned());
        }
        let (mut also, mut refused) = (Vec::new(), Vec::new());
        for extra in asked {
            match self.reader(&extra, headers) {
                Ok(reader) => {
                    if let Some(reader) = reader {
                        ticket_rooms.push(extra.clone());
                        identity.get_or_insert(reader);
                    }
                    let token_only = ReadAccess::of(&extra, &self.token_rooms, ReadAccess::Anyone)
                        == ReadAccess::TokenOnly;
                    also.push((extra, token_only));
                }
                Err(e) => refused.push(json!({
                    "room": extra,
                    "status": e.status().as_u16(),
                    "error": e.message(),
                })),
            }
        }
        Ok(Readable {
            identity,
            also,
            refused,
            ticket_rooms,
        })
    }

    /// The ticket of a reader `readable` let in, if it is signed in.
    fn ticket_of(&self, readable: &Readable) -> Option<Ticket> {
        let rooms: Vec<&str> = readable.ticket_rooms.iter().map(String::as_str).collect();
        self.ticket(readable.identity.as_ref()?, &rooms)
    }
}

/// A reader's rooms, checked (`ReadRule::readable`).
struct Readable {
    identity: Option<Identity>,
    /// The additional rooms it may read, and whether each needs a ticket.
    also: Vec<(String, bool)>,
    /// `{room, status, error}` of those it may not.
    refused: Vec<Value>,
    ticket_rooms: Vec<String>,
}

pub fn router(state: AppState, server: ServerApi, original: Option<OriginalSettings>) -> Router {
    let original_routes = original.map(|settings| {
        Router::new()
            .route("/ban", post(original_api::ban))
            .route("/post", post(original_api::post))
            .route("/messages/{channel}", get(original_api::messages))
            .route("/stats/{channel}", get(original_api::stats))
            .with_state(OriginalApi {
                server: server.clone(),
                app: state.clone(),
                accept_tokens_without_exp: settings.accept_tokens_without_exp,
            })
    });
    let moderator_routes = Router::new()
        .route("/rooms/{room}/moderation", post(moderator::act))
        .route("/rooms/{room}/me", get(moderator::me))
        .with_state(ModeratorApi {
            read: state.read.clone(),
            server: server.clone(),
        });
    let server_routes = Router::new()
        .route("/bans", post(server_api::ban).delete(server_api::lift))
        .route("/rooms/{room}/bans", get(server_api::list))
        .route("/messages", post(server_api::post))
        .route("/slow", post(server_api::slow_mode))
        .route("/rules", post(server_api::room_rule))
        .with_state(server);
    Router::new()
        .route("/join/{room}", post(join))
        .route("/tickets/{room}", post(ticket))
        .route("/rooms/{room}/stats", get(stats))
        .route("/rooms/{room}/messages", get(messages))
        .route("/healthz", get(health))
        .with_state(state)
        .merge(server_routes)
        .merge(moderator_routes)
        .merge(original_routes.unwrap_or_default())
        .fallback(|| async { ApiError::not_found() })
        .method_not_allowed_fallback(|| async {
            ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
        })
}

/// The original ChatUp's server endpoints are served (`original_api`).
#[derive(Clone, Copy)]
pub struct OriginalSettings {
    pub accept_tokens_without_exp: bool,
}

/// The operator's API, on its own listener (`operator_listen`).
pub fn operator_router(state: AppState) -> Router {
    Router::new()
        .route("/workers", get(workers))
        .route("/healthz", get(health))
        .with_state(state)
        .fallback(|| async { ApiError::not_found() })
        .method_not_allowed_fallback(|| async {
            ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
        })
}

/// Redis trouble, as the client sees it.
pub(crate) fn unavailable(e: DbError) -> ApiError {
    tracing::warn!(error = %e, "redis unavailable");
    ApiError::unavailable("chat service unavailable (redis)")
}

#[derive(Debug, Default, Deserialize)]
struct JoinRequest {
    /// A worker that failed this client: chosen only if no other is live.
    exclude: Option<String>,
    /// The last message the client has (it is moving from another
    /// worker): the history answered is everything stored after it; ""
    /// when it has none but read the room before (everything stored).
    after: Option<String>,
    /// Rooms read besides this one over the same connection (at most
    /// `MAX_ADDITIONAL_ROOMS`): each is checked like the room, the ticket
    /// covers them, and the answer carries their recent history.
    #[serde(default)]
    also: Vec<String>,
    /// The last message the client has of each additional room it read
    /// before (as `after`).
    #[serde(default)]
    also_after: std::collections::HashMap<String, String>,
}

/// The body of `POST /tickets/{room}`: empty, or the additional rooms the
/// ticket must cover too.
#[derive(Debug, Default, Deserialize)]
struct TicketRequest {
    #[serde(default)]
    also: Vec<String>,
}

/// The history a join answers: the last `count` messages, or, with
/// `after`, every stored message after that one (all of them after ""). `None` when `after` is
/// not in `stored` (the client missed more than history keeps).
fn join_history(stored: &[Value], count: usize, after: Option<&str>) -> Option<Vec<Value>> {
    match after {
        None => Some(stored[stored.len().saturating_sub(count)..].to_vec()),
        // A client that read the room before any message it holds now.
        Some("") => Some(stored.to_vec()),
        Some(after) => stored
            .iter()
            .rposition(|m| m["id"] == after)
            .map(|at| stored[at + 1..].to_vec()),
    }
}

/// Why a join found no worker (503s the outcome count tells apart).
const NO_WORKER: &str = "no worker available";
const AT_CAPACITY: &str = "every worker is at capacity";

async fn join(
    state: State<AppState>,
    room: RoomRequest,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let answer = assign_worker(state, room, headers, body).await;
    match &answer {
        Ok(_) => JoinOutcome::Assigned,
        Err(e) => match e.status() {
            StatusCode::BAD_REQUEST => JoinOutcome::Invalid,
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => JoinOutcome::Unauthorized,
            _ if e.message() == NO_WORKER => JoinOutcome::NoWorker,
            _ if e.message() == AT_CAPACITY => JoinOutcome::AtCapacity,
            _ => JoinOutcome::Unavailable,
        },
    }
    .count();
    answer
}

async fn assign_worker(
    State(state): State<AppState>,
    RoomRequest { room, .. }: RoomRequest,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let request: JoinRequest = optional_body(
        &body,
        r#"{"exclude": "<worker id>", "after": "<message id>", "also": ["<room>", ...]}"#,
    )?;
    let readable = state.read.readable(&room, &request.also, &headers)?;
    let message_id = |id: &str| id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric());
    if !request.after.as_deref().is_none_or(message_id) {
        return Err(ApiError::bad_request("after must be a message id"));
    }
    if request.also_after.len() > chatup_wire::MAX_ADDITIONAL_ROOMS
        || !request.also_after.values().all(|id| message_id(id))
    {
        return Err(ApiError::bad_request(
            "also_after must map additional rooms to message ids",
        ));
    }
    let worker = match state
        .registry
        .pick(request.exclude.as_deref(), state.capacity.readers)
        .await
        .map_err(unavailable)?
    {
        Pick::Worker(worker) => worker,
        Pick::NoneLive => return Err(ApiError::unavailable(NO_WORKER)),
        Pick::AllAtCapacity => {
            return Err(
                ApiError::unavailable(AT_CAPACITY).retry_after(state.capacity.retry_after_secs)
            )
        }
    };
    let snapshot = room_snapshot(&state, &room).await?;
    let (history, gap) = history_for(&state, &room, &snapshot, request.after.as_deref()).await?;
    let mut answer = json!({
        "worker": { "id": worker.id, "url": worker.url },
        "room": snapshot.counts,
        "active": recently_active(&snapshot.history),
        "history": history,
    });
    if gap {
        // More was posted since `after` than history keeps: say so rather
        // than leave a silent gap.
        answer["history_gap"] = json!(true);
    }
    if snapshot.settings.slow_mode > 0 {
        answer["slow_mode"] = json!(snapshot.settings.slow_mode);
    }
    if let Some(rule) = &snapshot.settings.rule {
        answer["rule"] = json!(rule);
    }
    if !readable.also.is_empty() {
        let mut also = Vec::with_capacity(readable.also.len());
        for (extra, token_only) in &readable.also {
            let snapshot = room_snapshot(&state, extra).await?;
            let after = request.also_after.get(extra).map(String::as_str);
            let (history, gap) = history_for(&state, extra, &snapshot, after).await?;
            let mut entry = json!({
                "room": extra,
                "counts": snapshot.counts,
                "history": history,
            });
            if gap {
                entry["history_gap"] = json!(true);
            }
            if *token_only {
                // Read with a ticket only: a reader whose token expired
                // subscribes without it.
                entry["token_only"] = json!(true);
            }
            also.push(entry);
        }
        answer["also"] = json!(also);
    }
    if !readable.refused.is_empty() {
        answer["also_refused"] = json!(readable.refused);
    }
    if let Some(ticket) = state.read.ticket_of(&readable) {
        answer["ticket"] = json!(ticket.token);
        answer["ticket_expires_at"] = json!(ticket.expires_at);
        // Relative too: a browser's clock may be off.
        answer["ticket_expires_in"] = json!(state.read.ticket_lifetime());
    }
    Ok(Json(answer))
}

/// A request body that may be empty (the defaults) or JSON of `shape`
/// (said in the 400 when it is neither).
fn optional_body<T: Default + serde::de::DeserializeOwned>(
    body: &[u8],
    shape: &str,
) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("body must be empty or {shape}: {e}")))
}

/// The history a join answers for `room` (see `join_history`), and
/// whether `after` was trimmed from it (a gap).
async fn history_for(
    state: &AppState,
    room: &str,
    snapshot: &RoomSnapshot,
    after: Option<&str>,
) -> Result<(Vec<Value>, bool), ApiError> {
    if let Some(history) = join_history(&snapshot.history, state.join_history, after) {
        return Ok((history, false));
    }
    // The shared snapshot may be a moment older than the message the
    // client has: read history afresh before looking further.
    let fresh = stored_history(&state.db, room).await?;
    Ok(match join_history(&fresh, 0, after) {
        Some(history) => (history, false),
        None => history_without(&fresh, after.unwrap_or_default()),
    })
}

/// What a join tells about `room`, shared by the joins of the next moment
/// (`join_cache`).
async fn room_snapshot(state: &AppState, room: &str) -> Result<RoomSnapshot, ApiError> {
    state
        .join_cache
        .get(room, || async {
            let live = live_ids(state).await?;
            Ok::<_, ApiError>(RoomSnapshot {
                counts: room_counts(state, room, &live).await?,
                history: Arc::new(stored_history(&state.db, room).await?),
                settings: crate::bans::room_settings(&state.db, room)
                    .await
                    .map_err(unavailable)?,
            })
        })
        .await
}

/// `POST /tickets/{room}`: a fresh read ticket for the signed-in reader
/// (before the last one expires, or to reconnect after it did); with a
/// body `{"also": [...]}`, for its additional rooms too.
async fn ticket(
    State(state): State<AppState>,
    RoomRequest { room, .. }: RoomRequest,
    headers: HeaderMap,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    if state.read.tickets.is_none() {
        return Err(ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            "read tickets are off on this dispatcher (no ticket_secret_file)",
        ));
    }
    let request: TicketRequest = optional_body(&body, r#"{"also": ["<room>", ...]}"#)?;
    let readable = state.read.readable(&room, &request.also, &headers)?;
    let Some(identity) = readable
        .identity
        .as_ref()
        .filter(|_| !readable.ticket_rooms.is_empty())
    else {
        // A public room: a valid token that leaves it out is a 403 (the
        // client must not take it for an expired token).
        return Err(if state.read.has_valid_token(&headers) {
            ApiError::new(
                StatusCode::FORBIDDEN,
                chatup_gate::GateError::RoomNotAllowed.to_string(),
            )
        } else {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "a ticket needs a valid token for this room (Authorization: Bearer)",
            )
        });
    };
    let rooms: Vec<&str> = readable.ticket_rooms.iter().map(String::as_str).collect();
    let ticket = state
        .read
        .ticket(identity, &rooms)
        .ok_or_else(|| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "no ticket"))?;
    let mut answer = json!({
        "ticket": ticket.token,
        "ticket_expires_at": ticket.expires_at,
        "ticket_expires_in": state.read.ticket_lifetime(),
        "rooms": readable.ticket_rooms,
    });
    if !readable.refused.is_empty() {
        answer["also_refused"] = json!(readable.refused);
    }
    Ok(Json(answer))
}

pub(crate) async fn live_ids(state: &AppState) -> Result<Vec<String>, ApiError> {
    Ok(state
        .registry
        .live()
        .await
        .map_err(unavailable)?
        .into_iter()
        .map(|w| w.record.id)
        .collect())
}

/// The room's counts over the `live` workers.
pub(crate) async fn room_counts(
    state: &AppState,
    room: &str,
    live: &[String],
) -> Result<RoomCounts, ApiError> {
    let counts = state
        .presence
        .counts(&[room.to_owned()], live)
        .await
        .map_err(unavailable)?;
    Ok(counts.into_iter().next().unwrap_or_default())
}

/// The last `count` messages of `room`, oldest first, as JSON.
/// The history for a client whose newest message, `after`, is no longer
/// stored: removed by a ban (history still reaches back past it: no gap),
/// or trimmed away (the oldest stored message is newer: a gap). Either
/// way, every message that may have come after it (the client drops
/// those it has).
fn history_without(stored: &[Value], after: &str) -> (Vec<Value>, bool) {
    let made = |id: &str| chatup_wire::id::made_at_millis(id);
    let Some(after_ms) = made(after) else {
        return (stored.to_vec(), !stored.is_empty());
    };
    let made_of = |m: &Value| m["id"].as_str().and_then(made);
    let gap = stored
        .first()
        .is_some_and(|oldest| made_of(oldest).is_none_or(|at| at > after_ms));
    let history = stored
        .iter()
        .filter(|m| made_of(m).is_none_or(|at| at + chatup_wire::id::CLOCK_SKEW_MS >= after_ms))
        .cloned()
        .collect();
    (history, gap)
}

/// Every message the room's history holds (`history_length` at most, as
/// the workers trim it), oldest first.
async fn stored_history(db: &Db, room: &str) -> Result<Vec<Value>, ApiError> {
    let raw = store::all(db, room).await.map_err(unavailable)?;
    Ok(parse_messages(raw))
}

fn parse_messages(raw: Vec<String>) -> Vec<Value> {
    raw.iter()
        .filter_map(|m| serde_json::from_str(m).ok())
        .collect()
}

async fn stats(
    State(state): State<AppState>,
    RoomRequest { room, params }: RoomRequest,
    headers: HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    state.read.check(&room, &headers)?;
    let limit = params.number("limit", 100.min(state.max_page), state.max_page)?;
    let skip = params.number("skip", 0, usize::MAX)?;
    let live = live_ids(&state).await?;
    let counts = room_counts(&state, &room, &live).await?;
    let members = state
        .presence
        .members(&room, &live)
        .await
        .map_err(unavailable)?;
    let total = members.len();
    let page: Vec<_> = members.into_iter().skip(skip).take(limit).collect();
    let active = recently_active(&stored_history(&state.db, &room).await?);
    Ok(Json(json!({
        "room": room,
        "subscribers": counts.subscribers,
        "members": total,
        "users": page,
        "active": active,
        "skip": skip,
        "limit": limit,
    })))
}

/// The room's recently active list from its history: the last
/// `ACTIVE_USERS` distinct posters, newest first (as the workers' `active`
/// events list them).
fn recently_active(history: &[Value]) -> Vec<Value> {
    let mut seen = std::collections::HashSet::new();
    history
        .iter()
        .rev()
        .filter_map(|m| m.get("user"))
        .filter(|user| {
            user["id"]
                .as_str()
                .is_some_and(|id| seen.insert(id.to_owned()))
        })
        .take(chatup_wire::event::ACTIVE_USERS)
        .cloned()
        .collect()
}

async fn messages(
    State(state): State<AppState>,
    RoomRequest { room, params }: RoomRequest,
    headers: HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    state.read.check(&room, &headers)?;
    let limit = params.number("limit", 50.min(state.max_page), state.max_page)?;
    let all = store::all(&state.db, &room).await.map_err(unavailable)?;
    let all = parse_messages(all);
    let end = match params.text("before") {
        None => all.len(),
        // In history order; an id no longer there (trimmed) falls back to
        // time order, which ids follow.
        Some(before) => all
            .iter()
            .position(|m| m["id"] == before)
            .unwrap_or_else(|| {
                all.iter()
                    .take_while(|m| m["id"].as_str().is_some_and(|id| id < before))
                    .count()
            }),
    };
    let start = end.saturating_sub(limit);
    Ok(Json(json!({
        "room": room,
        "messages": &all[start..end],
        "more": start > 0,
    })))
}

async fn workers(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let workers = state.registry.live().await.map_err(unavailable)?;
    Ok(Json(json!({ "workers": workers })))
}

async fn health(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    state
        .db
        .ping()
        .await
        .map_err(|e| ApiError::unavailable(format!("redis unreachable: {e}")))?;
    Ok(Json(json!({ "redis": "up" })))
}

#[cfg(test)]
mod tests {
    use super::join_history;
    use serde_json::{json, Value};

    fn ids(history: Option<Vec<Value>>) -> Option<Vec<String>> {
        history.map(|h| {
            h.iter()
                .map(|m| m["id"].as_str().unwrap().to_owned())
                .collect()
        })
    }

    #[test]
    fn a_join_gets_the_last_messages_or_everything_after_the_clients_last() {
        let stored: Vec<Value> = ["a", "b", "c", "d"]
            .iter()
            .map(|id| json!({ "id": id }))
            .collect();
        assert_eq!(
            ids(join_history(&stored, 2, None)),
            Some(vec!["c".into(), "d".into()])
        );
        assert_eq!(ids(join_history(&stored, 9, None)).unwrap().len(), 4);
        assert_eq!(
            ids(join_history(&stored, 2, Some("a"))),
            Some(vec!["b".into(), "c".into(), "d".into()])
        );
        assert_eq!(ids(join_history(&stored, 2, Some("d"))), Some(vec![]));
        assert_eq!(ids(join_history(&stored, 2, Some(""))).unwrap().len(), 4);
        assert_eq!(
            ids(join_history(&stored, 2, Some("gone"))),
            None,
            "a gap is not hidden"
        );
    }

    #[test]
    fn a_clients_message_removed_by_a_ban_is_no_gap_one_trimmed_away_is() {
        let id = |ms: u64| ulid::Ulid::from_parts(ms, 7).to_string();
        let stored: Vec<Value> = [1_000, 2_000, 30_000, 40_000]
            .iter()
            .map(|&ms| json!({ "id": id(ms) }))
            .collect();
        // Banned away, between 2 s and 30 s: history reaches back past it.
        let (history, gap) = super::history_without(&stored, &id(20_000));
        assert!(!gap);
        assert_eq!(
            history.len(),
            2,
            "the messages after it (within clock skew)"
        );
        // Trimmed away: everything stored is newer.
        let (history, gap) = super::history_without(&stored, &id(500));
        assert!(gap);
        assert_eq!(history.len(), 4);
        assert_eq!(super::history_without(&[], &id(500)), (vec![], false));
    }

    #[test]
    fn the_recently_active_are_the_last_distinct_posters_newest_first() {
        let history: Vec<Value> = ["ann", "bob", "ann", "cid"]
            .iter()
            .map(|u| json!({"id": "x", "user": {"id": u, "public": {"name": u}}}))
            .collect();
        let active = super::recently_active(&history);
        let ids: Vec<&str> = active.iter().map(|u| u["id"].as_str().unwrap()).collect();
        assert_eq!(ids, ["cid", "ann", "bob"]);
        assert_eq!(active[0]["public"]["name"], "cid");
    }
}
