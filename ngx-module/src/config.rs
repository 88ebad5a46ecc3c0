//! Directives: parsed and checked at configuration time, so that a bad key
//! or a bad value makes `nginx -t` fail with a clear message. Request
//! handlers only read the merged, typed result.

use std::ffi::{c_char, c_void};
use std::sync::Arc;

use chatup_gate::subscribe::ReadAccess;
use chatup_gate::token::KeyMaterial;
use chatup_gate::{PostLimits, TokenVerifier, VerifierConfig};

/// Verified user tokens each nginx worker remembers (see
/// `chatup_gate::verified`): a chatter's posts after the first skip the
/// signature check until the token expires. About 0.5 KB each.
const VERIFIED_TOKENS_PER_WORKER: usize = 4096;
use ngx::core::NGX_CONF_ERROR;
use ngx::ffi::{ngx_command_t, ngx_conf_t, ngx_str_t, ngx_uint_t, NGX_LOG_EMERG};
use ngx::http::{HttpModuleLocationConf, HttpModuleMainConf, NgxHttpCoreModule};
use ngx::ngx_conf_log_error;

use crate::ffi::{bytes, contain_panic};

pub const DEFAULT_MAX_MESSAGE_CHARS: usize = 500;
pub const DEFAULT_LEEWAY_SECS: u64 = 5;
pub const DEFAULT_HANDOFF_URI: &str = "/_chatup/handoff";
/// Upper bound for `chatup_max_message_length`, to keep bodies in memory.
pub const MAX_MESSAGE_CHARS_LIMIT: usize = 16 * 1024;

pub const DEFAULT_SERVE_URI: &str = "/_chatup/serve";
/// Free connections an nginx process keeps for its own requests (to the
/// sidecar, to nchan) before it refuses readers.
pub const DEFAULT_RESERVE_CONNECTIONS: u64 = 64;
/// Smallest readers zone: the header and a few slots.
pub const MIN_ZONE_BYTES: usize = 1 << 20;

/// `chatup_readers <anonymous|token> $room;` of a subscribe location.
#[derive(Debug, Clone, Copy)]
pub struct ReadersConf {
    pub access: ReadAccess,
    /// Index of the variable naming the room.
    pub room_var: ngx_uint_t,
}

/// The module's configuration of one location (inherited from `server` and
/// `http` for everything but the handlers; `chatup_readers` is inherited by
/// the blocks nested in its location, `if` blocks included).
#[derive(Debug, Default)]
pub struct LocConf {
    pub post: bool,
    pub readers: Option<ReadersConf>,
    /// `chatup_readers_status`: the sidecar's view of the readers zone.
    pub readers_status: bool,
    /// `chatup_track_published $room;`: index of the room variable.
    pub track_published: Option<ngx_uint_t>,
    serve_uri: Option<String>,
    max_readers: Option<u64>,
    reserve_connections: Option<u64>,
    key: Option<KeyMaterial>,
    algorithms: Option<Vec<String>>,
    issuer: Option<String>,
    audience: Option<String>,
    leeway_secs: Option<u64>,
    /// `chatup_jwt_max_lifetime`: 0 is off.
    max_lifetime_secs: Option<u64>,
    /// `chatup_jwt_original_claims on`: the original ChatUp's `_public`
    /// and `name`.
    original_claims: Option<bool>,
    /// `chatup_jwt_require_exp off`: tokens without `exp` are accepted.
    require_exp: Option<bool>,
    /// `chatup_readers_additional_rooms on`: readers may read more rooms
    /// over one connection (`?also=`; off by default, docs/operations.md).
    additional_rooms: Option<bool>,
    max_message_chars: Option<usize>,
    handoff_uri: Option<String>,
    /// Rooms whose readers need a token even where anyone may read.
    token_rooms: Option<Vec<String>>,
    /// `chatup_ticket_secret_file`: the secret read tickets are signed
    /// with (shared with the dispatchers).
    ticket_secret: Option<Vec<u8>>,
    /// The site's tokens: built at merge time where `chatup_post` is.
    pub verifier: Option<Arc<TokenVerifier>>,
    /// Read tickets: built at merge time where `chatup_readers` is.
    pub ticket_verifier: Option<Arc<TokenVerifier>>,
}

