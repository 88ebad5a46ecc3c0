//! Development tokens for tests, signed with conf/dev-keys.

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

use crate::process::workspace_root;

pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The issuer the harness configures as the site's (`chatup_jwt_issuer`,
/// `user_issuer`): `chatup dev-token`'s.
pub const DEV_ISSUER: &str = "chatup-dev-site";

/// An RS256 token with these claims, signed with the dev key, with the
/// development `iss` and the `aud` the shipped configuration expects
/// (`chatup`) unless the claims set their own.
pub fn rs256_token(claims: &Value) -> String {
    let mut claims = claims.clone();
    if claims.get("iss").is_none() {
        claims["iss"] = json!(DEV_ISSUER);
    }
    if claims.get("aud").is_none() {
        claims["aud"] = json!("chatup");
    }
    rs256_token_exactly(&claims)
}

/// An RS256 token with exactly these claims, signed with the dev key.
pub fn rs256_token_exactly(claims: &Value) -> String {
    let pem = std::fs::read(workspace_root().join("conf/dev-keys/jwt-rs256.key")).expect("dev key");
    encode(
        &Header::new(Algorithm::RS256),
        claims,
        &EncodingKey::from_rsa_pem(&pem).expect("rsa key"),
    )
    .unwrap()
}

/// A valid token for `sub`, with `{"name": name}` as public data.
pub fn token_for(sub: &str, name: &str) -> String {
    rs256_token(&json!({"sub": sub, "exp": now_secs() + 600, "public": {"name": name}}))
}

/// The development read-ticket secret of the harness's workers
/// (`chatup_ticket_secret_file`) and dispatchers (`ticket_secret_file`).
pub fn ticket_secret_path() -> std::path::PathBuf {
    workspace_root().join("conf/dev-keys/ticket-hs256.secret")
}

/// A read ticket for `sub` (shown as `name`) in `room`, as a dispatcher
/// issues it to a signed-in reader, valid for five minutes.
pub fn ticket_for(sub: &str, name: &str, room: &str) -> String {
    let secret = std::fs::read(ticket_secret_path()).expect("dev ticket secret");
    let signer = chatup_gate::ticket::TicketSigner::new(&secret, 300).expect("ticket secret");
    let mut public = serde_json::Map::new();
    public.insert("name".into(), json!(name));
    let identity = chatup_gate::Identity {
        sub: sub.into(),
        public: Some(public),
        rooms: None,
        role: None,
        standing: Default::default(),
        claims: None,
    };
    signer.issue(&identity, &[room], now_secs()).token
}

/// A ticket with exactly these claims, signed with the ticket secret.
pub fn ticket_exactly(claims: &Value) -> String {
    let secret = std::fs::read(ticket_secret_path()).expect("dev ticket secret");
    encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.trim_ascii_end()),
    )
    .unwrap()
}

/// The development HMAC secret the harness's dispatchers use as their
/// server key.
pub fn server_secret_path() -> std::path::PathBuf {
    workspace_root().join("conf/dev-keys/jwt-hs256.secret")
}

/// A server-API token (HS256 with the development server secret) for one
/// request: `act` (ban, lift, list, post), these claims, a fresh `jti`
/// and an `exp` a minute away.
pub fn server_token(act: &str, claims: Value) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let mut claims = claims;
    claims["act"] = json!(act);
    claims["jti"] = json!(format!(
        "test-{}-{}-{}",
        std::process::id(),
        now_secs(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    claims["exp"] = json!(now_secs() + 60);
    server_token_exactly(&claims)
}

/// A server-API token with exactly these claims.
pub fn server_token_exactly(claims: &Value) -> String {
    let secret = std::fs::read(server_secret_path()).expect("dev secret");
    encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.trim_ascii_end()),
    )
    .unwrap()
}
