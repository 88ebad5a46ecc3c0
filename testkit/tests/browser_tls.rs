//! The widget over HTTPS and WSS in headless Chromium: a chat worker whose
//! nginx serves TLS (configured as docs/operations.md says), the dispatcher
//! behind the shipped conf/chatup-dispatcher.nginx.conf, certificates from
//! a test CA that Chromium trusts through its NSS database, as a visitor's
//! browser trusts a real CA: no certificate error is ignored.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chatup_testkit::certs::TestCertificates;
use chatup_testkit::process::{workspace_root, DispatcherTlsFront, WorkerOptions};
use chatup_testkit::token::server_secret_path;
use chatup_testkit::{ChatWorker, Dispatcher, Redis};

#[test]
fn two_pages_chat_over_https_and_wss_with_a_ca_the_browser_trusts() {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        std::path::Path::new(&chromium).exists(),
        "{chromium} is missing: ci/setup.sh installs Debian's chromium"
    );
    let dir = tempfile::tempdir().unwrap();
    let certs = TestCertificates::make(dir.path()).unwrap();
    let browser_home = certs.browser_home(dir.path()).unwrap();

    let redis = Redis::start().unwrap();
    let worker = ChatWorker::start_with(
        &redis,
        WorkerOptions {
            https: Some((
                certs.server_cert_file.clone(),
                certs.server_key_file.clone(),
            )),
            ..WorkerOptions::default()
        },
    )
    .unwrap();
    assert!(worker.base_url().starts_with("https://"));
    let dispatcher = Dispatcher::start_with_demo(&redis).unwrap();
    let front = DispatcherTlsFront::start(
        dispatcher.port,
        &certs.server_cert_file,
        &certs.server_key_file,
    )
    .unwrap();
    // The worker is announced with its https:// URL.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let output = Command::new("curl")
            .args(["-s", &format!("{}/workers", dispatcher.operator_url())])
            .output()
            .unwrap();
        if String::from_utf8_lossy(&output.stdout).contains(&worker.base_url()) {
            break;
        }
        assert!(Instant::now() < deadline, "worker not announced");
        std::thread::sleep(Duration::from_millis(100));
    }

    let mut node = Command::new("node")
        .arg("test/e2e/run.mjs")
        .current_dir(workspace_root().join("client"))
        .env("CHATUP_DISPATCHER", front.base_url())
        .env("CHATUP_SERVER_SECRET", server_secret_path())
        .env("CHATUP_ARTIFACTS", workspace_root().join("target/e2e-tls"))
        .env("CHATUP_E2E_ONLY", "two pages chat with each other")
        .env("CHATUP_BROWSER_HOME", &browser_home)
        .env("CHROMIUM", &chromium)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("node (ci/setup.sh builds the client)");
    let stdout = BufReader::new(node.stdout.take().unwrap());
    let mut summary = None;
    for line in stdout.lines() {
        let line = line.unwrap();
        println!("{line}");
        if let Some(rest) = line.strip_prefix("e2e: ") {
            summary = Some(rest.to_owned());
        }
    }
    let status = node.wait().unwrap();
    assert!(status.success(), "the HTTPS scenario failed (see above)");
    assert_eq!(summary.as_deref(), Some("1 of 1 scenarios passed"));
}
