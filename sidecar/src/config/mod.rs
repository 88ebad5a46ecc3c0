//! Configuration of the `chatup` roles: one TOML file each, every setting
//! overridable by an environment variable and a flag (flag > env > file >
//! default). `chatup worker --help` and `chatup dispatcher --help` list
//! them all.

mod dispatcher;
mod redis;
mod worker;

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Deserialize;

pub use dispatcher::{DispatcherArgs, DispatcherConfig};
pub use redis::{install_tls_provider, RedisTls};
pub use worker::{WorkerArgs, WorkerConfig};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
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

/// Reads a TOML configuration file; `None` gives the defaults.
fn from_file<T: DeserializeOwned + Default>(path: Option<&Path>) -> Result<T, ConfigError> {
    let Some(path) = path else {
        return Ok(T::default());
    };
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.into(),
        source,
    })?;
    toml::from_str(&text).map_err(|source| ConfigError::Parse {
        path: path.into(),
        source,
    })
}

/// `Ok` when `ok` holds, else the message as an invalid setting.
fn check(ok: bool, message: &str) -> Result<(), ConfigError> {
    if ok {
        Ok(())
    } else {
        Err(ConfigError::Invalid(message.into()))
    }
}

/// Copies each flag that was given over the file's value.
macro_rules! overlay {
    ($config:expr, $args:expr, $($field:ident),* $(,)?) => {
        $( if let Some(v) = &$args.$field { $config.$field = v.clone(); } )*
    };
}
pub(crate) use overlay;

/// Copies each optional setting that was given as a flag over the file's.
macro_rules! overlay_some {
    ($config:expr, $args:expr, $($field:ident),* $(,)?) => {
        $( if $args.$field.is_some() { $config.$field.clone_from(&$args.$field); } )*
    };
}
pub(crate) use overlay_some;
