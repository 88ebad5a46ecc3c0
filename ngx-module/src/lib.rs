//! ChatUp's nginx module.
//!
//! All of its nginx surface is in this file: the module and its context,
//! the directive table, and the variable it exports. The handlers live in
//! their own modules; what they decide lives in the nginx-free
//! `chatup-gate` crate.
//!
//! Directives (see docs/nginx-module.md):
//! - `chatup_post;` — content handler for `POST /rooms/{room}/messages`
//! - `chatup_readers anonymous|token $room;` — admits and counts the
//!   readers of an nchan subscriber location (access phase, `readers.rs`)
//! - `chatup_readers_zone <size>;` (http) — the shared memory they are
//!   counted in; `chatup_max_readers <n>;`, `chatup_reserve_connections <n>;`,
//!   `chatup_serve <uri>;` (where to ask the sidecar to serve a new room)
//! - `chatup_readers_status;` — content handler: the sidecar polls reader
//!   changes and releases rooms here (`status.rs`)
//! - `chatup_track_published $channel;` — in nchan's publisher location:
//!   records the last message id published in each room's current channel
//!   (log phase; channels: `chatup_wire::readers::channel`)
//! - `chatup_jwt_secret_file <path>;` / `chatup_jwt_public_key <path>;`
//! - `chatup_jwt_algorithms <alg>...;`, `chatup_jwt_issuer`, `chatup_jwt_audience`,
//!   `chatup_jwt_leeway <seconds>;`
//! - `chatup_jwt_max_lifetime <duration>|off;` (default 24h): tokens
//!   expiring further away are refused
//! - `chatup_jwt_original_claims on|off;` (default off): the original
//!   ChatUp's `_public` (public data) and `name` (user id) claims
//! - `chatup_readers_additional_rooms on|off;` (default off): readers may
//!   read more rooms over one connection (`?also=`); off, such a request is
//!   a 400 (docs/operations.md: nchan 1.3.6's multiplexed subscribers fall
//!   behind).
//! - `chatup_jwt_require_exp on|off;` (default on): `off` accepts tokens
//!   without `exp` (the original ChatUp's)
//! - `chatup_max_message_length <characters>;`
//! - `chatup_handoff <uri>;` — internal location that proxies to the sidecar
//!
//! Variables: `$chatup_message_id`, the accepted message's id (for access
//! logs), and `$chatup_envelope`, the accepted message, for that location's
//! `proxy_set_body`.

mod config;
mod ffi;
mod handoff;
mod post;
mod readers;
mod respond;
mod status;
mod subrequest;
mod zone;

use std::ffi::{c_char, c_void};

use ngx::ffi::{
    ngx_array_push, ngx_command_t, ngx_conf_t, ngx_cycle_t, ngx_http_handler_pt, ngx_http_module_t,
    ngx_http_phases_NGX_HTTP_ACCESS_PHASE, ngx_http_phases_NGX_HTTP_LOG_PHASE, ngx_int_t,
    ngx_module_t, ngx_uint_t, NGX_CONF_1MORE, NGX_CONF_NOARGS, NGX_CONF_TAKE1, NGX_CONF_TAKE2,
    NGX_HTTP_LOC_CONF, NGX_HTTP_LOC_CONF_OFFSET, NGX_HTTP_MAIN_CONF, NGX_HTTP_MAIN_CONF_OFFSET,
    NGX_HTTP_MODULE, NGX_HTTP_SRV_CONF,
};
use ngx::http::{HttpModule, HttpModuleLocationConf, HttpModuleMainConf, NgxHttpCoreModule};
use ngx::ngx_string;

use crate::config::LocConf;

pub(crate) struct Module;

