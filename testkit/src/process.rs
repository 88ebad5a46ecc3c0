//! Starting and stopping the real servers.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// The workspace root (this crate lives one level below it).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

pub fn chatup_bin() -> PathBuf {
    std::env::var_os("CHATUP_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| target_dir().join("debug/chatup"))
}

pub fn chatup_module() -> PathBuf {
    std::env::var_os("CHATUP_MODULE")
        .map(PathBuf::from)
        .unwrap_or_else(|| target_dir().join("release/libngx_chatup.so"))
}

/// The module built with debug assertions (`ci/test.sh` builds it with
/// `CARGO_PROFILE=dev nginx-build/build.sh`).
pub fn chatup_debug_module() -> PathBuf {
    std::env::var_os("CHATUP_DEBUG_MODULE")
        .map(PathBuf::from)
        .unwrap_or_else(|| target_dir().join("debug/libngx_chatup.so"))
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Polls `ready` until it holds or `timeout` passes.
pub fn wait_until(
    what: &str,
    timeout: Duration,
    mut ready: impl FnMut() -> bool,
) -> anyhow::Result<()> {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if ready() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    bail!("{what} not ready after {timeout:?}")
}

/// `redis-cli` against a local port: its trimmed output.
/// `CONFIG SET <parameter> <value>` on each server at `ports`.
pub(crate) fn config_set_on(
    tls: Option<&RedisTls>,
    ports: impl IntoIterator<Item = u16>,
    parameter: &str,
    value: &str,
) -> anyhow::Result<()> {
    for port in ports {
        let answer = redis_cli_with(tls, port, &["CONFIG", "SET", parameter, value]);
        anyhow::ensure!(
            answer == "OK",
            "CONFIG SET {parameter} on :{port}: {answer}"
        );
    }
    Ok(())
}

/// `redis-cli` of a server that may want TLS (with the client certificate).
pub(crate) fn redis_cli_with(tls: Option<&RedisTls>, port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-p", &port.to_string(), "--raw"])
        .args(tls.map(RedisTls::cli_args).unwrap_or_default())
        .args(args)
        .output()
        .expect("redis-cli");
    String::from_utf8_lossy(&out.stdout).trim_end().to_string()
}

pub(crate) fn tcp_open(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
}

fn unix_open(path: &Path) -> bool {
    std::os::unix::net::UnixStream::connect(path).is_ok()
}

/// Stops a child: SIGTERM, then SIGKILL if it lingers.
pub fn stop(child: &mut Child, signal: Signal) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    let _ = kill(Pid::from_raw(child.id() as i32), signal);
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(5) {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

pub(crate) fn log_file(dir: &Path, name: &str) -> anyhow::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(name))
        .context("log file")
}

/// When a test fails: prints the last lines of each log, and with
/// `CHATUP_KEEP_FAILED_LOGS=<dir>` keeps whole copies there (the temp
/// directories go with the test).
pub(crate) fn print_logs_if_failing(dir: &Path, names: &[&str]) {
    if !std::thread::panicking() {
        return;
    }
    if let Some(keep) = std::env::var_os("CHATUP_KEEP_FAILED_LOGS") {
        let keep = PathBuf::from(keep);
        let prefix = dir.file_name().unwrap_or_default().to_string_lossy();
        let _ = std::fs::create_dir_all(&keep);
        for name in names {
            let _ = std::fs::copy(dir.join(name), keep.join(format!("{prefix}-{name}")));
        }
    }
    for name in names {
        if let Ok(text) = std::fs::read_to_string(dir.join(name)) {
            let tail: Vec<&str> = text.lines().rev().take(40).collect();
            eprintln!("----- {} (last lines) -----", dir.join(name).display());
            for line in tail.into_iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}

/// A redis-server of its own, on a run-time port.
pub struct Redis {
    child: Option<Child>,
    pub port: u16,
    /// Every write is in the append-only file before it is acknowledged,
    /// so a restart (even after SIGKILL) keeps the data.
    persistent: bool,
    /// Served over TLS only (`rediss://`), with certificates made for it.
    tls: Option<RedisTls>,
    dir: tempfile::TempDir,
}

/// The certificates of a TLS Redis, made by `openssl` in its directory: a
/// CA, the server's certificate for 127.0.0.1, and a client certificate.
#[derive(Debug, Clone)]
pub struct RedisTls {
    pub ca_file: PathBuf,
    pub client_cert_file: PathBuf,
    pub client_key_file: PathBuf,
    server_cert_file: PathBuf,
    server_key_file: PathBuf,
    /// Whether clients must show a certificate (`tls-auth-clients`).
    clients_need_certificates: bool,
    /// Whether only the ACL user `chatup` (password `secret`) gets in (the
    /// default user is off).
    acl_user: bool,
}

impl RedisTls {
    pub(crate) fn make(
        dir: &Path,
        clients_need_certificates: bool,
        acl_user: bool,
    ) -> anyhow::Result<Self> {
        let certs = crate::certs::TestCertificates::make(dir)?;
        Ok(Self {
            ca_file: certs.ca_file,
            client_cert_file: certs.client_cert_file,
            client_key_file: certs.client_key_file,
            server_cert_file: certs.server_cert_file,
            server_key_file: certs.server_key_file,
            clients_need_certificates,
            acl_user,
        })
    }
}

impl RedisTls {
    /// redis-server's arguments to serve TLS only, on `port`, with these
    /// certificates; its own connections to other servers (replication,
    /// the cluster bus, a sentinel's) use TLS too, and show its
    /// certificate.
    pub(crate) fn server_args(&self, port: u16) -> Vec<String> {
        let path = |p: &PathBuf| p.display().to_string();
        let auth = if self.clients_need_certificates {
            "yes"
        } else {
            "no"
        };
        [
            ("port", "0".to_string()),
            ("tls-port", port.to_string()),
            ("tls-cert-file", path(&self.server_cert_file)),
            ("tls-key-file", path(&self.server_key_file)),
            ("tls-ca-cert-file", path(&self.ca_file)),
            ("tls-auth-clients", auth.to_string()),
            ("tls-replication", "yes".to_string()),
        ]
        .into_iter()
        .flat_map(|(key, value)| [format!("--{key}"), value])
        .collect()
    }

    /// A chat worker's configuration lines (TOML, top-level keys) to reach
    /// such a server with the CA and the client certificate.
    pub fn worker_settings(&self) -> String {
        [
            ("redis_tls_ca_file", &self.ca_file),
            ("redis_tls_cert_file", &self.client_cert_file),
            ("redis_tls_key_file", &self.client_key_file),
        ]
        .iter()
        .map(|(key, path)| format!("{key} = \"{}\"\n", path.display()))
        .collect()
    }

    /// The dispatcher's flags for the same.
    pub fn dispatcher_flags(&self) -> Vec<String> {
        [
            ("--redis-tls-ca-file", &self.ca_file),
            ("--redis-tls-cert-file", &self.client_cert_file),
            ("--redis-tls-key-file", &self.client_key_file),
        ]
        .iter()
        .flat_map(|(flag, path)| [flag.to_string(), path.display().to_string()])
        .collect()
    }

    /// `redis-cli`'s arguments to talk to such a server.
    pub(crate) fn cli_args(&self) -> Vec<String> {
        let path = |p: &PathBuf| p.display().to_string();
        vec![
            "--tls".into(),
            "--cacert".into(),
            path(&self.ca_file),
            "--cert".into(),
            path(&self.client_cert_file),
            "--key".into(),
            path(&self.client_key_file),
        ]
    }
}

impl Redis {
    /// A Redis that keeps nothing across restarts.
    pub fn start() -> anyhow::Result<Self> {
        Self::start_with(false)
    }

    /// A Redis whose data survives a restart (`appendfsync always`).
    pub fn start_persistent() -> anyhow::Result<Self> {
        Self::start_with(true)
    }

    /// A Redis reached over TLS only, with a test CA; with
    /// `clients_need_certificates`, a client must show the client
    /// certificate too; with `acl_user`, only the ACL user `chatup`
    /// (password `secret`, in [`url`](Self::url)) gets in.
    pub fn start_tls(clients_need_certificates: bool, acl_user: bool) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix("chatup-redis-").tempdir()?;
        let tls = RedisTls::make(dir.path(), clients_need_certificates, acl_user)?;
        let mut redis = Self {
            child: None,
            port: free_port(),
            persistent: false,
            tls: Some(tls),
            dir,
        };
        redis.spawn()?;
        Ok(redis)
    }

    fn start_with(persistent: bool) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix("chatup-redis-").tempdir()?;
        let mut redis = Self {
            child: None,
            port: free_port(),
            persistent,
            tls: None,
            dir,
        };
        redis.spawn()?;
        Ok(redis)
    }

    /// The redis-server's pid, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The certificates of a TLS Redis.
    pub fn tls(&self) -> Option<&RedisTls> {
        self.tls.as_ref()
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let aof: &[&str] = if self.persistent {
            &["--appendonly", "yes", "--appendfsync", "always"]
        } else {
            &["--appendonly", "no"]
        };
        let listen: Vec<String> = match &self.tls {
            None => vec!["--port".into(), self.port.to_string()],
            Some(tls) => tls.server_args(self.port),
        };
        let acl: &[&str] = match &self.tls {
            Some(tls) if tls.acl_user => &[
                "--user", "chatup", "on", ">secret", "~*", "&*", "+@all", "--user", "default",
                "off",
            ],
            _ => &[],
        };
        let child = Command::new("redis-server")
            .args(listen)
            .args(acl)
            .args(["--bind", "127.0.0.1", "--save", ""])
            .args(aof)
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(log_file(self.dir.path(), "redis.log")?)
            .stderr(log_file(self.dir.path(), "redis.log")?)
            .spawn()
            .context("starting redis-server (is it installed? ci/setup.sh installs it)")?;
        self.child = Some(child);
        let port = self.port;
        wait_until("redis", Duration::from_secs(10), || tcp_open(port))
    }

    pub fn url(&self) -> String {
        match &self.tls {
            None => format!("redis://127.0.0.1:{}", self.port),
            Some(tls) if tls.acl_user => format!("rediss://chatup:secret@127.0.0.1:{}", self.port),
            Some(_) => format!("rediss://127.0.0.1:{}", self.port),
        }
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            stop(&mut child, Signal::SIGKILL);
        }
    }

    /// Kills (SIGKILL) and starts again on the same port: with no data,
    /// unless persistent.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        self.spawn()
    }

    pub fn client(&self) -> anyhow::Result<redis_probe::Probe> {
        Ok(redis_probe::Probe { port: self.port })
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        print_logs_if_failing(self.dir.path(), &["redis.log"]);
        self.stop();
    }
}

