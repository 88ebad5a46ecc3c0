//! Handing an accepted message to the sidecar without blocking nginx.
//!
//! The module makes a subrequest to an internal location (`chatup_handoff`,
//! default `/_chatup/handoff`) that `proxy_pass`es to the sidecar with
//! `proxy_set_body $chatup_envelope`. nginx's upstream machinery does the
//! non-blocking I/O, keepalive and timeouts; when the subrequest ends, the
//! client gets `202` only if the sidecar answered 2xx (the message is
//! stored), with the sidecar's `X-Chatup-Ack` as its body when the sidecar
//! gives one (a retried post: the first answer); the sidecar's own refusal (403 banned, 422 rejected by a
//! filter, 429 rate limited, any 4xx but 401 or a 503 from the site's
//! publish hook) with the JSON body and `Retry-After` it put in its
//! `X-Chatup-Refusal` and `Retry-After` headers; and `503` otherwise.

use chatup_gate::post::AcceptedHead;
use chatup_gate::GateError;
use chatup_wire::Envelope;
use ngx::core::Pool;
use ngx::ffi::{
    ngx_conf_t, ngx_http_finalize_request, ngx_http_request_t, ngx_http_variable_value_t,
    ngx_int_t, NGX_LOG_WARN,
};
use ngx::http::{HttpModule, HttpModuleLocationConf, Request};
use ngx::{ngx_log_error, ngx_string};

use crate::ffi::{add_variable, contain_panic, find_response_header, INTERNAL_SERVER_ERROR, OK};
use crate::{respond, subrequest, Module};

/// A refusal decided by the sidecar, passed on to the client as it is.
pub struct Refusal {
    /// The JSON body (`X-Chatup-Refusal`).
    body: Vec<u8>,
    /// `Retry-After`, for rate limits.
    retry_after: Option<String>,
}

/// Statuses the sidecar refuses a message with, which the client sees.
fn passed_on(status: ngx_int_t) -> bool {
    // A 4xx other than 401 (which means "sign in again" to clients), or a
    // 503 the sidecar explains (its publish hook could not be asked).
    ((400..500).contains(&status) && status != 401) || status == 503
}

/// Per-request state of a chat POST, kept in the main request's pool.
#[derive(Default)]
pub struct PostCtx {
    /// Set by the head checks, taken when the body is checked.
    pub head: Option<AcceptedHead>,
    /// The serialized envelope, read by `$chatup_envelope`.
    envelope: Vec<u8>,
    /// The message's id, read by `$chatup_message_id` (for access logs:
    /// the sidecar logs it too, so one message can be followed).
    message_id: Vec<u8>,
    /// The `{"id","ts"}` answer for the client.
    ack: Vec<u8>,
    /// The sidecar's status, once the subrequest has ended.
    sidecar_status: Option<ngx_int_t>,
    /// The sidecar's refusal, if it refused the message itself.
    refusal: Option<Refusal>,
    /// The sidecar's own answer to a retried post (its first answer).
    replayed_ack: Option<Vec<u8>>,
    answered: bool,
}

impl PostCtx {
    /// Creates the context of `r` (freed with its pool).
    ///
    /// # Safety
    /// `r` is a live main request.
    pub unsafe fn attach<'a>(
        r: *mut ngx_http_request_t,
        head: AcceptedHead,
    ) -> Option<&'a mut PostCtx> {
        // SAFETY: the pool outlives every use of the context, and the
        // allocation registers a cleanup that drops it with the pool.
        unsafe {
            let pool = Pool::from_ngx_pool((*r).pool);
            let ctx = pool.allocate(PostCtx {
                head: Some(head),
                ..Default::default()
            });
            if ctx.is_null() {
                return None;
            }
            Request::from_ngx_http_request(r).set_module_ctx(ctx.cast(), Module::module());
            Some(&mut *ctx)
        }
    }

    /// The context of `r`'s main request, if it has one.
    ///
    /// # Safety
    /// `r` is a live request.
    pub unsafe fn get<'a>(r: *mut ngx_http_request_t) -> Option<&'a mut PostCtx> {
        // SAFETY: the module's ctx slot holds a `PostCtx` in `chatup_post`
        // locations and a `ReaderCtx` in `chatup_readers` ones: the main
        // request's location says which. (Our variables can be logged in
        // any location; an internal redirect clears the slot.)
        unsafe {
            let main = Request::from_ngx_http_request((*r).main);
            if !Module::location_conf(main).is_some_and(|conf| conf.post) {
                return None;
            }
            let ctx = *main.as_mut().ctx.add(Module::module().ctx_index) as *mut PostCtx;
            ctx.as_mut()
        }
    }
}

/// Starts the subrequest that delivers `envelope` to the sidecar.
///
/// # Safety
/// `r` is the live main request that owns `ctx`.
pub unsafe fn start(
    r: *mut ngx_http_request_t,
    ctx: &mut PostCtx,
    envelope: &Envelope,
    uri: &str,
) -> Result<(), String> {
    ctx.envelope = serde_json_vec(envelope)?;
    ctx.message_id = envelope.id.as_bytes().to_vec();
    ctx.ack = serde_json_vec(&envelope.ack())?;
    // SAFETY: `ctx` lives in the main request's pool, as long as it.
    unsafe {
        subrequest::start(
            r,
            uri,
            "",
            Some(subrequest_done),
            (ctx as *mut PostCtx).cast(),
        )?;
        (*r).write_event_handler = Some(answer_client);
    }
    Ok(())
}

