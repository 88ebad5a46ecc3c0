//! The worker's HTTP API on its unix socket, for the local nginx only:
//!
//! - `POST /v1/messages`: an envelope accepted by the nginx module. Stored
//!   and published in Redis, then acknowledged `202 {"id","ts"}`; `503`
//!   while Redis is unreachable or the worker drains.
//! - `GET /v1/hooks/subscribe`: a subscriber is about to be let in to the
//!   room named by `X-Chatup-Room`; answered once this worker's Redis
//!   subscription for the room is in place.
//! - `GET /healthz`: `200` when Redis answers, `503` otherwise.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chatup_wire::{validate_room, Envelope};
use tokio_util::sync::CancellationToken;

use crate::store::Store;
use crate::worker::rooms::Rooms;

/// How long a subscriber waits for the room's Redis subscription before it
/// is let in anyway (it then gets messages once Redis is back).
const SUBSCRIBE_WAIT: Duration = Duration::from_secs(1);

#[derive(Clone)]
pub struct IngestState {
    pub store: Store,
    pub rooms: Arc<Rooms>,
    pub draining: CancellationToken,
}

pub fn router(state: IngestState) -> Router {
    Router::new()
        .route("/v1/messages", post(post_message))
        .route("/v1/hooks/subscribe", get(subscribe_hook))
        .route("/healthz", get(health))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not found") })
        .with_state(state)
}

/// An error answer: its status and `{"error": message}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(serde_json::json!({ "error": self.message })),
        )
            .into_response()
    }
}

async fn post_message(State(state): State<IngestState>, body: Bytes) -> Result<Response, ApiError> {
    if state.draining.is_cancelled() {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "worker is shutting down",
        ));
    }
    let envelope: Envelope = serde_json::from_slice(&body)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("invalid envelope: {e}")))?;
    validate_room(&envelope.room)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.to_string()))?;
    let message = serde_json::to_string(&envelope)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    if let Err(e) = state.store.append(&envelope.room, &message).await {
        tracing::warn!(room = %envelope.room, error = %e, "cannot store message, refusing it");
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "message store unavailable",
        ));
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
        .ok_or_else(|| ApiError::new(StatusCode::BAD_REQUEST, "missing X-Chatup-Room"))?;
    validate_room(room).map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.to_string()))?;
    if !state.rooms.ensure(room, SUBSCRIBE_WAIT).await {
        tracing::warn!(
            room,
            "subscriber let in before the room's redis subscription was confirmed"
        );
    }
    Ok(StatusCode::NO_CONTENT)
}

async fn health(State(state): State<IngestState>) -> Result<Json<serde_json::Value>, ApiError> {
    state.store.ping().await.map_err(|e| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("redis unreachable: {e}"),
        )
    })?;
    Ok(Json(serde_json::json!({ "redis": "up" })))
}
