//! `chatup_readers`: admits and counts the readers of a subscribe location
//! in nginx's access phase, before nchan (the content handler) takes them.
//!
//! 1. Who: the read ticket in `?ticket=` (`chatup_gate::ticket`, from the
//!    dispatcher) makes the reader a member, or anonymous on a public room
//!    when it is missing, malformed or expired (`chatup_gate::subscribe`);
//!    a room that needs a token refuses 401. The site's token never
//!    travels in a URL.
//! 2. Room for one more: refused with a JSON 503 (which the client takes as
//!    "try another worker") when this nginx process is short of free
//!    connections or the box has `chatup_max_readers` readers.
//! 3. Counted: the reader is added to the readers zone, and a cleanup on
//!    its request's pool takes it out again however the request ends
//!    (client gone, nchan done, worker shutting down).
//! 4. Served: if the sidecar does not serve the room yet, a subrequest to
//!    `chatup_serve` (default `/_chatup/serve`) + `/{room}` asks it to (it
//!    answers once the room's Redis subscription and backfill are in
//!    place); then the room is marked served and the reader goes on to
//!    nchan. Readers of a served room cost no round trip at all. The
//!    request names the nchan channel of this serving of the room
//!    (`?channel=`, a new one each time: `chatup_wire::readers::channel`).
//!
//! Additional rooms (`?also=a,b`, read over the same connection: nchan's
//! multiplexed subscriber) go through the same steps: each needs the
//! ticket where a room needs a token, each is counted (as a reader of the
//! room, not as a member, and not as one more reader of the box) and
//! served. A worker that cannot take one of them (its rooms table full,
//! the sidecar not serving it) refuses the connection with the 503 it
//! gives for its room, and the client tries another worker: leaving the
//! room out would drop it silently (the dispatcher, not the worker, tells
//! the client which rooms it may not read). `$chatup_channels` gives nchan the channels of the
//! admitted rooms, comma-separated (`nchan_channel_id $chatup_channels;` with
//! `nchan_channel_id_split_delimiter ",";`).
//!
//! Also here: the log-phase handler of `chatup_track_published`, which
//! records the last message id of each frame nchan accepted.

use std::ptr::NonNull;

use chatup_gate::readers::MemberRef;
use chatup_gate::subscribe::{additional_rooms, reader_identity};
use chatup_gate::GateError;
use chatup_wire::readers::LAST_ID_HEADER;
use ngx::core::Pool;
use ngx::ffi::{
    ngx_conf_t, ngx_http_finalize_request, ngx_http_get_indexed_variable, ngx_http_request_t,
    ngx_http_variable_value_t, ngx_int_t, ngx_shm_zone_t, ngx_str_t, ngx_uint_t, NGX_LOG_WARN,
};
use ngx::http::{HttpModule, HttpModuleLocationConf, Request};
use ngx::{ngx_log_error, ngx_string};

use crate::ffi::{
    add_variable, bytes, contain_panic, find_header, AGAIN, DECLINED, DONE, ERROR, OK,
};
use crate::{respond, subrequest, zone, Module};

/// A reader counted in one room of the zone; dropped with its request's
/// pool, which takes it out of the count.
struct Counted {
    zone: NonNull<ngx_shm_zone_t>,
    room: String,
    member: Option<String>,
    slot: usize,
    /// Read besides the reader's own room (`?also=`): counted in the room,
    /// not in the box.
    additional: bool,
    /// The sidecar serves the room.
    served: bool,
}

impl Drop for Counted {
    fn drop(&mut self) {
        // SAFETY: the zone of the cycle this request runs in, mapped for the
        // life of this process.
        unsafe {
            zone::with_region(self.zone.as_ptr(), |table| {
                if self.additional {
                    table.leave_additional(&self.room, self.slot)
                } else {
                    table.leave(&self.room, self.member.as_deref(), self.slot)
                }
            })
        };
    }
}

/// Where a reader's admission stands.
enum Stage {
    /// Waiting for the sidecar to serve room `.0` of the reader's rooms.
    Serving(usize),
    /// The serve subrequest for room `.0` ended with status `.1`.
    Served(usize, ngx_int_t),
    Admitted,
}

/// Per-request state of a reader, in its pool.
struct ReaderCtx {
    /// Its own room first, then its additional rooms.
    rooms: Vec<Counted>,
    stage: Stage,
    /// `$chatup_channels`: the channels of the rooms' current servings
    /// (see `chatup_wire::readers::channel`), comma-separated; set once
    /// admitted.
    channels: Vec<u8>,
    /// The serve request in flight or last made, in a pool of its own.
    serving: subrequest::Detached,
}

