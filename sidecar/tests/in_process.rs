//! The sidecar's roles run in-process on listeners the test binds (like
//! mini-redis): a real Redis on a run-time port, no `chatup` process.

use std::time::Duration;

use chatup::config::{DispatcherConfig, WorkerConfig};
use chatup_testkit::clients::get_json;
use chatup_testkit::process::Redis;
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn a_dispatcher_serves_on_listeners_bound_by_the_test_workers_only_to_operators_and_stops_on_shutdown(
) {
    let redis = Redis::start().unwrap();
    let config = DispatcherConfig {
        redis_url: redis.url(),
        ..Default::default()
    };
    let public = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let operator = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", public.local_addr().unwrap());
    let operator_base = format!("http://{}", operator.local_addr().unwrap());
    let listeners = chatup::dispatcher::Listeners {
        public,
        operator: Some(operator),
    };
    let shutdown = CancellationToken::new();
    let dispatcher = tokio::spawn(chatup::dispatcher::run(config, listeners, shutdown.clone()));

    let (status, body) = get_json(&format!("{base}/healthz")).await;
    assert_eq!(status, 200, "{body}");
    // The workers' map is for operators: not on the public API.
    let (status, body) = get_json(&format!("{base}/workers")).await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = get_json(&format!("{operator_base}/workers")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["workers"], serde_json::json!([]));

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), dispatcher)
        .await
        .expect("the dispatcher stops")
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn a_worker_stores_an_envelope_handed_to_it_on_a_socket_bound_by_the_test() {
    let redis = Redis::start().unwrap();
    let dir = tempfile::Builder::new()
        .prefix("chatup-in-process-")
        .tempdir()
        .unwrap();
    let dir = dir.path();
    let config = WorkerConfig {
        worker_id: "in-process".into(),
        redis_url: redis.url(),
        listen: dir.join("sidecar.sock"),
        // No nginx here: the worker serves its API and says nginx is down.
        nchan_socket: dir.join("no-nginx.sock"),
        ..Default::default()
    };
    let listener = chatup::worker::bind(&config).unwrap();
    let socket = config.listen.clone();
    let shutdown = CancellationToken::new();
    let worker = tokio::spawn(chatup::worker::run(config, listener, shutdown.clone()));

    let envelope = serde_json::json!({
        "id": "01J00000000000000000000000", "room": "lobby",
        "user": {"id": "anna"}, "msg": "hello", "ts": 1
    });
    let (status, body) = post_unix(&socket, "/v1/messages", &envelope.to_string()).await;
    assert_eq!(status, 202, "{body}");
    // Nothing in the body: nginx keeps its connection to the sidecar after
    // a head-only subrequest only when the answer has none.
    assert_eq!(body, "", "the acknowledgement has an empty body");
    let (status, body) = post_unix(&socket, "/v1/messages", "not json").await;
    assert_eq!(status, 400);
    assert_eq!(body, "", "so has an error (its text is in a header)");
    let history = redis
        .client()
        .unwrap()
        .cmd(&["LRANGE", "chatup:{lobby}:history", "0", "-1"]);
    assert!(history.contains("\"msg\":\"hello\""), "{history}");

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), worker)
        .await
        .expect("the worker drains and stops")
        .unwrap()
        .unwrap();
    assert!(!socket.exists(), "the socket is removed on the way out");
}

/// A POST over a unix socket, with the same client the worker uses.
async fn post_unix(socket: &std::path::Path, path: &str, body: &str) -> (u16, String) {
    use http_body_util::{BodyExt, Full};
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build(hyperlocal::UnixConnector);
    let request = hyper::Request::post(hyper::Uri::from(hyperlocal::Uri::new(socket, path)))
        .header("Content-Type", "application/json")
        .body(Full::new(bytes::Bytes::from(body.to_owned())))
        .unwrap();
    let response = client.request(request).await.unwrap();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}