/// Minimal Redis commands for assertions, over a plain TCP socket with
/// `redis-cli` so the harness needs no client library of its own.
pub mod redis_probe {
    use std::process::Command;

    pub struct Probe {
        pub port: u16,
    }

    impl Probe {
        pub fn cmd(&self, args: &[&str]) -> String {
            let out = Command::new("redis-cli")
                .args(["-p", &self.port.to_string(), "--raw"])
                .args(args)
                .output()
                .expect("redis-cli");
            String::from_utf8_lossy(&out.stdout).trim_end().to_string()
        }
    }
}

/// Settings of a chat worker under test.
#[derive(Clone, Debug)]
pub struct WorkerOptions {
    pub batch_window_ms: u64,
    pub room_sweep_secs: u64,
    pub heartbeat_interval_ms: u64,
    pub heartbeat_ttl_ms: u64,
    pub presence_threshold: u64,
    pub count_interval_ms: u64,
    pub history_ttl_secs: u64,
    /// The worker's TOML configuration file (rate limits, filters: the
    /// settings that have no flag). By default the rate limits are off.
    pub config_toml: String,
    /// Announce the worker to dispatchers (with its public URL).
    pub announce: bool,
    /// Accept the original ChatUp's tokens (`_public` and `name`, no
    /// `exp`, `iss` or `aud`): the shipped configuration's commented
    /// migration lines, turned on.
    pub original_tokens: bool,
    /// `chatup_readers_additional_rooms on` (the shipped configuration's
    /// commented line, turned on).
    pub additional_rooms: bool,
    /// Edits of the shipped nginx configuration: each `(from, to)`
    /// replaces every `from` (which must be there) with `to`.
    pub nginx_conf_edits: Vec<(String, String)>,
    /// `hot_room_rate` (the shipped 50 is for people; the tests' and the
    /// benchmarks' load generators post faster and count every delivery:
    /// 0, off, by default).
    pub hot_room_rate: u64,
    /// `chatup_max_readers` of the worker's nginx (the shipped 0 by default).
    pub max_readers: u64,
    /// Reach Redis here instead (a `proxy::Proxy` in front of it, say).
    pub redis_url: Option<String>,
    /// Load this build of the module instead of the release one.
    pub module: Option<PathBuf>,
    /// nginx's `worker_connections` instead of the shipped value.
    pub worker_connections: Option<u64>,
    /// Serve HTTPS and WSS with this certificate and key (as
    /// docs/operations.md says to), and announce an `https://` URL.
    pub https: Option<(PathBuf, PathBuf)>,
    /// The sidecar's `CHATUP_LOG` filter: the tests read its debug lines;
    /// the benchmarks run the shipped default (`info`), as writing a line
    /// per message is a cost of its own.
    pub log_filter: String,
}

