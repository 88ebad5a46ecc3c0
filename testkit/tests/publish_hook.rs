//! The site's publish hook, with real processes: nginx (nchan + module),
//! `chatup worker`, Redis, and the site's hook, an HTTP server of this
//! test's own that answers by the message's text.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use chatup_testkit::clients::items;
use chatup_testkit::process::WorkerOptions;
use chatup_testkit::token::now_secs;
use chatup_testkit::{
    post_message, rs256_token, ChatWorker, Redis, SubscribeOptions, Subscriber, Transport,
};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(5);

/// What the site's hook was asked, in order.
type Asked = Arc<Mutex<Vec<Value>>>;

async fn hook(State(asked): State<Asked>, Json(request): Json<Value>) -> Json<Value> {
    asked.lock().unwrap().push(request.clone());
    Json(match request["msg"].as_str().unwrap_or_default() {
        "rewrite me" => json!({"msg": "rewritten by the site"}),
        "reject me" => json!({"reject": {"error": "paid chat", "price": 5}, "status": 402}),
        "odd answer" => json!({"verdict": "maybe"}),
        "too slow" => {
            tokio::time::sleep(Duration::from_secs(3)).await;
            json!({})
        }
        _ => json!({}),
    })
}

/// The site's hook on a port of its own; returns its URL.
async fn start_hook(asked: Asked) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let app = Router::new().route("/hook", post(hook)).with_state(asked);
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

fn worker_with_hook(redis: &Redis, settings: &str) -> ChatWorker {
    ChatWorker::start_with(
        redis,
        WorkerOptions {
            config_toml: format!(
                "[rate_limit]\nrate_per_sec = 0\nuser_rate_per_sec = 0\n[publish_hook]\n{settings}"
            ),
            ..Default::default()
        },
    )
    .unwrap()
}

fn msg(text: &str) -> String {
    json!({ "msg": text }).to_string()
}

#[tokio::test]
async fn the_sites_hook_accepts_rewrites_or_rejects_each_message_with_its_own_error() {
    let asked = Asked::default();
    let url = start_hook(asked.clone()).await;
    let redis = Redis::start().unwrap();
    let worker = worker_with_hook(&redis, &format!("url = \"{url}\"\ntimeout_ms = 300\n"));
    let mut reader = Subscriber::open(
        Transport::WebSocket,
        &worker,
        "paid",
        SubscribeOptions::default(),
    )
    .await
    .unwrap();
    let ann = rs256_token(&json!({
        "sub": "ann", "exp": now_secs() + 600, "public": {"name": "Ann"}, "tier": 2, "plan": "gold"
    }));

    let response = reqwest::Client::new()
        .post(format!("{}/rooms/paid/messages", worker.base_url()))
        .bearer_auth(&ann)
        .header("Content-Type", "application/json")
        .header("Idempotency-Key", "post-1")
        .body(msg("hello"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 202);
    let (status, body) = post_message(&worker, "paid", Some(&ann), &msg("rewrite me")).await;
    assert_eq!(status, 202, "{body}");
    let (status, body) = post_message(&worker, "paid", Some(&ann), &msg("reject me")).await;
    assert_eq!(
        (status, body),
        (402, json!({"error": "paid chat", "price": 5})),
        "the site's own status and error object reach the poster"
    );

    let shown: Vec<String> = items(&reader.frames_until(2, WAIT).await)
        .iter()
        .map(|m| m["msg"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(shown, ["hello", "rewritten by the site"]);
    assert!(
        reader
            .drain_for(Duration::from_millis(300))
            .await
            .is_empty(),
        "the rejected one is not published"
    );

    // The hook got the room, the user and every claim of the token.
    let first = asked.lock().unwrap()[0].clone();
    assert_eq!(first["room"], "paid");
    assert_eq!(first["msg"], "hello");
    assert_eq!(
        first["user"],
        json!({"id": "ann", "public": {"name": "Ann"}})
    );
    assert_eq!(first["claims"]["plan"], "gold");
    assert_eq!(first["claims"]["tier"], 2);
    assert_eq!(first["claims"]["sub"], "ann");
    assert!(first["id"].as_str().is_some() && first["ts"].as_u64().is_some());
    assert_eq!(
        first["idempotency_key"], "post-1",
        "a retry can be recognized"
    );

    // A hook that fails (too slow, an answer that does not fit) refuses
    // the post with 503 and Retry-After by default: nothing unchecked.
    for text in ["too slow", "odd answer"] {
        let response = reqwest::Client::new()
            .post(format!("{}/rooms/paid/messages", worker.base_url()))
            .bearer_auth(&ann)
            .header("Content-Type", "application/json")
            .body(msg(text))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 503, "{text}");
        assert_eq!(response.headers()["retry-after"], "1");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], "message check unavailable, try again");
    }
    assert!(reader
        .drain_for(Duration::from_millis(300))
        .await
        .is_empty());
}

#[tokio::test]
async fn with_on_failure_accept_a_dead_hook_lets_messages_through_and_other_rooms_skip_it() {
    let asked = Asked::default();
    let url = start_hook(asked.clone()).await;
    let redis = Redis::start().unwrap();
    let dead = format!(
        "http://127.0.0.1:{}/hook",
        chatup_testkit::process::free_port()
    );
    let open = worker_with_hook(
        &redis,
        &format!("url = \"{dead}\"\ntimeout_ms = 300\non_failure = \"accept\"\n"),
    );
    let ann = rs256_token(&json!({"sub": "ann", "exp": now_secs() + 600}));
    let (status, body) = post_message(&open, "lobby", Some(&ann), &msg("hello")).await;
    assert_eq!(status, 202, "{body}");

    let only_paid = worker_with_hook(&redis, &format!("url = \"{url}\"\nrooms = [\"paid-*\"]\n"));
    for (room, text) in [("lobby", "reject me"), ("paid-1", "hello")] {
        let (status, body) = post_message(&only_paid, room, Some(&ann), &msg(text)).await;
        assert_eq!(status, 202, "{room}: {body}");
    }
    let rooms: Vec<Value> = asked
        .lock()
        .unwrap()
        .iter()
        .map(|r| r["room"].clone())
        .collect();
    assert_eq!(
        rooms,
        [json!("paid-1")],
        "only the rooms it names go through the hook"
    );
}
