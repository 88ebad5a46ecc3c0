//! Where Redis is: one server (`redis://`, `rediss://`), the master of a
//! Sentinel group (`redis+sentinel://`), which moves when the group fails
//! over, or a Redis Cluster (`redis+cluster://`), where each room lives on
//! the shard that owns its hash tag and travels by sharded Pub/Sub
//! (`SPUBLISH`/`SSUBSCRIBE`), so that a room's messages reach only the
//! shard that owns it instead of every node.
//!
//! A cluster URL names some of its nodes (the others are found from them):
//! `redis+cluster://[user:password@]host:port[,host:port...]`.
//!
//! A Sentinel URL names the sentinels and the group:
//! `redis+sentinel://[user:password@]host:port[,host:port...]/<master name>[/<db>]`.
//! The user and password are the master's (an ACL user); the sentinels are
//! asked without credentials.
//!
//! `rediss+cluster://` and `rediss+sentinel://` are the same over TLS: to
//! every node of the cluster, or to the sentinels and to the master they
//! name, with the same CA and client certificate (`redis_tls_*`). A
//! certificate must then name each node as the others announce it (the IP
//! address that `CLUSTER SLOTS` or the sentinels give, unless the nodes
//! announce hostnames).

use std::sync::Arc;

use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{ConnectionAddr, RedisResult, TlsCertificates, TlsMode};
use tokio::sync::Mutex;

/// The scheme of a Sentinel group's URL.
pub const SENTINEL_SCHEME: &str = "redis+sentinel://";
/// The scheme of a Redis Cluster's URL.
pub const CLUSTER_SCHEME: &str = "redis+cluster://";
/// The same two over TLS.
pub const SENTINEL_TLS_SCHEME: &str = "rediss+sentinel://";
pub const CLUSTER_TLS_SCHEME: &str = "rediss+cluster://";

#[derive(Clone)]
pub enum Topology {
    /// One server, always at the same address.
    Server(Box<redis::Client>),
    /// The master of a Sentinel group: asked of the sentinels at each
    /// (re)connection.
    Sentinel(Arc<SentinelGroup>),
    /// A Redis Cluster, from these seed nodes.
    Cluster(Arc<ClusterUrl>),
}

impl std::fmt::Debug for Topology {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Topology::Server(client) => {
                write!(f, "Server({:?})", client.get_connection_info().addr())
            }
            Topology::Sentinel(_) => write!(f, "Sentinel"),
            Topology::Cluster(url) => write!(f, "Cluster({:?})", url.nodes),
        }
    }
}

/// A Sentinel group: the client that asks its sentinels, and how many
/// there are.
pub struct SentinelGroup {
    pub client: Mutex<SentinelClient>,
    pub count: usize,
}

/// Why a Sentinel URL is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SentinelUrlError {
    #[error(
        "expected {SENTINEL_SCHEME}[user:password@]host:port[,host:port...]/<master name>[/<db>] \
         (rediss+sentinel:// for TLS)"
    )]
    Shape,
    #[error("sentinel address \"{0}\" is not host:port")]
    Address(String),
    #[error("database \"{0}\" is not a number")]
    Database(String),
}

/// The parts of a Sentinel URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentinelUrl {
    pub sentinels: Vec<(String, u16)>,
    pub master: String,
    pub db: i64,
    pub username: Option<String>,
    pub password: Option<String>,
    /// `rediss+sentinel://`: TLS to the sentinels and to the master.
    pub tls: bool,
}