impl WorkerOptions {
    /// The shipped configuration's intervals (conf/chatup-worker.toml:
    /// heartbeats every second, not the tests' 200 ms, whose cost per room
    /// would be measured), with the rate limits off so that the load
    /// generator's few users can post at any rate.
    pub fn for_benchmarks() -> Self {
        Self {
            heartbeat_interval_ms: 1000,
            heartbeat_ttl_ms: 3000,
            log_filter: "info".into(),
            ..Self::default()
        }
    }

    /// These settings, reaching Redis over TLS with `tls`'s CA and client
    /// certificate.
    pub fn with_redis_tls(self, tls: &RedisTls) -> Self {
        Self {
            // Top-level keys go before the tables of the configuration.
            config_toml: format!("{}{}", tls.worker_settings(), self.config_toml),
            ..self
        }
    }
}

impl Default for WorkerOptions {
    fn default() -> Self {
        Self {
            batch_window_ms: 30,
            room_sweep_secs: 10,
            heartbeat_interval_ms: 200,
            heartbeat_ttl_ms: 1000,
            presence_threshold: 200,
            count_interval_ms: 5000,
            history_ttl_secs: 3600,
            config_toml: "[rate_limit]\nrate_per_sec = 0\nuser_rate_per_sec = 0\n".into(),
            announce: true,
            original_tokens: false,
            additional_rooms: false,
            nginx_conf_edits: Vec::new(),
            hot_room_rate: 0,
            max_readers: 0,
            redis_url: None,
            module: None,
            worker_connections: None,
            https: None,
            log_filter: "info,chatup=debug".into(),
        }
    }
}

/// One chat worker: nginx (nchan + the module, rendered from
/// conf/chatup-worker.nginx.conf) and its `chatup worker` sidecar.
pub struct ChatWorker {
    nginx: Option<Child>,
    sidecar: Option<Child>,
    /// The worker's id in the registry.
    pub id: String,
    pub port: u16,
    redis_url: String,
    options: WorkerOptions,
    /// When nginx was last started (just before).
    nginx_started: std::time::SystemTime,
    dir: tempfile::TempDir,
}

impl ChatWorker {
    pub fn start(redis: &Redis) -> anyhow::Result<Self> {
        Self::start_with(redis, WorkerOptions::default())
    }

