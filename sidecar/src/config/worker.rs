//! Configuration of `chatup worker`.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{check, overlay, overlay_some, ConfigError, LogFormat};
use crate::moderation::filters::FilterConfig;
use crate::moderation::publish_hook::PublishHookConfig;
use crate::moderation::ratelimit::RateLimitConfig;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkerConfig {
    /// This worker's id in the registry: unique in the cluster and stable
    /// across restarts (its members are kept under it). Default: the host
    /// name.
    pub worker_id: String,
    /// Where clients reach this worker's nginx, announced in the registry
    /// (e.g. `https://chat3.example.com`). Without it the worker serves its
    /// readers but dispatchers never send clients to it.
    pub public_url: Option<String>,
    /// How often the worker announces itself and its load.
    pub heartbeat_interval_ms: u64,
    /// How long an announcement stays valid: a worker silent for this long
    /// is dead to the dispatchers, and its members and counts vanish.
    pub heartbeat_ttl_ms: u64,
    /// From this many readers on (over all workers), a room gets periodic
    /// count events instead of one join/leave event per member.
    pub presence_threshold: u64,
    /// How often rooms' counts are recomputed and, when they changed, sent
    /// to readers as a count event.
    pub count_interval_ms: u64,
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
    /// Unix socket the worker listens on for nginx (messages and hooks).
    pub listen: PathBuf,
    /// Permissions of that socket: nginx's worker user must be able to
    /// connect.
    pub socket_mode: u32,
    /// nginx's internal unix socket, where nchan's publisher location is.
    pub nchan_socket: PathBuf,
    /// Address of the Prometheus metrics (`GET /metrics`); unset: none.
    /// Keep it off the public network.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Sentry DSN: errors and panics are reported there; unset: off.
    pub sentry_dsn: Option<String>,
    /// The environment errors are reported under (`production`, ...).
    pub sentry_environment: Option<String>,
    /// Messages kept per room in Redis history.
    pub history_length: usize,
    /// History expires this many seconds after a room's last message.
    pub history_ttl_secs: u64,
    /// Messages for one room arriving within this window after a send go
    /// out together as one frame.
    pub batch_window_ms: u64,
    /// Most messages in one frame.
    pub batch_max_messages: usize,
    /// Largest frame, in bytes.
    pub batch_max_bytes: usize,
    /// How often rooms are checked for remaining subscribers.
    pub room_sweep_secs: u64,
    /// Redis connect and command timeout.
    pub redis_timeout_ms: u64,
    /// The ban list is reloaded whole this often (changes are applied as
    /// they are announced; this repairs a missed announcement).
    pub bans_refresh_secs: u64,
    /// Readers per second a drain (`chatup drain`, for a deploy) moves to
    /// other workers: they leave spread evenly over readers / rate seconds.
    pub drain_rate: u64,
    /// Messages a second in one room above which its readers get a sample
    /// (moderators' and server messages all, a share of the rest; history
    /// keeps everything); 0: never.
    pub hot_room_rate: u64,
    pub log_format: LogFormat,
    /// `[rate_limit]`: per user and room (file only).
    pub rate_limit: RateLimitConfig,
    /// `[filters]`: message filters (file only).
    pub filters: FilterConfig,
    /// `[publish_hook]`: the site's hook, asked about each message (file
    /// only; absent: none).
    pub publish_hook: Option<PublishHookConfig>,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            worker_id: default_worker_id(),
            public_url: None,
            heartbeat_interval_ms: 1000,
            heartbeat_ttl_ms: 3000,
            presence_threshold: 200,
            count_interval_ms: 5000,
            drain_rate: 500,
            hot_room_rate: 50,
            redis_url: "redis://127.0.0.1:6379".into(),
            redis_tls_ca_file: None,
            redis_tls_cert_file: None,
            redis_tls_key_file: None,
            redis_min_replicas: None,
            listen: "/run/chatup/sidecar.sock".into(),
            socket_mode: 0o660,
            nchan_socket: "/run/chatup/nginx-internal.sock".into(),
            metrics_listen: None,
            sentry_dsn: None,
            sentry_environment: None,
            history_length: 100,
            history_ttl_secs: 24 * 3600,
            batch_window_ms: 30,
            batch_max_messages: 500,
            batch_max_bytes: 256 * 1024,
            room_sweep_secs: 10,
            redis_timeout_ms: 1000,
            bans_refresh_secs: 10,
            log_format: LogFormat::Text,
            rate_limit: RateLimitConfig::default(),
            filters: FilterConfig::default(),
            publish_hook: None,
        }
    }
}