impl SentinelUrl {
    pub fn parse(url: &str) -> Result<Self, SentinelUrlError> {
        let (tls, rest) = after_scheme(url, SENTINEL_SCHEME, SENTINEL_TLS_SCHEME)?;
        let (userinfo, rest) = match rest.rsplit_once('@') {
            Some((userinfo, rest)) => (Some(userinfo), rest),
            None => (None, rest),
        };
        let (hosts, path) = rest.split_once('/').ok_or(SentinelUrlError::Shape)?;
        let mut path = path.split('/');
        let master = path
            .next()
            .filter(|m| !m.is_empty())
            .ok_or(SentinelUrlError::Shape)?;
        let db = match path.next().filter(|d| !d.is_empty()) {
            None => 0,
            Some(db) => db
                .parse()
                .map_err(|_| SentinelUrlError::Database(db.into()))?,
        };
        if path.next().is_some() {
            return Err(SentinelUrlError::Shape);
        }
        let sentinels = hosts
            .split(',')
            .map(|address| {
                let bad = || SentinelUrlError::Address(address.into());
                let (host, port) = address.rsplit_once(':').ok_or_else(bad)?;
                let port = port.parse().map_err(|_| bad())?;
                if host.is_empty() {
                    return Err(bad());
                }
                Ok((host.to_string(), port))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let (username, password) = match userinfo {
            None => (None, None),
            Some(info) => match info.split_once(':') {
                Some((user, password)) => (
                    Some(user.to_string()).filter(|u| !u.is_empty()),
                    Some(password.to_string()),
                ),
                None => (Some(info.to_string()), None),
            },
        };
        Ok(Self {
            sentinels,
            master: master.to_string(),
            db,
            username,
            password,
            tls,
        })
    }

    /// The client that asks these sentinels for the master; over TLS, it
    /// shows `certificates` to the sentinels and to the master alike.
    pub fn client(&self, certificates: Option<TlsCertificates>) -> RedisResult<SentinelClient> {
        let addresses = self
            .sentinels
            .iter()
            .map(|(host, port)| address(host, *port, self.tls));
        let mut builder =
            SentinelClientBuilder::new(addresses, &self.master, SentinelServerType::Master)?
                .set_client_to_redis_db(self.db);
        if let Some(user) = &self.username {
            builder = builder.set_client_to_redis_username(user);
        }
        if let Some(password) = &self.password {
            builder = builder.set_client_to_redis_password(password);
        }
        if self.tls {
            builder = builder
                .set_client_to_sentinel_tls_mode(TlsMode::Secure)
                .set_client_to_redis_tls_mode(TlsMode::Secure);
            if let Some(certificates) = certificates {
                builder = builder
                    .set_client_to_sentinel_certificates(certificates.clone())
                    .set_client_to_redis_certificates(certificates);
            }
        }
        builder.build()
    }
}

/// A Redis Cluster's seed nodes and credentials.
#[derive(Debug, Clone)]
pub struct ClusterUrl {
    pub nodes: Vec<(String, u16)>,
    pub username: Option<String>,
    pub password: Option<String>,
    /// `rediss+cluster://`: TLS to every node, with these files (none:
    /// the system's CAs and no client certificate).
    pub tls: bool,
    pub certificates: Option<TlsCertificates>,
}

impl ClusterUrl {
    pub fn parse(url: &str) -> Result<Self, SentinelUrlError> {
        let (tls, rest) = after_scheme(url, CLUSTER_SCHEME, CLUSTER_TLS_SCHEME)?;
        // Reuse the Sentinel parser: the same shape with a dummy group name.
        let as_sentinel = format!("{SENTINEL_SCHEME}{}/cluster", rest.trim_end_matches('/'));
        let parsed = SentinelUrl::parse(&as_sentinel)?;
        Ok(Self {
            nodes: parsed.sentinels,
            username: parsed.username,
            password: parsed.password,
            tls,
            certificates: None,
        })
    }

    /// A client of the cluster; `push` receives the sharded Pub/Sub
    /// messages (and disconnections) of its connections, over RESP3.
    pub fn client(
        &self,
        timeout: std::time::Duration,
        push: Option<tokio::sync::mpsc::UnboundedSender<redis::PushInfo>>,
    ) -> RedisResult<ClusterClient> {
        let nodes = self
            .nodes
            .iter()
            .map(|(host, port)| address(host, *port, self.tls));
        let mut builder = ClusterClientBuilder::new(nodes)
            .connection_timeout(timeout)
            .response_timeout(timeout)
            // A failover takes seconds: retry MOVED/TRYAGAIN/CLUSTERDOWN
            // briefly and answer 503 past the timeout rather than hang.
            .retries(3)
            .min_retry_wait(50)
            .max_retry_wait(500);
        if let Some(user) = &self.username {
            builder = builder.username(user);
        }
        if let Some(password) = &self.password {
            builder = builder.password(password);
        }
        if self.tls {
            builder = builder.tls(TlsMode::Secure);
            if let Some(certificates) = &self.certificates {
                builder = builder.certs(certificates.clone());
            }
        }
        if let Some(push) = push {
            builder = builder
                .use_protocol(redis::ProtocolVersion::RESP3)
                .push_sender(push);
        }
        builder.build()
    }
}

/// Whether `url` is the TLS form of its scheme, and what follows the
/// scheme.
fn after_scheme<'a>(
    url: &'a str,
    plain: &str,
    tls: &str,
) -> Result<(bool, &'a str), SentinelUrlError> {
    match url.strip_prefix(tls) {
        Some(rest) => Ok((true, rest)),
        None => url
            .strip_prefix(plain)
            .map(|rest| (false, rest))
            .ok_or(SentinelUrlError::Shape),
    }
}

/// A node's address, over TLS or not; the client builders fill in the
/// certificates of the TLS ones.
fn address(host: &str, port: u16, tls: bool) -> ConnectionAddr {
    if tls {
        ConnectionAddr::TcpTls {
            host: host.to_string(),
            port,
            insecure: false,
            tls_params: None,
        }
    } else {
        ConnectionAddr::Tcp(host.to_string(), port)
    }
}

impl Topology {
    /// A client for the master now: the server, or the one the sentinels
    /// name at this moment. A cluster has no one master.
    pub async fn master(&self) -> RedisResult<redis::Client> {
        match self {
            Topology::Server(client) => Ok((**client).clone()),
            Topology::Sentinel(group) => group.client.lock().await.async_get_client().await,
            Topology::Cluster(_) => Err((
                redis::ErrorKind::InvalidClientConfig,
                "a Redis Cluster has no single master",
            )
                .into()),
        }
    }