    pub fn start_with(redis: &Redis, options: WorkerOptions) -> anyhow::Result<Self> {
        let url = options.redis_url.clone().unwrap_or_else(|| redis.url());
        Self::start_at(&url, options)
    }

    /// A chat worker whose sidecar uses the Redis at `redis_url` (one
    /// server, a Sentinel group or a cluster), with these settings.
    pub fn start_at(redis_url: &str, options: WorkerOptions) -> anyhow::Result<Self> {
        // 0700, as ci/run-local.sh and the deployment docs make a run
        // directory: it is what keeps local users off nginx's internal
        // socket (nginx makes unix sockets 0666). tempfile's own default
        // follows the umask (0755 here).
        let dir = tempfile::Builder::new()
            .prefix("chatup-worker-")
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .tempdir()?;
        std::fs::create_dir_all(dir.path().join("tmp"))?;
        let port = free_port();
        let mut worker = Self {
            nginx: None,
            sidecar: None,
            id: format!("w{port}"),
            port,
            redis_url: redis_url.to_owned(),
            options,
            nginx_started: std::time::SystemTime::now(),
            dir,
        };
        // nginx first: the sidecar's first heartbeat then finds it up and
        // announces the worker at once.
        worker.start_nginx()?;
        worker.start_sidecar()?;
        Ok(worker)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Waits until the wall clock is past the second nginx started in.
    /// Within that second the module treats every resume id as possibly
    /// from a previous nginx (the reader then gets the channel from its
    /// oldest frame and drops what it has): a test of exact resumption
    /// starts after it.
    pub fn wait_past_start_second(&self) {
        let second = |t: std::time::SystemTime| {
            t.duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0)
        };
        let started = second(self.nginx_started);
        let _ = wait_until("the next second", Duration::from_secs(2), || {
            second(std::time::SystemTime::now()) > started
        });
    }

