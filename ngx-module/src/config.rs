//! Directives: parsed and checked at configuration time, so that a bad key
//! or a bad value makes `nginx -t` fail with a clear message. Request
//! handlers only read the merged, typed result.

use std::ffi::{c_char, c_void};
use std::sync::Arc;

use chatup_gate::token::KeyMaterial;
use chatup_gate::{PostLimits, TokenVerifier, VerifierConfig};
use ngx::core::NGX_CONF_ERROR;
use ngx::ffi::{ngx_command_t, ngx_conf_t, ngx_str_t, NGX_LOG_EMERG};
use ngx::http::{HttpModuleLocationConf, NgxHttpCoreModule};
use ngx::ngx_conf_log_error;

use crate::ffi::{bytes, contain_panic};

pub const DEFAULT_MAX_MESSAGE_CHARS: usize = 500;
pub const DEFAULT_LEEWAY_SECS: u64 = 5;
pub const DEFAULT_HANDOFF_URI: &str = "/_chatup/handoff";
/// Upper bound for `chatup_max_message_length`, to keep bodies in memory.
pub const MAX_MESSAGE_CHARS_LIMIT: usize = 16 * 1024;

/// Who may subscribe through a `chatup_authorize` location.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthorizeMode {
    /// Anyone may read; a token, if given, must be valid.
    Anonymous,
    /// Reading requires a valid token (`?token=`).
    Token,
}

/// The module's configuration of one location (inherited from `server` and
/// `http` for everything but the handlers).
#[derive(Debug, Default)]
pub struct LocConf {
    pub post: bool,
    pub authorize: Option<AuthorizeMode>,
    key: Option<KeyMaterial>,
    algorithms: Option<Vec<String>>,
    issuer: Option<String>,
    audience: Option<String>,
    leeway_secs: Option<u64>,
    max_message_chars: Option<usize>,
    handoff_uri: Option<String>,
    /// Rooms whose readers need a token even where anyone may read.
    token_rooms: Option<Vec<String>>,
    /// Built at merge time wherever a handler is enabled.
    pub verifier: Option<Arc<TokenVerifier>>,
}

impl LocConf {
    pub fn limits(&self) -> PostLimits {
        PostLimits::for_message_chars(self.max_message_chars.unwrap_or(DEFAULT_MAX_MESSAGE_CHARS))
    }

    /// Whether reading `room` needs a token (`chatup_token_rooms`).
    pub fn room_needs_token(&self, room: &str) -> bool {
        self.token_rooms.as_ref().is_some_and(|patterns| {
            patterns
                .iter()
                .any(|pattern| chatup_wire::room_matches(pattern, room))
        })
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
        take(&mut self.max_message_chars, &parent.max_message_chars);
        take(&mut self.handoff_uri, &parent.handoff_uri);
        take(&mut self.token_rooms, &parent.token_rooms);
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
        })
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
        if !(conf.post || conf.authorize.is_some()) {
            return std::ptr::null_mut();
        }
        match conf.build_verifier() {
            Ok(verifier) => {
                conf.verifier = Some(Arc::new(verifier));
                std::ptr::null_mut()
            }
            Err(message) => {
                let what = if conf.post {
                    "chatup_post"
                } else {
                    "chatup_authorize"
                };
                ngx_conf_log_error!(NGX_LOG_EMERG, cf, "{what}: {message}");
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

fn parse_seconds(value: &str) -> Result<u64, String> {
    value
        .strip_suffix('s')
        .unwrap_or(value)
        .parse()
        .map_err(|_| format!("invalid duration \"{value}\""))
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
        if conf.post || conf.authorize.is_some() {
            return Err("is duplicate, or the location already has chatup_authorize".into());
        }
        conf.post = true;
        Ok::<(), String>(())
    },
    content_handler = crate::post::handler
);

directive_handler!(
    set_authorize,
    |conf, args| {
        let mode = match args[0] {
            "anonymous" => AuthorizeMode::Anonymous,
            "token" => AuthorizeMode::Token,
            other => {
                return Err(format!(
                    "invalid value \"{other}\", expected anonymous or token"
                ))
            }
        };
        if conf.post {
            return Err("the location already has chatup_post".into());
        }
        set_once(&mut conf.authorize, mode)
    },
    content_handler = crate::authorize::handler
);

directive_handler!(set_secret_file, |conf, args| {
    let key = KeyMaterial::HmacSecret(read_key_file(args[0])?);
    // Check the key now, so a bad file fails `nginx -t` here and not later.
    check_key(&key)?;
    set_once(&mut conf.key, key).map_err(|_| "a JWT key is already set in this block".into())
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
    })
    .map(drop)
    .map_err(|e| e.to_string())
}
