//! The Debian packages, on this machine: built by packaging/build-debs.sh,
//! installed with `dpkg -i`, the services run as their systemd units say
//! (user, environment file, command; this machine has no systemd as PID 1,
//! so the test starts the units' `ExecStart` itself, and `systemd-analyze
//! verify` checks the units), nginx with the packaged module and site, a
//! message posted and read, and everything purged again.
//!
//! It changes the machine (packages, the `chatup` user, /etc/chatup), so it
//! needs root, and it purges the packages even when it fails.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chatup_testkit::clients::{get_json, SubscribeOptions};
use chatup_testkit::process::{free_port, stop, workspace_root};
use chatup_testkit::{token_for, Redis, Subscriber, Transport};

const PACKAGES: [&str; 2] = ["chatup", "libnginx-mod-http-chatup"];
const MODULE_LINK: &str = "/etc/nginx/modules-enabled/60-mod-http-chatup.conf";
const SITE: &str = "/etc/nginx/sites-available/chatup-worker";
/// What the test itself puts in /etc/chatup (the site's key and the ticket
/// secret): an administrator's files, removed by the test, not by dpkg.
const KEYS: [&str; 2] = [
    "/etc/chatup/site-jwt-public.pem",
    "/etc/chatup/ticket.secret",
];

fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("ok installed"))
}

/// Purges the packages and the test's files, also when the test fails.
struct Installation {
    processes: Vec<Child>,
}

impl Drop for Installation {
    fn drop(&mut self) {
        for child in &mut self.processes {
            stop(child, nix::sys::signal::Signal::SIGTERM);
        }
        for key in KEYS {
            let _ = std::fs::remove_file(key);
        }
        let _ = std::fs::remove_file("/etc/nginx/sites-enabled/chatup-worker");
        // Opened (so made) by `nginx -t` on Debian's configuration.
        let _ = std::fs::remove_file("/var/log/nginx/chatup-access.log");
        let _ = Command::new("dpkg").arg("--purge").args(PACKAGES).output();
    }
}

