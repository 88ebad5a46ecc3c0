//! Configuration of `chatup dispatcher`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use chatup_gate::token::KeyMaterial;
use chatup_gate::{TokenVerifier, VerifierConfig};
use serde::Deserialize;

use super::{check, check_redis_url, overlay, overlay_some, ConfigError, LogFormat};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DispatcherConfig {
    /// Address the HTTP API listens on.
    pub listen: SocketAddr,
    /// Redis URL (`redis://host:port/db`, `rediss://` for TLS).
    pub redis_url: String,
    /// Redis connect and command timeout.
    pub redis_timeout_ms: u64,
    /// Origins allowed to call the API from a browser (CORS); `*` allows
    /// any. The API uses no cookies, so no credentials are ever allowed.
    pub cors_origins: Vec<String>,
    /// Messages of history returned with a join.
    pub join_history: usize,
    /// Largest `limit` of the stats and history endpoints.
    pub max_page: usize,
    /// The site server's public key (PEM: RSA, EC or Ed25519) that signs
    /// the server API's tokens (bans, server posts). Without it (or
    /// `server_secret_file`) the server API answers 501.
    pub server_public_key: Option<PathBuf>,
    /// Or an HMAC secret (at least 32 bytes) for those tokens.
    pub server_secret_file: Option<PathBuf>,
    /// Accepted algorithms of server tokens (default: the key's usual one).
    pub server_algorithms: Vec<String>,
    /// Server tokens valid for longer than this are refused, so that a
    /// leaked one cannot be replayed for long.
    pub server_token_max_ttl_secs: u64,
    /// History settings for server posts: keep them the same as the
    /// workers'.
    pub history_length: usize,
    pub history_ttl_secs: u64,
    /// Development only: serve this directory (the built client and its
    /// example page) under `/demo/`.
    pub demo_dir: Option<PathBuf>,
    /// Development only: an RSA private key (PEM) with which `POST
    /// /dev/token` mints user tokens for anyone. Never in production.
    pub dev_token_key: Option<PathBuf>,
    pub log_format: LogFormat,
}

impl Default for DispatcherConfig {
    fn default() -> Self {
        Self {
            listen: ([127, 0, 0, 1], 8090).into(),
            redis_url: "redis://127.0.0.1:6379".into(),
            redis_timeout_ms: 1000,
            cors_origins: vec!["*".into()],
            join_history: 50,
            max_page: 500,
            server_public_key: None,
            server_secret_file: None,
            server_algorithms: Vec::new(),
            server_token_max_ttl_secs: 300,
            history_length: 100,
            history_ttl_secs: 24 * 3600,
            demo_dir: None,
            dev_token_key: None,
            log_format: LogFormat::Text,
        }
    }
}

/// Flags of `chatup dispatcher`; each also reads the environment variable
/// named beside it.
#[derive(Debug, clap::Args, Default)]
pub struct DispatcherArgs {
    /// TOML configuration file (see conf/chatup-dispatcher.toml).
    #[arg(long, short, env = "CHATUP_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8090]
    #[arg(long, env = "CHATUP_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Redis URL [default: redis://127.0.0.1:6379]
    #[arg(long, env = "CHATUP_REDIS_URL")]
    pub redis_url: Option<String>,
    /// Redis connect/command timeout in milliseconds [default: 1000]
    #[arg(long, env = "CHATUP_REDIS_TIMEOUT_MS")]
    pub redis_timeout_ms: Option<u64>,
    /// Allowed CORS origins, comma-separated, `*` for any [default: *]
    #[arg(long, env = "CHATUP_CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origins: Option<Vec<String>>,
    /// Messages of history returned with a join [default: 50]
    #[arg(long, env = "CHATUP_JOIN_HISTORY")]
    pub join_history: Option<usize>,
    /// Largest page of the stats and history endpoints [default: 500]
    #[arg(long, env = "CHATUP_MAX_PAGE")]
    pub max_page: Option<usize>,
    /// Public key (PEM) of the site server signing server-API tokens [default: none, server API off]
    #[arg(long, env = "CHATUP_SERVER_PUBLIC_KEY")]
    pub server_public_key: Option<PathBuf>,
    /// HMAC secret file for server-API tokens, instead of a public key
    #[arg(long, env = "CHATUP_SERVER_SECRET_FILE")]
    pub server_secret_file: Option<PathBuf>,
    /// Accepted algorithms of server tokens, comma-separated [default: the key's usual one]
    #[arg(long, env = "CHATUP_SERVER_ALGORITHMS", value_delimiter = ',')]
    pub server_algorithms: Option<Vec<String>>,
    /// Longest validity accepted for a server token, in seconds [default: 300]
    #[arg(long, env = "CHATUP_SERVER_TOKEN_MAX_TTL_SECS")]
    pub server_token_max_ttl_secs: Option<u64>,
    /// Messages kept per room (as the workers) [default: 100]
    #[arg(long, env = "CHATUP_HISTORY_LENGTH")]
    pub history_length: Option<usize>,
    /// Seconds history is kept (as the workers) [default: 86400]
    #[arg(long, env = "CHATUP_HISTORY_TTL_SECS")]
    pub history_ttl_secs: Option<u64>,
    /// Development only: directory served under /demo/ (the example page) [default: none]
    #[arg(long, env = "CHATUP_DEMO_DIR")]
    pub demo_dir: Option<PathBuf>,
    /// Development only: RSA private key with which POST /dev/token mints user tokens [default: none, off]
    #[arg(long, env = "CHATUP_DEV_TOKEN_KEY")]
    pub dev_token_key: Option<PathBuf>,
    /// Log format [default: text]
    #[arg(long, env = "CHATUP_LOG_FORMAT")]
    pub log_format: Option<LogFormat>,
}

