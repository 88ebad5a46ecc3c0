//! A Redis Sentinel group of its own for tests: a master, a replica and
//! three sentinels (quorum 2), on run-time ports in a temp directory, tuned
//! to fail over within a few seconds of the master's death.

use std::process::{Child, Command};
use std::time::Duration;

use anyhow::Context;
use nix::sys::signal::Signal;

use crate::process::{free_port, log_file, redis_cli_with, stop, tcp_open, wait_until, RedisTls};

/// The group's name, as chatup's `redis+sentinel://.../<name>` names it.
pub const MASTER_NAME: &str = "chat";
/// A master silent for this long is down for a sentinel. Much shorter, and
/// a loaded 2-core machine makes a sentinel think a just-promoted master
/// is down too, and fail over again.
const DOWN_AFTER_MS: u64 = 2000;

struct Server {
    child: Option<Child>,
    port: u16,
}

pub struct SentinelGroup {
    servers: Vec<Server>,
    sentinels: Vec<Server>,
    /// Every server and sentinel serves TLS only, and wants the client
    /// certificate.
    tls: Option<RedisTls>,
    dir: tempfile::TempDir,
}

impl SentinelGroup {
    /// Starts the group and waits until it can fail over: the replica in
    /// sync, and every sentinel knowing the replica and the other two.
    pub fn start() -> anyhow::Result<Self> {
        Self::start_with(false)
    }

    /// The same group over TLS only (`rediss+sentinel://`): servers and
    /// sentinels want the test CA's client certificate, and talk to each
    /// other over TLS too.
    pub fn start_tls() -> anyhow::Result<Self> {
        Self::start_with(true)
    }

