//! The original ChatUp's API, for sites moving over (docs/migration.md):
//! its tokens (`_public`, `name`, no `exp`) on a worker and a dispatcher
//! configured for them, and its server endpoints on the dispatcher. Real
//! redis-server, nginx (nchan + module) and `chatup` processes.

use std::time::{Duration, Instant};

use chatup_testkit::clients::{get_json, items};
use chatup_testkit::process::WorkerOptions;
use chatup_testkit::token::{rs256_token_exactly, server_token, server_token_exactly, token_for};
use chatup_testkit::{
    post_message, ChatWorker, Dispatcher, Redis, SubscribeOptions, Subscriber, Transport,
};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(5);

fn msg(text: &str) -> String {
    json!({ "msg": text }).to_string()
}

fn original_worker(redis: &Redis) -> ChatWorker {
    ChatWorker::start_with(
        redis,
        WorkerOptions {
            original_tokens: true,
            ..Default::default()
        },
    )
    .unwrap()
}

/// An original user token: its public data in `_public`, the user in
/// `name`, no `sub`, `exp`, `iss` or `aud`.
fn original_token(name: &str) -> String {
    rs256_token_exactly(&json!({"name": name, "_public": {"name": name, "color": "#336699"}}))
}

/// Sends `token` as the body, as the original's server code did.
async fn send(dispatcher: &Dispatcher, path: &str, token: &str) -> (u16, String) {
    let response = reqwest::Client::new()
        .post(format!("{}{path}", dispatcher.base_url()))
        .header("Content-Type", "text/plain")
        .body(token.to_string())
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

#[tokio::test]
async fn original_tokens_post_and_the_original_endpoints_ban_post_and_list_as_before() {
    let redis = Redis::start().unwrap();
    let worker = original_worker(&redis);
    let dispatcher = Dispatcher::start_original(&redis, &[]).unwrap();
    let watch = SubscribeOptions {
        events: true,
        ..Default::default()
    };
    let mut reader = Subscriber::open(Transport::WebSocket, &worker, "lobby", watch)
        .await
        .unwrap();

    // An original token posts: `name` is the user, `_public` its data.
    let ann = original_token("ann");
    let (status, body) = post_message(&worker, "lobby", Some(&ann), &msg("hello")).await;
    assert_eq!(status, 202, "{body}");
    let shown = items(&reader.frames_until(1, WAIT).await);
    assert_eq!(
        shown[0]["user"],
        json!({"id": "ann", "public": {"name": "ann", "color": "#336699"}})
    );
    // New tokens keep working beside them.
    let (status, _) =
        post_message(&worker, "lobby", Some(&token_for("bob", "Bob")), &msg("hi")).await;
    assert_eq!(status, 202);

    // POST /post: an array of items, as the original's server code sends.
    let post = server_token_exactly(&json!([
        {"channel": "lobby", "msg": "Welcome!", "user": {"name": "Server"}},
        {"channel": "lobby", "ev": "poll", "data": {"q": "Best goal?"}}
    ]));
    assert_eq!(send(&dispatcher, "/post", &post).await, (200, "OK".into()));

    // GET /messages/{channel}: newest first, in the original's shape.
    let (status, history) = get_json(&format!("{}/messages/lobby", dispatcher.base_url())).await;
    assert_eq!(status, 200);
    let history = history.as_array().unwrap().clone();
    let texts: Vec<&str> = history.iter().map(|m| m["msg"].as_str().unwrap()).collect();
    assert_eq!(texts, ["Welcome!", "hi", "hello"]);
    assert_eq!(history[0]["user"], json!({"name": "Server"}));
    assert_eq!(history[2]["user"]["name"], "ann");
    assert!(history[2]["i"].as_str().is_some() && history[2]["d"].as_f64().unwrap() > 1.7e9);

    // GET /stats/{channel}.
    let (status, stats) = get_json(&format!("{}/stats/lobby", dispatcher.base_url())).await;
    assert_eq!(status, 200, "{stats}");
    assert_eq!(
        (stats["limit"].clone(), stats["skip"].clone()),
        (json!(50), json!(0))
    );
    assert!(
        stats["subCount"].as_u64().is_some() && stats["clients"].is_array(),
        "{stats}"
    );

    // POST /ban by name: readers told, messages removed, posts refused
    // (the worker has the ban before it forwards the room's rmUserMsg).
    let ban = server_token_exactly(&json!([{"name": "ann", "channel": "lobby", "expire": 30}]));
    assert_eq!(send(&dispatcher, "/ban", &ban).await, (200, "OK".into()));
    let deadline = Instant::now() + WAIT;
    let removal = loop {
        let items = reader.drain_for(Duration::from_millis(100)).await;
        if let Some(removal) = items.into_iter().find(|i| i["ev"] == "rmUserMsg") {
            break removal;
        }
        assert!(Instant::now() < deadline, "no rmUserMsg");
    };
    assert_eq!(removal["user"]["id"], "ann");
    let (status, body) = post_message(&worker, "lobby", Some(&ann), &msg("again")).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"], "banned");
    assert!(body["ttl"].as_u64().unwrap() <= 30);
    let (_, history) = get_json(&format!("{}/messages/lobby", dispatcher.base_url())).await;
    assert!(history
        .as_array()
        .unwrap()
        .iter()
        .all(|m| m["user"]["name"] != "ann"));

    // The room's standing of a user (what the compatibility client's
    // authenticate() asks).
    let me = reqwest::Client::new()
        .get(format!("{}/rooms/lobby/me", dispatcher.base_url()))
        .bearer_auth(&ann)
        .send()
        .await
        .unwrap();
    let me: Value = me.json().await.unwrap();
    assert_eq!(me["user"], "ann");
    assert!(me["banned"]["ttl"].as_u64().unwrap() <= 30, "{me}");
    assert_eq!(me["muted"], false);
}

#[tokio::test]
async fn bad_original_requests_get_both_error_shapes_and_change_nothing() {
    let redis = Redis::start().unwrap();
    let dispatcher = Dispatcher::start_original(&redis, &[]).unwrap();
    let forged = {
        let token = server_token_exactly(&json!([{"name": "ann", "channel": "lobby"}]));
        let (head, _) = token.rsplit_once('.').unwrap();
        format!("{head}.AAAA")
    };
    for (path, token, status, err) in [
        ("/ban", forged.as_str(), 401, "Wrong JWT"),
        ("/ban", "", 400, "Wrong format"),
        (
            "/post",
            &server_token_exactly(&json!({"channel": "lobby"})),
            400,
            "Wrong JWT content",
        ),
        (
            "/post",
            &server_token_exactly(&json!([{"channel": "lobby"}])),
            400,
            "give either msg or ev",
        ),
        (
            "/ban",
            &server_token_exactly(&json!([{"name": "a", "channel": "bad room"}])),
            400,
            "ban:",
        ),
    ] {
        let (got, body) = send(&dispatcher, path, token).await;
        let body: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        assert_eq!(got, status, "{path}: {body}");
        assert_eq!(body["status"], "error", "{body}");
        assert!(body["err"].as_str().unwrap().contains(err), "{body}");
        assert_eq!(body["err"], body["error"], "{body}");
    }
    let (_, history) = get_json(&format!("{}/messages/lobby", dispatcher.base_url())).await;
    assert_eq!(history, json!([]));

    // Without accept_tokens_without_exp an array (which has no exp) is
    // refused; and the new server API's tokens are not taken here.
    let strict = Dispatcher::start_with(&redis.url(), &["--original-api", "true"]).unwrap();
    let ban = server_token_exactly(&json!([{"name": "ann", "channel": "lobby"}]));
    let (status, body) = send(&strict, "/ban", &ban).await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("tokens without exp are refused"), "{body}");
    // Without original_api there are no such endpoints.
    let shipped = Dispatcher::start(&redis).unwrap();
    let (status, _) = send(&shipped, "/ban", &ban).await;
    assert_eq!(status, 404);
    let new_style = server_token("ban", json!({"bans": []}));
    assert_eq!(send(&shipped, "/bans", &new_style).await.0, 200);
}

#[tokio::test]
async fn the_shipped_configuration_refuses_original_tokens() {
    let redis = Redis::start().unwrap();
    let worker = ChatWorker::start(&redis).unwrap();
    let dispatcher = Dispatcher::start(&redis).unwrap();
    // Valid in every way the shipped configuration checks (exp, iss, aud),
    // but naming its user the original's way: no sub.
    let named = chatup_testkit::rs256_token(&json!({
        "name": "ann", "_public": {"name": "Ann"}, "exp": chatup_testkit::token::now_secs() + 600
    }));
    for token in [named, original_token("ann")] {
        let (status, body) = post_message(&worker, "lobby", Some(&token), &msg("hi")).await;
        assert_eq!(status, 401, "{body}");
        let me = reqwest::Client::new()
            .get(format!("{}/rooms/lobby/me", dispatcher.base_url()))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(me.status().as_u16(), 401);
    }
}
