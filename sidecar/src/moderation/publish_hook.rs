//! The publish hook: the site's own HTTP endpoint, asked about each
//! message before it is stored (like Centrifugo's publish proxy), for what
//! the worker's filters cannot know: the site's own moderation service, a
//! paid-chat check, a language model.
//!
//! The worker POSTs `{"room", "id", "ts", "user": {"id", "public"?,
//! "role"?}, "claims": {every claim of the poster's token}, "msg",
//! "idempotency_key"?}` (the key is the same for each retry of a post, whose
//! `id` is not) and the
//! hook answers `200` with JSON:
//! - `{}` (or `{"accept": true}`): the message goes on as it is;
//! - `{"msg": "<text>"}`: it goes on with this text instead;
//! - `{"reject": {"error": "<text>", ...}, "status"?}` (or `{"accept":
//!   false}`): the poster gets that object (at most 2 KB) as the answer's
//!   body, with that status: 422 by default, or 400, 402, 403, 409, 429 or
//!   451.
//!
//! Anything else (another status, a body that does not fit, no answer
//! within `timeout_ms`) is a failure of the hook: with `on_failure =
//! "reject"` (the default) the post is refused with 503 and
//! `Retry-After`, nothing stored; with `"accept"` the message goes on
//! unchecked (logged and counted either way).

use std::time::Duration;

use axum::http::StatusCode;
use chatup_wire::{Claims, Envelope};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::telemetry::names;

/// `[publish_hook]` in the worker's configuration.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishHookConfig {
    /// `http://` or `https://` URL of the site's hook.
    pub url: String,
    /// How long the hook may take; beyond it, `on_failure` decides.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default)]
    pub on_failure: OnFailure,
    /// Ask only about messages of rooms matching these (names or
    /// `prefix*` patterns); empty: every room.
    #[serde(default)]
    pub rooms: Vec<String>,
}

fn default_timeout_ms() -> u64 {
    500
}

/// Longest `timeout_ms`: under nginx's wait for the worker's answer
/// (`proxy_read_timeout 5s` of the hand-off), so that the poster hears the
/// outcome the worker decided.
const MAX_TIMEOUT_MS: u64 = 4000;

/// Statuses a hook may refuse a message with: ones a browser's `fetch`
/// hands to the page as they are (not 401, which means "sign in again" to
/// clients, nor 407, 408 or 421, which browsers act on themselves).
const REJECT_STATUSES: [u16; 7] = [400, 402, 403, 409, 422, 429, 451];

/// Largest rejection object, serialized: it travels in a header between
/// the worker and nginx.
const MAX_REJECTION_BYTES: usize = 2048;

/// What a post becomes when the hook cannot be asked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnFailure {
    /// Refused with 503 (try again): nothing unchecked is published.
    #[default]
    Reject,
    /// Published unchecked: the chat keeps going without its hook.
    Accept,
}

impl PublishHookConfig {
    pub fn check(&self) -> Result<(), String> {
        let scheme_ok = self.url.starts_with("http://") || self.url.starts_with("https://");
        if !scheme_ok || reqwest::Url::parse(&self.url).is_err() {
            return Err(format!(
                "publish_hook.url must be an http:// or https:// URL, not \"{}\"",
                self.url
            ));
        }
        if !(1..=MAX_TIMEOUT_MS).contains(&self.timeout_ms) {
            return Err(format!(
                "publish_hook.timeout_ms must be from 1 to {MAX_TIMEOUT_MS}"
            ));
        }
        for pattern in &self.rooms {
            chatup_wire::validate_room_pattern(pattern)
                .map_err(|e| format!("publish_hook.rooms: \"{pattern}\": {e}"))?;
        }
        Ok(())
    }
}

/// What the hook decided about a message.
#[derive(Debug, PartialEq)]
pub enum HookVerdict {
    Accept,
    /// Accept with this text.
    Rewrite(String),
    /// Refuse with this status and body (an object with `error`).
    Reject {
        status: StatusCode,
        body: Value,
    },
    /// The hook could not be asked, and `on_failure` is `reject`.
    Unavailable,
}

