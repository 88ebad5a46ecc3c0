//! The worker's HTTP API on its unix socket, for the local nginx only:
//!
//! - `POST /v1/messages`: an envelope accepted by the nginx module. Checked
//!   against bans (403), the rate limit (429) and the filters (422), then
//!   stored and published in Redis and acknowledged `202` (the module
//!   answers the client `{"id","ts"}` itself); with an `Idempotency-Key`
//!   already used by the user in the room, nothing is stored and the first
//!   answer is given again in `X-Chatup-Ack`; `503` while Redis is
//!   unreachable or the worker drains. A refusal's JSON body travels in
//!   `X-Chatup-Refusal` (and `Retry-After`), which the module passes on to
//!   the client. These answers have empty bodies: see [`header_only`]
//!   (other errors say what went wrong in `X-Chatup-Error`).
//! - `POST /v1/serve/{room}?channel=C[&after=ID]`: the module has a reader
//!   for a room it does not know to be served, to be served in nchan
//!   channel `C` (which holds messages up to `ID` if given): answered
//!   `204` once this worker's Redis
//!   subscription for the room is in place and nchan backfilled, `503` if
//!   that takes too long (the reader is refused and tries again).
//! - `GET /healthz`: `200` when Redis answers, `503` otherwise.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chatup_gate::token::MODERATOR;
use serde_json::json;

use axum::body::Bytes;
use axum::extract::{Path, Query, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};

use crate::api_error::ApiError;
use chatup_wire::idempotency::{validate_idempotency_key, IDEMPOTENCY_HEADER};
use chatup_wire::{validate_room, Envelope};
use tokio_util::sync::CancellationToken;

use crate::db::Db;
use crate::keys;
use crate::moderation::bancache::BanCache;
use crate::moderation::filters::{Candidate, FilterPipeline, Verdict};
use crate::moderation::publish_hook::{HookVerdict, PublishHook};
use crate::moderation::ratelimit::RateLimiter;
use crate::moderation::slowmode::SlowMode;
use crate::store::Store;
use crate::telemetry::names::{self, Refused};
use crate::worker::drain::{Drain, DrainStatus};
use crate::worker::posters::RecentPosters;
use crate::worker::room::Origin;
use crate::worker::rooms::Rooms;

/// How long a reader may wait for its room's Redis subscription and
/// backfill (below nginx's `proxy_read_timeout` of the serve location).
const SERVE_WAIT: Duration = Duration::from_secs(4);

#[derive(Clone)]
pub struct IngestState {
    pub db: Db,
    pub store: Store,
    pub rooms: Arc<Rooms>,
    pub checks: Arc<Checks>,
    pub posters: Arc<RecentPosters>,
    pub draining: CancellationToken,
    /// A deploy's gradual drain (`/v1/drain`).
    pub drain: Arc<Drain>,
}

/// What a message must pass before it is stored, all in memory.
pub struct Checks {
    pub bans: Arc<BanCache>,
    pub slow_mode: SlowMode,
    pub rate_limiter: RateLimiter,
    pub filters: FilterPipeline,
    /// The site's publish hook, asked last (an HTTP call), if configured.
    pub publish_hook: Option<PublishHook>,
}