impl LocConf {
    pub fn limits(&self) -> PostLimits {
        PostLimits::for_message_chars(self.max_message_chars.unwrap_or(DEFAULT_MAX_MESSAGE_CHARS))
    }

    /// Who may read `room` here: `default`, unless `chatup_token_rooms`
    /// makes it token-only (the dispatcher applies the same rule).
    pub fn read_access(&self, room: &str, default: ReadAccess) -> ReadAccess {
        ReadAccess::of(
            room,
            self.token_rooms.as_deref().unwrap_or_default(),
            default,
        )
    }

    pub fn serve_uri(&self) -> &str {
        self.serve_uri.as_deref().unwrap_or(DEFAULT_SERVE_URI)
    }

    /// Readers the box takes at most (0: no limit but connections).
    /// Whether readers may name additional rooms (`?also=`).
    pub fn additional_rooms(&self) -> bool {
        self.additional_rooms.unwrap_or(false)
    }

    pub fn max_readers(&self) -> u64 {
        self.max_readers.unwrap_or(0)
    }

    pub fn reserve_connections(&self) -> u64 {
        self.reserve_connections
            .unwrap_or(DEFAULT_RESERVE_CONNECTIONS)
    }

    pub fn handoff_uri(&self) -> &str {
        self.handoff_uri.as_deref().unwrap_or(DEFAULT_HANDOFF_URI)
    }

    fn inherit(&mut self, parent: &LocConf) {
        fn take<T: Clone>(child: &mut Option<T>, parent: &Option<T>) {
            if child.is_none() {
                child.clone_from(parent);
            }
        }
        take(&mut self.key, &parent.key);
        take(&mut self.algorithms, &parent.algorithms);
        take(&mut self.issuer, &parent.issuer);
        take(&mut self.audience, &parent.audience);
        take(&mut self.leeway_secs, &parent.leeway_secs);
        take(&mut self.max_lifetime_secs, &parent.max_lifetime_secs);
        take(&mut self.original_claims, &parent.original_claims);
        take(&mut self.require_exp, &parent.require_exp);
        take(&mut self.additional_rooms, &parent.additional_rooms);
        take(&mut self.max_message_chars, &parent.max_message_chars);
        take(&mut self.handoff_uri, &parent.handoff_uri);
        take(&mut self.token_rooms, &parent.token_rooms);
        take(&mut self.serve_uri, &parent.serve_uri);
        take(&mut self.max_readers, &parent.max_readers);
        take(&mut self.reserve_connections, &parent.reserve_connections);
        take(&mut self.ticket_secret, &parent.ticket_secret);
        // Readers are admitted in blocks nested in a readers location too:
        // an `if` block is one (the shipped `if ($arg_also)`), and nchan
        // serves it; without this, its readers would get in unchecked.
        if self.readers.is_none() {
            self.readers = parent.readers;
        }
    }

    fn build_ticket_verifier(&self) -> Result<TokenVerifier, String> {
        let secret = self.ticket_secret.as_deref().ok_or_else(|| {
            "needs chatup_ticket_secret_file (the dispatcher's ticket_secret_file): \
             readers name themselves with read tickets, never with the site's token"
                .to_string()
        })?;
        if let Some(user_key) = &self.key {
            if chatup_gate::ticket::same_secret(secret, user_key) {
                return Err("the ticket secret must not be the site's token secret \
                            (users could sign their own tickets)"
                    .into());
            }
        }
        chatup_gate::ticket::verifier(secret).map_err(|e| format!("ticket secret: {e}"))
    }

    fn original_tokens(&self) -> chatup_gate::token::OriginalTokens {
        chatup_gate::token::OriginalTokens {
            claims: self.original_claims.unwrap_or(false),
            without_exp: !self.require_exp.unwrap_or(true),
        }
    }