/// Flags of `chatup worker`; each also reads the environment variable named
/// beside it.
#[derive(Debug, clap::Args, Default)]
pub struct WorkerArgs {
    /// TOML configuration file (see conf/chatup-worker.toml).
    #[arg(long, short, env = "CHATUP_CONFIG")]
    pub config: Option<PathBuf>,
    /// Id of this worker in the registry [default: the host name]
    #[arg(long, env = "CHATUP_WORKER_ID")]
    pub worker_id: Option<String>,
    /// URL clients reach this worker's nginx at, announced to dispatchers [default: none, not announced]
    #[arg(long, env = "CHATUP_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Milliseconds between heartbeats [default: 1000]
    #[arg(long, env = "CHATUP_HEARTBEAT_INTERVAL_MS")]
    pub heartbeat_interval_ms: Option<u64>,
    /// Milliseconds a heartbeat stays valid [default: 3000]
    #[arg(long, env = "CHATUP_HEARTBEAT_TTL_MS")]
    pub heartbeat_ttl_ms: Option<u64>,
    /// Readers from which a room gets count events instead of join/leave events [default: 200]
    #[arg(long, env = "CHATUP_PRESENCE_THRESHOLD")]
    pub presence_threshold: Option<u64>,
    /// Milliseconds between room count updates [default: 5000]
    #[arg(long, env = "CHATUP_COUNT_INTERVAL_MS")]
    pub count_interval_ms: Option<u64>,
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
    /// Unix socket to listen on for nginx [default: /run/chatup/sidecar.sock]
    #[arg(long, env = "CHATUP_LISTEN")]
    pub listen: Option<PathBuf>,
    /// Octal permissions of the listen socket [default: 660]
    #[arg(long, env = "CHATUP_SOCKET_MODE", value_parser = parse_octal)]
    pub socket_mode: Option<u32>,
    /// nginx's internal unix socket (nchan publisher) [default: /run/chatup/nginx-internal.sock]
    #[arg(long, env = "CHATUP_NCHAN_SOCKET")]
    pub nchan_socket: Option<PathBuf>,
    /// Address of the Prometheus metrics (/metrics), off the public network [default: none]
    #[arg(long, env = "CHATUP_METRICS_LISTEN")]
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Sentry DSN for errors and panics [default: none, off]
    #[arg(long, env = "CHATUP_SENTRY_DSN")]
    pub sentry_dsn: Option<String>,
    /// Environment reported to Sentry [default: none]
    #[arg(long, env = "CHATUP_SENTRY_ENVIRONMENT")]
    pub sentry_environment: Option<String>,
    /// Messages kept per room in history [default: 100]
    #[arg(long, env = "CHATUP_HISTORY_LENGTH")]
    pub history_length: Option<usize>,
    /// Seconds history is kept after a room's last message [default: 86400]
    #[arg(long, env = "CHATUP_HISTORY_TTL_SECS")]
    pub history_ttl_secs: Option<u64>,
    /// Batching window in milliseconds [default: 30]
    #[arg(long, env = "CHATUP_BATCH_WINDOW_MS")]
    pub batch_window_ms: Option<u64>,
    /// Most messages per frame [default: 500]
    #[arg(long, env = "CHATUP_BATCH_MAX_MESSAGES")]
    pub batch_max_messages: Option<usize>,
    /// Largest frame in bytes [default: 262144]
    #[arg(long, env = "CHATUP_BATCH_MAX_BYTES")]
    pub batch_max_bytes: Option<usize>,
    /// Seconds between checks for rooms without subscribers [default: 10]
    #[arg(long, env = "CHATUP_ROOM_SWEEP_SECS")]
    pub room_sweep_secs: Option<u64>,
    /// Redis connect/command timeout in milliseconds [default: 1000]
    #[arg(long, env = "CHATUP_REDIS_TIMEOUT_MS")]
    pub redis_timeout_ms: Option<u64>,
    /// Seconds between full reloads of the ban list [default: 10]
    #[arg(long, env = "CHATUP_BANS_REFRESH_SECS")]
    pub bans_refresh_secs: Option<u64>,
    /// Readers per second a drain moves to other workers [default: 500]
    #[arg(long, env = "CHATUP_DRAIN_RATE")]
    pub drain_rate: Option<u64>,
    /// Messages a second in a room above which readers get a sample; 0: never [default: 50]
    #[arg(long, env = "CHATUP_HOT_ROOM_RATE")]
    pub hot_room_rate: Option<u64>,
    /// Log format [default: text]
    #[arg(long, env = "CHATUP_LOG_FORMAT")]
    pub log_format: Option<LogFormat>,
}

fn parse_octal(s: &str) -> Result<u32, String> {
    u32::from_str_radix(s.trim_start_matches("0o"), 8)
        .map_err(|e| format!("not an octal mode: {e}"))
}

impl WorkerConfig {
    pub fn load(args: &WorkerArgs) -> Result<Self, ConfigError> {
        let mut config: Self = super::from_file(args.config.as_deref())?;
        config.apply(args);
        config.validate()?;
        Ok(config)
    }