impl Checks {
    /// The in-memory checks, then the site's publish hook. The poster's
    /// claims are taken out of the envelope here: they are never stored.
    /// A post counts for slow mode only once the hook accepted it (a retry
    /// after the hook failed is not "too soon").
    async fn admit_all(
        &self,
        envelope: &mut Envelope,
        idempotency_key: Option<&str>,
    ) -> Result<(), Refusal> {
        let claims = envelope.claims.take();
        let slowed = self.admit(envelope)?;
        let hook = self
            .publish_hook
            .as_ref()
            .filter(|hook| hook.applies_to(&envelope.room));
        if let Some(hook) = hook {
            match hook.ask(envelope, claims.as_ref(), idempotency_key).await {
                HookVerdict::Accept => {}
                HookVerdict::Rewrite(text) => envelope.msg = text,
                HookVerdict::Reject { status, body } => {
                    let mut refusal = Refusal::new(status, body);
                    refusal.by_hook = true;
                    return Err(refusal);
                }
                HookVerdict::Unavailable => {
                    let mut refusal = Refusal::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        json!({ "error": "message check unavailable, try again" }),
                    );
                    refusal.retry_after = Some(1);
                    return Err(refusal);
                }
            }
        }
        if slowed {
            self.slow_mode
                .posted(&envelope.room, &envelope.user.id, Instant::now());
        }
        Ok(())
    }

    /// Bans and mutes, the room's rule, slow mode, then the rate limit,
    /// then the filters (which may rewrite the message). True when the
    /// room is in slow mode for this poster: the caller records the post.
    fn admit(&self, envelope: &mut Envelope) -> Result<bool, Refusal> {
        // Token claims for the room's rule: checked here, never stored.
        let standing = std::mem::take(&mut envelope.standing);
        let (room, user) = (envelope.room.as_str(), envelope.user.id.as_str());
        if let Some(ban) = self.bans.find(room, user) {
            let now = chatup_wire::id::unix_millis(std::time::SystemTime::now());
            let error = if ban.mute { "muted" } else { "banned" };
            let mut body = json!({ "error": error, "ttl": ban.seconds_left(now) });
            if let Some(reason) = &ban.reason {
                body["reason"] = json!(reason);
            }
            return Err(Refusal::new(StatusCode::FORBIDDEN, body));
        }
        let moderator = envelope.user.role.as_deref() == Some(MODERATOR);
        // Moderators are exempt from the room's rule.
        if let Some(rule) = self.bans.rule(room).filter(|_| !moderator) {
            let now_secs = chatup_wire::id::unix_millis(std::time::SystemTime::now()) / 1000;
            if !rule.admits(&standing, now_secs) {
                let body = json!({ "error": "restricted", "rule": rule });
                return Err(Refusal::new(StatusCode::FORBIDDEN, body));
            }
        }
        let now = Instant::now();
        // Moderators are exempt from slow mode.
        let slow = self.bans.slow_mode(room).filter(|_| !moderator);
        if let Some(wait) = slow.and_then(|secs| self.slow_mode.wait(room, user, secs, now)) {
            let seconds = wait.as_secs_f64().ceil().max(1.0) as u64;
            let body = json!({
                "error": "slow mode",
                "retry_after": seconds,
                "slow_mode": slow,
            });
            let mut refusal = Refusal::new(StatusCode::TOO_MANY_REQUESTS, body);
            refusal.retry_after = Some(seconds);
            return Err(refusal);
        }
        if let Err(wait) = self
            .rate_limiter
            .take(room, user, moderator, Instant::now())
        {
            let seconds = wait.as_secs_f64().ceil().max(1.0) as u64;
            let body = json!({ "error": "rate limited", "retry_after": seconds });
            let mut refusal = Refusal::new(StatusCode::TOO_MANY_REQUESTS, body);
            refusal.retry_after = Some(seconds);
            return Err(refusal);
        }
        let mut candidate = Candidate {
            room,
            user,
            text: std::mem::take(&mut envelope.msg),
        };
        let verdict = self.filters.check(&mut candidate);
        envelope.msg = candidate.text;
        match verdict {
            Verdict::Pass => Ok(slow.is_some()),
            Verdict::Reject(reason) => Err(Refusal::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                json!({ "error": "message rejected", "reason": reason }),
            )),
        }
    }
}

/// A message refused by the worker's checks.
struct Refusal {
    status: StatusCode,
    body: serde_json::Value,
    retry_after: Option<u64>,
    /// The site's publish hook refused it (counted as `filtered`, whatever
    /// its status).
    by_hook: bool,
}

/// Marks a refusal of the site's publish hook, for the count (the module
/// ignores it).
const REFUSED_BY_HOOK: &str = "x-chatup-refused-by-hook";