/// nginx access-phase handler (registered for every location; only acts in
/// `chatup_readers` ones).
///
/// # Safety
/// Called by nginx with a live request.
pub unsafe extern "C" fn access_handler(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: `r` is live for the duration of the call.
    let log = unsafe { (*(*r).connection).log };
    contain_panic(log, ERROR, || unsafe {
        note_channel_reset(r);
        admit(r)
    })
}

/// In `chatup_track_published` locations (nchan's publisher): a DELETE
/// is about to empty the room's channel and disconnect its readers, who
/// come back with the id of the last frame they had. That id names a
/// frame of the old channel, which nchan misreads (see
/// `ReaderTable::is_stale_resume_id`): the time is recorded first, so that
/// the module drops such ids. Recorded before nchan acts, so that no reader
/// can come back before it is.
unsafe fn note_channel_reset(r: *mut ngx_http_request_t) {
    // SAFETY: `r` is the live request; its configuration and variables
    // with it.
    unsafe {
        if r != (*r).main || (*r).method != ngx::ffi::NGX_HTTP_DELETE as ngx_uint_t {
            return;
        }
        let request = Request::from_ngx_http_request(r);
        let Some(index) = Module::location_conf(request).and_then(|c| c.track_published) else {
            return;
        };
        if let (Some(channel), Some(zone)) = (variable(r, index), zone::current()) {
            let now = ngx::ffi::ngx_time() as u64;
            zone::with_region(zone.as_ptr(), |table| table.record_reset(&channel, now));
        }
    }
}

unsafe fn admit(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: `r` is live; its configuration, pool and variables with it.
    unsafe {
        if r != (*r).main {
            return DECLINED;
        }
        let request = Request::from_ngx_http_request(r);
        let Some(conf) = Module::location_conf(request) else {
            return DECLINED;
        };
        let Some(readers) = conf.readers else {
            return DECLINED;
        };
        let ctx = *request.as_mut().ctx.add(Module::module().ctx_index) as *mut ReaderCtx;
        if let Some(ctx) = ctx.as_mut() {
            if matches!(ctx.stage, Stage::Served(..)) {
                ctx.serving.release(r);
            }
            return match ctx.stage {
                Stage::Serving(_) => AGAIN,
                Stage::Admitted => OK,
                Stage::Served(i, status) if (200..300).contains(&status) => {
                    let counted = &mut ctx.rooms[i];
                    let room = &counted.room;
                    zone::with_region(counted.zone.as_ptr(), |t| t.mark_served(room));
                    counted.served = true;
                    serve_next(r, ctx, conf.serve_uri())
                }
                Stage::Served(i, status) => {
                    ngx_log_error!(
                        NGX_LOG_WARN,
                        (*(*r).connection).log,
                        "chatup: the sidecar did not serve room \"{}\" (status {status}): reader refused",
                        ctx.rooms[i].room
                    );
                    refuse(r, &GateError::Unavailable)
                }
            };
        }
        let (Some(verifier), Some(zone)) = (conf.ticket_verifier.as_deref(), zone::current())
        else {
            return refuse(r, &GateError::Internal);
        };
        let Some(room) = variable(r, readers.room_var) else {
            return refuse(r, &GateError::NotFound);
        };
        if let Err(e) = chatup_wire::validate_room(&room) {
            return refuse(r, &GateError::BadRoom(e));
        }
        let uri = bytes(&(*r).unparsed_uri);
        let access = conf.read_access(&room, readers.access);
        let identity = match reader_identity(verifier, uri, &room, access) {
            Ok(identity) => identity,
            Err(err) => return refuse(r, &err),
        };
        let extras = if conf.additional_rooms() {
            additional_rooms(verifier, uri, &room, |extra| {
                conf.read_access(extra, readers.access)
            })
        } else if chatup_gate::query::query_param(uri, chatup_wire::ADDITIONAL_ROOMS_PARAM)
            .is_some_and(|v| !v.is_empty())
        {
            Err(chatup_wire::AdditionalRoomsError::Off.into())
        } else {
            Ok(Vec::new())
        };
        let extras = match extras {
            Ok(extras) => extras,
            Err(err) => return refuse(r, &err),
        };
        if short_of_connections(conf.reserve_connections()) {
            return refuse(r, &GateError::Unavailable);
        }
        let public = identity
            .as_ref()
            .and_then(|i| i.public.as_ref())
            .map(|p| serde_json::Value::Object(p.clone()).to_string())
            .unwrap_or_default();
        let member = identity.as_ref().map(|i| MemberRef {
            id: &i.sub,
            public: &public,
        });
        let slot = zone::process_slot();
        let resuming = has_resume_position(r);
        let admitted = zone::with_region(zone.as_ptr(), |table| {
            table
                .check_draining(&room, resuming)
                .and_then(|()| table.admit(&room, member, slot, conf.max_readers()))
        });
        let admitted = match admitted {
            Some(Ok(admitted)) => admitted,
            Some(Err(full)) => return refuse(r, &GateError::WorkerFull(full)),
            None => return refuse(r, &GateError::Internal),
        };
        let mut rooms = vec![Counted {
            zone,
            member: admitted
                .member_counted
                .then(|| identity.map(|i| i.sub))
                .flatten(),
            room,
            slot,
            additional: false,
            served: admitted.served,
        }];
        for extra in extras {
            let served = zone::with_region(zone.as_ptr(), |table| {
                table
                    .check_draining(&extra, resuming)
                    .and_then(|()| table.admit_additional(&extra, slot))
            });
            let served = match served {
                Some(Ok(served)) => served,
                // `rooms` is dropped on return: the rooms counted so far
                // are left again.
                Some(Err(full)) => return refuse(r, &GateError::WorkerFull(full)),
                None => return refuse(r, &GateError::Internal),
            };
            rooms.push(Counted {
                zone,
                room: extra,
                member: None,
                slot,
                additional: true,
                served,
            });
        }
        let ctx = Pool::from_ngx_pool((*r).pool).allocate(ReaderCtx {
            rooms,
            stage: Stage::Admitted,
            channels: Vec::new(),
            serving: subrequest::Detached::none(),
        });
        if ctx.is_null() {
            // `allocate` dropped the value, which took the reader out again.
            return refuse(r, &GateError::Internal);
        }
        request.set_module_ctx(ctx.cast(), Module::module());
        serve_next(r, &mut *ctx, conf.serve_uri())
    }
}