impl DispatcherConfig {
    pub fn load(args: &DispatcherArgs) -> Result<Self, ConfigError> {
        let mut config: Self = super::from_file(args.config.as_deref())?;
        overlay!(
            config,
            args,
            listen,
            redis_url,
            redis_timeout_ms,
            cors_origins,
            join_history,
            max_page,
            server_algorithms,
            server_token_max_ttl_secs,
            history_length,
            history_ttl_secs,
            log_format
        );
        overlay_some!(
            config,
            args,
            server_public_key,
            server_secret_file,
            demo_dir,
            dev_token_key
        );
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        check(
            self.redis_timeout_ms > 0,
            "redis_timeout_ms must be at least 1",
        )?;
        check(self.max_page > 0, "max_page must be at least 1")?;
        check(
            self.join_history <= self.max_page,
            "join_history must be at most max_page",
        )?;
        check(
            self.server_public_key.is_none() || self.server_secret_file.is_none(),
            "set server_public_key or server_secret_file, not both",
        )?;
        check(
            self.server_token_max_ttl_secs > 0,
            "server_token_max_ttl_secs must be at least 1",
        )?;
        check(self.history_length > 0, "history_length must be at least 1")?;
        for origin in &self.cors_origins {
            check(
                origin == "*" || axum::http::HeaderValue::from_str(origin).is_ok(),
                "cors_origins must be * or origins like https://www.example.com",
            )?;
        }
        check_redis_url(&self.redis_url)
    }

    pub fn redis_timeout(&self) -> Duration {
        Duration::from_millis(self.redis_timeout_ms)
    }

    /// The verifier of server-API tokens, if a key is configured; a key
    /// that cannot be read or used is an error at start.
    pub fn server_verifier(&self) -> Result<Option<TokenVerifier>, ConfigError> {
        let read = |path: &PathBuf| {
            std::fs::read(path).map_err(|source| ConfigError::Read {
                path: path.clone(),
                source,
            })
        };
        let key = match (&self.server_public_key, &self.server_secret_file) {
            (Some(path), _) => KeyMaterial::PublicKeyPem(read(path)?),
            (None, Some(path)) => KeyMaterial::HmacSecret(read(path)?),
            (None, None) => return Ok(None),
        };
        TokenVerifier::new(VerifierConfig {
            key,
            algorithms: self.server_algorithms.clone(),
            issuer: None,
            audience: None,
            leeway_secs: 5,
        })
        .map(Some)
        .map_err(|e| ConfigError::Invalid(format!("server key: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_defaults_and_bad_values_are_named() {
        let config = DispatcherConfig::load(&DispatcherArgs {
            cors_origins: Some(vec!["https://a.example".into()]),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(config.cors_origins, ["https://a.example"]);
        assert_eq!(config.join_history, 50);
        let err = DispatcherConfig::load(&DispatcherArgs {
            join_history: Some(10_000),
            ..Default::default()
        })
        .unwrap_err();
        assert!(err.to_string().contains("join_history"), "{err}");
    }
}
