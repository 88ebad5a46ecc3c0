//! `chatup dev-token` and `chatup dev-server-token`: mint JWTs with the
//! development keys, so the local deployment and its docs can be tried
//! without a site's auth server. Never use the development keys in
//! production.

use std::path::PathBuf;

use anyhow::Context;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};

#[derive(Debug, clap::Args)]
pub struct DevTokenArgs {
    /// The user id (`sub`).
    #[arg(long)]
    pub sub: String,
    /// Display name, put in the `public` claim.
    #[arg(long)]
    pub name: Option<String>,
    /// Seconds until the token expires.
    #[arg(long, default_value_t = 3600)]
    pub ttl: u64,
    /// A moderator's token for these rooms (`role: "moderator"` and a
    /// `rooms` claim: names or prefix* patterns)
    #[arg(long, num_args = 1..)]
    pub moderator_of: Vec<String>,
    /// RSA private key (PEM) to sign with (RS256).
    #[arg(long, default_value = "conf/dev-keys/jwt-rs256.key")]
    pub key: PathBuf,
}

pub fn mint(args: &DevTokenArgs) -> anyhow::Result<String> {
    let signer = DevSigner::from_file(&args.key)?;
    let public = args
        .name
        .as_ref()
        .map(|name| serde_json::json!({ "name": name }));
    for pattern in &args.moderator_of {
        chatup_wire::validate_room_pattern(pattern)
            .map_err(|e| anyhow::anyhow!("--moderator-of \"{pattern}\": {e}"))?;
    }
    Ok(signer.user_token(&args.sub, public, args.ttl, &args.moderator_of)?)
}

/// The `iss` of development user tokens: the local deployment and the
/// tests configure it as the site's issuer (`chatup_jwt_issuer`,
/// `user_issuer`).
pub const DEV_ISSUER: &str = "chatup-dev-site";
/// The `aud` of user tokens made for ChatUp, as the shipped configuration
/// expects (`chatup_jwt_audience chatup`, `user_audience`).
pub const AUDIENCE: &str = "chatup";

/// Signs development user tokens (RS256) with a development private key.
pub struct DevSigner {
    key: EncodingKey,
}

#[derive(Debug, thiserror::Error)]
pub enum DevSignerError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}: the key must be an RSA private key in PEM")]
    NotRsa(PathBuf),
}

impl DevSigner {
    pub fn from_file(path: &std::path::Path) -> Result<Self, DevSignerError> {
        let pem = std::fs::read(path).map_err(|source| DevSignerError::Read {
            path: path.into(),
            source,
        })?;
        let key =
            EncodingKey::from_rsa_pem(&pem).map_err(|_| DevSignerError::NotRsa(path.into()))?;
        Ok(Self { key })
    }

    /// A token for `sub`, with `public` display data, valid `ttl` seconds.
    pub fn user_token(
        &self,
        sub: &str,
        public: Option<serde_json::Value>,
        ttl: u64,
        moderator_of: &[String],
    ) -> Result<String, jsonwebtoken::errors::Error> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let mut claims = serde_json::json!({
            "iss": DEV_ISSUER,
            "aud": AUDIENCE,
            "sub": sub,
            "iat": now,
            "exp": now + ttl,
        });
        if let Some(public) = public {
            claims["public"] = public;
        }
        if !moderator_of.is_empty() {
            claims["role"] = serde_json::json!(chatup_gate::token::MODERATOR);
            claims["rooms"] = serde_json::json!(moderator_of);
        }
        encode(&Header::new(Algorithm::RS256), &claims, &self.key)
    }
}

#[derive(Debug, clap::Args)]
pub struct DevServerTokenArgs {
    /// The action the token authorizes: ban, lift, list or post.
    #[arg(long)]
    pub act: String,
    /// The request's claims as JSON, e.g. '{"bans": [{"user": "bob", "room": "lobby"}]}'.
    #[arg(long)]
    pub claims: String,
    /// Seconds until the token expires (dispatchers refuse more than their
    /// server_token_max_ttl_secs).
    #[arg(long, default_value_t = 60)]
    pub ttl: u64,
    /// HMAC secret to sign with (HS256).
    #[arg(long, default_value = "conf/dev-keys/jwt-hs256.secret")]
    pub secret: PathBuf,
}

/// A server-API token for one request: the given claims plus `act`, a
/// random `jti` and `exp`.
pub fn mint_server(args: &DevServerTokenArgs) -> anyhow::Result<String> {
    let secret = std::fs::read(&args.secret)
        .with_context(|| format!("reading {}", args.secret.display()))?;
    let mut claims: serde_json::Value =
        serde_json::from_str(&args.claims).context("--claims must be a JSON object")?;
    let object = claims
        .as_object_mut()
        .context("--claims must be a JSON object")?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    object.insert("exp".into(), serde_json::json!(now + args.ttl));
    object.insert("act".into(), serde_json::json!(args.act));
    let jti: u128 = rand::random();
    object.insert("jti".into(), serde_json::json!(format!("{jti:032x}")));
    let key = EncodingKey::from_secret(secret.trim_ascii_end());
    Ok(encode(&Header::new(Algorithm::HS256), &claims, &key)?)
}