    fn start_with(tls: bool) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("chatup-sentinel-")
            .tempdir()?;
        let tls = match tls {
            true => Some(RedisTls::make(dir.path(), true, false)?),
            false => None,
        };
        let mut group = Self {
            servers: Vec::new(),
            sentinels: Vec::new(),
            tls,
            dir,
        };
        let master = free_port();
        group.start_server(master, None)?;
        let replica = free_port();
        group.start_server(replica, Some(master))?;
        wait_until("the replica in sync", Duration::from_secs(20), || {
            group
                .cli(replica, &["INFO", "replication"])
                .contains("master_link_status:up")
        })?;
        for n in 0..3 {
            let port = free_port();
            let conf = group.dir.path().join(format!("sentinel-{n}.conf"));
            std::fs::write(
                &conf,
                format!(
                    "port {port}\nbind 127.0.0.1\ndir {dir}\n\
                     sentinel monitor {MASTER_NAME} 127.0.0.1 {master} 2\n\
                     sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}\n\
                     sentinel failover-timeout {MASTER_NAME} 4000\n\
                     sentinel parallel-syncs {MASTER_NAME} 1\n{tls}",
                    dir = group.dir.path().display(),
                    tls = group.tls_conf_lines(port),
                ),
            )?;
            let log = format!("sentinel-{n}.log");
            let child = Command::new("redis-server")
                .arg(&conf)
                .arg("--sentinel")
                .stdout(log_file(group.dir.path(), &log)?)
                .stderr(log_file(group.dir.path(), &log)?)
                .spawn()
                .context("starting redis-server --sentinel")?;
            group.sentinels.push(Server {
                child: Some(child),
                port,
            });
            wait_until("a sentinel", Duration::from_secs(10), || tcp_open(port))?;
        }
        let ports: Vec<u16> = group.sentinels.iter().map(|s| s.port).collect();
        wait_until(
            "the sentinels knowing the replica and each other",
            Duration::from_secs(30),
            || {
                ports.iter().all(|&port| {
                    let master = group.cli(port, &["SENTINEL", "MASTER", MASTER_NAME]);
                    let fields: Vec<&str> = master.lines().collect();
                    let field = |name: &str| {
                        fields
                            .iter()
                            .position(|f| *f == name)
                            .and_then(|i| fields.get(i + 1))
                            .copied()
                    };
                    field("num-slaves") == Some("1") && field("num-other-sentinels") == Some("2")
                })
            },
        )?;
        Ok(group)
    }

    fn start_server(&mut self, port: u16, replica_of: Option<u16>) -> anyhow::Result<()> {
        let log = format!("redis-{port}.log");
        // Each server its own directory: a replica's synced RDB must not be
        // another server's.
        let own_dir = self.dir.path().join(format!("redis-{port}"));
        std::fs::create_dir_all(&own_dir)?;
        let mut command = Command::new("redis-server");
        command
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            // Persistence, as Sentinel wants of a master that a supervisor
            // restarts: one that came back empty could be promoted, and its
            // replicas would sync its emptiness.
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ])
            // A replica's first sync at once, not after the usual 5 s.
            .args(["--repl-diskless-sync-delay", "0"])
            .arg("--dir")
            .arg(&own_dir);
        if let Some(master) = replica_of {
            command.args(["--replicaof", "127.0.0.1", &master.to_string()]);
        }
        if let Some(tls) = &self.tls {
            command.args(tls.server_args(port));
        }
        let child = command
            .stdout(log_file(self.dir.path(), &log)?)
            .stderr(log_file(self.dir.path(), &log)?)
            .spawn()
            .context("starting redis-server (ci/setup.sh installs it)")?;
        self.servers.push(Server {
            child: Some(child),
            port,
        });
        wait_until("redis", Duration::from_secs(10), || tcp_open(port))
    }

    /// `redis_url` for chatup.
    pub fn url(&self) -> String {
        let sentinels: Vec<String> = self
            .sentinels
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port))
            .collect();
        let scheme = match self.tls {
            Some(_) => "rediss+sentinel",
            None => "redis+sentinel",
        };
        format!("{scheme}://{}/{MASTER_NAME}", sentinels.join(","))
    }

    /// `CONFIG SET <parameter> <value>` on every running server (not the
    /// sentinels).
    pub fn config_set(&self, parameter: &str, value: &str) -> anyhow::Result<()> {
        let running = self.servers.iter().filter(|s| s.child.is_some());
        crate::process::config_set_on(self.tls.as_ref(), running.map(|s| s.port), parameter, value)
    }

    /// The pids of the running servers (not the sentinels).
    pub fn server_pids(&self) -> Vec<u32> {
        self.servers
            .iter()
            .filter_map(|s| s.child.as_ref().map(Child::id))
            .collect()
    }

    /// The certificates of a TLS group.
    pub fn tls(&self) -> Option<&RedisTls> {
        self.tls.as_ref()
    }

    /// A sentinel's configuration lines for TLS on `port` (none without).
    fn tls_conf_lines(&self, port: u16) -> String {
        let Some(tls) = &self.tls else {
            return String::new();
        };
        tls.server_args(port)
            .chunks(2)
            .map(|pair| format!("{} {}\n", pair[0].trim_start_matches('-'), pair[1]))
            .collect()
    }

    /// The `redis-cli` answer of the server or sentinel at `port`.
    fn cli(&self, port: u16, args: &[&str]) -> String {
        redis_cli_with(self.tls.as_ref(), port, args)
    }

    /// The master's port, as the first sentinel that answers says.
    pub fn master_port(&self) -> Option<u16> {
        self.sentinels.iter().find_map(|s| {
            let answer = self.cli(
                s.port,
                &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME],
            );
            answer.lines().nth(1)?.parse().ok()
        })
    }

    /// Kills (SIGKILL) the master of the moment; returns its port.
    pub fn kill_master(&mut self) -> anyhow::Result<u16> {
        let port = self.master_port().context("no sentinel names a master")?;
        let server = self
            .servers
            .iter_mut()
            .find(|s| s.port == port)
            .context("the master is not one of ours")?;
        if let Some(mut child) = server.child.take() {
            stop(&mut child, Signal::SIGKILL);
        }
        Ok(port)
    }

    /// Starts the killed server at `port` again, as a supervisor would; the
    /// sentinels make it a replica of the new master. Returns once it is in
    /// sync.
    pub fn restart(&mut self, port: u16) -> anyhow::Result<()> {
        self.servers.retain(|s| s.port != port);
        self.start_server(port, None)?;
        wait_until(
            "the old master back as a replica",
            Duration::from_secs(30),
            || {
                self.cli(port, &["INFO", "replication"])
                    .contains("master_link_status:up")
            },
        )
    }

    /// Waits until every sentinel names the same master, other than `old`.
    pub fn wait_for_failover(&self, old: u16, timeout: Duration) -> anyhow::Result<u16> {
        let named = |port: u16| -> Option<u16> {
            self.cli(port, &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME])
                .lines()
                .nth(1)?
                .parse()
                .ok()
        };
        wait_until("a new master named by every sentinel", timeout, || {
            let masters: Vec<Option<u16>> = self.sentinels.iter().map(|s| named(s.port)).collect();
            masters
                .iter()
                .all(|m| m.is_some_and(|p| p != old) && *m == masters[0])
        })?;
        self.master_port().context("no master after the failover")
    }

    /// The `redis-cli` answer of the master of the moment.
    pub fn master_cli(&self, args: &[&str]) -> String {
        self.master_port()
            .map(|port| self.cli(port, args))
            .unwrap_or_default()
    }
}

impl Drop for SentinelGroup {
    fn drop(&mut self) {
        let logs: Vec<String> = std::fs::read_dir(self.dir.path())
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|name| name.ends_with(".log"))
            .collect();
        let names: Vec<&str> = logs.iter().map(String::as_str).collect();
        crate::process::print_logs_if_failing(self.dir.path(), &names);
        for server in self.sentinels.iter_mut().chain(self.servers.iter_mut()) {
            if let Some(mut child) = server.child.take() {
                stop(&mut child, Signal::SIGKILL);
            }
        }
    }
}