/// Asks the sidecar to serve the reader's first room it does not serve
/// yet (`AGAIN`: nginx runs the access phase again once it answered), or,
/// when it serves them all, lets the reader through to nchan.
unsafe fn serve_next(
    r: *mut ngx_http_request_t,
    ctx: &mut ReaderCtx,
    serve_uri: &str,
) -> ngx_int_t {
    let Some(next) = ctx.rooms.iter().position(|room| !room.served) else {
        let rooms: Vec<&str> = ctx.rooms.iter().map(|room| room.room.as_str()).collect();
        let zone = ctx.rooms[0].zone;
        // SAFETY: the zone of this cycle, mapped for the life of the process.
        let channels = unsafe {
            zone::with_region(zone.as_ptr(), |table| {
                rooms
                    .iter()
                    .map(|room| table.channel(room))
                    .collect::<Option<Vec<_>>>()
            })
        };
        // Served rooms always have a channel (the module names it before
        // asking the sidecar, and forgets it only when nobody reads it).
        let Some(Some(channels)) = channels else {
            // SAFETY: `r` is the live main request.
            return unsafe { refuse(r, &GateError::Internal) };
        };
        ctx.channels = channels.join(",").into_bytes();
        ctx.stage = Stage::Admitted;
        // SAFETY: `r` is the live main request.
        unsafe { forget_stale_resume_id(r, zone, &rooms) };
        return OK;
    };
    ctx.stage = Stage::Serving(next);
    // SAFETY: `r` is the live main request and `ctx` its context, in its pool.
    match unsafe { start_serving(r, ctx, serve_uri) } {
        Ok(()) => AGAIN,
        Err(e) => {
            // SAFETY: `r` is live; its connection's log with it.
            unsafe {
                ngx_log_error!(
                    NGX_LOG_WARN,
                    (*(*r).connection).log,
                    "chatup: cannot ask the sidecar to serve a room: {e}"
                );
                refuse(r, &GateError::Internal)
            }
        }
    }
}

