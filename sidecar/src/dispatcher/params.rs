//! Request parameters of the dispatcher's API, checked with clear errors:
//! axum's own rejections answer in plain text, ours in JSON.

use std::collections::HashMap;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query};
use chatup_wire::validate_room;

use crate::api_error::ApiError;

/// The `{room}` of the path, validated.
pub fn room(path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    let Path(room) = path.map_err(|e| ApiError::bad_request(e.body_text()))?;
    validate_room(&room).map_err(|e| ApiError::bad_request(format!("invalid room name: {e}")))?;
    Ok(room)
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