#[derive(Serialize)]
struct HookRequest<'a> {
    room: &'a str,
    id: &'a str,
    ts: u64,
    user: &'a chatup_wire::User,
    claims: Option<&'a Claims>,
    msg: &'a str,
    /// The post's `Idempotency-Key`: the same for each retry of one post
    /// (whose `id` differs), so that a hook that counts or charges can
    /// recognize a retry.
    #[serde(skip_serializing_if = "Option::is_none")]
    idempotency_key: Option<&'a str>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HookAnswer {
    #[serde(default)]
    accept: Option<bool>,
    #[serde(default)]
    msg: Option<String>,
    #[serde(default)]
    reject: Option<Map<String, Value>>,
    #[serde(default)]
    status: Option<u16>,
}

pub struct PublishHook {
    config: PublishHookConfig,
    client: reqwest::Client,
}

impl PublishHook {
    pub fn new(config: PublishHookConfig) -> Result<Self, String> {
        config.check()?;
        // https:// hooks use the process's rustls provider (ring).
        crate::config::install_tls_provider();
        // No redirects: a hook's answer is its own, and the claims go to
        // its URL only.
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(config.timeout_ms))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("publish_hook: {e}"))?;
        Ok(Self { config, client })
    }

    /// Whether messages of `room` go through the hook.
    pub fn applies_to(&self, room: &str) -> bool {
        self.config.rooms.is_empty()
            || self
                .config
                .rooms
                .iter()
                .any(|pattern| chatup_wire::room_matches(pattern, room))
    }

    /// Where the hook is, for logs: scheme, host and port only (a URL may
    /// carry a credential in its user info, path or query).
    pub fn origin(&self) -> String {
        reqwest::Url::parse(&self.config.url)
            .map(|url| url.origin().ascii_serialization())
            .unwrap_or_default()
    }

    /// Asks the hook about `envelope` (posted with `claims`).
    pub async fn ask(
        &self,
        envelope: &Envelope,
        claims: Option<&Claims>,
        idempotency_key: Option<&str>,
    ) -> HookVerdict {
        let request = HookRequest {
            room: &envelope.room,
            id: &envelope.id,
            ts: envelope.ts,
            user: &envelope.user,
            claims,
            msg: &envelope.msg,
            idempotency_key,
        };
        let started = std::time::Instant::now();
        let answer = self.call(&request).await;
        metrics::histogram!(names::PUBLISH_HOOK_SECONDS).record(started.elapsed().as_secs_f64());
        match answer {
            Ok(verdict) => verdict,
            Err(why) => {
                metrics::counter!(names::PUBLISH_HOOK_FAILURES).increment(1);
                tracing::warn!(room = %envelope.room, id = %envelope.id, error = %why, on_failure = ?self.config.on_failure, "publish hook failed");
                match self.config.on_failure {
                    OnFailure::Reject => HookVerdict::Unavailable,
                    OnFailure::Accept => HookVerdict::Accept,
                }
            }
        }
    }

    async fn call(&self, request: &HookRequest<'_>) -> Result<HookVerdict, String> {
        let response = self
            .client
            .post(&self.config.url)
            .json(request)
            .send()
            .await
            .map_err(|e| {
                if e.is_timeout() {
                    format!("no answer within {} ms", self.config.timeout_ms)
                } else {
                    // Without the URL, which may carry a credential.
                    e.without_url().to_string()
                }
            })?;
        if response.status() != reqwest::StatusCode::OK {
            return Err(format!("answered {}", response.status()));
        }
        let body = response.bytes().await.map_err(|e| e.to_string())?;
        let answer: HookAnswer = serde_json::from_slice(&body)
            .map_err(|e| format!("answered a body that does not fit: {e}"))?;
        verdict(answer)
    }
}

/// The longest text a hook may rewrite a message to, in characters (the
/// module's own limit is a configuration of nginx: this one only keeps a
/// hook's mistake from making a huge frame).
const MAX_REWRITE_CHARS: usize = 16 * 1024;

fn verdict(answer: HookAnswer) -> Result<HookVerdict, String> {
    match answer {
        HookAnswer {
            reject: Some(body),
            msg: None,
            accept: None | Some(false),
            status,
        } => rejection(body, status),
        // A plain no.
        HookAnswer {
            reject: None,
            msg: None,
            accept: Some(false),
            status,
        } => rejection(Map::new(), status),
        HookAnswer {
            reject: None,
            msg: Some(msg),
            accept: None | Some(true),
            status: None,
        } => {
            let msg = msg.trim().to_string();
            if msg.is_empty() || msg.chars().count() > MAX_REWRITE_CHARS {
                return Err(format!(
                    "a rewritten msg must have 1 to {MAX_REWRITE_CHARS} characters"
                ));
            }
            Ok(HookVerdict::Rewrite(msg))
        }
        HookAnswer {
            reject: None,
            msg: None,
            accept: None | Some(true),
            status: None,
        } => Ok(HookVerdict::Accept),
        _ => Err("the answer mixes accept, msg and reject".into()),
    }
}

