//! Configuration of `chatup dispatcher`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use chatup_gate::ticket::{self, TicketSigner};
use chatup_gate::token::KeyMaterial;
use chatup_gate::{TokenVerifier, VerifierConfig};
use serde::Deserialize;

use super::{check, overlay, overlay_some, ConfigError, LogFormat};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DispatcherConfig {
    /// Address the HTTP API listens on.
    pub listen: SocketAddr,
    /// Address of the operator's API (`/workers`: the cluster's workers,
    /// their URLs and load). Keep it off the public network.
    pub operator_listen: Option<SocketAddr>,
    /// Address of the Prometheus metrics (`GET /metrics`); unset: none.
    /// Keep it off the public network.
    pub metrics_listen: Option<SocketAddr>,
    /// Sentry DSN: errors and panics are reported there; unset: off.
    pub sentry_dsn: Option<String>,
    /// The environment errors are reported under (`production`, ...).
    pub sentry_environment: Option<String>,
    /// Redis URL (`redis://host:port/db`, `rediss://` for TLS, `redis+sentinel://`, `redis+cluster://`; an ACL
    /// user and password as `rediss://user:password@host`).
    pub redis_url: String,
    /// TLS URLs only (`rediss://`, `rediss+sentinel://`, `rediss+cluster://`): PEM CA certificate(s) to trust for Redis's
    /// certificate (default: the system's).
    pub redis_tls_ca_file: Option<PathBuf>,
    /// TLS URLs only (`rediss://`, `rediss+sentinel://`, `rediss+cluster://`): client certificate and key (PEM), when Redis
    /// checks clients (`tls-auth-clients yes`).
    pub redis_tls_cert_file: Option<PathBuf>,
    pub redis_tls_key_file: Option<PathBuf>,
    /// Replicas that must have a message before it is acknowledged
    /// (`WAIT`); unset: 1 with a Sentinel group or a cluster (so that a
    /// failover loses no acknowledged message), 0 with one server.
    pub redis_min_replicas: Option<u32>,
    /// Redis connect and command timeout.
    pub redis_timeout_ms: u64,
    /// Origins allowed to call the API from a browser (CORS); `*` allows
    /// any. The API uses no cookies, so no credentials are ever allowed.
    pub cors_origins: Vec<String>,
    /// Messages of history returned with a join.
    pub join_history: usize,
    /// Joins to a room within this many milliseconds share one read of its
    /// counts and history (a stream start's joins make one set of Redis
    /// reads per room and moment); 0: every join reads.
    pub join_cache_ms: u64,
    /// Readers per worker (its load: readers at its last heartbeat plus
    /// clients sent to it since) beyond which no client is sent there;
    /// when every worker is there, joins are refused with 503 and
    /// `Retry-After`. Unset: no limit.
    pub worker_capacity: Option<u64>,
    /// The `Retry-After` of those refusals, in seconds.
    pub at_capacity_retry_after_secs: u64,
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
    /// Rooms whose history, member list and joins need the reader's token
    /// (names or `prefix*`), as the workers' `chatup_token_rooms`: keep
    /// both lists the same. The token's `rooms` claim must allow the room.
    pub token_rooms: Vec<String>,
    /// The site's key for user tokens, as the workers'
    /// `chatup_jwt_public_key` (PEM) or `chatup_jwt_secret_file`. Without
    /// one, token rooms are closed here (401).
    pub user_public_key: Option<PathBuf>,
    pub user_secret_file: Option<PathBuf>,
    /// As the workers' `chatup_jwt_algorithms`, `chatup_jwt_issuer`,
    /// `chatup_jwt_audience` (`aud` defaults to `chatup`, as the shipped
    /// nginx configuration; `""` checks none).
    pub user_algorithms: Vec<String>,
    pub user_issuer: Option<String>,
    pub user_audience: Option<String>,
    /// As the workers' `chatup_jwt_max_lifetime`, in seconds (0: off).
    pub user_max_lifetime_secs: u64,
    /// The original ChatUp's API for sites moving over (docs/migration.md):
    /// user tokens' `_public` and `name` claims (as the workers'
    /// `chatup_jwt_original_claims on`), and its server endpoints
    /// (`POST /ban`, `POST /post`, `GET /messages/{channel}`, `GET
    /// /stats/{channel}`), whose tokens are signed with the server key.
    pub original_api: bool,
    /// Tokens without `exp` are accepted (user tokens, as the workers'
    /// `chatup_jwt_require_exp off`, and the original endpoints' tokens):
    /// the original ChatUp's tokens had none. A leaked one is good for
    /// ever: an explicit choice, off by default.
    pub accept_tokens_without_exp: bool,
    /// The secret (at least 32 bytes, not the user-token secret) that signs
    /// read tickets, shared with the workers' `chatup_ticket_secret_file`.
    /// A signed-in reader gets a ticket with each join (and from `POST
    /// /tickets/{room}`) and subscribes with it, so the site's token never
    /// travels in a URL. Without it readers are anonymous and token rooms
    /// cannot be read.
    pub ticket_secret_file: Option<PathBuf>,
    /// How long a read ticket may be used to start a subscription.
    pub ticket_lifetime_secs: u64,
    /// Development only: serve this directory (the built client and its
    /// example page) under `/demo/`.
    pub demo_dir: Option<PathBuf>,
    /// Development only: an RSA private key (PEM) with which `POST
    /// /dev/token` mints user tokens for anyone. Never in production.
    pub dev_token_key: Option<PathBuf>,
    pub log_format: LogFormat,
}

