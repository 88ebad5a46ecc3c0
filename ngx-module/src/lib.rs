//! ChatUp's nginx module.
//!
//! All of its nginx surface is in this file: the module and its context,
//! the directive table, and the variable it exports. The handlers live in
//! their own modules; what they decide lives in the nginx-free
//! `chatup-gate` crate.
//!
//! Directives (see docs/nginx-module.md):
//! - `chatup_post;` — content handler for `POST /rooms/{room}/messages`
//! - `chatup_authorize anonymous|token;` — content handler answering
//!   nchan's `nchan_authorize_request`
//! - `chatup_jwt_secret_file <path>;` / `chatup_jwt_public_key <path>;`
//! - `chatup_jwt_algorithms <alg>...;`, `chatup_jwt_issuer`, `chatup_jwt_audience`,
//!   `chatup_jwt_leeway <seconds>;`
//! - `chatup_max_message_length <characters>;`
//! - `chatup_handoff <uri>;` — internal location that proxies to the sidecar
//!
//! Variable: `$chatup_envelope`, the accepted message, for that location's
//! `proxy_set_body`.

mod authorize;
mod config;
mod ffi;
mod handoff;
mod post;
mod respond;

use std::ffi::{c_char, c_void};

use ngx::ffi::{
    ngx_command_t, ngx_conf_t, ngx_http_module_t, ngx_int_t, ngx_module_t, ngx_uint_t,
    NGX_CONF_1MORE, NGX_CONF_NOARGS, NGX_CONF_TAKE1, NGX_HTTP_LOC_CONF, NGX_HTTP_LOC_CONF_OFFSET,
    NGX_HTTP_MAIN_CONF, NGX_HTTP_MODULE, NGX_HTTP_SRV_CONF,
};
use ngx::http::{HttpModule, HttpModuleLocationConf};
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
        handoff::register_variables(cf)
    }
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
    postconfiguration: None,
    create_main_conf: None,
    init_main_conf: None,
    create_srv_conf: None,
    merge_srv_conf: None,
    create_loc_conf: Some(Module::create_loc_conf),
    merge_loc_conf: Some(merge_loc_conf),
};

const ANY_LEVEL: u32 = NGX_HTTP_MAIN_CONF | NGX_HTTP_SRV_CONF | NGX_HTTP_LOC_CONF;

const fn command(
    name: ngx::ffi::ngx_str_t,
    kind: u32,
    set: unsafe extern "C" fn(*mut ngx_conf_t, *mut ngx_command_t, *mut c_void) -> *mut c_char,
) -> ngx_command_t {
    ngx_command_t {
        name,
        type_: kind as ngx_uint_t,
        set: Some(set),
        conf: NGX_HTTP_LOC_CONF_OFFSET,
        offset: 0,
        post: std::ptr::null_mut(),
    }
}

static mut NGX_HTTP_CHATUP_COMMANDS: [ngx_command_t; 12] = [
    command(
        ngx_string!("chatup_post"),
        NGX_HTTP_LOC_CONF | NGX_CONF_NOARGS,
        config::set_post,
    ),
    command(
        ngx_string!("chatup_authorize"),
        NGX_HTTP_LOC_CONF | NGX_CONF_TAKE1,
        config::set_authorize,
    ),
    command(
        ngx_string!("chatup_jwt_secret_file"),
        ANY_LEVEL | NGX_CONF_TAKE1,
        config::set_secret_file,
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
    ..ngx_module_t::default()
};
