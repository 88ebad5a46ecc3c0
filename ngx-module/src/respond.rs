//! Sending JSON responses. Every answer the module gives goes through here,
//! so that every refusal has its status and a `{"error": ...}` body.

use chatup_gate::GateError;
use ngx::ffi::{
    ngx_chain_t, ngx_create_temp_buf, ngx_http_output_filter, ngx_http_request_t,
    ngx_http_send_header, ngx_int_t, ngx_str_t,
};
use ngx::http::Request;

use crate::ffi::{ERROR, OK};

/// Answers a refusal: its status, its JSON body, and the headers HTTP asks
/// for with that status.
pub fn error(r: *mut ngx_http_request_t, err: &GateError) -> ngx_int_t {
    error_with(r, err, &[])
}

/// Like [`error`], with more headers (e.g. `Retry-After`).
pub fn error_with(
    r: *mut ngx_http_request_t,
    err: &GateError,
    extra: &[(&str, &str)],
) -> ngx_int_t {
    let mut headers: Vec<(&str, &str)> = extra.to_vec();
    if let GateError::MethodNotAllowed { allow } = err {
        headers.push(("Allow", allow));
    }
    if matches!(err, GateError::MissingToken | GateError::BadToken(..)) {
        headers.push(("WWW-Authenticate", "Bearer"));
    }
    json(r, err.status(), err.json_body().as_bytes(), &headers)
}

/// Sends `status` with `body` as `application/json` (no body when empty)
/// and returns what the content handler should return to nginx.
pub fn json(
    r: *mut ngx_http_request_t,
    status: u16,
    body: &[u8],
    headers: &[(&str, &str)],
) -> ngx_int_t {
    // SAFETY: `r` is the live request this handler was called for; nginx
    // runs handlers on one thread and the request outlives this call.
    unsafe {
        let request = Request::from_ngx_http_request(r);
        for (name, value) in headers {
            if request.add_header_out(name, value).is_none() {
                return ERROR;
            }
        }
        if request
            .add_header_out("Cache-Control", "no-store")
            .is_none()
        {
            return ERROR;
        }
        let out = &mut (*r).headers_out;
        out.status = status as usize;
        out.content_type = ngx_str_t {
            len: b"application/json".len(),
            data: b"application/json".as_ptr() as *mut u8,
        };
        out.content_type_len = out.content_type.len;
        out.content_type_lowcase = std::ptr::null_mut();
        out.content_length_n = body.len() as i64;
        if body.is_empty() {
            (*r).set_header_only(1);
        }
        let rc = ngx_http_send_header(r);
        if rc == ERROR || rc > OK || (*r).header_only() != 0 {
            return rc;
        }
        let buf = ngx_create_temp_buf((*r).pool, body.len());
        if buf.is_null() {
            return ERROR;
        }
        std::ptr::copy_nonoverlapping(body.as_ptr(), (*buf).last, body.len());
        (*buf).last = (*buf).last.add(body.len());
        if r == (*r).main {
            (*buf).set_last_buf(1);
        } else {
            (*buf).set_last_in_chain(1);
        }
        let mut chain = ngx_chain_t {
            buf,
            next: std::ptr::null_mut(),
        };
        ngx_http_output_filter(r, &mut chain)
    }
}