/// Answers a refused reader with its JSON error and ends the request.
unsafe fn refuse(r: *mut ngx_http_request_t, err: &GateError) -> ngx_int_t {
    // SAFETY: `r` is the live main request; the access phase stops running
    // handlers when it gets NGX_DONE, and the request is finalized once,
    // here.
    unsafe {
        let mut headers: Vec<(&str, &str)> = Vec::new();
        if err.status() == 503 {
            headers.push(("Retry-After", "1"));
            // A worker short of connections must not keep this one open
            // for the client's next request: it goes elsewhere.
            (*r).set_keepalive(0);
        }
        zone::with_counters(|counters| counters.refused(err));
        let rc = respond::error_with(r, err, &headers);
        ngx_http_finalize_request(r, rc);
    }
    DONE
}

/// Removes the reader's resume id (`Last-Event-ID`, `?last_event_id=`) if
/// it is from before this nginx started, or before the channel of one of
/// its `rooms` was deleted (see `ReaderTable::is_stale_resume_id`): nchan
/// then starts it from the oldest frame of each channel instead of
/// skipping messages.
unsafe fn forget_stale_resume_id(
    r: *mut ngx_http_request_t,
    zone: NonNull<ngx_shm_zone_t>,
    rooms: &[&str],
) {
    // SAFETY: `r` is the live main request; the header list and the new
    // arguments live in its pool.
    unsafe {
        let stale = |id: &str| {
            zone::with_region(zone.as_ptr(), |t| t.is_stale_resume_id(id, rooms)).unwrap_or(false)
        };
        let mut part = &mut (*r).headers_in.headers.part as *mut ngx::ffi::ngx_list_part_t;
        while !part.is_null() {
            let elts = (*part).elts as *mut ngx::ffi::ngx_table_elt_t;
            for i in 0..(*part).nelts {
                let h = &mut *elts.add(i);
                if bytes(&h.key).eq_ignore_ascii_case(b"Last-Event-ID")
                    && std::str::from_utf8(bytes(&h.value)).is_ok_and(stale)
                {
                    // A hash of 0 marks a header as deleted for nginx's
                    // lookups ($http_last_event_id included).
                    h.hash = 0;
                }
            }
            part = (*part).next;
        }
        if let Some(args) =
            chatup_gate::query::without_param(bytes(&(*r).args), "last_event_id", stale)
        {
            let pool = Pool::from_ngx_pool((*r).pool);
            let data = pool.alloc(args.len().max(1)) as *mut u8;
            if !data.is_null() {
                std::ptr::copy_nonoverlapping(args.as_ptr(), data, args.len());
                (*r).args = ngx_str_t {
                    len: args.len(),
                    data,
                };
            }
        }
    }
}

/// Whether the reader asks to resume from a position (`?last_event_id=`,
/// `Last-Event-ID`, or a long-poll's `If-None-Match` / `If-Modified-Since`).
unsafe fn has_resume_position(r: *mut ngx_http_request_t) -> bool {
    // SAFETY: `r` is the live main request; its arguments and headers live
    // in its pool.
    unsafe {
        chatup_gate::query::query_param(&[b"?", bytes(&(*r).args)].concat(), "last_event_id")
            .is_some()
            || ["Last-Event-ID", "If-None-Match", "If-Modified-Since"]
                .iter()
                .any(|name| find_header(r, name).is_some())
    }
}

/// Whether this process has fewer free connections than `reserve`: a
/// reader let in now could leave nginx without connections for the
/// requests it must always be able to make (to the sidecar, to nchan).
fn short_of_connections(reserve: u64) -> bool {
    // SAFETY: the running cycle of this process.
    let free = unsafe { ngx::ffi::ngx_cycle.as_ref() }.map(|c| c.free_connection_n as u64);
    free.is_some_and(|free| free < reserve)
}

/// The value of the indexed variable `index` of `r`.
unsafe fn variable(r: *mut ngx_http_request_t, index: ngx_uint_t) -> Option<String> {
    // SAFETY: `index` was obtained at configuration time for this cycle;
    // the value lives in the request's pool.
    unsafe {
        let value = ngx_http_get_indexed_variable(r, index).as_ref()?;
        if value.not_found() != 0 || value.valid() == 0 {
            return None;
        }
        let s = ngx_str_t {
            len: value.len() as usize,
            data: value.data,
        };
        std::str::from_utf8(bytes(&s)).ok().map(str::to_owned)
    }
}

