//! Development only: `POST /dev/token` mints a user token for whatever name
//! is given, so the example page works without a site's login. Enabled by
//! `dev_token_key`; never in production (anyone could be anyone).

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::api_error::ApiError;
use crate::devtoken::DevSigner;

const TOKEN_TTL_SECS: u64 = 3600;

#[derive(Deserialize)]
pub struct TokenRequest {
    name: String,
    /// Lifetime in seconds, 1 to 3600 (default 3600): short ones let the
    /// example page and the browser tests see a token expire.
    #[serde(default)]
    ttl_secs: Option<u64>,
    /// A moderator's token for this room (`role: "moderator"`, `rooms`:
    /// that room), to try moderation.
    #[serde(default)]
    moderator_of: Option<String>,
}

/// A user id from a display name: `dev-` and its letters and digits.
fn user_id(name: &str) -> String {
    let slug: String = name
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .take(32)
        .collect();
    format!("dev-{slug}")
}

/// A colour of the name's own, for the widget.
fn color(name: &str) -> String {
    let hue = name
        .bytes()
        .fold(7u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)))
        % 360;
    format!("hsl({hue}, 65%, 42%)")
}

pub async fn token(
    State(signer): State<Arc<DevSigner>>,
    body: Result<Json<TokenRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let Json(request) = body.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let name = request.name.trim();
    if name.is_empty()
        || name.chars().count() > 32
        || !name.chars().any(|c| c.is_ascii_alphanumeric())
    {
        return Err(ApiError::bad_request(
            "name must have 1 to 32 characters, with a letter or digit",
        ));
    }
    let ttl = request.ttl_secs.unwrap_or(TOKEN_TTL_SECS);
    if !(1..=TOKEN_TTL_SECS).contains(&ttl) {
        return Err(ApiError::bad_request(format!(
            "ttl_secs must be 1 to {TOKEN_TTL_SECS}"
        )));
    }
    let moderator_of: Vec<String> = request.moderator_of.into_iter().collect();
    for room in &moderator_of {
        chatup_wire::validate_room(room)
            .map_err(|e| ApiError::bad_request(format!("moderator_of: {e}")))?;
    }
    let id = user_id(name);
    let public = json!({ "name": name, "color": color(name) });
    let token = signer
        .user_token(&id, Some(public.clone()), ttl, &moderator_of)
        .map_err(|e| ApiError::new(axum::http::StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    Ok(Json(
        json!({ "token": token, "user": { "id": id, "public": public } }),
    ))
}