fn chatup_audience() -> String {
    crate::devtoken::AUDIENCE.to_string()
}

impl Default for DispatcherConfig {
    fn default() -> Self {
        Self {
            listen: ([127, 0, 0, 1], 8090).into(),
            operator_listen: Some(([127, 0, 0, 1], 8091).into()),
            metrics_listen: None,
            sentry_dsn: None,
            sentry_environment: None,
            redis_url: "redis://127.0.0.1:6379".into(),
            redis_tls_ca_file: None,
            redis_tls_cert_file: None,
            redis_tls_key_file: None,
            redis_min_replicas: None,
            redis_timeout_ms: 1000,
            cors_origins: vec!["*".into()],
            join_history: 50,
            join_cache_ms: 1000,
            worker_capacity: None,
            at_capacity_retry_after_secs: 10,
            max_page: 500,
            server_public_key: None,
            server_secret_file: None,
            server_algorithms: Vec::new(),
            server_token_max_ttl_secs: 300,
            history_length: 100,
            history_ttl_secs: 24 * 3600,
            // As the shipped nginx template's chatup_token_rooms.
            token_rooms: vec!["private-*".into()],
            user_public_key: None,
            user_secret_file: None,
            user_algorithms: Vec::new(),
            user_issuer: None,
            // As the shipped nginx template's chatup_jwt_audience.
            user_audience: Some(chatup_audience()),
            user_max_lifetime_secs: chatup_gate::token::DEFAULT_MAX_LIFETIME_SECS,
            original_api: false,
            accept_tokens_without_exp: false,
            ticket_secret_file: None,
            ticket_lifetime_secs: chatup_gate::ticket::DEFAULT_TICKET_LIFETIME_SECS,
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
    /// TLS URLs only (rediss://, rediss+sentinel://, rediss+cluster://): PEM CA file to trust for Redis [default: the system's]
    #[arg(long, env = "CHATUP_REDIS_TLS_CA_FILE")]
    pub redis_tls_ca_file: Option<PathBuf>,
    /// TLS URLs only (rediss://, rediss+sentinel://, rediss+cluster://): PEM client certificate for Redis
    #[arg(long, env = "CHATUP_REDIS_TLS_CERT_FILE")]
    pub redis_tls_cert_file: Option<PathBuf>,
    /// TLS URLs only (rediss://, rediss+sentinel://, rediss+cluster://): PEM key of the client certificate
    #[arg(long, env = "CHATUP_REDIS_TLS_KEY_FILE")]
    pub redis_tls_key_file: Option<PathBuf>,
    /// Replicas that must have a message before it is acknowledged [default: 1 with Sentinel or Cluster, else 0]
    #[arg(long, env = "CHATUP_REDIS_MIN_REPLICAS")]
    pub redis_min_replicas: Option<u32>,
    /// Address of the operator API (/workers), off the public network [default: 127.0.0.1:8091]
    #[arg(long, env = "CHATUP_OPERATOR_LISTEN")]
    pub operator_listen: Option<SocketAddr>,
    /// Address of the Prometheus metrics (/metrics), off the public network [default: none]
    #[arg(long, env = "CHATUP_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// Sentry DSN for errors and panics [default: none, off]
    #[arg(long, env = "CHATUP_SENTRY_DSN")]
    pub sentry_dsn: Option<String>,
    /// Environment reported to Sentry [default: none]
    #[arg(long, env = "CHATUP_SENTRY_ENVIRONMENT")]
    pub sentry_environment: Option<String>,
    /// Redis connect/command timeout in milliseconds [default: 1000]
    #[arg(long, env = "CHATUP_REDIS_TIMEOUT_MS")]
    pub redis_timeout_ms: Option<u64>,
    /// Allowed CORS origins, comma-separated, `*` for any [default: *]
    #[arg(long, env = "CHATUP_CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origins: Option<Vec<String>>,
    /// Messages of history returned with a join [default: 50]
    #[arg(long, env = "CHATUP_JOIN_HISTORY")]
    pub join_history: Option<usize>,
    /// Milliseconds joins to one room share its counts and history [default: 1000; 0: off]
    #[arg(long, env = "CHATUP_JOIN_CACHE_MS")]
    pub join_cache_ms: Option<u64>,
    /// Readers per worker beyond which joins go elsewhere, or are refused (503 + Retry-After) when every worker is there [default: none]
    #[arg(long, env = "CHATUP_WORKER_CAPACITY")]
    pub worker_capacity: Option<u64>,
    /// Retry-After (seconds) of joins refused because every worker is at capacity [default: 10]
    #[arg(long, env = "CHATUP_AT_CAPACITY_RETRY_AFTER_SECS")]
    pub at_capacity_retry_after_secs: Option<u64>,
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
    /// Rooms needing the reader's token, comma-separated names or prefix* patterns, as the workers' chatup_token_rooms [default: private-*]
    #[arg(long, env = "CHATUP_TOKEN_ROOMS", value_delimiter = ',')]
    pub token_rooms: Option<Vec<String>>,
    /// The site's public key (PEM) for user tokens, as the workers' [default: none: token rooms closed]
    #[arg(long, env = "CHATUP_USER_PUBLIC_KEY")]
    pub user_public_key: Option<PathBuf>,
    /// Or the HMAC secret file for user tokens
    #[arg(long, env = "CHATUP_USER_SECRET_FILE")]
    pub user_secret_file: Option<PathBuf>,
    /// Accepted algorithms of user tokens, comma-separated [default: the key's usual one]
    #[arg(long, env = "CHATUP_USER_ALGORITHMS", value_delimiter = ',')]
    pub user_algorithms: Option<Vec<String>>,
    /// Required `iss` of user tokens [default: not checked]
    #[arg(long, env = "CHATUP_USER_ISSUER")]
    pub user_issuer: Option<String>,
    /// Required `aud` of user tokens [default: chatup]
    #[arg(long, env = "CHATUP_USER_AUDIENCE")]
    pub user_audience: Option<String>,
    /// Longest remaining lifetime of a user token, in seconds, 0 for no limit [default: 86400]
    #[arg(long, env = "CHATUP_USER_MAX_LIFETIME_SECS")]
    pub user_max_lifetime_secs: Option<u64>,
    /// The original ChatUp's token claims (_public, name) and server endpoints (/ban, /post, /messages/{channel}, /stats/{channel}) [default: false]
    #[arg(long, env = "CHATUP_ORIGINAL_API")]
    pub original_api: Option<bool>,
    /// Accept tokens without exp (the original ChatUp's): they never expire [default: false]
    #[arg(long, env = "CHATUP_ACCEPT_TOKENS_WITHOUT_EXP")]
    pub accept_tokens_without_exp: Option<bool>,
    /// Secret file signing read tickets, shared with the workers' chatup_ticket_secret_file [default: none: readers are anonymous]
    #[arg(long, env = "CHATUP_TICKET_SECRET_FILE")]
    pub ticket_secret_file: Option<PathBuf>,
    /// Lifetime of a read ticket in seconds, at most 3600 [default: 300]
    #[arg(long, env = "CHATUP_TICKET_LIFETIME_SECS")]
    pub ticket_lifetime_secs: Option<u64>,
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
            join_cache_ms,
            at_capacity_retry_after_secs,
            max_page,
            server_algorithms,
            server_token_max_ttl_secs,
            history_length,
            history_ttl_secs,
            token_rooms,
            user_algorithms,
            user_max_lifetime_secs,
            original_api,
            accept_tokens_without_exp,
            ticket_lifetime_secs,
            log_format
        );
        overlay_some!(
            config,
            args,
            operator_listen,
            worker_capacity,
            metrics_listen,
            sentry_dsn,
            sentry_environment,
            server_public_key,
            server_secret_file,
            user_public_key,
            user_secret_file,
            user_issuer,
            user_audience,
            ticket_secret_file,
            redis_tls_ca_file,
            redis_tls_cert_file,
            redis_tls_key_file,
            redis_min_replicas,
            demo_dir,
            dev_token_key
        );
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if let Some(dsn) = &self.sentry_dsn {
            check(
                dsn.parse::<sentry::types::Dsn>().is_ok(),
                "sentry_dsn is not a DSN (https://<key>@<host>/<project>)",
            )?;
        }
        check(
            self.redis_timeout_ms > 0,
            "redis_timeout_ms must be at least 1",
        )?;
        check(self.max_page > 0, "max_page must be at least 1")?;
        check(
            self.worker_capacity != Some(0),
            "worker_capacity must be at least 1 (leave it out for no limit)",
        )?;
        check(
            self.at_capacity_retry_after_secs >= 1,
            "at_capacity_retry_after_secs must be at least 1",
        )?;
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
        check(
            (1..=ticket::MAX_TICKET_LIFETIME_SECS).contains(&self.ticket_lifetime_secs),
            "ticket_lifetime_secs must be between 1 and 3600",
        )?;
        check(
            self.user_public_key.is_none() || self.user_secret_file.is_none(),
            "set user_public_key or user_secret_file, not both",
        )?;
        for pattern in &self.token_rooms {
            chatup_wire::validate_room_pattern(pattern)
                .map_err(|e| ConfigError::Invalid(format!("token_rooms: \"{pattern}\": {e}")))?;
        }
        for origin in &self.cors_origins {
            check(
                origin == "*" || axum::http::HeaderValue::from_str(origin).is_ok(),
                "cors_origins must be * or origins like https://www.example.com",
            )?;
        }
        // Reads the TLS files too: a missing one stops the start.
        self.redis_topology().map(drop)
    }