    fn build_verifier(&self) -> Result<TokenVerifier, String> {
        let key = self.key.clone().ok_or_else(|| {
            "needs a key: set chatup_jwt_secret_file or chatup_jwt_public_key".to_string()
        })?;
        TokenVerifier::new(VerifierConfig {
            key,
            algorithms: self.algorithms.clone().unwrap_or_default(),
            issuer: self.issuer.clone(),
            audience: self.audience.clone(),
            leeway_secs: self.leeway_secs.unwrap_or(DEFAULT_LEEWAY_SECS),
            max_lifetime_secs: match self.max_lifetime_secs {
                None => Some(chatup_gate::token::DEFAULT_MAX_LIFETIME_SECS),
                Some(0) => None,
                Some(secs) => Some(secs),
            },
            original: self.original_tokens(),
        })
        .map(|verifier| verifier.with_cache(VERIFIED_TOKENS_PER_WORKER))
        .map_err(|e| e.to_string())
    }
}

/// Merges a location with its parent and builds its token verifier.
///
/// # Safety
/// Called by nginx with its configuration and two `LocConf`s of this module.
pub unsafe fn merge(cf: *mut ngx_conf_t, prev: *mut LocConf, conf: *mut LocConf) -> *mut c_char {
    // SAFETY: nginx passes valid pointers to two distinct configurations.
    let (parent, conf) = unsafe { (&*prev, &mut *conf) };
    let log = unsafe { (*cf).log };
    contain_panic(log, NGX_CONF_ERROR, || {
        conf.inherit(parent);
        if conf.readers.is_some()
            && crate::Module::main_conf(unsafe { &*cf })
                .and_then(|m| m.zone)
                .is_none()
        {
            ngx_conf_log_error!(
                NGX_LOG_EMERG,
                cf,
                "chatup_readers: needs \"chatup_readers_zone <size>;\" in the http block"
            );
            return NGX_CONF_ERROR;
        }
        let built = if conf.post {
            conf.build_verifier()
                .map(|v| conf.verifier = Some(Arc::new(v)))
                .map_err(|e| format!("chatup_post: {e}"))
        } else if conf.readers.is_some() {
            conf.build_ticket_verifier()
                .map(|v| conf.ticket_verifier = Some(Arc::new(v)))
                .map_err(|e| format!("chatup_readers: {e}"))
        } else {
            Ok(())
        };
        match built {
            Ok(()) => std::ptr::null_mut(),
            Err(message) => {
                ngx_conf_log_error!(NGX_LOG_EMERG, cf, "{message}");
                NGX_CONF_ERROR
            }
        }
    })
}

/// The directive's arguments (without its name), as UTF-8.
///
/// # Safety
/// `cf` is the configuration being parsed.
unsafe fn args<'a>(cf: *mut ngx_conf_t) -> Result<Vec<&'a str>, String> {
    // SAFETY: while a directive is parsed, `cf->args` is an array of
    // `ngx_str_t` whose first element is the directive name.
    let all = unsafe {
        let args = &*(*cf).args;
        std::slice::from_raw_parts(args.elts as *const ngx_str_t, args.nelts)
    };
    all.iter()
        .skip(1)
        // SAFETY: argument strings live in the configuration pool.
        .map(|s| {
            std::str::from_utf8(unsafe { bytes(s) })
                .map_err(|_| "argument is not valid UTF-8".to_string())
        })
        .collect()
}

/// Runs a directive's parser with its arguments and the location's
/// configuration, reporting its error against the directive.
///
/// # Safety
/// Called by nginx for one of this module's directives.
unsafe fn directive(
    cf: *mut ngx_conf_t,
    conf: *mut c_void,
    parse: impl FnOnce(&mut LocConf, Vec<&str>) -> Result<(), String>,
) -> *mut c_char {
    // SAFETY: `conf` is this module's `LocConf` for the block being parsed.
    let (log, conf) = unsafe { ((*cf).log, &mut *(conf as *mut LocConf)) };
    contain_panic(log, NGX_CONF_ERROR, || {
        // SAFETY: `cf` is the configuration being parsed.
        let result = unsafe { args(cf) }.and_then(|a| parse(conf, a));
        match result {
            Ok(()) => std::ptr::null_mut(),
            Err(message) => {
                let name = unsafe {
                    String::from_utf8_lossy(bytes(&*((*(*cf).args).elts as *const ngx_str_t)))
                };
                ngx_conf_log_error!(NGX_LOG_EMERG, cf, "\"{name}\" directive: {message}");
                NGX_CONF_ERROR
            }
        }
    })
}

