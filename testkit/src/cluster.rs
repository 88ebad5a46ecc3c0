//! A Redis Cluster of its own for tests: three masters and three replicas
//! (`redis-cli --cluster create`), on run-time ports in a temp directory;
//! over TLS, or without replicas, for some tests and benchmarks.

use std::process::{Child, Command};
use std::time::Duration;

use anyhow::Context;
use nix::sys::signal::Signal;

use crate::process::{
    free_port, log_file, print_logs_if_failing, redis_cli_with, stop, tcp_open, wait_until,
    RedisTls,
};

struct Node {
    child: Option<Child>,
    port: u16,
}

pub struct RedisCluster {
    nodes: Vec<Node>,
    /// Every node serves TLS only (clients, replication and the cluster
    /// bus), and wants the client certificate.
    tls: Option<RedisTls>,
    dir: tempfile::TempDir,
}

impl RedisCluster {
    /// Starts six nodes, makes them a cluster of three shards, and waits
    /// until every node says the cluster is ok and every replica is in
    /// sync.
    pub fn start() -> anyhow::Result<Self> {
        Self::start_with(false, 1)
    }

    /// The same cluster over TLS only (`rediss+cluster://`).
    pub fn start_tls() -> anyhow::Result<Self> {
        Self::start_with(true, 1)
    }

    /// Three masters and no replica (for benchmarks: the same durability
    /// as one server without a replica).
    pub fn start_without_replicas() -> anyhow::Result<Self> {
        Self::start_with(false, 0)
    }

    fn start_with(tls: bool, replicas_per_master: usize) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("chatup-cluster-")
            .tempdir()?;
        let tls = match tls {
            true => Some(RedisTls::make(dir.path(), true, false)?),
            false => None,
        };
        let mut cluster = Self {
            nodes: Vec::new(),
            tls,
            dir,
        };
        for _ in 0..3 * (1 + replicas_per_master) {
            let port = free_port();
            cluster.start_node(port)?;
        }
        let addresses: Vec<String> = cluster
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let out = Command::new("redis-cli")
            .args(
                cluster
                    .tls
                    .as_ref()
                    .map(RedisTls::cli_args)
                    .unwrap_or_default(),
            )
            .args(["--cluster", "create"])
            .args(&addresses)
            .args(["--cluster-replicas", &replicas_per_master.to_string()])
            .arg("--cluster-yes")
            .output()
            .context("redis-cli --cluster create")?;
        anyhow::ensure!(
            out.status.success(),
            "redis-cli --cluster create: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let ports: Vec<u16> = cluster.nodes.iter().map(|n| n.port).collect();
        wait_until(
            "the cluster ok on every node",
            Duration::from_secs(30),
            || {
                ports.iter().all(|&p| {
                    cluster
                        .cli(p, &["CLUSTER", "INFO"])
                        .contains("cluster_state:ok")
                })
            },
        )?;
        // A replica still syncing makes a `WAIT 1` answer 0 (a post refused
        // with 503): wait until every replica is linked and every master
        // has its replicas online.
        if replicas_per_master > 0 {
            wait_until("every replica in sync", Duration::from_secs(30), || {
                ports.iter().all(|&p| {
                    let info = cluster.cli(p, &["INFO", "replication"]);
                    if info.contains("role:master") {
                        info.matches("state=online").count() >= replicas_per_master
                    } else {
                        info.contains("master_link_status:up")
                    }
                })
            })?;
            // And acknowledging: a replica online may still be loading
            // what it was sent (a CI run saw a `WAIT 1` of a worker's first
            // post answer 0 after a second, three seconds after the start).
            wait_until(
                "every master's replicas acknowledging",
                Duration::from_secs(30),
                || {
                    ports.iter().all(|&p| {
                        let info = cluster.cli(p, &["INFO", "replication"]);
                        !info.contains("role:master")
                            || cluster
                                .cli(p, &["WAIT", &replicas_per_master.to_string(), "1000"])
                                .trim()
                                == replicas_per_master.to_string()
                    })
                },
            )?;
        }
        Ok(cluster)
    }

