//! Read tickets: how a signed-in reader says who it is to a chat worker
//! without putting the site's token in a URL.
//!
//! Browsers can set no header on WebSocket and EventSource requests, so
//! whatever identifies a reader travels in the subscribe URL, and URLs end
//! up in logs (nginx's error log, proxies in front). The site's token is a
//! credential to post as the user for up to a day; it stays in headers
//! (`Authorization` on the dispatcher and on posts). The dispatcher trades
//! it for a ticket: signed with a secret only the dispatchers and workers
//! share (`ticket_secret_file` / `chatup_ticket_secret_file`), valid for
//! one room (and the additional rooms read with it), for reading only, for
//! a few minutes (`ticket_lifetime_secs`). A ticket read from a log lets
//! someone read those rooms as that user until it expires, and nothing
//! else: it cannot post (the post handler checks the site's key, never
//! this one) and it cannot open another room.
//!
//! A ticket is a JWT (HS256) with `iss: "chatup"`, `aud: "chatup-read"`,
//! `sub` and `public` copied from the user's token, `rooms: [room, ...]`, `iat`
//! and `exp`.

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::token::{KeyMaterial, MIN_HMAC_SECRET_LEN};
use crate::{Identity, KeyError, TokenVerifier, VerifierConfig};

pub const TICKET_ISSUER: &str = "chatup";
pub const TICKET_AUDIENCE: &str = "chatup-read";
/// The longest a ticket may live: a reader refreshes it long before.
pub const MAX_TICKET_LIFETIME_SECS: u64 = 3600;
/// The shipped lifetime.
pub const DEFAULT_TICKET_LIFETIME_SECS: u64 = 300;
/// The name of the subscribe URL's query parameter.
pub const TICKET_PARAM: &str = "ticket";

/// The verifier of tickets signed with `secret` (the bytes of the shared
/// secret file).
pub fn verifier(secret: &[u8]) -> Result<TokenVerifier, KeyError> {
    TokenVerifier::new(VerifierConfig {
        key: KeyMaterial::HmacSecret(secret.to_vec()),
        algorithms: vec!["HS256".into()],
        issuer: Some(TICKET_ISSUER.into()),
        audience: Some(TICKET_AUDIENCE.into()),
        leeway_secs: 5,
        max_lifetime_secs: Some(MAX_TICKET_LIFETIME_SECS),
        original: Default::default(),
    })
}

/// Whether the ticket secret is the site's user-token secret too: then a
/// user could sign tickets, so the configuration is refused.
pub fn same_secret(ticket_secret: &[u8], user_key: &KeyMaterial) -> bool {
    matches!(user_key, KeyMaterial::HmacSecret(user)
        if trim(user) == trim(ticket_secret))
}

/// Signs tickets; the dispatcher's side.
pub struct TicketSigner {
    key: EncodingKey,
    lifetime_secs: u64,
}

impl std::fmt::Debug for TicketSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TicketSigner")
            .field("lifetime_secs", &self.lifetime_secs)
            .finish()
    }
}

/// Why a ticket signer cannot be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TicketConfigError {
    #[error("the ticket secret is {0} bytes; at least {MIN_HMAC_SECRET_LEN} are required")]
    SecretTooShort(usize),
    #[error("the ticket lifetime must be between 1 and {MAX_TICKET_LIFETIME_SECS} seconds")]
    BadLifetime,
}

#[derive(Serialize)]
struct TicketClaims<'a> {
    iss: &'static str,
    aud: &'static str,
    sub: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    public: Option<&'a Map<String, Value>>,
    rooms: &'a [&'a str],
    iat: u64,
    exp: u64,
}

/// A signed ticket and when it expires (Unix seconds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ticket {
    pub token: String,
    pub expires_at: u64,
}

impl TicketSigner {
    pub fn new(secret: &[u8], lifetime_secs: u64) -> Result<Self, TicketConfigError> {
        let secret = trim(secret);
        if secret.len() < MIN_HMAC_SECRET_LEN {
            return Err(TicketConfigError::SecretTooShort(secret.len()));
        }
        if !(1..=MAX_TICKET_LIFETIME_SECS).contains(&lifetime_secs) {
            return Err(TicketConfigError::BadLifetime);
        }
        Ok(Self {
            key: EncodingKey::from_secret(secret),
            lifetime_secs,
        })
    }

    /// How long its tickets are valid, in seconds.
    pub fn lifetime_secs(&self) -> u64 {
        self.lifetime_secs
    }

