//! The one kind of subrequest the module makes: to an internal location
//! that proxies to the sidecar, waited for, with no body of its own and
//! only its status kept (like nginx's `auth_request`). nginx's upstream
//! machinery does the non-blocking I/O, keepalive and timeouts.

use ngx::core::Pool;
use ngx::ffi::{
    ngx_create_pool, ngx_destroy_pool, ngx_http_post_subrequest_pt, ngx_http_post_subrequest_t,
    ngx_http_request_body_t, ngx_http_request_t, ngx_http_subrequest, ngx_int_t, ngx_pool_t,
    NGX_HTTP_SPECIAL_RESPONSE, NGX_HTTP_SUBREQUEST_WAITED,
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
    // SAFETY: the caller's guarantees; the subrequest lives in the
    // request's own pool, as long as the request.
    unsafe { start_in(r, uri, args, done, data, (*r).pool) }
}

/// Starts the subrequest with everything nginx allocates for it (the
/// request itself, its module contexts and header lists, and later its
/// upstream and proxy state) taken from `pool`: `r`'s own, or one that
/// outlives the subrequest. The URI and arguments come from `r`'s pool.
///
/// # Safety
/// `r` is a live main request; `data` and `pool` live as long as the
/// subrequest.
unsafe fn start_in(
    r: *mut ngx_http_request_t,
    uri: &str,
    args: &str,
    done: ngx_http_post_subrequest_pt,
    data: *mut std::ffi::c_void,
    pool: *mut ngx_pool_t,
) -> Result<*mut ngx_http_request_t, String> {
    // SAFETY: allocations come from `r`'s pool or `pool`, both outliving
    // the subrequest; nginx copies nothing it is given here. `r->pool` is
    // swapped for `pool` only for the duration of `ngx_http_subrequest`,
    // which takes the subrequest's pool from it, and restored before
    // anything else runs.
    unsafe {
        let alloc = Pool::from_ngx_pool(pool);
        let mut uri = ngx::ffi::ngx_str_t::from_str((*r).pool, uri);
        let mut args = ngx::ffi::ngx_str_t::from_str((*r).pool, args);
        let args = if args.len == 0 {
            std::ptr::null_mut()
        } else {
            &mut args as *mut ngx::ffi::ngx_str_t
        };
        let ps = alloc.calloc_type::<ngx_http_post_subrequest_t>();
        // An empty body of its own, so the upstream never reads or resends
        // the client's body; the location sets what the sidecar gets.
        let rb = alloc.calloc_type::<ngx_http_request_body_t>();
        if ps.is_null() || rb.is_null() {
            return Err("out of memory".into());
        }
        (*ps).handler = done;
        (*ps).data = data;
        let mut sr: *mut ngx_http_request_t = std::ptr::null_mut();
        let main_pool = (*r).pool;
        (*r).pool = pool;
        let rc = ngx_http_subrequest(
            r,
            &mut uri,
            args,
            &mut sr,
            ps,
            NGX_HTTP_SUBREQUEST_WAITED as _,
        );
        (*r).pool = main_pool;
        if rc != OK || sr.is_null() {
            return Err(format!("ngx_http_subrequest returned {rc}"));
        }
        (*sr).request_body = rb;
        // Only the status matters: nothing of the sidecar's response is
        // sent to the client.
        (*sr).set_header_only(1);
        Ok(sr)
    }
}

/// Size of the pool a detached subrequest is made in: the serve request
/// (its request, upstream and proxy state, headers) fits in one block.
const DETACHED_POOL_SIZE: usize = 8192;

/// A subrequest made in a pool of its own instead of its main request's
/// (see [`start_detached`]), freed as soon as nothing refers to it.
pub struct Detached {
    pool: *mut ngx_pool_t,
    sr: *mut ngx_http_request_t,
}

impl Detached {
    pub const fn none() -> Self {
        Self {
            pool: std::ptr::null_mut(),
            sr: std::ptr::null_mut(),
        }
    }

