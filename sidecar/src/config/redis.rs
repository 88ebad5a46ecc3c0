//! How the worker and the dispatcher reach Redis: the URL, and for
//! `rediss://` the TLS material (a CA to trust instead of the system's, a
//! client certificate when Redis asks for one: `tls-auth-clients yes`).
//!
//! An ACL user and its password go in the URL
//! (`rediss://chatup:secret@redis.internal:6380/0`); keep that URL in the
//! configuration file (mode 0600) or `CHATUP_REDIS_URL`, not on a command
//! line, which every local user can read in `ps`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::ConfigError;
use crate::topology::{
    ClusterUrl, SentinelGroup, SentinelUrl, Topology, CLUSTER_SCHEME, CLUSTER_TLS_SCHEME,
    SENTINEL_SCHEME, SENTINEL_TLS_SCHEME,
};

/// The TLS files of a `rediss://` connection.
#[derive(Debug, Clone, Copy, Default)]
pub struct RedisTls<'a> {
    /// PEM certificate(s) of the CA that signed Redis's certificate.
    pub ca_file: Option<&'a Path>,
    /// PEM client certificate and its key, both or neither.
    pub cert_file: Option<&'a Path>,
    pub key_file: Option<&'a Path>,
}

impl RedisTls<'_> {
    /// Where `url` says Redis is, with this TLS material; every file is
    /// read now, so a missing or unreadable one stops the process at start.
    pub fn topology(&self, url: &str) -> Result<Topology, ConfigError> {
        let invalid = |e: String| ConfigError::Invalid(format!("redis_url: {e}"));
        let tls_url = [CLUSTER_TLS_SCHEME, SENTINEL_TLS_SCHEME, "rediss://"]
            .iter()
            .any(|scheme| url.starts_with(scheme));
        if self.uses_files() && !tls_url {
            return Err(invalid(
                "redis_tls_* files are set, but redis_url is not rediss://, rediss+sentinel:// \
                 or rediss+cluster://"
                    .into(),
            ));
        }
        if url.starts_with(CLUSTER_SCHEME) || url.starts_with(CLUSTER_TLS_SCHEME) {
            let mut cluster = ClusterUrl::parse(url).map_err(|e| {
                invalid(
                    e.to_string()
                        .replace(SENTINEL_SCHEME, CLUSTER_SCHEME)
                        .replace("/<master name>[/<db>]", "")
                        .replace("rediss+sentinel://", "rediss+cluster://"),
                )
            })?;
            cluster.certificates = self.certificates()?;
            return Ok(Topology::Cluster(Arc::new(cluster)));
        }
        if url.starts_with(SENTINEL_SCHEME) || url.starts_with(SENTINEL_TLS_SCHEME) {
            let parsed = SentinelUrl::parse(url).map_err(|e| invalid(e.to_string()))?;
            let client = parsed
                .client(self.certificates()?)
                .map_err(|e| invalid(e.to_string()))?;
            return Ok(Topology::Sentinel(Arc::new(SentinelGroup {
                client: tokio::sync::Mutex::new(client),
                count: parsed.sentinels.len(),
            })));
        }
        self.client(url)
            .map(|client| Topology::Server(Box::new(client)))
    }

    fn uses_files(&self) -> bool {
        self.ca_file.is_some() || self.cert_file.is_some() || self.key_file.is_some()
    }

    /// The files, read; `None` when none is set (the system's CAs, no
    /// client certificate).
    fn certificates(&self) -> Result<Option<redis::TlsCertificates>, ConfigError> {
        let client_tls = match (self.cert_file, self.key_file) {
            (Some(cert), Some(key)) => Some(redis::ClientTlsConfig {
                client_cert: read(cert)?,
                client_key: read(key)?,
            }),
            (None, None) => None,
            _ => {
                return Err(ConfigError::Invalid(
                    "set both redis_tls_cert_file and redis_tls_key_file, or neither".into(),
                ))
            }
        };
        if !self.uses_files() {
            return Ok(None);
        }
        Ok(Some(redis::TlsCertificates {
            client_tls,
            root_cert: self.ca_file.map(read).transpose()?,
        }))
    }

    /// The client for one server at `url`.
    fn client(&self, url: &str) -> Result<redis::Client, ConfigError> {
        let invalid = |e: String| ConfigError::Invalid(format!("redis_url: {e}"));
        if self.uses_files() && !url.starts_with("rediss://") {
            return Err(ConfigError::Invalid(
                "redis_tls_* files are set, but redis_url is not rediss://".into(),
            ));
        }
        match self.certificates()? {
            None => redis::Client::open(url).map_err(|e| invalid(e.to_string())),
            Some(certificates) => {
                redis::Client::build_with_tls(url, certificates).map_err(|e| invalid(e.to_string()))
            }
        }
    }
}

fn read(path: &Path) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(path).map_err(|source| ConfigError::Read {
        path: PathBuf::from(path),
        source,
    })
}

/// rustls needs one cryptography provider per process; ring is ours.
/// Called before the first Redis connection (twice is harmless).
pub fn install_tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_files_need_a_rediss_url_and_come_in_pairs() {
        let dir = tempfile::tempdir().unwrap();
        let pem = dir.path().join("ca.pem");
        std::fs::write(&pem, "not checked until connecting").unwrap();
        let with_ca = RedisTls {
            ca_file: Some(&pem),
            ..Default::default()
        };
        let err = with_ca.client("redis://127.0.0.1:6379").unwrap_err();
        assert!(err.to_string().contains("not rediss://"), "{err}");
        let half = RedisTls {
            cert_file: Some(&pem),
            ..Default::default()
        };
        let err = half.client("rediss://127.0.0.1:6379").unwrap_err();
        assert!(err.to_string().contains("both"), "{err}");
        let missing = RedisTls {
            ca_file: Some(Path::new("/nonexistent/ca.pem")),
            ..Default::default()
        };
        let err = missing.client("rediss://127.0.0.1:6379").unwrap_err();
        assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
        assert!(RedisTls::default().client("redis://127.0.0.1:6379").is_ok());
        assert!(RedisTls::default()
            .client("rediss://127.0.0.1:6379")
            .is_ok());
        let sentinel = RedisTls::default().topology("redis+sentinel://127.0.0.1:26379/chat");
        assert!(sentinel.unwrap().follows_failovers());
        let over_tls = RedisTls::default().topology("rediss+sentinel://127.0.0.1:26379/chat");
        assert!(over_tls.unwrap().follows_failovers());
        let err = with_ca
            .topology("redis+sentinel://127.0.0.1:26379/chat")
            .unwrap_err();
        assert!(err.to_string().contains("rediss+sentinel://"), "{err}");
        let err = with_ca
            .topology("redis+cluster://127.0.0.1:7000")
            .unwrap_err();
        assert!(err.to_string().contains("rediss+cluster://"), "{err}");
        let Topology::Cluster(cluster) =
            with_ca.topology("rediss+cluster://127.0.0.1:7000").unwrap()
        else {
            panic!("not a cluster")
        };
        assert!(cluster.tls && cluster.certificates.is_some());
        let err = half
            .topology("rediss+cluster://127.0.0.1:7000")
            .unwrap_err();
        assert!(err.to_string().contains("both"), "{err}");
    }
}