    fn start_node(&mut self, port: u16) -> anyhow::Result<()> {
        let own_dir = self.dir.path().join(format!("node-{port}"));
        std::fs::create_dir_all(&own_dir)?;
        let log = format!("node-{port}.log");
        let listen = match &self.tls {
            Some(tls) => [
                tls.server_args(port),
                vec!["--tls-cluster".into(), "yes".into()],
            ]
            .concat(),
            None => vec!["--port".into(), port.to_string()],
        };
        let child = Command::new("redis-server")
            .args(listen)
            .args(["--bind", "127.0.0.1"])
            .args(["--cluster-enabled", "yes", "--cluster-node-timeout", "2000"])
            .args(["--save", "", "--appendonly", "yes"])
            .args(["--repl-diskless-sync-delay", "0"])
            .arg("--dir")
            .arg(&own_dir)
            .stdout(log_file(self.dir.path(), &log)?)
            .stderr(log_file(self.dir.path(), &log)?)
            .spawn()
            .context("starting redis-server (ci/setup.sh installs it)")?;
        self.nodes.push(Node {
            child: Some(child),
            port,
        });
        wait_until("a cluster node", Duration::from_secs(10), || tcp_open(port))
    }

    /// `redis_url` for chatup: three of the nodes as seeds.
    pub fn url(&self) -> String {
        let seeds: Vec<String> = self
            .nodes
            .iter()
            .take(3)
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let scheme = match self.tls {
            Some(_) => "rediss+cluster",
            None => "redis+cluster",
        };
        format!("{scheme}://{}", seeds.join(","))
    }

    /// The certificates of a TLS cluster.
    pub fn tls(&self) -> Option<&RedisTls> {
        self.tls.as_ref()
    }

    /// The ports of the masters now.
    pub fn master_ports(&self) -> Vec<u16> {
        self.nodes
            .iter()
            .filter(|n| n.child.is_some())
            .map(|n| n.port)
            .filter(|&p| self.cli(p, &["ROLE"]).starts_with("master"))
            .collect()
    }

