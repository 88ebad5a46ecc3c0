//! `chatup_post`: the content handler of `POST /rooms/{room}/messages`.
//!
//! 1. checks method, path, content type, token and announced length
//!    (`chatup_gate`), without touching the body;
//! 2. reads the body without blocking (nginx calls `body_read` when it is
//!    all there);
//! 3. checks the body and builds the envelope;
//! 4. hands it to the sidecar (`handoff`), which answers the client once the
//!    sidecar has stored it.

use std::cell::RefCell;
use std::time::SystemTime;

use chatup_gate::post::RequestHead;
use chatup_gate::{GateError, PostGate};
use chatup_wire::id::unix_millis;
use chatup_wire::MessageIdGenerator;
use ngx::ffi::{
    ngx_http_discard_request_body, ngx_http_finalize_request, ngx_http_read_client_request_body,
    ngx_http_request_t, ngx_int_t, ngx_pool_cleanup_add, NGX_HTTP_SPECIAL_RESPONSE, NGX_LOG_ERR,
};
use ngx::http::{HttpModuleLocationConf, Request};
use ngx::ngx_log_error;

use crate::ffi::{bytes, contain_panic, find_header, header_value, DONE, INTERNAL_SERVER_ERROR};
use crate::handoff::{self, PostCtx};
use crate::{respond, zone, Module};

thread_local! {
    // One generator per nginx worker process (nginx runs handlers on one
    // thread): ids stay strictly increasing within the worker.
    static IDS: RefCell<MessageIdGenerator> = RefCell::new(MessageIdGenerator::new());
}

/// nginx content handler for `chatup_post` locations.
///
/// # Safety
/// Called by nginx with a live request.
pub unsafe extern "C" fn handler(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: `r` is live for the duration of the call.
    let log = unsafe { (*(*r).connection).log };
    contain_panic(log, INTERNAL_SERVER_ERROR, || unsafe { start(r) })
}

unsafe fn start(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: `r` is live; its strings and headers live in its pool.
    unsafe {
        let request = Request::from_ngx_http_request(r);
        if r != (*r).main {
            return refuse(r, &GateError::NotFound);
        }
        count_when_done(r);
        let Some(conf) = Module::location_conf(request) else {
            return INTERNAL_SERVER_ERROR;
        };
        let Some(verifier) = conf.verifier.as_deref() else {
            return INTERNAL_SERVER_ERROR;
        };
        let gate = PostGate {
            verifier,
            limits: conf.limits(),
        };
        let method = std::str::from_utf8(bytes(&(*r).method_name)).unwrap_or("");
        let headers = &(*r).headers_in;
        let head = RequestHead {
            method,
            path: bytes(&(*r).uri),
            content_type: header_value(headers.content_type),
            authorization: header_value(headers.authorization),
            content_length: u64::try_from(headers.content_length_n).ok(),
            idempotency_key: find_header(r, chatup_wire::idempotency::IDEMPOTENCY_HEADER),
        };
        let accepted = match gate.check_head(&head) {
            Ok(accepted) => accepted,
            Err(err) => return refuse(r, &err),
        };
        let Some(ctx) = PostCtx::attach(r, accepted) else {
            return INTERNAL_SERVER_ERROR;
        };
        let _ = ctx;
        let rc = ngx_http_read_client_request_body(r, Some(body_read));
        if rc >= NGX_HTTP_SPECIAL_RESPONSE as ngx_int_t {
            return rc;
        }
        DONE
    }
}

/// Refuses a request before its body was read: the body is discarded so
/// the connection can be kept alive.
unsafe fn refuse(r: *mut ngx_http_request_t, err: &GateError) -> ngx_int_t {
    // SAFETY: `r` is live.
    unsafe {
        if r == (*r).main && ngx_http_discard_request_body(r) != crate::ffi::OK {
            return INTERNAL_SERVER_ERROR;
        }
    }
    answer_refusal(r, err)
}

/// Answers a refused post, counting a token refusal by its reason.
fn answer_refusal(r: *mut ngx_http_request_t, err: &GateError) -> ngx_int_t {
    zone::with_counters(|counters| counters.refused(err));
    respond::error(r, err)
}