    pub fn base_url(&self) -> String {
        let scheme = if self.options.https.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    pub fn ws_url(&self) -> String {
        let scheme = if self.options.https.is_some() {
            "wss"
        } else {
            "ws"
        };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// Renders the shipped nginx configuration for this worker.
    pub fn render_nginx_conf(dir: &Path, port: u16, public_key: &Path) -> anyhow::Result<String> {
        let template =
            std::fs::read_to_string(workspace_root().join("conf/chatup-worker.nginx.conf"))?;
        let user = std::env::var("USER")
            .ok()
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| "root".into());
        Ok(template
            .replace("{{ACCESS_LOG}}", "{{RUN_DIR}}/nginx-access.log")
            .replace("{{RUN_DIR}}", &dir.display().to_string())
            .replace("{{LISTEN}}", &format!("127.0.0.1:{port}"))
            .replace("{{NGINX_USER}}", &user)
            .replace(
                "{{NCHAN_MODULE}}",
                "/usr/lib/nginx/modules/ngx_nchan_module.so",
            )
            .replace("{{CHATUP_MODULE}}", &chatup_module().display().to_string())
            .replace("{{JWT_PUBLIC_KEY}}", &public_key.display().to_string())
            .replace("{{JWT_ISSUER}}", crate::token::DEV_ISSUER)
            .replace(
                "{{TICKET_SECRET}}",
                &crate::token::ticket_secret_path().display().to_string(),
            ))
    }

    fn start_nginx(&mut self) -> anyhow::Result<()> {
        let mut conf = Self::render_nginx_conf(
            self.dir.path(),
            self.port,
            &workspace_root().join("conf/dev-keys/jwt-rs256.pub"),
        )?;
        if let Some(module) = &self.options.module {
            anyhow::ensure!(
                module.exists(),
                "{} is missing: ci/test.sh builds it",
                module.display()
            );
            conf = conf.replace(
                &chatup_module().display().to_string(),
                &module.display().to_string(),
            );
        }
        if let Some(n) = self.options.worker_connections {
            let shipped = "worker_connections 16384;";
            anyhow::ensure!(conf.contains(shipped), "the template has no `{shipped}`");
            conf = conf.replace(shipped, &format!("worker_connections {n};"));
        }
        for (from, to) in &self.options.nginx_conf_edits {
            anyhow::ensure!(conf.contains(from.as_str()), "the template has no `{from}`");
            conf = conf.replace(from.as_str(), to);
        }
        if self.options.additional_rooms {
            let commented = "# chatup_readers_additional_rooms on;";
            anyhow::ensure!(
                conf.contains(commented),
                "the template has no `{commented}`"
            );
            conf = conf.replace(commented, "chatup_readers_additional_rooms on;");
        }
        if self.options.original_tokens {
            for shipped in ["chatup_jwt_issuer ", "chatup_jwt_audience "] {
                let line = conf
                    .lines()
                    .find(|l| l.trim_start().starts_with(shipped))
                    .ok_or_else(|| anyhow::anyhow!("the template has no `{shipped}`"))?
                    .to_string();
                conf = conf.replace(&line, "");
            }
            for migration in [
                "chatup_jwt_original_claims on;",
                "chatup_jwt_require_exp off;",
            ] {
                let commented = format!("# {migration}");
                anyhow::ensure!(
                    conf.contains(&commented),
                    "the template has no `{commented}`"
                );
                conf = conf.replace(&commented, migration);
            }
        }
        if self.options.max_readers > 0 {
            let shipped = "chatup_max_readers 0;";
            anyhow::ensure!(conf.contains(shipped), "the template has no `{shipped}`");
            conf = conf.replace(
                shipped,
                &format!("chatup_max_readers {};", self.options.max_readers),
            );
        }
        if let Some((cert, key)) = &self.options.https {
            let shipped = format!("listen 127.0.0.1:{};", self.port);
            anyhow::ensure!(conf.contains(&shipped), "the template has no `{shipped}`");
            conf = conf.replace(
                &shipped,
                &format!(
                    "listen 127.0.0.1:{} ssl;\n        ssl_certificate {};\n        ssl_certificate_key {};",
                    self.port,
                    cert.display(),
                    key.display()
                ),
            );
        }
        let conf_path = self.dir.path().join("nginx.conf");
        std::fs::write(&conf_path, conf)?;
        self.nginx_started = std::time::SystemTime::now();
        let child = Command::new("nginx")
            .arg("-p")
            .arg(self.dir.path())
            .arg("-c")
            .arg(&conf_path)
            .args(["-g", "daemon off;"])
            .stdout(Stdio::null())
            .stderr(log_file(self.dir.path(), "nginx-stderr.log")?)
            .spawn()
            .context("starting nginx (ci/setup.sh installs it)")?;
        self.nginx = Some(child);
        let (port, internal) = (self.port, self.dir.path().join("nginx-internal.sock"));
        wait_until("nginx", Duration::from_secs(10), || {
            tcp_open(port) && unix_open(&internal)
        })
        .with_context(|| {
            let stderr = std::fs::read_to_string(self.dir.path().join("nginx-stderr.log"))
                .unwrap_or_default();
            format!("nginx stderr: {stderr}")
        })?;
        // Its sockets answer, so its zone was made (the module's start
        // second): on a loaded machine that can be a second after the spawn.
        self.nginx_started = std::time::SystemTime::now();
        Ok(())
    }

    pub fn start_sidecar(&mut self) -> anyhow::Result<()> {
        let dir = self.dir.path();
        let options = &self.options;
        let config = dir.join("worker.toml");
        std::fs::write(&config, &options.config_toml)?;
        let mut command = Command::new(chatup_bin());
        command
            .arg("worker")
            .arg("--config")
            .arg(&config)
            .args(["--worker-id", &self.id])
            .args(["--redis-url", &self.redis_url])
            .arg("--listen")
            .arg(dir.join("sidecar.sock"))
            .arg("--nchan-socket")
            .arg(dir.join("nginx-internal.sock"))
            // The shipped socket_mode (660) and a 0700 run directory, as
            // ci/run-local.sh and the deployment docs set them up.
            .args(["--batch-window-ms", &options.batch_window_ms.to_string()])
            .args(["--hot-room-rate", &options.hot_room_rate.to_string()])
            .args(["--room-sweep-secs", &options.room_sweep_secs.to_string()])
            .args([
                "--heartbeat-interval-ms",
                &options.heartbeat_interval_ms.to_string(),
            ])
            .args(["--heartbeat-ttl-ms", &options.heartbeat_ttl_ms.to_string()])
            .args([
                "--presence-threshold",
                &options.presence_threshold.to_string(),
            ])
            .args([
                "--count-interval-ms",
                &options.count_interval_ms.to_string(),
            ])
            .args(["--history-ttl-secs", &options.history_ttl_secs.to_string()])
            .env("CHATUP_LOG", &options.log_filter)
            .stdout(Stdio::null())
            .stderr(log_file(dir, "sidecar.log")?);
        if options.announce {
            command.args(["--public-url", &self.base_url()]);
        }
        let child = command
            .spawn()
            .with_context(|| format!("starting {}", chatup_bin().display()))?;
        self.sidecar = Some(child);
        let socket = dir.join("sidecar.sock");
        wait_until("chatup worker", Duration::from_secs(10), || {
            unix_open(&socket)
        })
        .with_context(|| format!("sidecar log: {}", self.sidecar_log()))
    }

    /// Stops the sidecar with SIGTERM (it drains) and waits for it.
    pub fn stop_sidecar(&mut self) {
        if let Some(mut child) = self.sidecar.take() {
            stop(&mut child, Signal::SIGTERM);
        }
    }

    /// Stops nginx (SIGTERM, master and workers) and starts it again: a
    /// restart, not a reload, so its shared memory and nchan's channels
    /// start empty.
    pub fn restart_nginx(&mut self) -> anyhow::Result<()> {
        self.kill_nginx();
        self.start_nginx()
    }

    /// Kills the sidecar with SIGKILL: no drain, no goodbye.
    pub fn kill_sidecar(&mut self) {
        if let Some(mut child) = self.sidecar.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The sidecar's pid, while it runs.
    pub fn sidecar_pid(&self) -> Option<u32> {
        self.sidecar.as_ref().map(Child::id)
    }

    /// nginx's master process, while it runs.
    pub fn nginx_pid(&self) -> Option<u32> {
        self.nginx.as_ref().map(Child::id)
    }

    /// The pids of nginx's worker processes.
    pub fn nginx_worker_pids(&self) -> Vec<u32> {
        self.nginx
            .as_ref()
            .map(|n| children_of(n.id()))
            .unwrap_or_default()
    }

    /// Kills nginx (master and workers) at once, leaving the sidecar.
    pub fn kill_nginx(&mut self) {
        if let Some(mut child) = self.nginx.take() {
            // SIGTERM is nginx's fast shutdown of master and workers; the
            // sidecar goes on and must notice.
            stop(&mut child, Signal::SIGTERM);
        }
    }

    /// Kills the sidecar and nginx (master and worker processes) at once,
    /// as a machine dying would: connections drop without goodbyes.
    pub fn kill(&mut self) {
        // The master first: killed before it, its workers would be
        // respawned; then the workers it leaves behind.
        let workers = self
            .nginx
            .as_ref()
            .map(|n| children_of(n.id()))
            .unwrap_or_default();
        for child in [self.sidecar.take(), self.nginx.take()]
            .into_iter()
            .flatten()
        {
            let mut child = child;
            let _ = child.kill();
            let _ = child.wait();
        }
        for pid in workers {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
    }

    /// Sends `method path` to nginx's internal socket (nchan's publisher,
    /// the module's `/readers`), as the sidecar does; the raw answer.
    pub async fn internal_request(&self, method: &str, path: &str) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let socket = self.dir.path().join("nginx-internal.sock");
        let mut socket = tokio::net::UnixStream::connect(socket).await.unwrap();
        let request =
            format!("{method} {path} HTTP/1.1\r\nHost: chatup\r\nConnection: close\r\n\r\n");
        socket.write_all(request.as_bytes()).await.unwrap();
        let mut answer = String::new();
        socket.read_to_string(&mut answer).await.unwrap();
        answer
    }

    /// The nchan channel of `room`'s current serving here, as the module
    /// names it (see `chatup_wire::readers::channel`).
    pub async fn channel_of(&self, room: &str) -> Option<String> {
        let answer = self.internal_request("GET", "/readers?boot=&since=0").await;
        let body = answer.split_once("\r\n\r\n").map(|(_, body)| body)?;
        let changes: chatup_wire::readers::ReaderChanges = serde_json::from_str(body).ok()?;
        changes.rooms.into_iter().find(|r| r.room == room)?.channel
    }

    /// The sidecar's log so far.
    pub fn sidecar_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sidecar.log")).unwrap_or_default()
    }

    /// nginx's error log so far.
    pub fn nginx_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("nginx-error.log")).unwrap_or_default()
    }
}

