//! Who may read a room, and who a reader is: one rule for the nginx module
//! (subscribers, `?token=`: browsers can set no header on WebSocket and
//! EventSource requests) and the dispatcher (history, members, joins:
//! `Authorization: Bearer`).
//!
//! Reading a public room never fails because of a token: a missing,
//! malformed or expired one makes the reader anonymous (counted, not a
//! member). A tab left open past its token's lifetime keeps reading; the
//! client asks the page for a new token to post with. Rooms that need a
//! token to read (`chatup_token_rooms` / `token_rooms`) refuse a reader
//! without a valid one (401), or whose token's `rooms` claim leaves the
//! room out (403). The `rooms` claim applies to reading as to posting: on a
//! public room, a token that leaves the room out makes the reader
//! anonymous.

use crate::query::query_param;
use crate::{GateError, Identity, TokenVerifier};

/// Who may read a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadAccess {
    /// Anyone; a valid token makes the reader a member.
    Anyone,
    /// Only readers with a valid token.
    TokenOnly,
}

impl ReadAccess {
    /// The access of `room` where `default` applies to rooms that
    /// `token_rooms` (names or `prefix*` patterns) do not match.
    pub fn of(room: &str, token_rooms: &[String], default: ReadAccess) -> ReadAccess {
        if token_rooms
            .iter()
            .any(|pattern| chatup_wire::room_matches(pattern, room))
        {
            ReadAccess::TokenOnly
        } else {
            default
        }
    }
}

/// The member a subscribe request's URL (`?token=`) names, if any.
pub fn reader_identity(
    verifier: &TokenVerifier,
    uri: &[u8],
    room: &str,
    access: ReadAccess,
) -> Result<Option<Identity>, GateError> {
    let token = query_param(uri, "token").filter(|t| !t.is_empty());
    reader(verifier, token.as_deref(), room, access)
}

/// Who reads `room` with `token` (if any), or why they may not.
pub fn reader(
    verifier: &TokenVerifier,
    token: Option<&str>,
    room: &str,
    access: ReadAccess,
) -> Result<Option<Identity>, GateError> {
    let verified = token.map(|token| verifier.verify(token));
    match (verified, access) {
        (Some(Ok(identity)), _) if identity.may_use(room) => Ok(Some(identity)),
        (Some(Ok(_)), ReadAccess::TokenOnly) => Err(GateError::RoomNotAllowed),
        (Some(Err(e)), ReadAccess::TokenOnly) => Err(e),
        (None, ReadAccess::TokenOnly) => Err(GateError::MissingToken),
        (_, ReadAccess::Anyone) => Ok(None),
    }
}
