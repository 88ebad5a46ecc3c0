//! Verifying the site's JSON Web Tokens.
//!
//! Keys and the accepted algorithms are fixed at configuration time. A
//! token is refused when its `alg` is not in that pinned list (so `none`,
//! and an HMAC token "signed" with an RSA public key, never get as far as a
//! signature check), when its signature, `exp`, `nbf`, `iss` or `aud` does
//! not hold, or when it has no usable `sub`.

use base64::Engine;
use chatup_wire::{Claims as WireClaims, Standing};
use jsonwebtoken::{errors::ErrorKind, Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::verified::VerifiedTokens;
use crate::{GateError, TokenFailure};

/// Longest accepted `sub`, in bytes.
pub const MAX_SUB_LEN: usize = 256;
/// Largest accepted `public` claim, serialized, in bytes: it travels with
/// every message the user posts.
pub const MAX_PUBLIC_LEN: usize = 2048;
/// Shortest accepted HMAC secret, in bytes (RFC 7518 §3.2 asks for at least
/// the hash size).
pub const MIN_HMAC_SECRET_LEN: usize = 32;

/// Where the verification key comes from.
#[derive(Debug, Clone)]
pub enum KeyMaterial {
    /// The bytes of an HMAC secret file (trailing whitespace is ignored).
    HmacSecret(Vec<u8>),
    /// A PEM public key: RSA, EC (P-256/P-384) or Ed25519.
    PublicKeyPem(Vec<u8>),
}

#[derive(Debug, Clone)]
pub struct VerifierConfig {
    pub key: KeyMaterial,
    /// Accepted `alg` values; empty means the usual one for the key
    /// (HS256, RS256, ES256 or EdDSA).
    pub algorithms: Vec<String>,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    /// Clock skew tolerated on `exp` and `nbf`, in seconds.
    pub leeway_secs: u64,
    /// User tokens expiring further away than this are refused (a token
    /// that practically never expires is a credential that never dies);
    /// `None`: no bound.
    pub max_lifetime_secs: Option<u64>,
    /// The original ChatUp's tokens (off unless asked for).
    pub original: OriginalTokens,
}

/// What the original ChatUp's tokens need (docs/migration.md); each is an
/// operator's explicit choice.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OriginalTokens {
    /// `_public` is the public data when there is no `public`, and `name`
    /// the user id when there is no `sub` (the original banned by `name`).
    pub claims: bool,
    /// Tokens without `exp` are accepted: they never expire, so a leaked
    /// one is good for ever (the original did not require `exp`).
    pub without_exp: bool,
}

/// The shipped bound on a user token's remaining lifetime: a day.
pub const DEFAULT_MAX_LIFETIME_SECS: u64 = 24 * 3600;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("HMAC secret is {0} bytes; at least {MIN_HMAC_SECRET_LEN} are required")]
    SecretTooShort(usize),
    #[error("not a PEM RSA, EC or Ed25519 public key")]
    UnreadablePem,
    #[error("unknown JWT algorithm \"{0}\"")]
    UnknownAlgorithm(String),
    #[error("algorithm {alg} cannot be used with {key} key")]
    AlgorithmKeyMismatch { alg: String, key: &'static str },
}

/// The verified user behind a token.
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    pub sub: String,
    pub public: Option<Map<String, Value>>,
    /// The rooms this token may post in (`rooms` claim: exact names or
    /// `prefix*` patterns); `None`: every room.
    pub rooms: Option<Vec<String>>,
    /// `moderator` when the `role` claim says so and a `rooms` claim names
    /// the rooms it moderates.
    pub role: Option<String>,
    /// The `tier` and `since` claims, for room rules.
    pub standing: Standing,
    /// Every claim of the token (for the worker's publish hook); `None`
    /// where the identity does not come from a site token (read tickets).
    pub claims: Option<WireClaims>,
}

