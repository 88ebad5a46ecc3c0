//! Who may read a room, and who a reader is: one rule for the nginx module
//! (subscribers, with a read ticket in `?ticket=`: browsers can set no
//! header on WebSocket and EventSource requests, and the site's token stays
//! out of URLs; see `ticket`) and the dispatcher (history, members, joins:
//! the site's token in `Authorization: Bearer`).
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
use crate::ticket::TICKET_PARAM;
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

/// The member a subscribe request's URL names with its read ticket
/// (`?ticket=`), if any. `tickets` verifies tickets, not site tokens: a
/// site token in the URL is not looked at.
pub fn reader_identity(
    tickets: &TokenVerifier,
    uri: &[u8],
    room: &str,
    access: ReadAccess,
) -> Result<Option<Identity>, GateError> {
    let ticket = query_param(uri, TICKET_PARAM).filter(|t| !t.is_empty());
    let reader = reader(tickets, ticket.as_deref(), room, access)?;
    // Reading is all a ticket grants.
    Ok(reader.map(|identity| Identity {
        role: None,
        standing: Default::default(),
        claims: None,
        ..identity
    }))
}

/// The additional rooms a subscribe request's URL names (`?also=a,b`),
/// checked: valid names, at most `MAX_ADDITIONAL_ROOMS`, each one the
/// reader may read with its ticket (`access` says which need one). The
/// reader is counted in them as a reader, never as a member: reading a
/// site-wide announcement channel is not joining it.
pub fn additional_rooms(
    tickets: &TokenVerifier,
    uri: &[u8],
    room: &str,
    access: impl Fn(&str) -> ReadAccess,
) -> Result<Vec<String>, GateError> {
    let Some(list) = query_param(uri, chatup_wire::ADDITIONAL_ROOMS_PARAM) else {
        return Ok(Vec::new());
    };
    let rooms = chatup_wire::additional_rooms(room, list.split(','))?;
    for extra in &rooms {
        if access(extra) == ReadAccess::TokenOnly {
            reader_identity(tickets, uri, extra, ReadAccess::TokenOnly).map_err(|error| {
                GateError::AdditionalRoom {
                    room: extra.clone(),
                    error: Box::new(error),
                }
            })?;
        }
    }
    Ok(rooms)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ticket::{verifier, TicketSigner};
    use crate::Identity;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn access(room: &str) -> ReadAccess {
        ReadAccess::of(room, &["private-*".to_owned()], ReadAccess::Anyone)
    }

    fn ticket(rooms: &[&str]) -> String {
        let identity = Identity {
            sub: "alice".into(),
            public: None,
            rooms: None,
            role: None,
            standing: Default::default(),
            claims: None,
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        TicketSigner::new(SECRET, 60)
            .unwrap()
            .issue(&identity, rooms, now)
            .token
    }

    #[test]
    fn additional_rooms_come_from_also_and_private_ones_need_the_ticket() {
        let tickets = verifier(SECRET).unwrap();
        let t = ticket(&["lobby", "private-alice"]);
        let uri = format!("/sub/lobby?also=news,private-alice,news,lobby&ticket={t}");
        assert_eq!(
            additional_rooms(&tickets, uri.as_bytes(), "lobby", access),
            Ok(vec!["news".to_owned(), "private-alice".to_owned()])
        );
        assert_eq!(
            additional_rooms(&tickets, b"/sub/lobby", "lobby", access),
            Ok(vec![])
        );
        // Percent-encoded as browsers' URLSearchParams sends it.
        assert_eq!(
            additional_rooms(&tickets, b"/sub/lobby?also=news%2Cm%3A1", "lobby", access),
            Ok(vec!["news".to_owned(), "m:1".to_owned()])
        );
        let other = ticket(&["lobby"]);
        let uri = format!("/sub/lobby?also=private-alice&ticket={other}");
        let refused = additional_rooms(&tickets, uri.as_bytes(), "lobby", access).unwrap_err();
        assert_eq!(refused.status(), 403);
        assert!(refused.to_string().contains("private-alice"), "{refused}");
        let refused = additional_rooms(&tickets, b"/sub/lobby?also=private-bob", "lobby", access)
            .unwrap_err();
        assert_eq!(refused.status(), 401);
        let refused =
            additional_rooms(&tickets, b"/sub/lobby?also=a%20b", "lobby", access).unwrap_err();
        assert_eq!(refused.status(), 400);
    }
}