    /// A ticket for `identity` to read `rooms` (a room and the additional
    /// rooms it reads over the same connection), issued at `now` (Unix
    /// seconds). The caller has checked that the identity may read them.
    pub fn issue(&self, identity: &Identity, rooms: &[&str], now: u64) -> Ticket {
        let expires_at = now + self.lifetime_secs;
        let claims = TicketClaims {
            iss: TICKET_ISSUER,
            aud: TICKET_AUDIENCE,
            sub: &identity.sub,
            public: identity.public.as_ref(),
            rooms,
            iat: now,
            exp: expires_at,
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.key)
            // Serializing these claims and HMAC signing cannot fail.
            .unwrap_or_default();
        Ticket { token, expires_at }
    }
}

/// Secret files may end with a newline.
fn trim(bytes: &[u8]) -> &[u8] {
    let end = bytes
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(0, |p| p + 1);
    &bytes[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::subscribe::{reader_identity, ReadAccess};
    use crate::GateError;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef\n";

    fn now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    fn alice() -> Identity {
        let mut public = Map::new();
        public.insert("name".into(), Value::String("Alice".into()));
        Identity {
            sub: "alice".into(),
            public: Some(public),
            rooms: None,
            role: Some("moderator".into()),
            standing: Default::default(),
            claims: None,
        }
    }

    #[test]
    fn a_ticket_names_its_user_for_its_room_only() {
        let signer = TicketSigner::new(SECRET, 300).unwrap();
        let tickets = verifier(SECRET).unwrap();
        let ticket = signer.issue(&alice(), &["lobby"], now());
        let uri = format!("/sub/lobby?ticket={}", ticket.token);
        let reader = reader_identity(&tickets, uri.as_bytes(), "lobby", ReadAccess::TokenOnly)
            .unwrap()
            .unwrap();
        assert_eq!(reader.sub, "alice");
        assert_eq!(reader.public, alice().public);
        // A ticket grants reading, never a role.
        assert_eq!(reader.role, None);
        // Another room: anonymous where anyone reads, 403 where a token is needed.
        let other = format!("/sub/other?ticket={}", ticket.token);
        assert_eq!(
            reader_identity(&tickets, other.as_bytes(), "other", ReadAccess::Anyone),
            Ok(None)
        );
        assert_eq!(
            reader_identity(&tickets, other.as_bytes(), "other", ReadAccess::TokenOnly),
            Err(GateError::RoomNotAllowed)
        );
    }

    #[test]
    fn a_site_token_in_the_url_is_not_looked_at() {
        let claims = serde_json::json!({"sub": "alice", "exp": now() + 60});
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(trim(SECRET)),
        )
        .unwrap();
        let tickets = verifier(SECRET).unwrap();
        let uri = format!("/sub/lobby?token={token}");
        assert_eq!(
            reader_identity(&tickets, uri.as_bytes(), "lobby", ReadAccess::TokenOnly),
            Err(GateError::MissingToken)
        );
    }

    #[test]
    fn an_expired_or_foreign_ticket_is_refused() {
        let signer = TicketSigner::new(SECRET, 60).unwrap();
        let tickets = verifier(SECRET).unwrap();
        let old = signer.issue(&alice(), &["lobby"], now() - 3600);
        assert!(tickets.verify(&old.token).is_err());
        let other = TicketSigner::new(b"another secret, also 32 bytes long!", 60).unwrap();
        let forged = other.issue(&alice(), &["lobby"], now());
        assert!(tickets.verify(&forged.token).is_err());
    }

    #[test]
    fn a_site_token_is_no_ticket() {
        // Same secret, but no chatup issuer and audience.
        let claims = serde_json::json!({"sub": "alice", "exp": now() + 60});
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(trim(SECRET)),
        )
        .unwrap();
        assert!(verifier(SECRET).unwrap().verify(&token).is_err());
    }

    #[test]
    fn short_secrets_long_lifetimes_and_shared_secrets_are_refused() {
        assert_eq!(
            TicketSigner::new(b"short", 60).unwrap_err(),
            TicketConfigError::SecretTooShort(5)
        );
        assert_eq!(
            TicketSigner::new(SECRET, MAX_TICKET_LIFETIME_SECS + 1).unwrap_err(),
            TicketConfigError::BadLifetime
        );
        assert!(same_secret(
            SECRET,
            &KeyMaterial::HmacSecret(trim(SECRET).to_vec())
        ));
        assert!(!same_secret(
            SECRET,
            &KeyMaterial::PublicKeyPem(SECRET.to_vec())
        ));
    }
}