    /// Where Redis is (one server, a Sentinel group or a cluster), with the TLS
    /// files of a TLS URL.
    pub fn redis_topology(&self) -> Result<crate::topology::Topology, ConfigError> {
        super::RedisTls {
            ca_file: self.redis_tls_ca_file.as_deref(),
            cert_file: self.redis_tls_cert_file.as_deref(),
            key_file: self.redis_tls_key_file.as_deref(),
        }
        .topology(&self.redis_url)
    }

    /// Replicas that must have a message before it is acknowledged.
    pub fn min_replicas(&self, topology: &crate::topology::Topology) -> u32 {
        self.redis_min_replicas.unwrap_or(u32::from(
            topology.follows_failovers() || topology.sharded(),
        ))
    }

    pub fn redis_timeout(&self) -> Duration {
        Duration::from_millis(self.redis_timeout_ms)
    }

    /// The verifier of server-API tokens, if a key is configured; a key
    /// that cannot be read or used is an error at start.
    pub fn server_verifier(&self) -> Result<Option<TokenVerifier>, ConfigError> {
        verifier(
            "server key",
            self.server_public_key.as_ref(),
            self.server_secret_file.as_ref(),
            VerifierConfig {
                key: KeyMaterial::HmacSecret(Vec::new()),
                algorithms: self.server_algorithms.clone(),
                issuer: None,
                audience: None,
                leeway_secs: 5,
                // Bounded by server_token_max_ttl_secs instead.
                max_lifetime_secs: None,
                original: Default::default(),
            },
        )
    }