impl Drop for ChatWorker {
    fn drop(&mut self) {
        print_logs_if_failing(
            self.dir.path(),
            &["sidecar.log", "nginx-error.log", "nginx-stderr.log"],
        );
        self.stop_sidecar();
        if let Some(mut child) = self.nginx.take() {
            // SIGTERM: nginx's fast shutdown, master and workers.
            stop(&mut child, Signal::SIGTERM);
        }
        // nginx's master replaces a worker process that crashed, and the
        // clients reconnect: a test could pass over a crash in the module
        // (or in nchan) without this.
        let error_log = self.nginx_log();
        let crashes = nginx_crashes(&error_log);
        if !crashes.is_empty() && !std::thread::panicking() {
            panic!("nginx worker processes crashed:\n{}", crashes.join("\n"));
        }
    }
}

/// The lines of an nginx error log that tell of a worker process killed
/// by a crash (not by a test's SIGKILL, signal 9).
pub fn nginx_crashes(error_log: &str) -> Vec<&str> {
    error_log
        .lines()
        .filter(|line| {
            line.split_once("exited on signal ")
                .is_some_and(|(_, rest)| {
                    let signal: String = rest.chars().take_while(char::is_ascii_digit).collect();
                    signal != "9"
                })
        })
        .collect()
}

/// The child processes of `pid` (nginx's worker processes, for its master).
pub(crate) fn children_of(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// Writes `conf` as `dir`/nginx.conf and starts nginx with it in the
/// foreground, its stderr in `dir`/nginx-stderr.log.
fn spawn_nginx(dir: &Path, conf: &str) -> anyhow::Result<Child> {
    let conf_path = dir.join("nginx.conf");
    std::fs::write(&conf_path, conf)?;
    Command::new("nginx")
        .arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(&conf_path)
        .args(["-g", "daemon off;"])
        .stdout(Stdio::null())
        .stderr(log_file(dir, "nginx-stderr.log")?)
        .spawn()
        .context("starting nginx (ci/setup.sh installs it)")
}

/// nginx with nchan alone (no ChatUp module, no sidecar): the reference
/// benchmarks compare ChatUp with. Readers subscribe at `/sub/{room}` as on
/// a chat worker; frames are published at `/pub/{room}` on the same port.
pub struct RawNchan {
    nginx: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
}

impl RawNchan {
    pub fn start() -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix("chatup-nchan-").tempdir()?;
        let port = free_port();
        let run = dir.path().display().to_string();
        // The same nchan and connection settings as the shipped chat worker.
        let conf = format!(
            r#"load_module /usr/lib/nginx/modules/ngx_nchan_module.so;
worker_processes auto;
pid {run}/nginx.pid;
error_log {run}/nginx-error.log notice;
events {{ worker_connections 16384; }}
http {{
    access_log off;
    client_body_temp_path {run}/body;
    proxy_temp_path {run}/proxy;
    fastcgi_temp_path {run}/fastcgi;
    uwsgi_temp_path {run}/uwsgi;
    scgi_temp_path {run}/scgi;
    nchan_shared_memory_size 128M;
    nchan_message_buffer_length 100;
    nchan_message_timeout 10m;
    server {{
        listen 127.0.0.1:{port};
        location ~ "^/sub/(?<room>[A-Za-z0-9][A-Za-z0-9_.:-]{{0,63}})$" {{
            nchan_subscriber websocket eventsource longpoll;
            nchan_channel_id $room;
            nchan_subscriber_first_message oldest;
            nchan_websocket_ping_interval 30;
            nchan_eventsource_ping_interval 30;
            nchan_access_control_allow_credentials off;
        }}
        location ~ "^/pub/(?<room>[A-Za-z0-9][A-Za-z0-9_.:-]{{0,63}})$" {{
            nchan_publisher http;
            nchan_channel_id $room;
        }}
    }}
}}
"#
        );
        let child = spawn_nginx(dir.path(), &conf)?;
        let raw = Self {
            nginx: Some(child),
            port,
            dir,
        };
        wait_until("raw nchan", Duration::from_secs(10), || tcp_open(port))?;
        Ok(raw)
    }

    pub fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}", self.port)
    }

    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// nginx's master process, while it runs.
    pub fn nginx_pid(&self) -> Option<u32> {
        self.nginx.as_ref().map(Child::id)
    }
}

