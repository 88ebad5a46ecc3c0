//! `chatup_readers_status`: the sidecar's window on the readers zone, on
//! nginx's internal socket only.
//!
//! - `GET ...?boot=B&since=S`: the entries changed since `S`
//!   (`chatup_wire::readers::ReaderChanges`);
//! - `POST ...?release=a,b`: stop letting readers into these rooms without
//!   asking the sidecar, for those that have no reader
//!   (`chatup_wire::readers::Released`);
//! - `GET ...?counters=1`: the module's counters
//!   (`chatup_wire::readers::ModuleCounters`);
//! - `POST ...?drain=1` (or `0`): refuse new readers from now on, or no
//!   longer (`chatup_wire::readers::Draining`): the sidecar drains this
//!   nginx for a deploy; `GET ...?drain=status` only reads that state.

use chatup_gate::query::query_param;
use chatup_gate::GateError;
use chatup_wire::readers::{Draining, Released};
use ngx::ffi::{ngx_http_discard_request_body, ngx_http_request_t, ngx_int_t};

use crate::ffi::{bytes, contain_panic, INTERNAL_SERVER_ERROR, OK};
use crate::{respond, zone};

/// nginx content handler for `chatup_readers_status` locations.
///
/// # Safety
/// Called by nginx with a live request.
pub unsafe extern "C" fn handler(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: `r` is live for the duration of the call.
    let log = unsafe { (*(*r).connection).log };
    contain_panic(log, INTERNAL_SERVER_ERROR, || unsafe { answer(r) })
}

unsafe fn answer(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: `r` is live; its arguments live in its pool.
    unsafe {
        if ngx_http_discard_request_body(r) != OK {
            return INTERNAL_SERVER_ERROR;
        }
        let Some(zone) = zone::current() else {
            return respond::error(r, &GateError::NotFound);
        };
        let post = (*r).method == ngx::ffi::NGX_HTTP_POST as ngx::ffi::ngx_uint_t;
        let mut query = b"?".to_vec();
        query.extend_from_slice(bytes(&(*r).args));
        let body = if query_param(&query, "counters").is_some() {
            zone::with_region(zone.as_ptr(), |table| table.boot()).map(|boot| {
                let mut snapshot = None;
                zone::with_counters(|counters| snapshot = Some(counters.snapshot(boot)));
                serde_json::to_vec(&snapshot.unwrap_or_default())
            })
        } else if let Some(drain) = query_param(&query, "drain") {
            zone::with_region(zone.as_ptr(), |table| {
                // Only a POST changes it; `GET ...?drain=status` reads.
                match (post, drain.as_str()) {
                    (true, "1") => table.set_draining(true),
                    (true, "0") => table.set_draining(false),
                    _ => {}
                }
                serde_json::to_vec(&Draining {
                    draining: table.draining(),
                    readers: table.readers(),
                })
            })
        } else if let Some(rooms) = query_param(&query, "release") {
            let released = zone::with_region(zone.as_ptr(), |table| Released {
                released: rooms
                    .split(',')
                    .filter(|room| !room.is_empty() && table.release(room))
                    .map(str::to_owned)
                    .collect(),
            });
            released.map(|r| serde_json::to_vec(&r))
        } else {
            let boot = query_param(&query, "boot").unwrap_or_default();
            let since = query_param(&query, "since")
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            zone::with_region(zone.as_ptr(), |table| table.changes(&boot, since))
                .map(|changes| serde_json::to_vec(&changes))
        };
        match body {
            Some(Ok(body)) => respond::json(r, 200, &body, &[]),
            _ => respond::error(r, &GateError::Internal),
        }
    }
}