/// A unit's `Key=value` settings (the last one of each key).
fn unit_settings(unit: &str) -> HashMap<String, String> {
    std::fs::read_to_string(format!("/lib/systemd/system/{unit}"))
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

/// Starts a unit's `ExecStart` as its `User`, with its `EnvironmentFile`
/// and `UMask`, as systemd would.
fn start_unit(unit: &str, log: &Path) -> Child {
    let settings = unit_settings(unit);
    let user = &settings["User"];
    let env_file = settings["EnvironmentFile"].trim_start_matches('-');
    let env: Vec<(String, String)> = std::fs::read_to_string(env_file)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let umask = settings.get("UMask").map_or("0022", String::as_str);
    Command::new("setpriv")
        .args(["--reuid", user, "--regid", user, "--init-groups", "--"])
        .args([
            "sh",
            "-c",
            &format!("umask {umask}; exec {}", settings["ExecStart"]),
        ])
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .envs(env)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap()
}

fn wait_for(what: &str, log: &Path, ready: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !ready() {
        assert!(
            Instant::now() < deadline,
            "{what} not ready; log:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn debs() -> Vec<PathBuf> {
    let out = Command::new("bash")
        .arg(workspace_root().join("packaging/build-debs.sh"))
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    assert!(out.status.success(), "packaging/build-debs.sh failed");
    let debs: Vec<PathBuf> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(PathBuf::from)
        .collect();
    assert_eq!(debs.len(), 2, "{debs:?}");
    debs
}

#[tokio::test]
async fn the_packages_install_run_a_chat_and_purge_cleanly() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "installs Debian packages: run the tests as root (CI does)"
    );
    let debs = debs();
    let mut installation = Installation {
        processes: Vec::new(),
    };
    // A leftover of an interrupted run is purged first.
    let _ = Command::new("dpkg").arg("--purge").args(PACKAGES).output();

    let debs: Vec<&str> = debs.iter().map(|p| p.to_str().unwrap()).collect();
    run("dpkg", &[&["-i"], debs.as_slice()].concat());
    assert!(PACKAGES.iter().all(|p| installed(p)));
    // What the packages set up.
    assert!(run("/usr/bin/chatup", &["--version"]).starts_with("chatup "));
    assert_eq!(
        std::fs::read_link(MODULE_LINK).unwrap(),
        Path::new("/usr/share/nginx/modules-available/mod-http-chatup.conf")
    );
    assert!(run("id", &["-nG", "www-data"])
        .split_whitespace()
        .any(|g| g == "chatup"));
    let run_dir = std::fs::metadata("/run/chatup").expect("/run/chatup made by tmpfiles.d");
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    assert_eq!(run_dir.permissions().mode() & 0o7777, 0o750);
    let chatup_uid = run("id", &["-u", "chatup"]).trim().parse::<u32>().unwrap();
    assert_eq!(run_dir.uid(), chatup_uid);
    let worker_toml = std::fs::metadata("/etc/chatup/worker.toml").unwrap();
    assert_eq!(
        worker_toml.permissions().mode() & 0o777,
        0o640,
        "settings may hold secrets"
    );
    let env_file = std::fs::metadata("/etc/default/chatup-worker").unwrap();
    assert_eq!(
        env_file.permissions().mode() & 0o777,
        0o640,
        "so may the environment"
    );
    for unit in ["chatup-worker.service", "chatup-dispatcher.service"] {
        run(
            "systemd-analyze",
            &["verify", &format!("/lib/systemd/system/{unit}")],
        );
    }

    // The site's key and the ticket secret, as the site file asks.
    let dev_keys = workspace_root().join("conf/dev-keys");
    std::fs::copy(dev_keys.join("jwt-rs256.pub"), KEYS[0]).unwrap();
    std::fs::copy(dev_keys.join("ticket-hs256.secret"), KEYS[1]).unwrap();
    for key in KEYS {
        run("chown", &["root:chatup", key]);
        run("chmod", &["0640", key]);
    }
    // Debian's own nginx takes the packaged module and site.
    std::os::unix::fs::symlink(SITE, "/etc/nginx/sites-enabled/chatup-worker").unwrap();
    let debian_conf_ok = Command::new("nginx").args(["-t", "-q"]).status().unwrap();
    std::fs::remove_file("/etc/nginx/sites-enabled/chatup-worker").unwrap();
    assert!(debian_conf_ok.success(), "nginx -t with the site enabled");

    // Run it: Redis, nginx with the packaged site on a free port, both
    // services with their shipped settings (local ones in /etc/default).
    let redis = Redis::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (http, dispatcher_port, operator_port) = (free_port(), free_port(), free_port());
    let site = std::fs::read_to_string(SITE)
        .unwrap()
        .replace("listen 80;", &format!("listen 127.0.0.1:{http};"))
        // What the header of the site file asks to set: the site's issuer.
        .replace(
            "chatup_jwt_issuer https://www.example.com;",
            &format!("chatup_jwt_issuer {};", chatup_testkit::token::DEV_ISSUER),
        )
        .replace(
            "/var/log/nginx/chatup-access.log",
            &dir.path().join("access.log").display().to_string(),
        );
    std::fs::write(dir.path().join("site.conf"), site).unwrap();
    let nginx_conf = format!(
        "user www-data;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log notice;\n\
         include /etc/nginx/modules-enabled/*.conf;\nevents {{ worker_connections 1024; }}\n\
         http {{ include /etc/nginx/mime.types; default_type application/octet-stream; include {d}/site.conf; }}\n",
        d = dir.path().display()
    );
    std::fs::write(dir.path().join("nginx.conf"), nginx_conf).unwrap();
    std::fs::write(
        "/etc/default/chatup-worker",
        format!(
            "CHATUP_REDIS_URL={}\nCHATUP_WORKER_ID=packaged\nCHATUP_PUBLIC_URL=http://127.0.0.1:{http}\n",
            redis.url()
        ),
    )
    .unwrap();
    std::fs::write(
        "/etc/default/chatup-dispatcher",
        format!(
            "CHATUP_REDIS_URL={}\nCHATUP_LISTEN=127.0.0.1:{dispatcher_port}\n\
             CHATUP_OPERATOR_LISTEN=127.0.0.1:{operator_port}\nCHATUP_TICKET_SECRET_FILE={}\n",
            redis.url(),
            KEYS[1]
        ),
    )
    .unwrap();

    let nginx_log = dir.path().join("nginx-stderr.log");
    installation.processes.push(
        Command::new("nginx")
            .args(["-c", dir.path().join("nginx.conf").to_str().unwrap()])
            .args(["-g", "daemon off;"])
            .stderr(std::fs::File::create(&nginx_log).unwrap())
            .spawn()
            .unwrap(),
    );
    wait_for("nginx", &nginx_log, || {
        std::net::TcpStream::connect(("127.0.0.1", http)).is_ok()
    });
    let worker_log = dir.path().join("worker.log");
    installation
        .processes
        .push(start_unit("chatup-worker.service", &worker_log));
    wait_for("chatup worker", &worker_log, || {
        Path::new("/run/chatup/sidecar.sock").exists()
    });
    let dispatcher_log = dir.path().join("dispatcher.log");
    installation
        .processes
        .push(start_unit("chatup-dispatcher.service", &dispatcher_log));
    wait_for("chatup dispatcher", &dispatcher_log, || {
        std::net::TcpStream::connect(("127.0.0.1", dispatcher_port)).is_ok()
    });

    // A chat: the dispatcher sends the reader to the packaged worker, a
    // post reaches the reader and the history.
    let client = reqwest::Client::new();
    let dispatcher = format!("http://127.0.0.1:{dispatcher_port}");
    let deadline = Instant::now() + Duration::from_secs(15);
    let join = loop {
        let answer = client
            .post(format!("{dispatcher}/join/lobby"))
            .send()
            .await
            .unwrap();
        if answer.status() == 200 {
            break answer.json::<serde_json::Value>().await.unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "no worker announced: {}",
            answer.status()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let worker_url = join["worker"]["url"].as_str().unwrap().to_owned();
    assert_eq!(worker_url, format!("http://127.0.0.1:{http}"));
    let mut reader = Subscriber::open_at(
        Transport::WebSocket,
        &worker_url,
        "lobby",
        SubscribeOptions::default(),
    )
    .await
    .unwrap();
    let token = token_for("deb-user", "Deb");
    let posted = client
        .post(format!("{worker_url}/rooms/lobby/messages"))
        .bearer_auth(&token)
        .header("Content-Type", "application/json")
        .body(r#"{"msg":"installed with dpkg"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status(), 202, "{}", posted.text().await.unwrap());
    let frame = reader
        .next_frame(Duration::from_secs(10))
        .await
        .unwrap_or_else(|| {
            panic!(
                "nothing delivered; worker log:\n{}",
                std::fs::read_to_string(&worker_log).unwrap_or_default()
            )
        });
    assert_eq!(frame.items[0]["msg"], "installed with dpkg");
    let (_, history) = get_json(&format!("{dispatcher}/rooms/lobby/messages")).await;
    assert!(
        history.to_string().contains("installed with dpkg"),
        "{history}"
    );

    // Stop (SIGTERM drains), remove the administrator's files, purge.
    for mut child in installation.processes.drain(..).rev() {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        let status = child.wait().unwrap();
        assert!(status.success(), "a process stopped with {status}");
    }
    assert!(
        !Path::new("/run/chatup/sidecar.sock").exists(),
        "the worker removes its socket when it stops"
    );
    for key in KEYS {
        std::fs::remove_file(key).unwrap();
    }
    run("dpkg", &[&["--purge"], PACKAGES.as_slice()].concat());
    assert!(PACKAGES.iter().all(|p| !installed(p)));
    for gone in [
        "/usr/bin/chatup",
        "/etc/chatup",
        "/etc/default/chatup-worker",
        "/lib/systemd/system/chatup-worker.service",
        "/usr/lib/nginx/modules/ngx_http_chatup_module.so",
        SITE,
    ] {
        assert!(!Path::new(gone).exists(), "{gone} is left after the purge");
    }
    assert!(
        std::fs::symlink_metadata(MODULE_LINK).is_err()
            && std::fs::symlink_metadata(format!("{MODULE_LINK}.removed")).is_err(),
        "the module's link is left after the purge"
    );
    // Debian's nginx is as before.
    assert!(Command::new("nginx")
        .args(["-t", "-q"])
        .status()
        .unwrap()
        .success());
}
