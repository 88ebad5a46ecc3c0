//! Small helpers at the nginx FFI edge: panic containment and reading
//! nginx strings and headers.

use std::panic::{catch_unwind, AssertUnwindSafe};

use ngx::ffi::{
    ngx_conf_t, ngx_http_add_variable, ngx_http_get_variable_pt, ngx_http_request_t, ngx_int_t,
    ngx_str_t, ngx_table_elt_t, NGX_HTTP_VAR_NOCACHEABLE, NGX_LOG_ALERT,
};
use ngx::ngx_log_error;

/// Runs `f`, turning a panic into `fallback` so that it never unwinds into
/// nginx's C frames (which would be undefined behaviour and, at best, take
/// the worker process down).
pub fn contain_panic<R>(log: *mut ngx::ffi::ngx_log_t, fallback: R, f: impl FnOnce() -> R) -> R {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(value) => value,
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .copied()
                .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
                .unwrap_or("unknown panic");
            if !log.is_null() {
                ngx_log_error!(NGX_LOG_ALERT, log, "chatup: handler panicked: {what}");
            }
            fallback
        }
    }
}

/// Adds the variable `$name` (not cached: its value is read anew each
/// time), read by `get`.
///
/// # Safety
/// `cf` is nginx's configuration being parsed (preconfiguration), and
/// `name` a `'static` nginx string.
pub unsafe fn add_variable(
    cf: *mut ngx_conf_t,
    mut name: ngx_str_t,
    get: ngx_http_get_variable_pt,
) -> ngx_int_t {
    // SAFETY: nginx copies nothing it needs later from `name` but the
    // bytes, which are static; the variable lives in the configuration.
    unsafe {
        let var = ngx_http_add_variable(cf, &mut name, NGX_HTTP_VAR_NOCACHEABLE as _);
        if var.is_null() {
            return ERROR;
        }
        (*var).get_handler = get;
    }
    OK
}

/// The bytes of an nginx string.
///
/// # Safety
/// `s` must describe memory that stays valid for `'a` (nginx strings live
/// in the request's or the configuration's pool).
pub unsafe fn bytes<'a>(s: &ngx_str_t) -> &'a [u8] {
    if s.data.is_null() || s.len == 0 {
        return &[];
    }
    // SAFETY: per this function's contract, `data` points to `len` bytes.
    unsafe { std::slice::from_raw_parts(s.data, s.len) }
}

/// The value of a header that nginx keeps a direct pointer to.
///
/// # Safety
/// `elt` is null or points to a header of a live request.
pub unsafe fn header_value<'a>(elt: *mut ngx_table_elt_t) -> Option<&'a [u8]> {
    // SAFETY: null-checked; nginx keeps header elements in the request pool.
    unsafe { elt.as_ref().map(|e| bytes(&e.value)) }
}

/// The value of the first request header named `name` (case-insensitive).
///
/// # Safety
/// `r` points to a live request.
pub unsafe fn find_header<'a>(r: *mut ngx_http_request_t, name: &str) -> Option<&'a [u8]> {
    // SAFETY: `r` is live; its header list lives in its pool.
    unsafe { find_in_list(&(*r).headers_in.headers, name) }
}

/// The value of the first response header named `name` of `r` (for a
/// subrequest, the headers its upstream answered with).
///
/// # Safety
/// `r` points to a live request.
pub unsafe fn find_response_header<'a>(r: *mut ngx_http_request_t, name: &str) -> Option<&'a [u8]> {
    // SAFETY: `r` is live; its header list lives in its pool.
    unsafe { find_in_list(&(*r).headers_out.headers, name) }
}

/// # Safety
/// `list` is a header list of a live request.
unsafe fn find_in_list<'a>(list: &ngx::ffi::ngx_list_t, name: &str) -> Option<&'a [u8]> {
    // SAFETY: nginx's header list: a chain of parts, each an array of
    // `nelts` `ngx_table_elt_t`, all in the request pool.
    unsafe {
        let mut part = &list.part as *const ngx::ffi::ngx_list_part_t;
        while !part.is_null() {
            let elts = (*part).elts as *const ngx_table_elt_t;
            for i in 0..(*part).nelts {
                let h = &*elts.add(i);
                if bytes(&h.key).eq_ignore_ascii_case(name.as_bytes()) {
                    return Some(bytes(&h.value));
                }
            }
            part = (*part).next;
        }
    }
    None
}

pub const OK: ngx_int_t = ngx::ffi::NGX_OK as ngx_int_t;
pub const ERROR: ngx_int_t = ngx::ffi::NGX_ERROR as ngx_int_t;
pub const AGAIN: ngx_int_t = ngx::ffi::NGX_AGAIN as ngx_int_t;
pub const DECLINED: ngx_int_t = ngx::ffi::NGX_DECLINED as ngx_int_t;
pub const DONE: ngx_int_t = ngx::ffi::NGX_DONE as ngx_int_t;
pub const INTERNAL_SERVER_ERROR: ngx_int_t = ngx::ffi::NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