fn set_once<T>(slot: &mut Option<T>, value: T) -> Result<(), String> {
    if slot.is_some() {
        return Err("is duplicate".into());
    }
    *slot = Some(value);
    Ok(())
}

fn read_key_file(path: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read \"{path}\": {e}"))
}

/// `30`, `30s`, `15m`, `24h`, `7d`.
fn parse_seconds(value: &str) -> Result<u64, String> {
    number_with_unit(
        value,
        &[(b's', 1), (b'm', 60), (b'h', 3600), (b'd', 86_400)],
    )
    .ok_or_else(|| format!("invalid duration \"{value}\""))
}

/// A whole number, optionally followed by one of `units`' letters (which
/// multiplies it); `None` if it is not one or overflows.
fn number_with_unit(value: &str, units: &[(u8, u64)]) -> Option<u64> {
    let (digits, factor) = match value.as_bytes().last() {
        Some(last) => match units.iter().find(|(u, _)| u.eq_ignore_ascii_case(last)) {
            Some((_, factor)) => (&value[..value.len() - 1], *factor),
            None => (value, 1),
        },
        None => (value, 1),
    };
    digits.parse::<u64>().ok()?.checked_mul(factor)
}

macro_rules! directive_handler {
    ($name:ident, |$conf:ident, $args:ident| $body:expr) => {
        /// nginx directive handler.
        ///
        /// # Safety
        /// Called by nginx while parsing this module's directive.
        pub unsafe extern "C" fn $name(
            cf: *mut ngx_conf_t,
            _cmd: *mut ngx_command_t,
            conf: *mut c_void,
        ) -> *mut c_char {
            // SAFETY: forwarded from nginx unchanged.
            unsafe { directive(cf, conf, |$conf, $args| $body) }
        }
    };
    ($name:ident, |$conf:ident, $args:ident| $body:expr, content_handler = $handler:path) => {
        /// nginx directive handler that also installs a content handler.
        ///
        /// # Safety
        /// Called by nginx while parsing this module's directive.
        pub unsafe extern "C" fn $name(
            cf: *mut ngx_conf_t,
            _cmd: *mut ngx_command_t,
            conf: *mut c_void,
        ) -> *mut c_char {
            // SAFETY: forwarded from nginx unchanged.
            unsafe {
                directive(cf, conf, |$conf, $args| {
                    $body?;
                    install_content_handler(cf, Some($handler))
                })
            }
        }
    };
}

/// Makes `handler` the content handler of the location being parsed, as
/// `proxy_pass` does.
///
/// # Safety
/// `cf` is a location block being parsed.
unsafe fn install_content_handler(
    cf: *mut ngx_conf_t,
    handler: ngx::ffi::ngx_http_handler_pt,
) -> Result<(), String> {
    // SAFETY: inside a location block, `cf` has the core module's location
    // configuration.
    let clcf = unsafe { NgxHttpCoreModule::location_conf_mut(&*cf) }
        .ok_or_else(|| "must be inside a location".to_string())?;
    clcf.handler = handler;
    Ok(())
}

directive_handler!(
    set_post,
    |conf, _args| {
        if conf.post || conf.readers.is_some() {
            return Err("is duplicate, or the location already has chatup_readers".into());
        }
        conf.post = true;
        Ok::<(), String>(())
    },
    content_handler = crate::post::handler
);

directive_handler!(
    set_readers_status,
    |conf, _args| set_flag(&mut conf.readers_status),
    content_handler = crate::status::handler
);

/// nginx directive handler of `chatup_readers <anonymous|token> $room;`
/// (an access-phase check: nchan stays the content handler).
///
/// # Safety
/// Called by nginx while parsing this module's directive.
pub unsafe extern "C" fn set_readers(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    // SAFETY: forwarded from nginx unchanged; `cf` is being parsed.
    unsafe {
        directive(cf, conf, |conf, args| {
            let access = match args[0] {
                "anonymous" => ReadAccess::Anyone,
                "token" => ReadAccess::TokenOnly,
                other => {
                    return Err(format!(
                        "invalid value \"{other}\", expected anonymous or token"
                    ))
                }
            };
            if conf.post {
                return Err("the location already has chatup_post".into());
            }
            let room_var = variable_index(cf, args[1])?;
            if conf.readers.is_some() {
                return Err("is duplicate".into());
            }
            conf.readers = Some(ReadersConf { access, room_var });
            Ok(())
        })
    }
}

