//! Every way a request can be refused, and the one place that maps each to
//! an HTTP status and a JSON body.

use chatup_wire::RoomNameError;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GateError {
    #[error("not found")]
    NotFound,
    #[error("method not allowed: use {allow}")]
    MethodNotAllowed { allow: &'static str },
    #[error("invalid room name: {0}")]
    BadRoom(#[from] RoomNameError),
    #[error("content type must be application/json")]
    UnsupportedMediaType,
    #[error("missing bearer token")]
    MissingToken,
    #[error("this token does not give access to this room")]
    RoomNotAllowed,
    /// A token that is there but cannot be trusted: why (for counting)
    /// and what the client is told.
    #[error("{1}")]
    BadToken(TokenFailure, String),
    #[error("body is not valid UTF-8")]
    InvalidUtf8,
    #[error("body is not valid JSON: {0}")]
    BadJson(String),
    #[error("message is empty")]
    EmptyMessage,
    /// Refused for what it holds (see `text`).
    #[error("{0}")]
    BadMessage(String),
    #[error("message is longer than {max} characters")]
    MessageTooLong { max: usize },
    #[error("request body is larger than {max} bytes")]
    BodyTooLarge { max: usize },
    #[error("{0}")]
    BadIdempotencyKey(#[from] chatup_wire::idempotency::BadIdempotencyKey),
    #[error("chat service unavailable, try again")]
    Unavailable,
    /// The chat worker takes no more readers: try another one.
    #[error("{0}")]
    WorkerFull(#[from] crate::readers::Full),
    #[error("internal error")]
    Internal,
    #[error("{0}")]
    BadAdditionalRooms(#[from] chatup_wire::AdditionalRoomsError),
    /// A reader may not read one of its additional rooms (`?also=`).
    #[error("additional room {room:?}: {error}")]
    AdditionalRoom { room: String, error: Box<GateError> },
}

/// Why a token was refused, as counted by the module.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenFailure {
    Expired,
    NotYetValid,
    BadSignature,
    /// No `alg`, or one that is not pinned.
    Algorithm,
    IssuerOrAudience,
    /// `exp` further away than `chatup_jwt_max_lifetime`.
    Lifetime,
    /// A claim missing or malformed (`sub`, `public`, `rooms`, ...).
    Claims,
    /// Not a JWT at all.
    Malformed,
}

impl TokenFailure {
    pub const ALL: [TokenFailure; 8] = [
        TokenFailure::Expired,
        TokenFailure::NotYetValid,
        TokenFailure::BadSignature,
        TokenFailure::Algorithm,
        TokenFailure::IssuerOrAudience,
        TokenFailure::Lifetime,
        TokenFailure::Claims,
        TokenFailure::Malformed,
    ];

    pub fn label(self) -> &'static str {
        match self {
            TokenFailure::Expired => "expired",
            TokenFailure::NotYetValid => "not_yet_valid",
            TokenFailure::BadSignature => "bad_signature",
            TokenFailure::Algorithm => "algorithm",
            TokenFailure::IssuerOrAudience => "issuer_or_audience",
            TokenFailure::Lifetime => "lifetime",
            TokenFailure::Claims => "claims",
            TokenFailure::Malformed => "malformed",
        }
    }
}

impl GateError {
    /// The HTTP status this refusal is answered with.
    pub fn status(&self) -> u16 {
        match self {
            GateError::NotFound => 404,
            GateError::MethodNotAllowed { .. } => 405,
            GateError::BadRoom(_) | GateError::BadIdempotencyKey(_) => 400,
            GateError::UnsupportedMediaType => 415,
            GateError::MissingToken | GateError::BadToken(..) => 401,
            GateError::RoomNotAllowed => 403,
            GateError::InvalidUtf8
            | GateError::BadJson(_)
            | GateError::EmptyMessage
            | GateError::BadMessage(_) => 400,
            GateError::MessageTooLong { .. } | GateError::BodyTooLarge { .. } => 413,
            GateError::Unavailable | GateError::WorkerFull(_) => 503,
            GateError::Internal => 500,
            GateError::BadAdditionalRooms(_) => 400,
            GateError::AdditionalRoom { error, .. } => error.status(),
        }
    }

    /// The JSON body: `{"error": "<message>"}`.
    pub fn json_body(&self) -> String {
        serde_json::json!({ "error": self.to_string() }).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_statuses_and_json() {
        assert_eq!(GateError::MissingToken.status(), 401);
        assert_eq!(GateError::MessageTooLong { max: 5 }.status(), 413);
        assert_eq!(GateError::UnsupportedMediaType.status(), 415);
        assert_eq!(GateError::Unavailable.status(), 503);
        assert_eq!(
            GateError::MessageTooLong { max: 5 }.json_body(),
            r#"{"error":"message is longer than 5 characters"}"#
        );
        assert_eq!(
            GateError::BadToken(TokenFailure::Malformed, "say \"x\"".into()).json_body(),
            r#"{"error":"say \"x\""}"#
        );
    }
}