impl Identity {
    /// Whether the token's `rooms` claim allows `room` (reading as a
    /// member, and posting).
    pub fn may_use(&self, room: &str) -> bool {
        self.rooms.as_ref().is_none_or(|patterns| {
            patterns
                .iter()
                .any(|pattern| chatup_wire::room_matches(pattern, room))
        })
    }
}

/// The only role a user token can carry.
pub const MODERATOR: &str = "moderator";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum KeyKind {
    Hmac,
    Rsa,
    Ec,
    Ed,
}

impl KeyKind {
    fn name(self) -> &'static str {
        match self {
            KeyKind::Hmac => "an HMAC",
            KeyKind::Rsa => "an RSA",
            KeyKind::Ec => "an EC",
            KeyKind::Ed => "an Ed25519",
        }
    }

    fn default_algorithm(self) -> Algorithm {
        match self {
            KeyKind::Hmac => Algorithm::HS256,
            KeyKind::Rsa => Algorithm::RS256,
            KeyKind::Ec => Algorithm::ES256,
            KeyKind::Ed => Algorithm::EdDSA,
        }
    }

    fn accepts(self, alg: Algorithm) -> bool {
        use Algorithm::*;
        match self {
            KeyKind::Hmac => matches!(alg, HS256 | HS384 | HS512),
            KeyKind::Rsa => matches!(alg, RS256 | RS384 | RS512 | PS256 | PS384 | PS512),
            KeyKind::Ec => matches!(alg, ES256 | ES384),
            KeyKind::Ed => matches!(alg, EdDSA),
        }
    }
}

pub struct TokenVerifier {
    key: DecodingKey,
    validation: Validation,
    algorithms: Vec<Algorithm>,
    max_lifetime_secs: Option<u64>,
    original: OriginalTokens,
    /// Tokens that passed [`verify`](Self::verify) lately (off unless
    /// [`with_cache`](Self::with_cache)).
    verified: Option<VerifiedTokens>,
}

impl std::fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenVerifier")
            .field("algorithms", &self.algorithms)
            .finish()
    }
}

#[derive(Deserialize)]
struct TokenClaims {
    #[serde(default)]
    sub: Option<Value>,
    /// Checked by the validation; read again for the lifetime bound.
    #[serde(default)]
    exp: Option<u64>,
    #[serde(default)]
    public: Option<Value>,
    /// The original ChatUp's public data and user name.
    #[serde(default, rename = "_public")]
    original_public: Option<Value>,
    #[serde(default)]
    name: Option<Value>,
    #[serde(default)]
    rooms: Option<Value>,
    #[serde(default)]
    role: Option<Value>,
    #[serde(default)]
    tier: Option<Value>,
    #[serde(default)]
    since: Option<Value>,
}

#[derive(Deserialize)]
struct Header {
    #[serde(default)]
    alg: Option<String>,
}

impl TokenVerifier {
    pub fn new(config: VerifierConfig) -> Result<Self, KeyError> {
        let (key, kind) = load_key(&config.key)?;
        let algorithms = if config.algorithms.is_empty() {
            vec![kind.default_algorithm()]
        } else {
            config
                .algorithms
                .iter()
                .map(|name| {
                    let alg: Algorithm = name
                        .parse()
                        .map_err(|_| KeyError::UnknownAlgorithm(name.clone()))?;
                    if !kind.accepts(alg) {
                        return Err(KeyError::AlgorithmKeyMismatch {
                            alg: name.clone(),
                            key: kind.name(),
                        });
                    }
                    Ok(alg)
                })
                .collect::<Result<Vec<_>, _>>()?
        };
        let mut validation = Validation::new(algorithms[0]);
        validation.algorithms = algorithms.clone();
        validation.leeway = config.leeway_secs;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        // A configured `iss` or `aud` must be there: jsonwebtoken only
        // compares them when the token carries them.
        let mut required = Vec::new();
        required.extend((!config.original.without_exp).then_some("exp"));
        required.extend((!config.original.claims).then_some("sub"));
        required.extend(config.issuer.as_ref().map(|_| "iss"));
        required.extend(config.audience.as_ref().map(|_| "aud"));
        validation.set_required_spec_claims(&required);
        match &config.issuer {
            Some(iss) => validation.set_issuer(&[iss]),
            None => validation.iss = None,
        }
        match &config.audience {
            Some(aud) => validation.set_audience(&[aud]),
            None => validation.validate_aud = false,
        }
        Ok(Self {
            key,
            validation,
            algorithms,
            max_lifetime_secs: config.max_lifetime_secs,
            original: config.original,
            verified: None,
        })
    }

