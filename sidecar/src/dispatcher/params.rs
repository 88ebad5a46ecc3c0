//! Request parameters of the dispatcher's API, checked with clear errors:
//! axum's own rejections answer in plain text, ours in JSON.

use std::collections::HashMap;

use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequestParts, Path, Query};
use axum::http::request::Parts;
use chatup_wire::validate_room;

use crate::api_error::ApiError;

/// A request about one room: the `{room}` of its path, validated, and its
/// query string.
pub struct RoomRequest {
    pub room: String,
    pub params: Params,
}

impl<S: Send + Sync> FromRequestParts<S> for RoomRequest {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(room) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::bad_request(e.body_text()))?;
        validate_room(&room)
            .map_err(|e| ApiError::bad_request(format!("invalid room name: {e}")))?;
        let query = Query::from_request_parts(parts, state).await;
        Ok(Self {
            room,
            params: Params::from(query)?,
        })
    }
}

/// The query string's parameters.
pub struct Params(HashMap<String, String>);

impl Params {
    pub fn from(
        query: Result<Query<HashMap<String, String>>, QueryRejection>,
    ) -> Result<Self, ApiError> {
        let Query(map) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
        Ok(Self(map))
    }

    /// A whole number in `0..=max`, `default` when absent.
    pub fn number(&self, name: &str, default: usize, max: usize) -> Result<usize, ApiError> {
        let Some(text) = self.0.get(name) else {
            return Ok(default);
        };
        text.parse::<usize>()
            .ok()
            .filter(|n| *n <= max)
            .ok_or_else(|| {
                ApiError::bad_request(format!("{name} must be a whole number from 0 to {max}"))
            })
    }

    pub fn text(&self, name: &str) -> Option<&str> {
        self.0
            .get(name)
            .map(String::as_str)
            .filter(|s| !s.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_bounded_and_defaulted() {
        let params = Params(HashMap::from([
            ("limit".to_string(), "20".to_string()),
            ("skip".to_string(), "-1".to_string()),
            ("big".to_string(), "999".to_string()),
        ]));
        assert_eq!(params.number("limit", 5, 100).unwrap(), 20);
        assert_eq!(params.number("absent", 5, 100).unwrap(), 5);
        assert!(params.number("skip", 0, 100).is_err());
        assert!(params.number("big", 0, 100).is_err());
    }
}