    /// The port of the master that owns `key`'s slot, as a live node says.
    pub fn master_of(&self, key: &str) -> Option<u16> {
        let live = self.nodes.iter().find(|n| n.child.is_some())?.port;
        let slot: u16 = self.cli(live, &["CLUSTER", "KEYSLOT", key]).parse().ok()?;
        self.cli(live, &["CLUSTER", "NODES"]).lines().find_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let flags = fields.get(2)?;
            if !flags.contains("master") || flags.contains("fail") {
                return None;
            }
            let owns = fields.iter().skip(8).any(|range| {
                let (from, to) = range.split_once('-').unwrap_or((range, range));
                matches!((from.parse::<u16>(), to.parse::<u16>()), (Ok(f), Ok(t)) if f <= slot && slot <= t)
            });
            let port = fields.get(1)?.split('@').next()?.rsplit(':').next()?.parse().ok()?;
            owns.then_some(port)
        })
    }

    /// Kills (SIGKILL) the node at `port`.
    pub fn kill(&mut self, port: u16) {
        if let Some(node) = self.nodes.iter_mut().find(|n| n.port == port) {
            if let Some(mut child) = node.child.take() {
                stop(&mut child, Signal::SIGKILL);
            }
        }
    }

    /// Starts the killed node at `port` again (its directory keeps its
    /// cluster identity: it comes back as a replica of its old shard), and
    /// waits until it is in sync.
    pub fn restart(&mut self, port: u16) -> anyhow::Result<()> {
        self.nodes.retain(|n| n.port != port);
        self.start_node(port)?;
        wait_until(
            "the node back as a replica",
            Duration::from_secs(30),
            || {
                self.cli(port, &["INFO", "replication"])
                    .contains("master_link_status:up")
            },
        )
    }

    /// Waits until a master other than `old` owns `key`'s slot, and every
    /// live node says the cluster is ok.
    pub fn wait_for_failover(&self, key: &str, old: u16, timeout: Duration) -> anyhow::Result<u16> {
        let live: Vec<u16> = self
            .nodes
            .iter()
            .filter(|n| n.child.is_some())
            .map(|n| n.port)
            .collect();
        wait_until("a replica promoted", timeout, || {
            self.master_of(key).is_some_and(|p| p != old)
                && live.iter().all(|&p| {
                    self.cli(p, &["CLUSTER", "INFO"])
                        .contains("cluster_state:ok")
                })
        })?;
        self.master_of(key).context("no master after the failover")
    }

    /// Moves `key`'s slot, with its keys, from its master to the master at
    /// `to`, as `redis-cli --cluster reshard` does for each slot:
    /// IMPORTING/MIGRATING, MIGRATE of its keys, then the new owner told to
    /// every master.
    pub fn move_slot_of(&self, key: &str, to: u16) -> anyhow::Result<()> {
        let from = self.master_of(key).context("no owner")?;
        let slot = self.cli(from, &["CLUSTER", "KEYSLOT", key]);
        let (from_id, to_id) = (
            self.cli(from, &["CLUSTER", "MYID"]),
            self.cli(to, &["CLUSTER", "MYID"]),
        );
        let ok = |answer: String, what: &str| {
            anyhow::ensure!(answer == "OK", "{what}: {answer}");
            Ok(())
        };
        ok(
            self.cli(to, &["CLUSTER", "SETSLOT", &slot, "IMPORTING", &from_id]),
            "importing",
        )?;
        ok(
            self.cli(from, &["CLUSTER", "SETSLOT", &slot, "MIGRATING", &to_id]),
            "migrating",
        )?;
        loop {
            let keys = self.cli(from, &["CLUSTER", "GETKEYSINSLOT", &slot, "100"]);
            if keys.is_empty() {
                break;
            }
            let port = to.to_string();
            for key in keys.lines() {
                let mut migrate = vec!["MIGRATE", "127.0.0.1", &port, key, "0", "5000"];
                // A worker's presence keys (`:w:<worker>:`) are rewritten at
                // every heartbeat, and can be written on the target too
                // while the slot moves: the newest copy wins, as with
                // `redis-cli --cluster reshard --cluster-replace`. Messages'
                // keys never exist on both sides.
                if key.contains(":w:") {
                    migrate.push("REPLACE");
                }
                let answer = self.cli(from, &migrate);
                anyhow::ensure!(
                    answer == "OK" || answer == "NOKEY",
                    "migrate {key}: {answer} (type on the target: {})",
                    self.cli(to, &["TYPE", key])
                );
            }
        }
        for master in self.master_ports() {
            ok(
                self.cli(master, &["CLUSTER", "SETSLOT", &slot, "NODE", &to_id]),
                "node",
            )?;
        }
        Ok(())
    }

    /// `CONFIG SET <parameter> <value>` on every running node.
    pub fn config_set(&self, parameter: &str, value: &str) -> anyhow::Result<()> {
        let running = self.nodes.iter().filter(|n| n.child.is_some());
        crate::process::config_set_on(self.tls.as_ref(), running.map(|n| n.port), parameter, value)
    }

    /// The pids of the running nodes.
    pub fn pids(&self) -> Vec<u32> {
        self.nodes
            .iter()
            .filter_map(|n| n.child.as_ref().map(Child::id))
            .collect()
    }

    /// The `redis-cli` answer of the node at `port`.
    pub fn cli(&self, port: u16, args: &[&str]) -> String {
        redis_cli_with(self.tls.as_ref(), port, args)
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        let logs: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("node-{}.log", n.port))
            .collect();
        let names: Vec<&str> = logs.iter().map(String::as_str).collect();
        print_logs_if_failing(self.dir.path(), &names);
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                stop(&mut child, Signal::SIGKILL);
            }
        }
    }
}
