//! Configuration of `chatup worker`: one TOML file, each setting
//! overridable by an environment variable and a flag (flag > env > file >
//! default). `chatup worker --help` lists them all.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkerConfig {
    /// Redis URL (`redis://host:port/db`, `rediss://` for TLS).
    pub redis_url: String,
    /// Unix socket the worker listens on for nginx (messages and hooks).
    pub listen: PathBuf,
    /// Permissions of that socket: nginx's worker user must be able to
    /// connect.
    pub socket_mode: u32,
    /// nginx's internal unix socket, where nchan's publisher location is.
    pub nchan_socket: PathBuf,
    /// File keeping the rooms this worker serves, so a restarted sidecar
    /// resumes feeding the subscribers nginx still holds.
    pub state_file: Option<PathBuf>,
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
    pub log_format: LogFormat,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            redis_url: "redis://127.0.0.1:6379".into(),
            listen: "/run/chatup/sidecar.sock".into(),
            socket_mode: 0o660,
            nchan_socket: "/run/chatup/nginx-internal.sock".into(),
            state_file: None,
            history_length: 100,
            history_ttl_secs: 24 * 3600,
            batch_window_ms: 30,
            batch_max_messages: 500,
            batch_max_bytes: 256 * 1024,
            room_sweep_secs: 10,
            redis_timeout_ms: 1000,
            log_format: LogFormat::Text,
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
    /// Redis URL [default: redis://127.0.0.1:6379]
    #[arg(long, env = "CHATUP_REDIS_URL")]
    pub redis_url: Option<String>,
    /// Unix socket to listen on for nginx [default: /run/chatup/sidecar.sock]
    #[arg(long, env = "CHATUP_LISTEN")]
    pub listen: Option<PathBuf>,
    /// Octal permissions of the listen socket [default: 660]
    #[arg(long, env = "CHATUP_SOCKET_MODE", value_parser = parse_octal)]
    pub socket_mode: Option<u32>,
    /// nginx's internal unix socket (nchan publisher) [default: /run/chatup/nginx-internal.sock]
    #[arg(long, env = "CHATUP_NCHAN_SOCKET")]
    pub nchan_socket: Option<PathBuf>,
    /// File remembering the rooms served, across restarts [default: none]
    #[arg(long, env = "CHATUP_STATE_FILE")]
    pub state_file: Option<PathBuf>,
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
    /// Log format [default: text]
    #[arg(long, env = "CHATUP_LOG_FORMAT")]
    pub log_format: Option<LogFormat>,
}

fn parse_octal(s: &str) -> Result<u32, String> {
    u32::from_str_radix(s.trim_start_matches("0o"), 8)
        .map_err(|e| format!("not an octal mode: {e}"))
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid configuration in {path}: {source}")]
    Parse {
        path: PathBuf,
        source: toml::de::Error,
    },
    #[error("invalid setting: {0}")]
    Invalid(String),
}

impl WorkerConfig {
    pub fn load(args: &WorkerArgs) -> Result<Self, ConfigError> {
        let mut config = match &args.config {
            Some(path) => Self::from_file(path)?,
            None => Self::default(),
        };
        config.apply(args);
        config.validate()?;
        Ok(config)
    }

    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.into(),
            source,
        })?;
        toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.into(),
            source,
        })
    }

    fn apply(&mut self, args: &WorkerArgs) {
        macro_rules! overlay {
            ($($field:ident),*) => { $( if let Some(v) = &args.$field { self.$field = v.clone(); } )* };
        }
        overlay!(
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
            log_format
        );
        if args.state_file.is_some() {
            self.state_file.clone_from(&args.state_file);
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let check = |ok: bool, what: &str| {
            if ok {
                Ok(())
            } else {
                Err(ConfigError::Invalid(what.into()))
            }
        };
        check(self.history_length > 0, "history_length must be at least 1")?;
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
        redis::Client::open(self.redis_url.as_str())
            .map(drop)
            .map_err(|e| ConfigError::Invalid(format!("redis_url: {e}")))
    }

    pub fn batch_window(&self) -> Duration {
        Duration::from_millis(self.batch_window_ms)
    }

    pub fn redis_timeout(&self) -> Duration {
        Duration::from_millis(self.redis_timeout_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_the_file_which_overrides_defaults() {
        let dir = std::env::temp_dir().join(format!("chatup-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("worker.toml");
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
        let dir = std::env::temp_dir().join(format!("chatup-config-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("worker.toml");
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
}