impl Drop for RawNchan {
    fn drop(&mut self) {
        print_logs_if_failing(self.dir.path(), &["nginx-error.log", "nginx-stderr.log"]);
        if let Some(mut child) = self.nginx.take() {
            stop(&mut child, Signal::SIGTERM);
        }
    }
}

/// A `chatup dispatcher` on a run-time port.
pub struct Dispatcher {
    child: Option<Child>,
    pub port: u16,
    /// The operator API's port (`/workers`).
    pub operator_port: u16,
    dir: tempfile::TempDir,
}

impl Dispatcher {
    pub fn start(redis: &Redis) -> anyhow::Result<Self> {
        Self::start_on(&redis.url())
    }

    /// A dispatcher using the Redis at `redis_url` (which may be down).
    pub fn start_on(redis_url: &str) -> anyhow::Result<Self> {
        Self::start_with(redis_url, &[])
    }

    /// A dispatcher with the original ChatUp's API on (its endpoints, and
    /// its tokens: `_public` and `name`, no `exp`, `iss` or `aud`).
    pub fn start_original(redis: &Redis, extra: &[&str]) -> anyhow::Result<Self> {
        let mut args = vec![
            "--original-api",
            "true",
            "--accept-tokens-without-exp",
            "true",
            "--user-audience",
            "",
        ];
        args.extend_from_slice(extra);
        Self::start_with(&redis.url(), &args)
    }

    /// A dispatcher that also serves the built client under `/demo/` and
    /// mints development tokens (`POST /dev/token`), for browser tests.
    pub fn start_with_demo(redis: &Redis) -> anyhow::Result<Self> {
        let (demo, key) = Self::demo()?;
        Self::start_with(
            &redis.url(),
            &["--demo-dir", &demo, "--dev-token-key", &key],
        )
    }

    /// The same, with the original ChatUp's API on (see `start_original`).
    pub fn start_original_with_demo(redis: &Redis) -> anyhow::Result<Self> {
        let (demo, key) = Self::demo()?;
        Self::start_original(redis, &["--demo-dir", &demo, "--dev-token-key", &key])
    }

    /// The built client's directory and the development signing key.
    fn demo() -> anyhow::Result<(String, String)> {
        let root = workspace_root();
        let demo = root.join("client/dist");
        anyhow::ensure!(
            demo.join("chatup.min.js").exists(),
            "{} is not built: run ci/setup.sh",
            demo.display()
        );
        Ok((
            demo.display().to_string(),
            root.join("conf/dev-keys/jwt-rs256.key")
                .display()
                .to_string(),
        ))
    }

    /// A dispatcher using the Redis at `redis_url`, with these flags too.
    /// A port taken between choosing it and binding it (by another test)
    /// makes the dispatcher exit at once: then it starts again on others.
    pub fn start_with(redis_url: &str, extra: &[&str]) -> anyhow::Result<Self> {
        let mut attempt = 0;
        loop {
            match Self::start_once(redis_url, extra) {
                Err(e) if e.to_string().contains("exited") && attempt < 2 => attempt += 1,
                result => return result,
            }
        }
    }