fn serde_json_vec<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, String> {
    serde_json::to_vec(value).map_err(|e| e.to_string())
}

/// Post-subrequest handler: records the sidecar's status.
unsafe extern "C" fn subrequest_done(
    sr: *mut ngx_http_request_t,
    data: *mut std::ffi::c_void,
    rc: ngx_int_t,
) -> ngx_int_t {
    // SAFETY: `data` is the `PostCtx` given in `start`, alive with the main
    // request; `sr` is the finishing subrequest.
    unsafe {
        let ctx = &mut *(data as *mut PostCtx);
        let status = subrequest::status(sr, rc);
        ctx.sidecar_status = Some(status);
        if (200..300).contains(&status) {
            // Copied now: the subrequest's headers go with it.
            ctx.replayed_ack = find_response_header(sr, "X-Chatup-Ack").map(<[u8]>::to_vec);
        }
        if passed_on(status) {
            // Copied now: the subrequest's headers go with it.
            ctx.refusal = find_response_header(sr, "X-Chatup-Refusal").map(|body| Refusal {
                body: body.to_vec(),
                retry_after: find_response_header(sr, "Retry-After")
                    .map(|v| String::from_utf8_lossy(v).into_owned()),
            });
        }
    }
    rc
}

/// The main request's write handler while the handoff runs: nginx calls it
/// when the subrequest has ended (and possibly on other write events before
/// that, which are ignored).
unsafe extern "C" fn answer_client(r: *mut ngx_http_request_t) {
    // SAFETY: `r` is the live main request.
    let log = unsafe { (*(*r).connection).log };
    let rc = contain_panic(log, Some(INTERNAL_SERVER_ERROR), || unsafe {
        let ctx = PostCtx::get(r)?;
        let status = ctx.sidecar_status?;
        if ctx.answered {
            return None;
        }
        ctx.answered = true;
        Some(match (status, &ctx.refusal) {
            (200..=299, _) => {
                let ack = ctx.replayed_ack.as_deref().unwrap_or(&ctx.ack);
                respond::json(r, 202, ack, &[])
            }
            (_, Some(refusal)) => {
                let headers: Vec<(&str, &str)> = refusal
                    .retry_after
                    .as_deref()
                    .map(|v| ("Retry-After", v))
                    .into_iter()
                    .collect();
                respond::json(r, status as u16, &refusal.body, &headers)
            }
            _ => {
                ngx_log_error!(
                    NGX_LOG_WARN,
                    log,
                    "chatup: sidecar refused or unreachable (status {status}), answering 503"
                );
                let err = if (400..500).contains(&status) {
                    GateError::Internal
                } else {
                    GateError::Unavailable
                };
                respond::error(r, &err)
            }
        })
    });
    if let Some(rc) = rc {
        // SAFETY: ends the main request once, after the subrequest is done.
        unsafe { ngx_http_finalize_request(r, rc) };
    }
}

/// Registers `$chatup_envelope` and `$chatup_message_id`.
///
/// # Safety
/// Called by nginx during preconfiguration.
pub unsafe fn register_variables(cf: *mut ngx_conf_t) -> ngx_int_t {
    // SAFETY: nginx's configuration being parsed; static names.
    unsafe {
        match add_variable(cf, ngx_string!("chatup_envelope"), Some(envelope_variable)) {
            OK => add_variable(
                cf,
                ngx_string!("chatup_message_id"),
                Some(message_id_variable),
            ),
            rc => rc,
        }
    }
}

/// `$chatup_message_id`: the id given to the main request's message, if it
/// got that far (not found, `-` in logs, otherwise).
unsafe extern "C" fn message_id_variable(
    r: *mut ngx_http_request_t,
    v: *mut ngx_http_variable_value_t,
    _data: usize,
) -> ngx_int_t {
    // SAFETY: called by nginx with a live request and its value slot.
    unsafe { set_variable(r, v, |ctx| &mut ctx.message_id) }
}

/// `$chatup_envelope`: the accepted message of the main request.
unsafe extern "C" fn envelope_variable(
    r: *mut ngx_http_request_t,
    v: *mut ngx_http_variable_value_t,
    _data: usize,
) -> ngx_int_t {
    // SAFETY: called by nginx with a live request and its value slot.
    unsafe { set_variable(r, v, |ctx| &mut ctx.envelope) }
}

/// Points the variable value `v` at the bytes `field` picks from the main
/// request's post context; not found when there are none.
///
/// # Safety
/// `r` is a live request and `v` nginx's value slot for the variable.
unsafe fn set_variable(
    r: *mut ngx_http_request_t,
    v: *mut ngx_http_variable_value_t,
    field: impl FnOnce(&mut PostCtx) -> &mut Vec<u8>,
) -> ngx_int_t {
    // SAFETY: the bytes live in the main request's context, as long as the
    // request, which outlives any use nginx makes of the value.
    unsafe {
        let v = &mut *v;
        match PostCtx::get(r).map(field).filter(|bytes| !bytes.is_empty()) {
            Some(bytes) => {
                v.data = bytes.as_mut_ptr();
                v.set_len(bytes.len() as _);
                v.set_valid(1);
                v.set_no_cacheable(0);
                v.set_not_found(0);
            }
            None => v.set_not_found(1),
        }
    }
    OK
}