    /// The signer of read tickets, if a ticket secret is configured; a
    /// secret that is short or is the user-token secret is an error at
    /// start.
    pub fn ticket_signer(&self) -> Result<Option<TicketSigner>, ConfigError> {
        let Some(path) = &self.ticket_secret_file else {
            return Ok(None);
        };
        let read = |path: &PathBuf| {
            std::fs::read(path).map_err(|source| ConfigError::Read {
                path: path.clone(),
                source,
            })
        };
        let secret = read(path)?;
        if let Some(user) = &self.user_secret_file {
            if ticket::same_secret(&secret, &KeyMaterial::HmacSecret(read(user)?)) {
                return Err(ConfigError::Invalid(
                    "ticket_secret_file must not hold the user-token secret \
                     (users could sign their own tickets)"
                        .into(),
                ));
            }
        }
        TicketSigner::new(&secret, self.ticket_lifetime_secs)
            .map(Some)
            .map_err(|e| ConfigError::Invalid(format!("ticket_secret_file: {e}")))
    }

    fn user_original_tokens(&self) -> chatup_gate::token::OriginalTokens {
        chatup_gate::token::OriginalTokens {
            claims: self.original_api,
            without_exp: self.accept_tokens_without_exp,
        }
    }

    /// The verifier of user tokens (token rooms), if a key is configured.
    pub fn user_verifier(&self) -> Result<Option<TokenVerifier>, ConfigError> {
        verifier(
            "user key",
            self.user_public_key.as_ref(),
            self.user_secret_file.as_ref(),
            VerifierConfig {
                key: KeyMaterial::HmacSecret(Vec::new()),
                algorithms: self.user_algorithms.clone(),
                issuer: self.user_issuer.clone().filter(|i| !i.is_empty()),
                audience: self.user_audience.clone().filter(|a| !a.is_empty()),
                leeway_secs: 5,
                max_lifetime_secs: (self.user_max_lifetime_secs > 0)
                    .then_some(self.user_max_lifetime_secs),
                original: self.user_original_tokens(),
            },
        )
    }
}