    fn apply(&mut self, args: &WorkerArgs) {
        overlay!(
            self,
            args,
            worker_id,
            heartbeat_interval_ms,
            heartbeat_ttl_ms,
            presence_threshold,
            count_interval_ms,
            redis_url,
            listen,
            socket_mode,
            nchan_socket,
            history_length,
            history_ttl_secs,
            batch_window_ms,
            batch_max_messages,
            batch_max_bytes,
            room_sweep_secs,
            redis_timeout_ms,
            bans_refresh_secs,
            drain_rate,
            hot_room_rate,
            log_format
        );
        overlay_some!(
            self,
            args,
            public_url,
            metrics_listen,
            sentry_dsn,
            sentry_environment,
            redis_tls_ca_file,
            redis_tls_cert_file,
            redis_tls_key_file,
            redis_min_replicas
        );
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if let Some(dsn) = &self.sentry_dsn {
            check(
                dsn.parse::<sentry::types::Dsn>().is_ok(),
                "sentry_dsn is not a DSN (https://<key>@<host>/<project>)",
            )?;
        }
        check(
            !self.worker_id.is_empty()
                && self
                    .worker_id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)),
            "worker_id must be non-empty letters, digits, '-', '_' or '.'",
        )?;
        if let Some(url) = &self.public_url {
            check(
                url.starts_with("http://") || url.starts_with("https://"),
                "public_url must start with http:// or https://",
            )?;
        }
        check(
            self.heartbeat_interval_ms >= 100,
            "heartbeat_interval_ms must be at least 100",
        )?;
        check(
            self.heartbeat_ttl_ms >= 2 * self.heartbeat_interval_ms,
            "heartbeat_ttl_ms must be at least twice heartbeat_interval_ms",
        )?;
        check(
            self.count_interval_ms >= self.heartbeat_interval_ms,
            "count_interval_ms must be at least heartbeat_interval_ms",
        )?;
        check(self.history_length > 0, "history_length must be at least 1")?;
        check(self.drain_rate > 0, "drain_rate must be at least 1")?;
        check(
            self.batch_window_ms <= 1000,
            "batch_window_ms must be at most 1000",
        )?;
        check(
            self.batch_max_messages > 0,
            "batch_max_messages must be at least 1",
        )?;
        check(
            self.batch_max_bytes >= 4096,
            "batch_max_bytes must be at least 4096",
        )?;
        check(
            self.room_sweep_secs > 0,
            "room_sweep_secs must be at least 1",
        )?;
        check(
            self.redis_timeout_ms > 0,
            "redis_timeout_ms must be at least 1",
        )?;
        check(
            self.bans_refresh_secs > 0,
            "bans_refresh_secs must be at least 1",
        )?;
        self.rate_limit.validate().map_err(ConfigError::Invalid)?;
        self.filters.validate().map_err(ConfigError::Invalid)?;
        if let Some(hook) = &self.publish_hook {
            hook.check().map_err(ConfigError::Invalid)?;
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

    pub fn batch_window(&self) -> Duration {
        Duration::from_millis(self.batch_window_ms)
    }

    pub fn redis_timeout(&self) -> Duration {
        Duration::from_millis(self.redis_timeout_ms)
    }

    pub fn heartbeat_interval(&self) -> Duration {
        Duration::from_millis(self.heartbeat_interval_ms)
    }

    pub fn count_interval(&self) -> Duration {
        Duration::from_millis(self.count_interval_ms)
    }
}

/// The host name, as the default worker id.
fn default_worker_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_string())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "worker".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_the_file_which_overrides_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("worker.toml");
        std::fs::write(
            &file,
            "history_length = 7\nbatch_window_ms = 50\nlog_format = \"json\"\n",
        )
        .unwrap();
        let args = WorkerArgs {
            config: Some(file),
            batch_window_ms: Some(20),
            ..Default::default()
        };
        let config = WorkerConfig::load(&args).unwrap();
        assert_eq!(config.history_length, 7);
        assert_eq!(config.batch_window_ms, 20);
        assert_eq!(config.log_format, LogFormat::Json);
        assert_eq!(config.room_sweep_secs, 10);
    }

    #[test]
    fn bad_settings_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("worker.toml");
        std::fs::write(&file, "histroy_length = 7\n").unwrap();
        let err = WorkerConfig::load(&WorkerArgs {
            config: Some(file),
            ..Default::default()
        })
        .unwrap_err();
        assert!(err.to_string().contains("histroy_length"), "{err}");
        let err = WorkerConfig::load(&WorkerArgs {
            history_length: Some(0),
            ..Default::default()
        })
        .unwrap_err();
        assert!(err.to_string().contains("history_length"), "{err}");
    }

    #[test]
    fn a_sentry_dsn_is_checked_at_start_not_when_the_first_error_comes() {
        let load = |dsn: &str| {
            WorkerConfig::load(&WorkerArgs {
                sentry_dsn: Some(dsn.into()),
                ..Default::default()
            })
        };
        let err = load("not a dsn").unwrap_err();
        assert!(err.to_string().contains("sentry_dsn"), "{err}");
        assert!(load("https://public@o1.ingest.sentry.io/42").is_ok());
    }
}
