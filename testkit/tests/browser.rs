//! The JS client and its widget in headless Chromium against a real
//! cluster: two chat workers (nginx + nchan + module, `chatup worker`), a
//! dispatcher serving the example page, Redis. The scenarios are in
//! client/test/e2e/run.mjs; this test owns the processes and kills or
//! drains a worker when the scenario asks.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chatup_testkit::process::{chatup_bin, workspace_root, WorkerOptions};
use chatup_testkit::token::server_secret_path;
use chatup_testkit::{ChatWorker, Dispatcher, Redis};

fn live_workers(dispatcher: &Dispatcher) -> usize {
    let output = Command::new("curl")
        .args(["-s", &format!("{}/workers", dispatcher.operator_url())])
        .output()
        .expect("curl");
    let body: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap_or_default();
    body["workers"].as_array().map_or(0, Vec::len)
}

/// Waits until the dispatcher sees `count` live workers.
fn wait_for_workers(dispatcher: &Dispatcher, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while live_workers(dispatcher) < count {
        assert!(Instant::now() < deadline, "workers not announced");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Runs the scenarios of `suite` (client/test/e2e/run.mjs) against the
/// dispatcher, killing or draining `workers` when a scenario asks; fails
/// unless every one passed; returns how many ran.
fn run_scenarios(dispatcher: &Dispatcher, workers: &mut [ChatWorker], suite: &str) -> usize {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        std::path::Path::new(&chromium).exists(),
        "{chromium} is missing: ci/setup.sh installs Debian's chromium"
    );
    let artifacts = workspace_root().join("target/e2e");
    let mut node = Command::new("node")
        .arg("test/e2e/run.mjs")
        .current_dir(workspace_root().join("client"))
        .env("CHATUP_DISPATCHER", dispatcher.base_url())
        .env("CHATUP_SERVER_SECRET", server_secret_path())
        .env(
            "CHATUP_DEV_KEY",
            workspace_root().join("conf/dev-keys/jwt-rs256.key"),
        )
        .env("CHATUP_E2E_SUITE", suite)
        .env("CHATUP_ARTIFACTS", &artifacts)
        .env("CHROMIUM", &chromium)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("node (ci/setup.sh builds the client)");
    let mut stdin = node.stdin.take().unwrap();
    let stdout = BufReader::new(node.stdout.take().unwrap());
    let mut passed = Vec::new();
    let mut total: Option<usize> = None;
    for line in stdout.lines() {
        let line = line.unwrap();
        println!("{line}");
        if let Some(id) = line.strip_prefix("KILL ") {
            let worker = workers
                .iter_mut()
                .find(|w| w.id == id.trim())
                .unwrap_or_else(|| panic!("no worker {id}"));
            worker.kill();
            writeln!(stdin, "OK").unwrap();
        } else if let Some(id) = line.strip_prefix("DRAIN ") {
            // A deploy's drain (`chatup drain`, which waits until the
            // worker has no reader left), then cancelled: the worker takes
            // readers again for the scenarios after.
            let worker = workers
                .iter()
                .find(|w| w.id == id.trim())
                .unwrap_or_else(|| panic!("no worker {id}"));
            let socket = worker.dir().join("sidecar.sock");
            for args in [
                &["--rate", "5", "--timeout-secs", "60"][..],
                &["--cancel"][..],
            ] {
                let output = Command::new(chatup_bin())
                    .arg("drain")
                    .arg("--listen")
                    .arg(&socket)
                    .args(args)
                    .output()
                    .expect("chatup drain");
                println!("{}", String::from_utf8_lossy(&output.stdout));
                assert!(output.status.success(), "chatup drain {args:?}: {output:?}");
            }
            writeln!(stdin, "OK").unwrap();
        } else if line.starts_with("e2e ok: ") {
            passed.push(line);
        } else if let Some(summary) = line.strip_prefix("e2e: ") {
            total = summary
                .split_whitespace()
                .nth(2)
                .and_then(|n| n.parse().ok());
        }
    }
    let status = node.wait().unwrap();
    println!("screenshots: {}", artifacts.display());
    assert!(status.success(), "browser scenarios failed (see above)");
    assert_eq!(Some(passed.len()), total, "{passed:?}");
    passed.len()
}

#[test]
fn the_widget_chats_moves_off_a_draining_worker_fails_over_falls_back_survives_token_expiry_shows_bans_and_moderates_in_chromium(
) {
    let redis = Redis::start().unwrap();
    // The shipped hot_room_rate (the harness turns it off for load).
    let shipped = || WorkerOptions {
        hot_room_rate: 50,
        ..Default::default()
    };
    let mut workers = [
        ChatWorker::start_with(&redis, shipped()).unwrap(),
        ChatWorker::start_with(&redis, shipped()).unwrap(),
    ];
    let dispatcher = Dispatcher::start_with_demo(&redis).unwrap();
    wait_for_workers(&dispatcher, 2);
    let passed = run_scenarios(&dispatcher, &mut workers, "widget");
    // One scenario per behaviour this test stands for (chat, drain,
    // failover, two fallbacks, token expiry, bans, mutes and slow mode,
    // room rules, a hot room's sample, a moderator's actions).
    assert!(passed >= 11, "{passed} scenarios");
}

#[test]
fn a_page_written_for_the_original_client_reads_posts_and_is_banned_through_the_compatibility_build_in_chromium(
) {
    let redis = Redis::start().unwrap();
    let original = WorkerOptions {
        original_tokens: true,
        ..Default::default()
    };
    let mut workers = [ChatWorker::start_with(&redis, original).unwrap()];
    let dispatcher = Dispatcher::start_original_with_demo(&redis).unwrap();
    wait_for_workers(&dispatcher, 1);
    let passed = run_scenarios(&dispatcher, &mut workers, "original");
    assert!(passed >= 1, "{passed} scenarios");
}