    /// How long finding the master may take: the sentinels are asked one
    /// after the other, each within `timeout`, so a dead first one must
    /// not use up the whole budget.
    pub fn resolve_budget(&self, timeout: std::time::Duration) -> std::time::Duration {
        match self {
            Topology::Sentinel(group) => timeout * (group.count as u32 + 1),
            _ => timeout,
        }
    }

    /// Whether room traffic uses sharded Pub/Sub (`SPUBLISH`).
    pub fn sharded(&self) -> bool {
        matches!(self, Topology::Cluster(_))
    }

    /// The command that publishes to a room's channel.
    pub fn publish_command(&self) -> &'static str {
        if self.sharded() {
            "SPUBLISH"
        } else {
            "PUBLISH"
        }
    }

    /// Whether the master can move (and is worth asking for again after
    /// trouble).
    pub fn follows_failovers(&self) -> bool {
        matches!(self, Topology::Sentinel(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentinel_urls_name_the_sentinels_the_master_and_the_database() {
        let url = SentinelUrl::parse(
            "redis+sentinel://chatup:s3cret@10.0.0.1:26379,sentinel-b:26380/chat/2",
        )
        .unwrap();
        assert_eq!(
            url,
            SentinelUrl {
                sentinels: vec![("10.0.0.1".into(), 26379), ("sentinel-b".into(), 26380)],
                master: "chat".into(),
                db: 2,
                username: Some("chatup".into()),
                password: Some("s3cret".into()),
                tls: false,
            }
        );
        let cluster = ClusterUrl::parse("redis+cluster://u:p@10.0.0.1:7000,10.0.0.2:7001").unwrap();
        assert_eq!(cluster.nodes.len(), 2);
        assert_eq!(cluster.password.as_deref(), Some("p"));
        assert!(!cluster.tls);
        assert!(ClusterUrl::parse("redis+cluster://10.0.0.1").is_err());
        assert!(
            ClusterUrl::parse("rediss+cluster://10.0.0.1:7000")
                .unwrap()
                .tls
        );
        assert!(
            SentinelUrl::parse("rediss+sentinel://10.0.0.1:26379/chat")
                .unwrap()
                .tls
        );
        let plain = SentinelUrl::parse("redis+sentinel://127.0.0.1:26379/mymaster").unwrap();
        assert_eq!(plain.db, 0);
        assert_eq!(plain.username, None);
        for bad in [
            "redis://127.0.0.1:26379/mymaster",
            "redis+sentinel://127.0.0.1:26379",
            "redis+sentinel://127.0.0.1:26379/",
            "redis+sentinel://127.0.0.1/mymaster",
            "redis+sentinel://127.0.0.1:26379/mymaster/x",
            "redis+sentinel://:26379/mymaster",
        ] {
            assert!(SentinelUrl::parse(bad).is_err(), "{bad}");
        }
    }
}