/// Counts the chat POST `r` by the status it is finally answered with
/// (`chatup_nginx_posts_total`), whoever answers it: the module, the
/// sidecar's refusal passed on, or nginx itself (a body that never came,
/// 408; a client gone, 499; an error page). Counted when the request's pool
/// is destroyed, after the log phase: once, whatever path it took.
///
/// # Safety
/// `r` is a live main request.
unsafe fn count_when_done(r: *mut ngx_http_request_t) {
    // SAFETY: the cleanup lives in `r`'s pool and runs when that pool is
    // destroyed, before its memory (which holds `r`) is freed.
    unsafe {
        let cleanup = ngx_pool_cleanup_add((*r).pool, 0);
        if cleanup.is_null() {
            return;
        }
        (*cleanup).handler = Some(count_final_status);
        (*cleanup).data = r.cast();
    }
}

unsafe extern "C" fn count_final_status(data: *mut std::ffi::c_void) {
    let r = data as *mut ngx_http_request_t;
    // SAFETY: `data` is the request whose pool is being destroyed: nginx
    // runs a pool's cleanups before freeing it, so `r` is still readable.
    let status = unsafe { (*r).headers_out.status };
    // No unwinding into nginx: a panic here only loses one count.
    let _ = std::panic::catch_unwind(|| {
        zone::with_counters(|counters| counters.post_answered(u16::try_from(status).unwrap_or(0)))
    });
}

/// Called by nginx once the whole body is in memory.
unsafe extern "C" fn body_read(r: *mut ngx_http_request_t) {
    // SAFETY: `r` is live for the duration of the call.
    let log = unsafe { (*(*r).connection).log };
    let rc = contain_panic(log, Some(INTERNAL_SERVER_ERROR), || unsafe { on_body(r) });
    if let Some(rc) = rc {
        // SAFETY: ends the request; its body reader holds a reference that
        // this call releases.
        unsafe { ngx_http_finalize_request(r, rc) };
    }
}

/// Returns the status to finalize with, or `None` when the handoff is under
/// way and will finalize the request itself.
unsafe fn on_body(r: *mut ngx_http_request_t) -> Option<ngx_int_t> {
    // SAFETY: `r` is live; the body chain lives in its pool.
    unsafe {
        let request = Request::from_ngx_http_request(r);
        let conf = Module::location_conf(request)?;
        let verifier = conf.verifier.as_deref()?;
        let gate = PostGate {
            verifier,
            limits: conf.limits(),
        };
        let ctx = PostCtx::get(r)?;
        let head = ctx.head.take()?;
        let body = match read_body(r, gate.limits.max_body_bytes) {
            Ok(body) => body,
            Err(err) => return Some(answer_refusal(r, &err)),
        };
        let now = SystemTime::now();
        let id = IDS.with(|ids| ids.borrow_mut().next_id(now));
        let envelope = match gate.accept_body(head, &body, id, unix_millis(now)) {
            Ok(envelope) => envelope,
            Err(err) => return Some(answer_refusal(r, &err)),
        };
        if let Err(err) = handoff::start(r, ctx, &envelope, conf.handoff_uri()) {
            ngx_log_error!(
                NGX_LOG_ERR,
                (*(*r).connection).log,
                "chatup: cannot start handoff: {err}"
            );
            return Some(answer_refusal(r, &GateError::Internal));
        }
        None
    }
}

/// The request body, from nginx's buffer chain.
unsafe fn read_body(r: *mut ngx_http_request_t, max: usize) -> Result<Vec<u8>, GateError> {
    let mut body = Vec::new();
    // SAFETY: after `ngx_http_read_client_request_body` finished, the chain
    // and its buffers live in the request pool.
    unsafe {
        let rb = (*r).request_body;
        if rb.is_null() {
            return Ok(body);
        }
        let mut cl = (*rb).bufs;
        while !cl.is_null() {
            let buf = (*cl).buf;
            if (*buf).in_file() != 0 {
                // Only bodies larger than client_body_buffer_size go to a
                // file; reading it back would block the event loop.
                return Err(GateError::BodyTooLarge { max });
            }
            // A chunked or empty body ends with a special buffer whose
            // pointers are NULL: no slice may be made from it.
            if (*buf).pos.is_null() || (*buf).last <= (*buf).pos {
                cl = (*cl).next;
                continue;
            }
            let len = (*buf).last.offset_from((*buf).pos) as usize;
            if body.len() + len > max {
                return Err(GateError::BodyTooLarge { max });
            }
            body.extend_from_slice(std::slice::from_raw_parts((*buf).pos, len));
            cl = (*cl).next;
        }
    }
    Ok(body)
}
