//! Configuration of `chatup dispatcher`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{check, check_redis_url, overlay, ConfigError, LogFormat};

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
            log_format
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