    /// Frees the subrequest's pool if the subrequest is over and nginx
    /// keeps nothing of it: it is done, its parent `r` has no postponed
    /// subrequest left (the node linking it there lives in the pool) and
    /// is the connection's active request again. Otherwise the pool stays
    /// until the main request ends (`Drop`).
    ///
    /// # Safety
    /// `r` is the live main request the subrequest was made for, running
    /// (not inside one of the subrequest's handlers).
    pub unsafe fn release(&mut self, r: *mut ngx_http_request_t) {
        if self.pool.is_null() {
            return;
        }
        // SAFETY: `r` is live; `sr` lives in `self.pool`, not destroyed
        // yet. Once `sr` is done, nginx reaches nothing of the pool: the
        // upstream's cleanup entry (in the main request's pool) had its
        // handler cleared when the upstream was finalized, and the parent's
        // variables point into the URI and arguments, which `start_detached`
        // puts in the main request's pool.
        unsafe {
            let done = self.sr.is_null() || (*self.sr).done() != 0;
            let unlinked = (*r).postponed.is_null() && (*(*r).connection).data == r.cast();
            if done && unlinked {
                ngx_destroy_pool(self.pool);
                self.pool = std::ptr::null_mut();
                self.sr = std::ptr::null_mut();
            }
        }
    }
}

impl Drop for Detached {
    fn drop(&mut self) {
        if !self.pool.is_null() {
            // SAFETY: dropped with the main request's context, when its pool
            // is destroyed: after its cleanup handlers (the upstream's
            // among them) ran, so nothing uses the subrequest any more.
            unsafe { ngx_destroy_pool(self.pool) };
        }
    }
}

/// Like [`start`], but the subrequest and everything nginx allocates for
/// it (its request, the upstream and proxy state, the answer's headers)
/// come from a pool of its own, which [`Detached::release`] frees once it
/// ended. For a subrequest whose main request lives long after it: the
/// serve request of a room's first reader stayed in that reader's pool,
/// about 5 KB per room, for as long as the reader read (docs/operations.md,
/// memory per idle reader). The URI and arguments stay in the main
/// request's pool, and the subrequest gets a variables array of its own
/// (nginx shares the parent's with it): nothing of the reader's points
/// into the freed pool.
///
/// `detached` owns the pool from the start, a failed start included
/// (nginx may have linked part of the subrequest to `r` already).
///
/// # Safety
/// `r` is a live main request; `data` and `detached` live as long as it.
pub unsafe fn start_detached(
    r: *mut ngx_http_request_t,
    uri: &str,
    args: &str,
    done: ngx_http_post_subrequest_pt,
    data: *mut std::ffi::c_void,
    detached: &mut Detached,
) -> Result<*mut ngx_http_request_t, String> {
    // SAFETY: `r` is live; the new pool is owned by `detached`, which
    // outlives the subrequest (see `Detached`); the main configuration is
    // the one `r` and its subrequest share.
    unsafe {
        if !detached.pool.is_null() {
            // The last one could not be freed yet (never so in the access
            // phase, see `Detached::release`): this one goes in the main
            // request's pool, as any other subrequest.
            return start(r, uri, args, done, data);
        }
        let own = ngx_create_pool(DETACHED_POOL_SIZE, (*(*r).connection).log);
        if own.is_null() {
            return Err("out of memory".into());
        }
        detached.pool = own;
        // Variables of its own: nginx shares the parent's array with a
        // subrequest, so values the subrequest computes (`$proxy_host`,
        // `$status`, any cacheable variable a configuration adds) would
        // stay in the reader's array pointing into this pool once it is
        // freed. The serve location computes all it uses itself.
        let cmcf = *(*r).main_conf.add(ngx::ffi::ngx_http_core_module.ctx_index)
            as *mut ngx::ffi::ngx_http_core_main_conf_t;
        let count = (*cmcf).variables.nelts;
        let variables = Pool::from_ngx_pool(own)
            .calloc(count.max(1) * std::mem::size_of::<ngx::ffi::ngx_http_variable_value_t>())
            as *mut ngx::ffi::ngx_http_variable_value_t;
        if variables.is_null() {
            return Err("out of memory".into());
        }
        let sr = start_in(r, uri, args, done, data, own)?;
        detached.sr = sr;
        (*sr).variables = variables;
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