impl HttpModule for Module {
    fn module() -> &'static ngx_module_t {
        // SAFETY: the module static is only written by nginx while it loads
        // the configuration, on one thread, before any handler runs.
        unsafe { &*std::ptr::addr_of!(ngx_http_chatup_module) }
    }

    unsafe extern "C" fn preconfiguration(cf: *mut ngx_conf_t) -> ngx_int_t {
        // SAFETY: nginx's configuration being parsed.
        match unsafe { handoff::register_variables(cf) } {
            ffi::OK => unsafe { readers::register_variables(cf) },
            rc => rc,
        }
    }

    unsafe extern "C" fn postconfiguration(cf: *mut ngx_conf_t) -> ngx_int_t {
        // SAFETY: called once the http block is parsed; the core module's
        // phase arrays accept handlers until then.
        unsafe {
            let Some(core) = NgxHttpCoreModule::main_conf_mut(&*cf) else {
                return ffi::ERROR;
            };
            let phases: [(usize, ngx_http_handler_pt); 2] = [
                (
                    ngx_http_phases_NGX_HTTP_ACCESS_PHASE as usize,
                    Some(readers::access_handler),
                ),
                (
                    ngx_http_phases_NGX_HTTP_LOG_PHASE as usize,
                    Some(readers::log_handler),
                ),
            ];
            for (phase, handler) in phases {
                let slot =
                    ngx_array_push(&mut core.phases[phase].handlers) as *mut ngx_http_handler_pt;
                if slot.is_null() {
                    return ffi::ERROR;
                }
                *slot = handler;
            }
        }
        ffi::OK
    }
}

// SAFETY: the main configuration of this module is a `zone::MainConf`,
// created by `HttpModule::create_main_conf` with `Default`.
unsafe impl HttpModuleMainConf for Module {
    type MainConf = zone::MainConf;
}

/// A worker process starts: what its slot held before is stale (the
/// previous process in this slot died, or this is a fresh start).
unsafe extern "C" fn init_process(_cycle: *mut ngx_cycle_t) -> ngx_int_t {
    ffi::contain_panic(std::ptr::null_mut(), (), zone::this_process_started);
    ffi::OK
}

/// A worker process exits: readers whose requests it did not close are no
/// longer read by anyone.
unsafe extern "C" fn exit_process(_cycle: *mut ngx_cycle_t) {
    ffi::contain_panic(std::ptr::null_mut(), (), zone::this_process_exits);
}

/// Merges a location's configuration with its parent's. Not the `Merge`
/// trait: merging here builds the token verifier and reports errors against
/// the configuration file, which needs `cf`.
unsafe extern "C" fn merge_loc_conf(
    cf: *mut ngx_conf_t,
    prev: *mut c_void,
    conf: *mut c_void,
) -> *mut c_char {
    // SAFETY: nginx passes two `LocConf`s of this module.
    unsafe { config::merge(cf, prev.cast(), conf.cast()) }
}

// SAFETY: the location configuration of this module is a `LocConf`, created
// by `HttpModule::create_loc_conf` with `Default`.
unsafe impl HttpModuleLocationConf for Module {
    type LocationConf = LocConf;
}

static NGX_HTTP_CHATUP_MODULE_CTX: ngx_http_module_t = ngx_http_module_t {
    preconfiguration: Some(Module::preconfiguration),
    postconfiguration: Some(Module::postconfiguration),
    create_main_conf: Some(Module::create_main_conf),
    init_main_conf: None,
    create_srv_conf: None,
    merge_srv_conf: None,
    create_loc_conf: Some(Module::create_loc_conf),
    merge_loc_conf: Some(merge_loc_conf),
};

const ANY_LEVEL: u32 = NGX_HTTP_MAIN_CONF | NGX_HTTP_SRV_CONF | NGX_HTTP_LOC_CONF;

type Setter = unsafe extern "C" fn(*mut ngx_conf_t, *mut ngx_command_t, *mut c_void) -> *mut c_char;

/// A directive stored in the location configuration.
const fn command(name: ngx::ffi::ngx_str_t, kind: u32, set: Setter) -> ngx_command_t {
    command_at(name, kind, set, NGX_HTTP_LOC_CONF_OFFSET)
}

const fn command_at(
    name: ngx::ffi::ngx_str_t,
    kind: u32,
    set: Setter,
    conf: usize,
) -> ngx_command_t {
    ngx_command_t {
        name,
        type_: kind as ngx_uint_t,
        set: Some(set),
        conf: conf as ngx_uint_t,
        offset: 0,
        post: std::ptr::null_mut(),
    }
}

