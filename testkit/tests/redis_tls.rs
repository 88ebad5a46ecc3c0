//! Redis over TLS (`rediss://`): the worker and the dispatcher trust the
//! CA they are given, show a client certificate when Redis asks for one,
//! and refuse (503, not a hang) a Redis they cannot verify. Real
//! redis-server with certificates made by `openssl` for the test.

use std::time::Duration;

use chatup_testkit::clients::{eventually, get_json, items, join_room};
use chatup_testkit::process::WorkerOptions;
use chatup_testkit::{
    post_message, token_for, ChatWorker, Dispatcher, Redis, Subscriber, Transport,
};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(10);

fn msg(text: &str) -> String {
    json!({ "msg": text }).to_string()
}

/// A chat worker of `redis` with these TLS settings (TOML lines).
fn worker_with(redis: &Redis, tls_settings: &str) -> ChatWorker {
    let defaults = WorkerOptions::default();
    let options = WorkerOptions {
        // Top-level keys before the [rate_limit] table of the defaults.
        config_toml: format!("{tls_settings}\n{}", defaults.config_toml),
        ..defaults
    };
    ChatWorker::start_with(redis, options).unwrap()
}

fn toml_path(key: &str, path: &std::path::Path) -> String {
    format!("{key} = \"{}\"\n", path.display())
}

async fn healthy(dispatcher: &Dispatcher) -> u16 {
    get_json(&format!("{}/healthz", dispatcher.base_url()))
        .await
        .0
}

#[tokio::test]
async fn workers_and_dispatcher_chat_over_tls_as_an_acl_user_with_the_ca_they_are_given() {
    let redis = Redis::start_tls(false, true).unwrap();
    let tls = redis.tls().unwrap().clone();
    let ca = toml_path("redis_tls_ca_file", &tls.ca_file);
    let a = worker_with(&redis, &ca);
    let b = worker_with(&redis, &ca);
    let ca_flag = tls.ca_file.display().to_string();
    let dispatcher =
        Dispatcher::start_with(&redis.url(), &["--redis-tls-ca-file", &ca_flag]).unwrap();
    assert!(redis.url().starts_with("rediss://chatup:secret@"));
    // The same Redis without the ACL user's credentials: refused.
    let anonymous_url = redis.url().replace("chatup:secret@", "");
    let anonymous =
        Dispatcher::start_with(&anonymous_url, &["--redis-tls-ca-file", &ca_flag]).unwrap();

    eventually("both workers announced", WAIT, async || {
        let (_, body) = get_json(&format!("{}/workers", dispatcher.operator_url())).await;
        (body["workers"].as_array().map(Vec::len) == Some(2)).then_some(())
    })
    .await;
    let mut reader = Subscriber::connect(Transport::WebSocket, &b, "secure", None)
        .await
        .unwrap();
    let token = token_for("alice", "Alice");
    let (status, ack) = post_message(&a, "secure", Some(&token), &msg("over tls")).await;
    assert_eq!(status, 202, "{ack}");
    let got = items(&reader.frames_until(1, WAIT).await);
    assert_eq!(got[0]["msg"], "over tls");
    let (status, history) =
        get_json(&format!("{}/rooms/secure/messages", dispatcher.base_url())).await;
    assert_eq!(status, 200, "{history}");
    assert_eq!(history["messages"][0]["id"], ack["id"]);
    let (status, join) = join_room(&dispatcher, "secure", None).await;
    assert_eq!(status, 200, "{join}");
    assert_eq!(healthy(&dispatcher).await, 200);
    assert_eq!(healthy(&anonymous).await, 503);
}

#[tokio::test]
async fn a_redis_that_checks_clients_takes_the_client_certificate_and_nothing_less() {
    let redis = Redis::start_tls(true, false).unwrap();
    let tls = redis.tls().unwrap().clone();
    let (ca, cert, key) = (
        tls.ca_file.display().to_string(),
        tls.client_cert_file.display().to_string(),
        tls.client_key_file.display().to_string(),
    );
    let with_certificate = Dispatcher::start_with(
        &redis.url(),
        &[
            "--redis-tls-ca-file",
            &ca,
            "--redis-tls-cert-file",
            &cert,
            "--redis-tls-key-file",
            &key,
        ],
    )
    .unwrap();
    let without_certificate =
        Dispatcher::start_with(&redis.url(), &["--redis-tls-ca-file", &ca]).unwrap();
    // Without the CA, the server's certificate cannot be verified.
    let without_ca = Dispatcher::start_with(&redis.url(), &[]).unwrap();
    eventually(
        "the dispatcher with a certificate is ready",
        WAIT,
        async || (healthy(&with_certificate).await == 200).then_some(()),
    )
    .await;
    assert_eq!(healthy(&without_certificate).await, 503);
    assert_eq!(healthy(&without_ca).await, 503);

    let worker = worker_with(
        &redis,
        &[
            toml_path("redis_tls_ca_file", &tls.ca_file),
            toml_path("redis_tls_cert_file", &tls.client_cert_file),
            toml_path("redis_tls_key_file", &tls.client_key_file),
        ]
        .concat(),
    );
    let token = token_for("alice", "Alice");
    let (status, ack) = post_message(&worker, "vault", Some(&token), &msg("signed")).await;
    assert_eq!(status, 202, "{ack}");
    let refused = worker_with(&redis, &toml_path("redis_tls_ca_file", &tls.ca_file));
    let (status, body) = post_message(&refused, "vault", Some(&token), &msg("unsigned")).await;
    assert_eq!(status, 503, "{body}");
    assert!(body["error"].is_string(), "{body}");
}
