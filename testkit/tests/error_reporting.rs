//! Error reporting: a `chatup` process with a Sentry DSN reports its
//! errors there. No Sentry server runs on this machine, so the DSN points
//! at a small HTTP endpoint of the test's that keeps what it is sent (the
//! envelopes the real `sentry` client builds and posts).

use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::routing::post;
use axum::Router;
use chatup_testkit::process::chatup_bin;

/// Starts the stand-in; returns its port and what it received.
async fn ingestion_endpoint() -> (u16, Arc<Mutex<Vec<String>>>) {
    let received = Arc::new(Mutex::new(Vec::new()));
    let kept = received.clone();
    let app = Router::new().route(
        "/api/{project}/envelope/",
        post(move |body: Bytes| {
            let kept = kept.clone();
            async move {
                kept.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&body).into_owned());
                "{}"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (port, received)
}

#[tokio::test]
async fn a_worker_that_cannot_start_reports_why_to_sentry() {
    let (port, received) = ingestion_endpoint().await;
    // Its metrics address is taken: the worker stops on that error.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_port = taken.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let mut worker = Command::new(chatup_bin())
        .arg("worker")
        .args(["--metrics-listen", &format!("127.0.0.1:{taken_port}")])
        .args([
            "--sentry-dsn",
            &format!("http://public@127.0.0.1:{port}/42"),
        ])
        .args(["--sentry-environment", "test"])
        .arg("--listen")
        .arg(dir.path().join("sidecar.sock"))
        .arg("--nchan-socket")
        .arg(dir.path().join("nginx-internal.sock"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();

    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = worker.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the worker did not stop");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(!status.success(), "the worker stops with an error");

    let events = received.lock().unwrap().clone();
    let event = events
        .iter()
        .find(|e| e.contains("chatup stopped on an error"))
        .unwrap_or_else(|| panic!("no error event among {events:?}"));
    assert!(event.contains("metrics_listen"), "{event}");
    assert!(event.contains("\"release\":\"chatup@"), "{event}");
    assert!(event.contains("\"environment\":\"test\""), "{event}");
    assert!(event.contains("\"role\":\"worker\""), "{event}");
}

#[tokio::test]
async fn without_a_dsn_nothing_is_reported() {
    let (port, received) = ingestion_endpoint().await;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_port = taken.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let status = Command::new(chatup_bin())
        .arg("worker")
        .args(["--metrics-listen", &format!("127.0.0.1:{taken_port}")])
        .arg("--listen")
        .arg(dir.path().join("sidecar.sock"))
        .arg("--nchan-socket")
        .arg(dir.path().join("nginx-internal.sock"))
        // A DSN in the environment of the test's own must not leak in.
        .env_remove("CHATUP_SENTRY_DSN")
        .env("SENTRY_DSN", format!("http://public@127.0.0.1:{port}/42"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(!status.success());
    assert!(
        received.lock().unwrap().is_empty(),
        "reported without a DSN"
    );
}
