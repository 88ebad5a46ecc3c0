//! The checks of `POST /rooms/{room}/messages`, in the order the module
//! applies them, and the envelope it builds from an accepted request.

use chatup_wire::{validate_room, Envelope, User};

use crate::{body::parse_message, GateError, Identity, TokenFailure, TokenVerifier};

#[derive(Debug, Clone, Copy)]
pub struct PostLimits {
    /// Longest message, in characters.
    pub max_message_chars: usize,
    /// Largest request body, in bytes.
    pub max_body_bytes: usize,
}

impl PostLimits {
    /// A body large enough for any allowed message even if every character
    /// is written as a JSON `\uXXXX` escape pair, plus room for the wrapper.
    pub fn for_message_chars(max_message_chars: usize) -> Self {
        Self {
            max_message_chars,
            max_body_bytes: max_message_chars * 12 + 1024,
        }
    }
}

/// What the module knows about the request before reading its body.
#[derive(Debug, Default)]
pub struct RequestHead<'a> {
    pub method: &'a str,
    pub path: &'a [u8],
    pub content_type: Option<&'a [u8]>,
    pub authorization: Option<&'a [u8]>,
    /// `Content-Length`, when the client sent one.
    pub content_length: Option<u64>,
    /// `Idempotency-Key`, when the client sent one.
    pub idempotency_key: Option<&'a [u8]>,
}

/// A request whose head passed every check; its body is still to be read.
#[derive(Debug)]
pub struct AcceptedHead {
    pub room: String,
    pub identity: Identity,
}

pub struct PostGate<'a> {
    pub verifier: &'a TokenVerifier,
    pub limits: PostLimits,
}

impl PostGate<'_> {
    /// Method, path and room, content type, token, announced length.
    pub fn check_head(&self, head: &RequestHead<'_>) -> Result<AcceptedHead, GateError> {
        if head.method != "POST" {
            return Err(GateError::MethodNotAllowed { allow: "POST" });
        }
        let room = room_from_path(head.path)?;
        check_content_type(head.content_type)?;
        let identity = self.verifier.verify(bearer_token(head.authorization)?)?;
        if !identity.may_use(&room) {
            return Err(GateError::RoomNotAllowed);
        }
        if let Some(key) = head.idempotency_key {
            chatup_wire::idempotency::validate_idempotency_key(key)?;
        }
        if head
            .content_length
            .is_some_and(|n| n > self.limits.max_body_bytes as u64)
        {
            return Err(GateError::BodyTooLarge {
                max: self.limits.max_body_bytes,
            });
        }
        Ok(AcceptedHead { room, identity })
    }

    /// Checks the body and builds the envelope for an accepted head.
    pub fn accept_body(
        &self,
        head: AcceptedHead,
        body: &[u8],
        id: String,
        ts: u64,
    ) -> Result<Envelope, GateError> {
        if body.len() > self.limits.max_body_bytes {
            return Err(GateError::BodyTooLarge {
                max: self.limits.max_body_bytes,
            });
        }
        let msg = parse_message(body, self.limits.max_message_chars)?;
        Ok(Envelope {
            id,
            room: head.room,
            user: User {
                id: head.identity.sub,
                public: head.identity.public,
                role: head.identity.role,
            },
            msg,
            ts,
            standing: head.identity.standing,
            claims: head.identity.claims,
        })
    }
}

/// `/rooms/{room}/messages` → `room`, validated.
pub fn room_from_path(path: &[u8]) -> Result<String, GateError> {
    let path = std::str::from_utf8(path).map_err(|_| GateError::NotFound)?;
    let room = path
        .strip_prefix("/rooms/")
        .and_then(|rest| rest.strip_suffix("/messages"))
        .ok_or(GateError::NotFound)?;
    validate_room(room)?;
    Ok(room.to_owned())
}

/// `application/json`, with or without parameters such as `charset=utf-8`.
pub fn check_content_type(content_type: Option<&[u8]>) -> Result<(), GateError> {
    let essence = content_type
        .and_then(|ct| std::str::from_utf8(ct).ok())
        .map(|ct| ct.split(';').next().unwrap_or_default().trim());
    match essence {
        Some(ct) if ct.eq_ignore_ascii_case("application/json") => Ok(()),
        _ => Err(GateError::UnsupportedMediaType),
    }
}

/// The token of an `Authorization: Bearer <token>` header.
pub fn bearer_token(authorization: Option<&[u8]>) -> Result<&str, GateError> {
    let value = authorization.ok_or(GateError::MissingToken)?;
    let value = std::str::from_utf8(value)
        .map_err(|_| GateError::BadToken(TokenFailure::Malformed, "malformed token".into()))?;
    let (scheme, token) = value
        .trim()
        .split_once(' ')
        .ok_or(GateError::MissingToken)?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(GateError::MissingToken);
    }
    Ok(token.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_comes_from_the_path() {
        assert_eq!(room_from_path(b"/rooms/lobby/messages").unwrap(), "lobby");
        assert_eq!(
            room_from_path(b"/rooms/lobby/other"),
            Err(GateError::NotFound)
        );
        assert_eq!(
            room_from_path(b"/rooms//messages").unwrap_err().status(),
            400
        );
        assert_eq!(
            room_from_path(b"/rooms/a b/messages").unwrap_err().status(),
            400
        );
        assert_eq!(
            room_from_path(b"/rooms/a/b/messages").unwrap_err().status(),
            400
        );
    }

    #[test]
    fn content_type_must_be_json() {
        assert!(check_content_type(Some(b"application/json")).is_ok());
        assert!(check_content_type(Some(b"Application/JSON; charset=utf-8")).is_ok());
        assert_eq!(
            check_content_type(Some(b"text/plain")),
            Err(GateError::UnsupportedMediaType)
        );
        assert_eq!(
            check_content_type(None),
            Err(GateError::UnsupportedMediaType)
        );
    }

    #[test]
    fn bearer_token_is_required() {
        assert_eq!(bearer_token(Some(b"Bearer abc")).unwrap(), "abc");
        assert_eq!(bearer_token(Some(b"bearer  abc ")).unwrap(), "abc");
        assert_eq!(bearer_token(None), Err(GateError::MissingToken));
        assert_eq!(
            bearer_token(Some(b"Basic abc")),
            Err(GateError::MissingToken)
        );
        assert_eq!(bearer_token(Some(b"Bearer ")), Err(GateError::MissingToken));
    }

    #[test]
    fn body_limit_leaves_room_for_escaped_messages() {
        let limits = PostLimits::for_message_chars(500);
        let escaped = format!("{{\"msg\":\"{}\"}}", "\\ud83d\\ude00".repeat(500));
        assert!(escaped.len() <= limits.max_body_bytes);
    }
}
