//! `chatup_authorize`: answers nchan's `nchan_authorize_request` for a
//! subscriber.
//!
//! Browsers cannot set headers on WebSocket and EventSource requests, so the
//! token comes as `?token=` in the subscriber's URL, which nchan forwards as
//! `X-Original-URI`. `anonymous` lets anyone read (a token, if given, must
//! be valid), except the rooms listed by `chatup_token_rooms`; `token`
//! requires one.

use chatup_gate::query::query_param;
use chatup_gate::GateError;
use ngx::ffi::{ngx_http_discard_request_body, ngx_http_request_t, ngx_int_t};
use ngx::http::{HttpModuleLocationConf, Request};

use crate::config::AuthorizeMode;
use crate::ffi::{bytes, contain_panic, find_header, INTERNAL_SERVER_ERROR};
use crate::{respond, Module};

/// nginx content handler for `chatup_authorize` locations.
///
/// # Safety
/// Called by nginx with a live request.
pub unsafe extern "C" fn handler(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: `r` is live for the duration of the call.
    let log = unsafe { (*(*r).connection).log };
    contain_panic(log, INTERNAL_SERVER_ERROR, || unsafe { authorize(r) })
}

unsafe fn authorize(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: `r` is live; its headers live in its pool.
    unsafe {
        if r == (*r).main && ngx_http_discard_request_body(r) != crate::ffi::OK {
            return INTERNAL_SERVER_ERROR;
        }
        let request = Request::from_ngx_http_request(r);
        let Some(conf) = Module::location_conf(request) else {
            return INTERNAL_SERVER_ERROR;
        };
        let (Some(mode), Some(verifier)) = (conf.authorize, conf.verifier.as_deref()) else {
            return INTERNAL_SERVER_ERROR;
        };
        let uri = find_header(r, "X-Original-URI").unwrap_or_else(|| bytes(&(*r).unparsed_uri));
        let token = query_param(uri, "token").filter(|t| !t.is_empty());
        let room = find_header(r, "X-Chatup-Room")
            .and_then(|room| std::str::from_utf8(room).ok())
            .unwrap_or_default();
        let mode = if conf.room_needs_token(room) {
            AuthorizeMode::Token
        } else {
            mode
        };
        let verdict = match (token, mode) {
            (Some(token), _) => verifier.verify(&token).map(Some),
            (None, AuthorizeMode::Anonymous) => Ok(None),
            (None, AuthorizeMode::Token) => Err(GateError::MissingToken),
        };
        match verdict {
            Ok(Some(identity)) => respond::json(r, 204, b"", &[("X-Chatup-User", &identity.sub)]),
            Ok(None) => respond::json(r, 204, b"", &[]),
            Err(err) => respond::error(r, &err),
        }
    }
}