    /// Remembers up to `entries` verified tokens (see [`VerifiedTokens`]),
    /// so that a token used again is not checked again until it expires.
    pub fn with_cache(self, entries: usize) -> Self {
        Self {
            verified: Some(VerifiedTokens::new(entries)),
            ..self
        }
    }

    /// Checks a compact JWT and returns who it vouches for.
    pub fn verify(&self, token: &str) -> Result<Identity, GateError> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        if let Some(identity) = self.verified.as_ref().and_then(|v| v.get(token, now)) {
            return Ok(identity);
        }
        self.check_pinned_algorithm(token)?;
        // Decoded once as text (kept whole for the publish hook), then read.
        let data = jsonwebtoken::decode::<Box<RawValue>>(token, &self.key, &self.validation)
            .map_err(|e| bad_token(e.kind()))?;
        let raw = data.claims;
        // An object, not an array read field by field.
        if !raw.get().trim_start().starts_with('{') {
            return Err(GateError::BadToken(
                TokenFailure::Claims,
                "token claims must be a JSON object".into(),
            ));
        }
        let claims: TokenClaims = serde_json::from_str(raw.get()).map_err(|_| {
            GateError::BadToken(TokenFailure::Claims, "token claims are malformed".into())
        })?;
        let exp = claims.exp;
        if let (Some(max), Some(exp)) = (self.max_lifetime_secs, exp) {
            if exp.saturating_sub(now) > max + self.validation.leeway {
                return Err(GateError::BadToken(
                    TokenFailure::Lifetime,
                    format!("token expires more than {max} seconds from now"),
                ));
            }
        }
        let claims = if self.original.claims {
            claims.with_original_claims()
        } else {
            claims
        };
        let identity = identity_from(claims, WireClaims::new(raw))?;
        if let (Some(verified), Some(exp)) = (&self.verified, exp) {
            verified.insert(token, identity.clone(), exp + self.validation.leeway, now);
        }
        Ok(identity)
    }

    /// Checks a compact JWT signed by a site's server (signature, pinned
    /// algorithm, `exp`, `nbf`, `iss`, `aud`; no `sub` needed) and returns
    /// its claims.
    pub fn verify_claims<T: serde::de::DeserializeOwned>(
        &self,
        token: &str,
    ) -> Result<T, GateError> {
        self.check_pinned_algorithm(token)?;
        let mut validation = self.validation.clone();
        let mut required = vec!["exp"];
        required.extend(validation.iss.as_ref().map(|_| "iss"));
        required.extend(validation.aud.as_ref().map(|_| "aud"));
        validation.set_required_spec_claims(&required);
        jsonwebtoken::decode::<T>(token, &self.key, &validation)
            .map(|data| data.claims)
            .map_err(|e| bad_token(e.kind()))
    }

    /// Checks a compact JWT's signature (pinned algorithm) and returns its
    /// payload, whatever its shape, with its `exp` checked when it has one.
    /// For the original ChatUp's server tokens only (their payloads are
    /// arrays, which can carry no `exp`): the caller decides whether a
    /// token without `exp` is acceptable.
    pub fn verify_signature(&self, token: &str) -> Result<(Value, Option<u64>), GateError> {
        let alg = self.check_pinned_algorithm(token)?;
        let malformed = || GateError::BadToken(TokenFailure::Malformed, "malformed token".into());
        let (message, signature) = token.rsplit_once('.').ok_or_else(malformed)?;
        let valid = jsonwebtoken::crypto::verify(signature, message.as_bytes(), &self.key, alg)
            .map_err(|_| malformed())?;
        if !valid {
            return Err(GateError::BadToken(
                TokenFailure::BadSignature,
                "invalid token signature".into(),
            ));
        }
        let payload_b64 = message
            .split_once('.')
            .map(|(_, p)| p)
            .ok_or_else(malformed)?;
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload_b64.trim_end_matches('='))
            .map_err(|_| malformed())?;
        let payload: Value = serde_json::from_slice(&payload).map_err(|_| malformed())?;
        let exp = match payload.get("exp") {
            None => None,
            Some(exp) => Some(exp.as_u64().ok_or_else(|| {
                GateError::BadToken(TokenFailure::Claims, "token exp is not a number".into())
            })?),
        };
        if let Some(exp) = exp {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            if exp.saturating_add(self.validation.leeway) < now {
                return Err(GateError::BadToken(
                    TokenFailure::Expired,
                    "token expired".into(),
                ));
            }
        }
        Ok((payload, exp))
    }

    /// Reads the header's `alg` before anything else, so that a token
    /// naming an algorithm we do not accept gets a precise error.
    fn check_pinned_algorithm(&self, token: &str) -> Result<Algorithm, GateError> {
        let malformed = || GateError::BadToken(TokenFailure::Malformed, "malformed token".into());
        let header_b64 = token.split('.').next().ok_or_else(malformed)?;
        let header_json = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(header_b64.trim_end_matches('='))
            .map_err(|_| malformed())?;
        let header: Header = serde_json::from_slice(&header_json).map_err(|_| malformed())?;
        let alg = header.alg.ok_or_else(|| {
            GateError::BadToken(TokenFailure::Algorithm, "token has no alg".into())
        })?;
        let pinned = alg
            .parse::<Algorithm>()
            .ok()
            .filter(|a| self.algorithms.contains(a));
        match pinned {
            Some(alg) => Ok(alg),
            None => Err(GateError::BadToken(
                TokenFailure::Algorithm,
                format!("token algorithm \"{alg}\" is not accepted"),
            )),
        }
    }
}

