//! The worker's HTTP API on its unix socket, for the local nginx only:
//!
//! - `POST /v1/messages`: an envelope accepted by the nginx module. Stored
//!   and published in Redis, then acknowledged `202 {"id","ts"}`; `503`
//!   while Redis is unreachable or the worker drains.
//! - `GET /v1/hooks/subscribe`: a subscriber is about to be let in to the
//!   room named by `X-Chatup-Room`; answered once this worker's Redis
//!   subscription for the room is in place and nchan backfilled.
//! - `GET /v1/hooks/join`, `GET /v1/hooks/leave`: a reader subscribed or
//!   unsubscribed (see `membership`).
//! - `GET /healthz`: `200` when Redis answers, `503` otherwise.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};

use crate::api_error::ApiError;
use chatup_wire::{validate_room, Envelope};
use tokio_util::sync::CancellationToken;

use crate::db::Db;
use crate::store::Store;
use crate::worker::membership::{self, Membership};
use crate::worker::rooms::Rooms;

/// How long a subscriber waits for the room's Redis subscription and
/// backfill before it is let in anyway (it then gets messages once Redis
/// is back).
const SUBSCRIBE_WAIT: Duration = Duration::from_secs(3);

#[derive(Clone)]
pub struct IngestState {
    pub db: Db,
    pub store: Store,
    pub rooms: Arc<Rooms>,
    pub draining: CancellationToken,
}

pub fn router(state: IngestState, membership: Arc<Membership>) -> Router {
    let hooks = Router::new()
        .route("/v1/hooks/join", get(membership::join_hook))
        .route("/v1/hooks/leave", get(membership::leave_hook))
        .with_state(membership);
    Router::new()
        .route("/v1/messages", post(post_message))
        .route("/v1/hooks/subscribe", get(subscribe_hook))
        .route("/healthz", get(health))
        .with_state(state)
        .merge(hooks)
        .fallback(|| async { ApiError::not_found() })
}

async fn post_message(State(state): State<IngestState>, body: Bytes) -> Result<Response, ApiError> {
    if state.draining.is_cancelled() {
        return Err(ApiError::unavailable("worker is shutting down"));
    }
    let envelope: Envelope = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("invalid envelope: {e}")))?;
    validate_room(&envelope.room).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let message = serde_json::to_string(&envelope)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    if let Err(e) = state.store.append(&envelope.room, &message).await {
        tracing::warn!(room = %envelope.room, error = %e, "cannot store message, refusing it");
        return Err(ApiError::unavailable("message store unavailable"));
    }
    Ok((StatusCode::ACCEPTED, Json(envelope.ack())).into_response())
}

async fn subscribe_hook(
    State(state): State<IngestState>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let room = headers
        .get("x-chatup-room")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| ApiError::bad_request("missing X-Chatup-Room"))?;
    validate_room(room).map_err(|e| ApiError::bad_request(e.to_string()))?;
    if !state.rooms.ensure(room, SUBSCRIBE_WAIT).await {
        tracing::warn!(
            room,
            "subscriber let in before the room was ready (redis subscription or backfill pending)"
        );
    }
    Ok(StatusCode::NO_CONTENT)
}

async fn health(State(state): State<IngestState>) -> Result<Json<serde_json::Value>, ApiError> {
    state
        .db
        .ping()
        .await
        .map_err(|e| ApiError::unavailable(format!("redis unreachable: {e}")))?;
    Ok(Json(serde_json::json!({ "redis": "up" })))
}