/// A verifier with the key read from `public` (PEM) or `secret` (HMAC),
/// and the rest of `settings`; `None` without a key.
fn verifier(
    what: &str,
    public: Option<&PathBuf>,
    secret: Option<&PathBuf>,
    settings: VerifierConfig,
) -> Result<Option<TokenVerifier>, ConfigError> {
    let read = |path: &PathBuf| {
        std::fs::read(path).map_err(|source| ConfigError::Read {
            path: path.clone(),
            source,
        })
    };
    let key = match (public, secret) {
        (Some(path), _) => KeyMaterial::PublicKeyPem(read(path)?),
        (None, Some(path)) => KeyMaterial::HmacSecret(read(path)?),
        (None, None) => return Ok(None),
    };
    TokenVerifier::new(VerifierConfig { key, ..settings })
        .map(Some)
        .map_err(|e| ConfigError::Invalid(format!("{what}: {e}")))
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

    #[test]
    fn ticket_settings_are_checked_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        let site = write("site.secret", "the site's own secret, 32 bytes or more\n");
        let tickets = write("ticket.secret", "a ticket secret of at least 32 bytes\n");
        let short = write("short.secret", "short");
        let load = |ticket: &PathBuf, lifetime: Option<u64>| {
            DispatcherConfig::load(&DispatcherArgs {
                user_secret_file: Some(site.clone()),
                ticket_secret_file: Some(ticket.clone()),
                ticket_lifetime_secs: lifetime,
                ..Default::default()
            })
            .and_then(|config| config.ticket_signer())
        };
        assert!(load(&tickets, None).unwrap().is_some());
        let same = load(&site, None).unwrap_err().to_string();
        assert!(
            same.contains("must not hold the user-token secret"),
            "{same}"
        );
        let short = load(&short, None).unwrap_err().to_string();
        assert!(short.contains("at least 32"), "{short}");
        for lifetime in [0, 3601] {
            let err = load(&tickets, Some(lifetime)).unwrap_err().to_string();
            assert!(err.contains("ticket_lifetime_secs"), "{err}");
        }
        assert!(DispatcherConfig::load(&DispatcherArgs::default())
            .unwrap()
            .ticket_signer()
            .unwrap()
            .is_none());
    }
}