impl TokenClaims {
    /// The original ChatUp's claims where the new ones are absent: `name`
    /// as the user id, `_public` as the public data.
    fn with_original_claims(mut self) -> Self {
        if self.sub.is_none() {
            self.sub = self.name.take();
        }
        if self.public.is_none() {
            self.public = self.original_public.take();
        }
        self
    }
}

fn identity_from(claims: TokenClaims, raw: WireClaims) -> Result<Identity, GateError> {
    let sub = match claims.sub {
        Some(Value::String(s)) if s == chatup_wire::envelope::SYSTEM_USER => {
            return Err(GateError::BadToken(
                TokenFailure::Claims,
                format!("token sub \"{s}\" is reserved for the site's server posts"),
            ))
        }
        Some(Value::String(s)) if !s.is_empty() && s.len() <= MAX_SUB_LEN => s,
        Some(Value::String(s)) if !s.is_empty() => {
            return Err(GateError::BadToken(
                TokenFailure::Claims,
                format!("token sub is longer than {MAX_SUB_LEN} bytes"),
            ))
        }
        _ => {
            return Err(GateError::BadToken(
                TokenFailure::Claims,
                "token has no sub".into(),
            ))
        }
    };
    let public = match claims.public {
        None | Some(Value::Null) => None,
        Some(Value::Object(map)) => {
            if Value::Object(map.clone()).to_string().len() > MAX_PUBLIC_LEN {
                return Err(GateError::BadToken(
                    TokenFailure::Claims,
                    format!("token public claim is larger than {MAX_PUBLIC_LEN} bytes"),
                ));
            }
            Some(map)
        }
        Some(_) => {
            return Err(GateError::BadToken(
                TokenFailure::Claims,
                "token public claim must be an object".into(),
            ))
        }
    };
    let rooms = match claims.rooms {
        None | Some(Value::Null) => None,
        Some(Value::Array(items)) => Some(
            items
                .into_iter()
                .map(|item| match item {
                    Value::String(p) if chatup_wire::validate_room_pattern(&p).is_ok() => Ok(p),
                    _ => Err(GateError::BadToken(
                        TokenFailure::Claims,
                        "token rooms claim must list room names or prefix* patterns".into(),
                    )),
                })
                .collect::<Result<Vec<_>, _>>()?,
        ),
        Some(_) => {
            return Err(GateError::BadToken(
                TokenFailure::Claims,
                "token rooms claim must be an array".into(),
            ))
        }
    };
    // Unknown roles grant nothing: only `moderator` is carried, and only
    // with a `rooms` claim naming the rooms it moderates (a site that
    // gives the role without one does not make a moderator of every room).
    let role = match claims.role {
        Some(Value::String(r)) if r == MODERATOR && rooms.is_some() => Some(r),
        _ => None,
    };
    let standing = Standing {
        tier: whole_number(claims.tier),
        since: whole_number(claims.since),
    };
    Ok(Identity {
        sub,
        public,
        rooms,
        role,
        standing,
        claims: Some(raw),
    })
}

