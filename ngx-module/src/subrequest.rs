//! The one kind of subrequest the module makes: to an internal location
//! that proxies to the sidecar, waited for, with no body of its own and
//! only its status kept (like nginx's `auth_request`). nginx's upstream
//! machinery does the non-blocking I/O, keepalive and timeouts.

use ngx::core::Pool;
use ngx::ffi::{
    ngx_http_post_subrequest_pt, ngx_http_post_subrequest_t, ngx_http_request_body_t,
    ngx_http_request_t, ngx_http_subrequest, ngx_int_t, NGX_HTTP_SPECIAL_RESPONSE,
    NGX_HTTP_SUBREQUEST_WAITED,
};

use crate::ffi::{ERROR, OK};

/// Starts a subrequest of `r` to `uri` (with the query `args`, if not
/// empty); nginx calls `done` with `data` when it ends, then runs `r`'s
/// write event handler.
///
/// # Safety
/// `r` is a live main request; `data` lives as long as it.
pub unsafe fn start(
    r: *mut ngx_http_request_t,
    uri: &str,
    args: &str,
    done: ngx_http_post_subrequest_pt,
    data: *mut std::ffi::c_void,
) -> Result<*mut ngx_http_request_t, String> {
    // SAFETY: every allocation comes from the request pool and lives as
    // long as the request; nginx copies nothing it is given here.
    unsafe {
        let pool = Pool::from_ngx_pool((*r).pool);
        let mut uri = ngx::ffi::ngx_str_t::from_str((*r).pool, uri);
        let mut args = ngx::ffi::ngx_str_t::from_str((*r).pool, args);
        let args = if args.len == 0 {
            std::ptr::null_mut()
        } else {
            &mut args as *mut ngx::ffi::ngx_str_t
        };
        let ps = pool.calloc_type::<ngx_http_post_subrequest_t>();
        if ps.is_null() {
            return Err("out of memory".into());
        }
        (*ps).handler = done;
        (*ps).data = data;
        let mut sr: *mut ngx_http_request_t = std::ptr::null_mut();
        let rc = ngx_http_subrequest(
            r,
            &mut uri,
            args,
            &mut sr,
            ps,
            NGX_HTTP_SUBREQUEST_WAITED as _,
        );
        if rc != OK || sr.is_null() {
            return Err(format!("ngx_http_subrequest returned {rc}"));
        }
        // An empty body of its own, so the upstream never reads or resends
        // the client's body; the location sets what the sidecar gets.
        let rb = pool.calloc_type::<ngx_http_request_body_t>();
        if rb.is_null() {
            return Err("out of memory".into());
        }
        (*sr).request_body = rb;
        // Only the status matters: nothing of the sidecar's response is
        // sent to the client.
        (*sr).set_header_only(1);
        Ok(sr)
    }
}

/// The status a finished subrequest ended with: nginx's error code if it
/// failed (upstream down, timeout), else the upstream's status.
///
/// # Safety
/// `sr` is the finishing subrequest, `rc` what nginx passed its post
/// handler.
pub unsafe fn status(sr: *mut ngx_http_request_t, rc: ngx_int_t) -> ngx_int_t {
    if rc == ERROR || rc >= NGX_HTTP_SPECIAL_RESPONSE as ngx_int_t {
        rc
    } else {
        // SAFETY: `sr` is live while its post handler runs.
        unsafe { (*sr).headers_out.status as ngx_int_t }
    }
}

/// Frees the buffer the subrequest's upstream read the answer's head into
/// (`proxy_buffer_size`, a page): once its status is taken, nothing reads
/// it again. It comes from the main request's pool, which a reader keeps
/// for as long as it reads: without this, the first reader of each room
/// held 4 KB more for the room's serve request (docs/operations.md,
/// memory per idle reader). Only for subrequests whose headers are not
/// read afterwards (the serve request; the hand-off reads its headers).
///
/// # Safety
/// `sr` is the finishing subrequest, in its post-subrequest handler (its
/// upstream is finalized: the buffer is no longer used by nginx).
pub unsafe fn free_response_buffer(sr: *mut ngx_http_request_t) {
    // SAFETY: `sr` is live while its post handler runs; its upstream, if
    // any, was allocated from its pool and is finalized. `ngx_pfree` only
    // frees a large allocation of that pool (a page is one) and leaves
    // anything else alone; the buffer's pointers are cleared so nothing
    // can read the freed memory through them.
    unsafe {
        let u = (*sr).upstream;
        if u.is_null() || (*u).buffer.start.is_null() {
            return;
        }
        if ngx::ffi::ngx_pfree((*sr).pool, (*u).buffer.start.cast()) == OK {
            let buffer = &mut (*u).buffer;
            buffer.start = std::ptr::null_mut();
            buffer.pos = std::ptr::null_mut();
            buffer.last = std::ptr::null_mut();
            buffer.end = std::ptr::null_mut();
        }
    }
}