/// A refusal with the hook's object and status (checked).
fn rejection(mut body: Map<String, Value>, status: Option<u16>) -> Result<HookVerdict, String> {
    let status = status.unwrap_or(422);
    if !REJECT_STATUSES.contains(&status) {
        return Err(format!(
            "a rejection's status must be one of {REJECT_STATUSES:?}, not {status}"
        ));
    }
    if !matches!(body.get("error"), Some(Value::String(e)) if !e.is_empty()) {
        body.insert("error".into(), Value::String("message rejected".into()));
    }
    let body = Value::Object(body);
    if body.to_string().len() > MAX_REJECTION_BYTES {
        return Err(format!(
            "a rejection's object must be at most {MAX_REJECTION_BYTES} bytes"
        ));
    }
    Ok(HookVerdict::Reject {
        status: StatusCode::from_u16(status).map_err(|e| e.to_string())?,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn decide(answer: Value) -> Result<HookVerdict, String> {
        verdict(serde_json::from_value(answer).map_err(|e| e.to_string())?)
    }

    #[test]
    fn answers_accept_rewrite_or_reject_with_the_sites_own_error() {
        assert_eq!(decide(json!({})), Ok(HookVerdict::Accept));
        assert_eq!(decide(json!({"accept": true})), Ok(HookVerdict::Accept));
        assert_eq!(
            decide(json!({"accept": false})),
            Ok(HookVerdict::Reject {
                status: StatusCode::UNPROCESSABLE_ENTITY,
                body: json!({"error": "message rejected"})
            }),
            "a plain no"
        );
        assert_eq!(
            decide(json!({"msg": " hello friends "})),
            Ok(HookVerdict::Rewrite("hello friends".into()))
        );
        assert_eq!(
            decide(json!({"reject": {"error": "paid chat", "price": 5}, "status": 402})),
            Ok(HookVerdict::Reject {
                status: StatusCode::PAYMENT_REQUIRED,
                body: json!({"error": "paid chat", "price": 5})
            })
        );
        assert_eq!(
            decide(json!({"reject": {"code": 7}})),
            Ok(HookVerdict::Reject {
                status: StatusCode::UNPROCESSABLE_ENTITY,
                body: json!({"code": 7, "error": "message rejected"})
            })
        );
    }

    #[test]
    fn answers_that_do_not_fit_are_failures() {
        for answer in [
            json!({"reject": {"error": "x"}, "status": 500}),
            json!({"reject": {"error": "x"}, "status": 401}),
            json!({"reject": {"error": "x"}, "status": 407}),
            json!({"reject": {"error": "x".repeat(3000)}}),
            json!({"reject": {"error": "x"}, "msg": "y"}),
            json!({"msg": "   "}),
            json!({"verdict": "ok"}),
            json!({"msg": "y", "status": 200}),
        ] {
            assert!(decide(answer.clone()).is_err(), "{answer}");
        }
    }

    #[test]
    fn settings_are_checked() {
        let config = |url: &str, timeout_ms: u64, rooms: Vec<String>| PublishHookConfig {
            url: url.into(),
            timeout_ms,
            on_failure: OnFailure::Reject,
            rooms,
        };
        assert!(config("http://127.0.0.1:9000/hook", 500, vec![])
            .check()
            .is_ok());
        assert!(config("ftp://x/hook", 500, vec![]).check().is_err());
        assert!(config("http://x/hook", 0, vec![]).check().is_err());
        assert!(
            config("http://x/hook", 5000, vec![]).check().is_err(),
            "over nginx's wait"
        );
        assert!(config("http://x/hook", 500, vec!["a b".into()])
            .check()
            .is_err());
        let hook = PublishHook::new(config("http://x/h", 500, vec!["paid-*".into()])).unwrap();
        assert!(hook.applies_to("paid-42") && !hook.applies_to("lobby"));
    }
}