/// nginx directive handler of `chatup_track_published $room;`.
///
/// # Safety
/// Called by nginx while parsing this module's directive.
pub unsafe extern "C" fn set_track_published(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    // SAFETY: forwarded from nginx unchanged; `cf` is being parsed.
    unsafe {
        directive(cf, conf, |conf, args| {
            let index = variable_index(cf, args[0])?;
            set_once(&mut conf.track_published, index)
        })
    }
}

/// nginx directive handler of `chatup_readers_zone <size>;` (http block).
///
/// # Safety
/// Called by nginx while parsing this module's directive; `conf` is the
/// module's main configuration.
pub unsafe extern "C" fn set_readers_zone(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    // SAFETY: `conf` is this module's `MainConf` (NGX_HTTP_MAIN_CONF_OFFSET).
    let (log, main) = unsafe { ((*cf).log, &mut *(conf as *mut crate::zone::MainConf)) };
    contain_panic(log, NGX_CONF_ERROR, || {
        // SAFETY: `cf` is the configuration being parsed.
        let result = unsafe { args(cf) }.and_then(|args| {
            let size = parse_size(args[0])?;
            if size < MIN_ZONE_BYTES {
                return Err(format!("must be at least {}k", MIN_ZONE_BYTES >> 10));
            }
            if main.zone.is_some() {
                return Err("is duplicate".into());
            }
            // SAFETY: `cf` is the configuration being parsed.
            main.zone = Some(unsafe { crate::zone::declare(cf, size) }?);
            Ok(())
        });
        match result {
            Ok(()) => std::ptr::null_mut(),
            Err(message) => {
                ngx_conf_log_error!(
                    NGX_LOG_EMERG,
                    cf,
                    "\"chatup_readers_zone\" directive: {message}"
                );
                NGX_CONF_ERROR
            }
        }
    })
}

/// `64m`, `512k`, `1g` or a number of bytes.
fn parse_size(value: &str) -> Result<usize, String> {
    number_with_unit(value, &[(b'k', 1 << 10), (b'm', 1 << 20), (b'g', 1 << 30)])
        .and_then(|n| usize::try_from(n).ok())
        .ok_or_else(|| format!("invalid size \"{value}\""))
}

/// The index of variable `$name` (nginx resolves it when the
/// configuration is complete, and fails `nginx -t` if it is unknown).
///
/// # Safety
/// `cf` is the configuration being parsed.
unsafe fn variable_index(cf: *mut ngx_conf_t, name: &str) -> Result<ngx_uint_t, String> {
    let bare = name
        .strip_prefix('$')
        .filter(|n| !n.is_empty())
        .ok_or_else(|| format!("\"{name}\" is not a variable (expected $name)"))?;
    // SAFETY: nginx copies nothing of `bare` but keeps the pool string.
    unsafe {
        let mut s = ngx_str_t::from_str((*cf).pool, bare);
        let index = ngx::ffi::ngx_http_get_variable_index(cf, &mut s);
        ngx_uint_t::try_from(index).map_err(|_| format!("unknown variable \"{name}\""))
    }
}

fn set_flag(slot: &mut bool) -> Result<(), String> {
    if *slot {
        return Err("is duplicate".into());
    }
    *slot = true;
    Ok(())
}

directive_handler!(set_serve, |conf, args| {
    if !args[0].starts_with('/') {
        return Err("must be a URI starting with /".into());
    }
    set_once(&mut conf.serve_uri, args[0].to_string())
});

directive_handler!(set_max_readers, |conf, args| {
    let n: u64 = args[0]
        .parse()
        .map_err(|_| format!("invalid number \"{}\"", args[0]))?;
    set_once(&mut conf.max_readers, n)
});