impl Refusal {
    fn new(status: StatusCode, body: serde_json::Value) -> Self {
        Self {
            status,
            body,
            retry_after: None,
            by_hook: false,
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let mut headers = HeaderMap::new();
        // The module reads the refusal from this header (it keeps no
        // subrequest bodies); escaped to ASCII to be a valid header value.
        if let Ok(value) = HeaderValue::from_str(&ascii_json(&self.body)) {
            headers.insert("x-chatup-refusal", value);
        }
        if let Some(seconds) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if self.by_hook {
            headers.insert(REFUSED_BY_HOOK, HeaderValue::from_static("1"));
        }
        header_only(self.status, headers)
    }
}

/// An answer to the module with everything in its status and headers and
/// an empty body (`Content-Length: 0`). The module's subrequest reads only
/// the head (`header_only`, like `auth_request`), and nginx keeps an
/// upstream connection alive after such a subrequest only when the answer
/// has no body (`ngx_http_proxy_process_header`); with one, it opened and
/// closed a unix connection to the sidecar for every message (seen with
/// strace: `socket`, `connect`, `close` per post, and `accept` on this
/// side).
fn header_only(status: StatusCode, headers: HeaderMap) -> Response {
    (status, headers).into_response()
}

/// `value` as JSON with every non-ASCII character written as `\uXXXX`.
fn ascii_json(value: &serde_json::Value) -> String {
    let mut out = String::new();
    for c in value.to_string().chars() {
        // DEL is ASCII but not allowed in a header value.
        if c.is_ascii() && c != '\u{7f}' {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        }
    }
    out
}

pub fn router(state: IngestState) -> Router {
    Router::new()
        .route("/v1/messages", post(post_message))
        .route("/v1/serve/{room}", post(serve_room))
        .route(
            "/v1/drain",
            post(start_drain).get(drain_status).delete(cancel_drain),
        )
        .route("/healthz", get(health))
        .with_state(state)
        .fallback(|| async { ApiError::not_found() })
}

async fn post_message(
    State(state): State<IngestState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let started = Instant::now();
    let response = match check_and_store(state, headers, body).await {
        Ok(response) => response,
        // Head only, like every answer to the module (see `header_only`):
        // when Redis is down, each post would otherwise cost nginx a new
        // connection to the sidecar. The module answers 503 itself.
        Err(e) => {
            let mut headers = HeaderMap::new();
            if let Ok(value) = HeaderValue::from_str(&ascii_json(&json!({ "error": e.message() })))
            {
                headers.insert("x-chatup-error", value);
            }
            header_only(e.status(), headers)
        }
    };
    count_outcome(&response, started.elapsed());
    response
}

/// Counts a post's outcome by its answer: a first acceptance (a retry's
/// replayed answer carries `X-Chatup-Ack` and counts as nothing new), or
/// a refusal by reason.
fn count_outcome(response: &Response, took: Duration) {
    if response.headers().contains_key(REFUSED_BY_HOOK) {
        Refused::Filtered.count();
        return;
    }
    let refused = match response.status() {
        StatusCode::ACCEPTED => {
            if !response.headers().contains_key("x-chatup-ack") {
                metrics::counter!(names::MESSAGES_ACCEPTED).increment(1);
                metrics::histogram!(names::MESSAGE_STORE_SECONDS).record(took);
            }
            return;
        }
        StatusCode::FORBIDDEN if refusal_error(response) == Some("restricted".into()) => {
            Refused::Restricted
        }
        StatusCode::FORBIDDEN => Refused::Banned,
        StatusCode::TOO_MANY_REQUESTS => Refused::RateLimited,
        StatusCode::UNPROCESSABLE_ENTITY => Refused::Filtered,
        StatusCode::BAD_REQUEST => Refused::Invalid,
        _ => Refused::Unavailable,
    };
    refused.count();
}

/// The `error` of a refusal's body (its `X-Chatup-Refusal` header).
fn refusal_error(response: &Response) -> Option<String> {
    let header = response.headers().get("x-chatup-refusal")?;
    let body: serde_json::Value = serde_json::from_slice(header.as_bytes()).ok()?;
    body.get("error")?.as_str().map(str::to_owned)
}

async fn check_and_store(
    state: IngestState,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    if state.draining.is_cancelled() {
        return Err(ApiError::unavailable("worker is shutting down"));
    }
    let mut envelope: Envelope = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("invalid envelope: {e}")))?;
    validate_room(&envelope.room).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let idempotency = match headers.get(IDEMPOTENCY_HEADER) {
        None => None,
        Some(value) => {
            let key = validate_idempotency_key(value.as_bytes())
                .map_err(|e| ApiError::bad_request(e.to_string()))?;
            Some(keys::idempotency(&envelope.room, &envelope.user.id, key))
        }
    };
    // A retry is answered as the first post was, before the checks: it
    // must not count against the rate limit nor look like a repeat.
    if let Some(key) = &idempotency {
        match state.store.first_answer(key).await {
            Ok(Some(first)) => {
                return match state.store.first_answer_replicated(key).await {
                    Ok(()) => Ok(replayed(first)),
                    Err(e) => {
                        tracing::warn!(id = %envelope.id, room = %envelope.room, error = %e, "a retried post is not on the replicas yet, refusing it");
                        Err(ApiError::unavailable("message store unavailable"))
                    }
                };
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(id = %envelope.id, room = %envelope.room, error = %e, "cannot look up an idempotency key, refusing the post");
                return Err(ApiError::unavailable("message store unavailable"));
            }
        }
    }
    let key = headers
        .get(IDEMPOTENCY_HEADER)
        .and_then(|v| v.to_str().ok());
    if let Err(refusal) = state.checks.admit_all(&mut envelope, key).await {
        tracing::debug!(id = %envelope.id, room = %envelope.room, status = %refusal.status, "message refused");
        return Ok(refusal.into_response());
    }
    let message = serde_json::to_string(&envelope)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let stored = match &idempotency {
        None => state
            .store
            .append(&envelope.room, &message)
            .await
            .map(|()| None),
        Some(key) => {
            let ack = serde_json::to_string(&envelope.ack())
                .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
            state
                .store
                .append_once(&envelope.room, &message, key, &ack)
                .await
        }
    };
    match stored {
        Ok(None) => {}
        // Raced with a retry of itself: the other one was stored first.
        Ok(Some(first)) => return Ok(replayed(first)),
        Err(e) => {
            tracing::warn!(id = %envelope.id, room = %envelope.room, error = %e, "cannot store message, refusing it");
            return Err(ApiError::unavailable("message store unavailable"));
        }
    }
    tracing::debug!(id = %envelope.id, room = %envelope.room, "message stored");
    // For bans in every room; not worth delaying the answer for.
    if state
        .posters
        .needs_recording(&envelope.room, &envelope.user.id, Instant::now())
    {
        let (store, posters, room, user) = (
            state.store.clone(),
            state.posters.clone(),
            envelope.room.clone(),
            envelope.user.id.clone(),
        );
        tokio::spawn(async move {
            if let Err(e) = store.note_poster(&room, &user).await {
                posters.forget(&room, &user);
                tracing::warn!(room, error = %e, "cannot record the poster's room");
            }
        });
    }
    Ok(header_only(StatusCode::ACCEPTED, HeaderMap::new()))
}