    fn start_once(redis_url: &str, extra: &[&str]) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("chatup-dispatcher-")
            .tempdir()?;
        let port = free_port();
        let operator_port = free_port();
        let child = Command::new(chatup_bin())
            .arg("dispatcher")
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--operator-listen", &format!("127.0.0.1:{operator_port}")])
            .args(["--redis-url", redis_url])
            .args(["--redis-timeout-ms", "500"])
            .arg("--server-secret-file")
            .arg(crate::token::server_secret_path())
            .arg("--ticket-secret-file")
            .arg(crate::token::ticket_secret_path())
            // The workers' key: token rooms are checked here as there.
            .arg("--user-public-key")
            .arg(workspace_root().join("conf/dev-keys/jwt-rs256.pub"))
            // The original ChatUp's tokens name no issuer.
            .args(if extra.contains(&"--original-api") {
                vec![]
            } else {
                vec!["--user-issuer", crate::token::DEV_ISSUER]
            })
            .args(extra)
            .env("CHATUP_LOG", "info,chatup=debug")
            .stdout(Stdio::null())
            .stderr(log_file(dir.path(), "dispatcher.log")?)
            .spawn()
            .with_context(|| format!("starting {}", chatup_bin().display()))?;
        let mut dispatcher = Self {
            child: Some(child),
            port,
            operator_port,
            dir,
        };
        let mut exited = false;
        let ready = wait_until("chatup dispatcher", Duration::from_secs(10), || {
            exited = dispatcher
                .child
                .as_mut()
                .is_some_and(|c| matches!(c.try_wait(), Ok(Some(_))));
            exited || tcp_open(port)
        });
        if exited || ready.is_err() {
            let what = if exited {
                "exited at start"
            } else {
                "not ready after 10 s"
            };
            anyhow::bail!("chatup dispatcher {what}; its log:\n{}", dispatcher.log());
        }
        Ok(dispatcher)
    }

    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The operator API (`/workers`).
    pub fn operator_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.operator_port)
    }

    /// Two chat workers and a dispatcher on the Redis at `redis_url` (one
    /// server, a Sentinel group or a cluster), over TLS with `tls`'s CA
    /// and client certificate if given; returns once both workers are
    /// announced.
    pub async fn with_two_workers(
        redis_url: &str,
        tls: Option<&RedisTls>,
    ) -> anyhow::Result<(ChatWorker, ChatWorker, Dispatcher)> {
        let (options, flags) = match tls {
            Some(tls) => (
                WorkerOptions::default().with_redis_tls(tls),
                tls.dispatcher_flags(),
            ),
            None => (WorkerOptions::default(), Vec::new()),
        };
        let a = ChatWorker::start_at(redis_url, options.clone())?;
        let b = ChatWorker::start_at(redis_url, options)?;
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        let dispatcher = Dispatcher::start_with(redis_url, &flags)?;
        dispatcher.wait_for_workers(2).await;
        Ok((a, b, dispatcher))
    }

    /// Waits (15 s at most) until `count` workers are announced.
    pub async fn wait_for_workers(&self, count: usize) {
        let url = format!("{}/workers", self.operator_url());
        crate::clients::eventually(
            "the workers announced",
            Duration::from_secs(15),
            async || {
                let (_, body) = crate::clients::get_json(&url).await;
                (body["workers"].as_array().map(Vec::len) == Some(count)).then_some(())
            },
        )
        .await;
    }

    /// The dispatcher's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dispatcher.log")).unwrap_or_default()
    }
}

impl Drop for Dispatcher {
    fn drop(&mut self) {
        print_logs_if_failing(self.dir.path(), &["dispatcher.log"]);
        if let Some(mut child) = self.child.take() {
            stop(&mut child, Signal::SIGTERM);
        }
    }
}

/// nginx serving HTTPS in front of a dispatcher, from the shipped
/// conf/chatup-dispatcher.nginx.conf.
pub struct DispatcherTlsFront {
    nginx: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
}

impl DispatcherTlsFront {
    pub fn start(dispatcher_port: u16, cert: &Path, key: &Path) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("chatup-dispatcher-tls-")
            .tempdir()?;
        std::fs::create_dir_all(dir.path().join("tmp"))?;
        let port = free_port();
        let template =
            std::fs::read_to_string(workspace_root().join("conf/chatup-dispatcher.nginx.conf"))?;
        let conf = template
            .replace("{{RUN_DIR}}", &dir.path().display().to_string())
            .replace("{{LISTEN}}", &format!("127.0.0.1:{port}"))
            .replace("{{CERT}}", &cert.display().to_string())
            .replace("{{KEY}}", &key.display().to_string())
            .replace("{{DISPATCHER}}", &format!("127.0.0.1:{dispatcher_port}"));
        let child = spawn_nginx(dir.path(), &conf)?;
        let front = Self {
            nginx: Some(child),
            port,
            dir,
        };
        wait_until("nginx (TLS front)", Duration::from_secs(10), || {
            tcp_open(port)
        })
        .with_context(|| {
            std::fs::read_to_string(front.dir.path().join("nginx-stderr.log")).unwrap_or_default()
        })?;
        Ok(front)
    }

    pub fn base_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }
}

impl Drop for DispatcherTlsFront {
    fn drop(&mut self) {
        if let Some(mut child) = self.nginx.take() {
            // nginx's master stops its workers on SIGTERM (fast shutdown).
            stop(&mut child, Signal::SIGTERM);
        }
    }
}

#[cfg(test)]
mod crash_tests {
    use super::nginx_crashes;

    #[test]
    fn crashes_are_worker_exits_on_a_signal_other_than_sigkill() {
        let log = "2026/11/30 13:00:00 [alert] 10#10: worker process 12 exited on signal 11 (core dumped)\n\
                   2026/11/30 13:00:01 [alert] 10#10: worker process 13 exited on signal 9\n\
                   2026/11/30 13:00:02 [notice] 10#10: signal 17 (SIGCHLD) received from 14\n\
                   2026/11/30 13:00:03 [alert] 10#10: worker process 14 exited on signal 6\n";
        let crashes = nginx_crashes(log);
        assert_eq!(crashes.len(), 2, "{crashes:?}");
        assert!(crashes[0].contains("signal 11") && crashes[1].contains("signal 6"));
    }
}