directive_handler!(set_reserve_connections, |conf, args| {
    let n: u64 = args[0]
        .parse()
        .map_err(|_| format!("invalid number \"{}\"", args[0]))?;
    set_once(&mut conf.reserve_connections, n)
});

directive_handler!(set_secret_file, |conf, args| {
    let key = KeyMaterial::HmacSecret(read_key_file(args[0])?);
    // Check the key now, so a bad file fails `nginx -t` here and not later.
    check_key(&key)?;
    set_once(&mut conf.key, key).map_err(|_| "a JWT key is already set in this block".into())
});

directive_handler!(set_ticket_secret_file, |conf, args| {
    let secret = read_key_file(args[0])?;
    chatup_gate::ticket::verifier(&secret).map_err(|e| format!("\"{}\": {e}", args[0]))?;
    set_once(&mut conf.ticket_secret, secret)
});

directive_handler!(set_public_key, |conf, args| {
    let key = KeyMaterial::PublicKeyPem(read_key_file(args[0])?);
    check_key(&key).map_err(|e| format!("\"{}\": {e}", args[0]))?;
    set_once(&mut conf.key, key).map_err(|_| "a JWT key is already set in this block".into())
});

directive_handler!(set_algorithms, |conf, args| {
    set_once(
        &mut conf.algorithms,
        args.iter().map(|s| s.to_string()).collect(),
    )
});

directive_handler!(set_issuer, |conf, args| set_once(
    &mut conf.issuer,
    args[0].to_string()
));

directive_handler!(set_audience, |conf, args| set_once(
    &mut conf.audience,
    args[0].to_string()
));

directive_handler!(set_leeway, |conf, args| {
    let secs = parse_seconds(args[0])?;
    if secs > 300 {
        return Err("must be at most 300s".into());
    }
    set_once(&mut conf.leeway_secs, secs)
});

directive_handler!(set_max_lifetime, |conf, args| {
    let secs = if args[0] == "off" {
        0
    } else {
        let secs = parse_seconds(args[0])?;
        if secs == 0 {
            return Err("must be a duration, or off".into());
        }
        secs
    };
    set_once(&mut conf.max_lifetime_secs, secs)
});

/// `on` or `off`.
fn parse_flag(value: &str) -> Result<bool, String> {
    match value {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err(format!("must be on or off, not \"{value}\"")),
    }
}

directive_handler!(set_original_claims, |conf, args| set_once(
    &mut conf.original_claims,
    parse_flag(args[0])?
));

directive_handler!(set_require_exp, |conf, args| set_once(
    &mut conf.require_exp,
    parse_flag(args[0])?
));

directive_handler!(set_additional_rooms, |conf, args| set_once(
    &mut conf.additional_rooms,
    parse_flag(args[0])?
));

directive_handler!(set_max_message_length, |conf, args| {
    let n: usize = args[0]
        .parse()
        .map_err(|_| format!("invalid number \"{}\"", args[0]))?;
    if n == 0 || n > MAX_MESSAGE_CHARS_LIMIT {
        return Err(format!("must be between 1 and {MAX_MESSAGE_CHARS_LIMIT}"));
    }
    set_once(&mut conf.max_message_chars, n)
});

directive_handler!(set_token_rooms, |conf, args| {
    for pattern in &args {
        chatup_wire::validate_room_pattern(pattern)
            .map_err(|e| format!("invalid room pattern \"{pattern}\": {e}"))?;
    }
    set_once(
        &mut conf.token_rooms,
        args.iter().map(|s| s.to_string()).collect(),
    )
});

directive_handler!(set_handoff, |conf, args| {
    if !args[0].starts_with('/') {
        return Err("must be a URI starting with /".into());
    }
    set_once(&mut conf.handoff_uri, args[0].to_string())
});

fn check_key(key: &KeyMaterial) -> Result<(), String> {
    TokenVerifier::new(VerifierConfig {
        key: key.clone(),
        algorithms: Vec::new(),
        issuer: None,
        audience: None,
        leeway_secs: 0,
        max_lifetime_secs: None,
        original: Default::default(),
    })
    .map(drop)
    .map_err(|e| e.to_string())
}