/// Starts the subrequest that asks the sidecar to serve the room that
/// `ctx.stage` names.
unsafe fn start_serving(
    r: *mut ngx_http_request_t,
    ctx: &mut ReaderCtx,
    serve_uri: &str,
) -> Result<(), String> {
    let Stage::Serving(i) = ctx.stage else {
        return Err("no room to serve".into());
    };
    let counted = &ctx.rooms[i];
    // SAFETY: the zone of this cycle, mapped for the life of the process.
    let serving = unsafe {
        zone::with_region(counted.zone.as_ptr(), |t| {
            let channel = t.serving_channel(&counted.room)?;
            Some((channel, t.last_published(&counted.room)))
        })
    }
    .flatten();
    let (channel, last_published) = serving.ok_or("the room is not in the readers zone")?;
    let uri = format!("{serve_uri}/{}", counted.room);
    // Channels and message ids need no escaping (see `chatup_wire`).
    let args = match last_published {
        Some(id) => format!("channel={channel}&after={id}"),
        None => format!("channel={channel}"),
    };
    // SAFETY: `ctx` lives in the request's pool, as long as the request.
    unsafe {
        subrequest::start_detached(
            r,
            &uri,
            &args,
            Some(serve_done),
            (ctx as *mut ReaderCtx).cast(),
            &mut ctx.serving,
        )
    }
    .map(drop)
}

/// Post-subrequest handler of the serve request: records its status; nginx
/// then runs the reader's phases again, back into `admit`.
unsafe extern "C" fn serve_done(
    sr: *mut ngx_http_request_t,
    data: *mut std::ffi::c_void,
    rc: ngx_int_t,
) -> ngx_int_t {
    // SAFETY: `data` is the reader's context given in `start_serving`,
    // alive with the main request; `sr` is the finishing subrequest.
    unsafe {
        let ctx = &mut *(data as *mut ReaderCtx);
        if let Stage::Serving(i) = ctx.stage {
            ctx.stage = Stage::Served(i, subrequest::status(sr, rc));
        }
    }
    rc
}

/// Adds `$chatup_channels` to the configuration being parsed.
///
/// # Safety
/// `cf` is nginx's configuration being parsed.
pub unsafe fn register_variables(cf: *mut ngx_conf_t) -> ngx_int_t {
    // SAFETY: nginx's configuration being parsed; a static name.
    unsafe { add_variable(cf, ngx_string!("chatup_channels"), Some(channels_variable)) }
}

/// `$chatup_channels`: the rooms a reader was admitted to, its own first,
/// comma-separated; not found outside `chatup_readers` locations and
/// before admission.
unsafe extern "C" fn channels_variable(
    r: *mut ngx_http_request_t,
    v: *mut ngx_http_variable_value_t,
    _data: usize,
) -> ngx_int_t {
    // SAFETY: called by nginx with a live request and its value slot. The
    // module's context of a `chatup_readers` location's main request is a
    // `ReaderCtx` (only `admit` sets it there); the bytes live in it, as
    // long as the request.
    unsafe {
        let v = &mut *v;
        let main = (*r).main;
        let request = Request::from_ngx_http_request(main);
        let readers_location =
            Module::location_conf(request).is_some_and(|conf| conf.readers.is_some());
        let ctx = *(*main).ctx.add(Module::module().ctx_index) as *mut ReaderCtx;
        match ctx.as_mut().filter(|_| readers_location) {
            Some(ctx) if matches!(ctx.stage, Stage::Admitted) && !ctx.channels.is_empty() => {
                v.data = ctx.channels.as_mut_ptr();
                v.set_len(ctx.channels.len() as _);
                v.set_valid(1);
                v.set_no_cacheable(0);
                v.set_not_found(0);
            }
            _ => v.set_not_found(1),
        }
    }
    OK
}

/// nginx log-phase handler: in `chatup_track_published` locations (nchan's
/// publisher), records the id of the last message of each accepted frame.
///
/// # Safety
/// Called by nginx with a live request.
pub unsafe extern "C" fn log_handler(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: `r` is live for the duration of the call.
    let log = unsafe { (*(*r).connection).log };
    contain_panic(log, OK, || unsafe {
        let request = Request::from_ngx_http_request(r);
        let Some(index) = Module::location_conf(request).and_then(|c| c.track_published) else {
            return OK;
        };
        if r != (*r).main || !(200..300).contains(&(*r).headers_out.status) {
            return OK;
        }
        let Some(id) = find_header(r, LAST_ID_HEADER).and_then(|v| std::str::from_utf8(v).ok())
        else {
            return OK;
        };
        if let (Some(channel), Some(zone)) = (variable(r, index), zone::current()) {
            zone::with_region(zone.as_ptr(), |table| table.record_published(&channel, id));
        }
        OK
    })
}