/// A claim read as a whole number (`tier`, `since`); a fraction (a
/// `since` from JavaScript's `Date.now() / 1000`) is cut to its whole part.
/// Anything else counts as absent rather than making the token invalid:
/// sites may already use these names for something of their own, and only
/// a room rule reads them (a user without a valid `tier` has tier 0,
/// without `since` no age).
fn whole_number(claim: Option<Value>) -> Option<u64> {
    let value = claim?;
    value.as_u64().or_else(|| {
        value
            .as_f64()
            .filter(|f| f.is_finite() && *f >= 0.0 && *f < u64::MAX as f64)
            .map(|f| f as u64)
    })
}

fn bad_token(kind: &ErrorKind) -> GateError {
    let (failure, message) = match kind {
        ErrorKind::ExpiredSignature => (TokenFailure::Expired, "token expired".into()),
        ErrorKind::ImmatureSignature => (TokenFailure::NotYetValid, "token not yet valid".into()),
        ErrorKind::InvalidSignature => {
            (TokenFailure::BadSignature, "invalid token signature".into())
        }
        ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm => (
            TokenFailure::Algorithm,
            "token algorithm is not accepted".into(),
        ),
        ErrorKind::InvalidIssuer => (
            TokenFailure::IssuerOrAudience,
            "token issuer is not accepted".into(),
        ),
        ErrorKind::InvalidAudience => (
            TokenFailure::IssuerOrAudience,
            "token audience is not accepted".into(),
        ),
        ErrorKind::MissingRequiredClaim(claim) => {
            (TokenFailure::Claims, format!("token has no {claim}"))
        }
        ErrorKind::InvalidClaimFormat(claim) => (
            TokenFailure::Claims,
            format!("token claim {claim} is malformed"),
        ),
        _ => (TokenFailure::Malformed, "malformed token".into()),
    };
    GateError::BadToken(failure, message)
}

fn load_key(material: &KeyMaterial) -> Result<(DecodingKey, KeyKind), KeyError> {
    match material {
        KeyMaterial::HmacSecret(bytes) => {
            let secret = trim_trailing_whitespace(bytes);
            if secret.len() < MIN_HMAC_SECRET_LEN {
                return Err(KeyError::SecretTooShort(secret.len()));
            }
            Ok((DecodingKey::from_secret(secret), KeyKind::Hmac))
        }
        KeyMaterial::PublicKeyPem(pem) => DecodingKey::from_rsa_pem(pem)
            .map(|k| (k, KeyKind::Rsa))
            .or_else(|_| DecodingKey::from_ec_pem(pem).map(|k| (k, KeyKind::Ec)))
            .or_else(|_| DecodingKey::from_ed_pem(pem).map(|k| (k, KeyKind::Ed)))
            .map_err(|_| KeyError::UnreadablePem),
    }
}

fn trim_trailing_whitespace(bytes: &[u8]) -> &[u8] {
    let end = bytes
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(0, |p| p + 1);
    &bytes[..end]
}
