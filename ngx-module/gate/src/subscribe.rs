//! Who a reader is, from the `?token=` of its subscribe URL (browsers can
//! set no header on WebSocket and EventSource requests).
//!
//! Reading a public room never fails because of a token: a missing,
//! malformed or expired one makes the reader anonymous (counted, not a
//! member). A tab left open past its token's lifetime keeps reading; the
//! client asks the page for a new token to post with. Rooms that need a
//! token to read refuse a reader without a valid one.

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

/// The member a subscribe request's URL names, if any.
pub fn reader_identity(
    verifier: &TokenVerifier,
    uri: &[u8],
    access: ReadAccess,
) -> Result<Option<Identity>, GateError> {
    let token = query_param(uri, "token").filter(|t| !t.is_empty());
    match (token, access) {
        (Some(token), ReadAccess::Anyone) => Ok(verifier.verify(&token).ok()),
        (Some(token), ReadAccess::TokenOnly) => verifier.verify(&token).map(Some),
        (None, ReadAccess::Anyone) => Ok(None),
        (None, ReadAccess::TokenOnly) => Err(GateError::MissingToken),
    }
}