/// The first answer to a retried post, for the module to pass on (it
/// keeps no subrequest bodies, so the answer travels in a header too).
fn replayed(first: String) -> Response {
    let mut headers = HeaderMap::new();
    if let Ok(value) = HeaderValue::from_str(&first) {
        headers.insert("x-chatup-ack", value);
    }
    header_only(StatusCode::ACCEPTED, headers)
}

/// `?channel=` and `?after=` of a serve request.
#[derive(serde::Deserialize)]
struct ServeQuery {
    channel: Option<String>,
    after: Option<String>,
}

async fn serve_room(
    State(state): State<IngestState>,
    Path(room): Path<String>,
    Query(query): Query<ServeQuery>,
) -> Result<StatusCode, ApiError> {
    validate_room(&room).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let channel = match query.channel {
        Some(channel)
            if chatup_wire::readers::channel::room_of(&channel) == Some(room.as_str()) =>
        {
            channel
        }
        Some(_) => {
            return Err(ApiError::bad_request(
                "?channel= must name a channel of this room",
            ))
        }
        // A module from before channels were named per serving (nginx not
        // restarted yet after an upgrade): its channel is the room's name.
        None => room.clone(),
    };
    if state.draining.is_cancelled() {
        return Err(ApiError::unavailable("worker is shutting down"));
    }
    // A channel filled before (the module recorded its last message):
    // resume after it rather than publish the history twice.
    let origin = match query.after.filter(|id| !id.is_empty()) {
        Some(last_id) => Origin::Recovered {
            last_id: Some(last_id),
        },
        None => Origin::Fresh,
    };
    if state
        .rooms
        .ensure(&room, &channel, SERVE_WAIT, origin)
        .await
    {
        Ok(StatusCode::NO_CONTENT)
    } else {
        tracing::warn!(
            room,
            "room not ready in time (redis subscription or backfill pending): reader refused"
        );
        Err(ApiError::unavailable("room not ready"))
    }
}

/// `POST /v1/drain[?rate=N]` (`chatup drain`): starts moving this worker's
/// readers to the others, at N readers a second (default `drain_rate`).
async fn start_drain(
    State(state): State<IngestState>,
    RawQuery(query): RawQuery,
) -> Result<(StatusCode, Json<DrainStatus>), ApiError> {
    let rate = match query
        .as_deref()
        .unwrap_or("")
        .split('&')
        .find_map(|pair| pair.strip_prefix("rate="))
    {
        None => None,
        Some(rate) => match rate.parse::<u64>() {
            Ok(rate) if rate > 0 => Some(rate),
            _ => {
                return Err(ApiError::bad_request(
                    "rate must be a whole number of readers a second, at least 1",
                ))
            }
        },
    };
    state
        .drain
        .start(rate)
        .await
        .map(|status| (StatusCode::ACCEPTED, Json(status)))
        .map_err(|e| ApiError::unavailable(format!("cannot make nginx refuse new readers: {e}")))
}

async fn drain_status(State(state): State<IngestState>) -> Json<DrainStatus> {
    Json(state.drain.status().await)
}

async fn cancel_drain(State(state): State<IngestState>) -> Result<Json<DrainStatus>, ApiError> {
    state
        .drain
        .cancel()
        .await
        .map(Json)
        .map_err(|e| ApiError::unavailable(format!("cannot make nginx take readers again: {e}")))
}

async fn health(State(state): State<IngestState>) -> Result<Json<serde_json::Value>, ApiError> {
    state
        .db
        .ping()
        .await
        .map_err(|e| ApiError::unavailable(format!("redis unreachable: {e}")))?;
    Ok(Json(serde_json::json!({ "redis": "up" })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_travel_in_a_header_as_ascii_json() {
        let value = json!({"reason": "mot interdit: « é » 😀"});
        let ascii = ascii_json(&value);
        assert!(ascii.is_ascii(), "{ascii}");
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&ascii).unwrap(),
            value
        );
    }
}