static mut NGX_HTTP_CHATUP_COMMANDS: [ngx_command_t; 23] = [
    command(
        ngx_string!("chatup_post"),
        NGX_HTTP_LOC_CONF | NGX_CONF_NOARGS,
        config::set_post,
    ),
    command(
        ngx_string!("chatup_readers"),
        NGX_HTTP_LOC_CONF | NGX_CONF_TAKE2,
        config::set_readers,
    ),
    command(
        ngx_string!("chatup_readers_status"),
        NGX_HTTP_LOC_CONF | NGX_CONF_NOARGS,
        config::set_readers_status,
    ),
    command(
        ngx_string!("chatup_track_published"),
        NGX_HTTP_LOC_CONF | NGX_CONF_TAKE1,
        config::set_track_published,
    ),
    command_at(
        ngx_string!("chatup_readers_zone"),
        NGX_HTTP_MAIN_CONF | NGX_CONF_TAKE1,
        config::set_readers_zone,
        NGX_HTTP_MAIN_CONF_OFFSET,
    ),
    command(
        ngx_string!("chatup_serve"),
        ANY_LEVEL | NGX_CONF_TAKE1,
        config::set_serve,
    ),
    command(
        ngx_string!("chatup_max_readers"),
        ANY_LEVEL | NGX_CONF_TAKE1,
        config::set_max_readers,
    ),
    command(
        ngx_string!("chatup_reserve_connections"),
        ANY_LEVEL | NGX_CONF_TAKE1,
        config::set_reserve_connections,
    ),
    command(
        ngx_string!("chatup_jwt_secret_file"),
        ANY_LEVEL | NGX_CONF_TAKE1,
        config::set_secret_file,
    ),
    command(
        ngx_string!("chatup_ticket_secret_file"),
        ANY_LEVEL | NGX_CONF_TAKE1,
        config::set_ticket_secret_file,
    ),
    command(
        ngx_string!("chatup_jwt_public_key"),
        ANY_LEVEL | NGX_CONF_TAKE1,
        config::set_public_key,
    ),
    command(
        ngx_string!("chatup_jwt_algorithms"),
        ANY_LEVEL | NGX_CONF_1MORE,
        config::set_algorithms,
    ),
    command(
        ngx_string!("chatup_jwt_issuer"),
        ANY_LEVEL | NGX_CONF_TAKE1,
        config::set_issuer,
    ),
    command(
        ngx_string!("chatup_jwt_audience"),
        ANY_LEVEL | NGX_CONF_TAKE1,
        config::set_audience,
    ),
    command(
        ngx_string!("chatup_jwt_leeway"),
        ANY_LEVEL | NGX_CONF_TAKE1,
        config::set_leeway,
    ),
    command(
        ngx_string!("chatup_jwt_max_lifetime"),
        ANY_LEVEL | NGX_CONF_TAKE1,
        config::set_max_lifetime,
    ),
    command(
        ngx_string!("chatup_jwt_original_claims"),
        ANY_LEVEL | NGX_CONF_TAKE1,
        config::set_original_claims,
    ),
    command(
        ngx_string!("chatup_jwt_require_exp"),
        ANY_LEVEL | NGX_CONF_TAKE1,
        config::set_require_exp,
    ),
    command(
        ngx_string!("chatup_readers_additional_rooms"),
        ANY_LEVEL | NGX_CONF_TAKE1,
        config::set_additional_rooms,
    ),
    command(
        ngx_string!("chatup_max_message_length"),
        ANY_LEVEL | NGX_CONF_TAKE1,
        config::set_max_message_length,
    ),
    command(
        ngx_string!("chatup_handoff"),
        ANY_LEVEL | NGX_CONF_TAKE1,
        config::set_handoff,
    ),
    command(
        ngx_string!("chatup_token_rooms"),
        ANY_LEVEL | NGX_CONF_1MORE,
        config::set_token_rooms,
    ),
    ngx_command_t::empty(),
];

ngx::ngx_modules!(ngx_http_chatup_module);

#[used]
#[no_mangle]
#[allow(non_upper_case_globals)]
pub static mut ngx_http_chatup_module: ngx_module_t = ngx_module_t {
    ctx: std::ptr::addr_of!(NGX_HTTP_CHATUP_MODULE_CTX) as _,
    // SAFETY: taking the address of the command table; nginx reads it while
    // loading the configuration.
    commands: unsafe { std::ptr::addr_of_mut!(NGX_HTTP_CHATUP_COMMANDS[0]) },
    type_: NGX_HTTP_MODULE as _,
    init_process: Some(init_process),
    exit_process: Some(exit_process),
    ..ngx_module_t::default()
};
