//! The cluster: dispatchers, the worker registry, membership, stats and
//! history, with real redis-server, nginx (nchan + module) and `chatup`
//! worker and dispatcher processes.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chatup_testkit::clients::{eventually, get_json, items, join_room};
use chatup_testkit::process::WorkerOptions;
use chatup_testkit::token::ticket_for;
use chatup_testkit::{
    post_message, token_for, ChatWorker, Dispatcher, Redis, SubscribeOptions, Subscriber, Transport,
};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(5);

fn msg(text: &str) -> String {
    json!({ "msg": text }).to_string()
}

async fn live_worker_ids(dispatcher: &Dispatcher) -> Vec<String> {
    let (status, body) = get_json(&format!("{}/workers", dispatcher.operator_url())).await;
    assert_eq!(status, 200, "{body}");
    body["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["id"].as_str().unwrap().to_string())
        .collect()
}

/// Waits until `count` workers are announced.
async fn wait_for_live_workers(dispatcher: &Dispatcher, count: usize) {
    eventually("the workers announced", WAIT, async || {
        (live_worker_ids(dispatcher).await.len() == count).then_some(())
    })
    .await;
}

async fn stats(dispatcher: &Dispatcher, room: &str, query: &str) -> Value {
    let (status, body) = get_json(&format!(
        "{}/rooms/{room}/stats{query}",
        dispatcher.base_url()
    ))
    .await;
    assert_eq!(status, 200, "{body}");
    body
}

/// Subscribes to `room`, as the member `ticket` names if given.
/// Posts `text` in `room` at the chat worker at `url` (from a task that
/// cannot borrow the worker); the acknowledged id.
async fn post_at(
    client: &reqwest::Client,
    url: &str,
    room: &str,
    token: &str,
    text: &str,
) -> String {
    let response = client
        .post(format!("{url}/rooms/{room}/messages"))
        .bearer_auth(token)
        .header("Content-Type", "application/json")
        .body(msg(text))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let ack: Value = response.json().await.unwrap();
    ack["id"].as_str().unwrap().to_owned()
}

/// A worker that checks its rooms for readers every second (a room
/// without any for two checks is let go).
fn worker_letting_rooms_go_quickly(redis: &Redis) -> ChatWorker {
    let options = WorkerOptions {
        room_sweep_secs: 1,
        ..Default::default()
    };
    ChatWorker::start_with(redis, options).unwrap()
}

async fn subscribe(worker: &ChatWorker, room: &str, ticket: Option<&str>) -> Subscriber {
    let options = SubscribeOptions {
        ticket,
        ..Default::default()
    };
    Subscriber::open(Transport::WebSocket, worker, room, options)
        .await
        .unwrap()
}

#[tokio::test]
async fn join_sends_clients_to_the_least_loaded_worker_and_honours_exclude() {
    let redis = Redis::start().unwrap();
    let busy = ChatWorker::start(&redis).unwrap();
    let idle = ChatWorker::start(&redis).unwrap();
    let dispatcher = Dispatcher::start(&redis).unwrap();
    let mut readers = Vec::new();
    for _ in 0..3 {
        readers.push(subscribe(&busy, "stage", None).await);
    }
    // Both announced, and the busy one's readers counted by a heartbeat.
    eventually(
        "the busy worker's readers in the registry",
        WAIT,
        async || {
            let (_, body) = get_json(&format!("{}/workers", dispatcher.operator_url())).await;
            let workers = body["workers"].as_array()?;
            let busy_entry = workers.iter().find(|w| w["id"] == busy.id.as_str())?;
            (workers.len() == 2 && busy_entry["subscribers"] == 3).then_some(())
        },
    )
    .await;

    let (status, body) = join_room(&dispatcher, "stage", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["worker"]["id"], idle.id.as_str());
    assert_eq!(body["worker"]["url"], idle.base_url());
    assert_eq!(body["room"]["subscribers"], 3);

    let (status, body) = join_room(&dispatcher, "stage", Some(&idle.id)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["worker"]["id"],
        busy.id.as_str(),
        "the excluded worker is avoided while another is live"
    );
}

#[tokio::test]
async fn joins_are_refused_with_retry_after_while_every_worker_is_at_capacity() {
    let redis = Redis::start().unwrap();
    let full = ChatWorker::start(&redis).unwrap();
    let dispatcher = Dispatcher::start_with(
        &redis.url(),
        &[
            "--worker-capacity",
            "2",
            "--at-capacity-retry-after-secs",
            "7",
        ],
    )
    .unwrap();
    let mut readers = Vec::new();
    for _ in 0..2 {
        readers.push(subscribe(&full, "stage", None).await);
    }
    eventually("the worker's readers in the registry", WAIT, async || {
        let (_, body) = get_json(&format!("{}/workers", dispatcher.operator_url())).await;
        let workers = body["workers"].as_array()?;
        (workers.len() == 1 && workers[0]["subscribers"] == 2).then_some(())
    })
    .await;
    let answer = reqwest::Client::new()
        .post(format!("{}/join/stage", dispatcher.base_url()))
        .header("Origin", "https://site.example")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 503);
    assert_eq!(answer.headers()["retry-after"], "7");
    let exposed = answer.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    assert!(
        exposed.contains("retry-after"),
        "a page may read it: {exposed}"
    );
    let body: Value = answer.json().await.unwrap();
    assert_eq!(
        body,
        serde_json::json!({"error": "every worker is at capacity"})
    );

    // Room again on another worker: clients go there.
    let other = ChatWorker::start(&redis).unwrap();
    let (status, body) = eventually("a worker under capacity", WAIT, async || {
        let (status, body) = join_room(&dispatcher, "stage", None).await;
        (status == 200).then_some((status, body))
    })
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["worker"]["id"], other.id.as_str());
}

#[tokio::test]
async fn a_stream_start_of_joins_reads_the_rooms_history_once_per_moment() {
    let redis = Redis::start().unwrap();
    let worker = ChatWorker::start(&redis).unwrap();
    let dispatcher = Dispatcher::start(&redis).unwrap();
    wait_for_live_workers(&dispatcher, 1).await;
    let token = token_for("host", "Host");
    for n in 0..3 {
        let (status, _) =
            post_message(&worker, "premiere", Some(&token), &msg(&format!("m{n}"))).await;
        assert_eq!(status, 202);
    }
    let probe = redis.client().unwrap();
    probe.cmd(&["CONFIG", "RESETSTAT"]);
    let joins: Vec<_> = (0..60)
        .map(|_| {
            let url = format!("{}/join/premiere", dispatcher.base_url());
            tokio::spawn(async move {
                let answer = reqwest::Client::new().post(url).send().await.unwrap();
                assert_eq!(answer.status(), 200);
                answer.json::<Value>().await.unwrap()
            })
        })
        .collect();
    for join in joins {
        let body = join.await.unwrap();
        let texts: Vec<&str> = body["history"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["msg"].as_str().unwrap())
            .collect();
        assert_eq!(texts, ["m0", "m1", "m2"], "every join gets the history");
    }
    let stats = probe.cmd(&["INFO", "commandstats"]);
    let history_reads: u64 = stats
        .lines()
        .find_map(|l| l.strip_prefix("cmdstat_lrange:calls="))
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    // One per second the joins took (they take well under a few).
    assert!(
        (1..=3).contains(&history_reads),
        "{history_reads} history reads for 60 joins"
    );
}

#[tokio::test]
async fn concurrent_joins_spread_over_the_workers() {
    let redis = Redis::start().unwrap();
    let workers: Vec<ChatWorker> = (0..3).map(|_| ChatWorker::start(&redis).unwrap()).collect();
    let dispatchers = [
        Dispatcher::start(&redis).unwrap(),
        Dispatcher::start(&redis).unwrap(),
    ];
    wait_for_live_workers(&dispatchers[0], 3).await;

    let joins = (0..200).map(|n| join_room(&dispatchers[n % 2], "premiere", None));
    let answers = futures_util::future::join_all(joins).await;
    let mut per_worker: HashMap<String, usize> = HashMap::new();
    for (status, body) in answers {
        assert_eq!(status, 200, "{body}");
        *per_worker
            .entry(body["worker"]["id"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    for worker in &workers {
        let got = per_worker.get(&worker.id).copied().unwrap_or(0);
        assert!(
            got >= 40,
            "200 joins over 3 workers gave {per_worker:?}: {} got {got}",
            worker.id
        );
    }
}

#[tokio::test]
async fn clients_sent_to_a_worker_weigh_on_its_load_across_heartbeats_until_they_fade() {
    let redis = Redis::start().unwrap();
    let worker = ChatWorker::start(&redis).unwrap();
    let dispatcher = Dispatcher::start(&redis).unwrap();
    wait_for_live_workers(&dispatcher, 1).await;
    let load = async || {
        let (_, body) = get_json(&format!("{}/workers", dispatcher.operator_url())).await;
        body["workers"][0]["load"].as_u64().unwrap()
    };
    for _ in 0..16 {
        let (status, _) = join_room(&dispatcher, "stage", None).await;
        assert_eq!(status, 200);
    }
    // Nobody connected: after a heartbeat (200 ms here) half of them still
    // count, instead of the load falling back to the readers (0).
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert!(load().await >= 4, "load forgot the clients just sent");
    eventually("clients who never came stop counting", WAIT, async || {
        (load().await == 0).then_some(())
    })
    .await;
    drop(worker);
}

#[tokio::test]
async fn a_flood_of_joins_nobody_follows_cannot_steer_every_new_client_to_one_worker() {
    let redis = Redis::start().unwrap();
    let a = ChatWorker::start(&redis).unwrap();
    let b = ChatWorker::start(&redis).unwrap();
    let dispatcher = Dispatcher::start(&redis).unwrap();
    wait_for_live_workers(&dispatcher, 2).await;
    // The attack: 300 anonymous joins that "failed" on b, so all land on
    // a, and none of them ever connects.
    let fakes = (0..300).map(|_| join_room(&dispatcher, "stage", Some(&b.id)));
    for (status, body) in futures_util::future::join_all(fakes).await {
        assert_eq!(status, 200, "{body}");
    }
    let (_, workers) = get_json(&format!("{}/workers", dispatcher.operator_url())).await;
    let load_of_a = workers["workers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["id"] == a.id.as_str())
        .map(|w| w["load"].as_u64().unwrap())
        .unwrap();
    assert!(
        // chatup::registry::PENDING_FLOOR
        load_of_a <= 32,
        "a worker with no readers weighs {load_of_a} after 300 joins nobody followed"
    );
    // Real clients now: a gets its share instead of none.
    let mut on_a = 0;
    for _ in 0..80 {
        let (status, body) = join_room(&dispatcher, "stage", None).await;
        assert_eq!(status, 200, "{body}");
        on_a += usize::from(body["worker"]["id"] == a.id.as_str());
    }
    assert!(on_a >= 8, "only {on_a} of 80 new clients were sent to a");
}

#[tokio::test]
async fn killed_worker_stops_being_offered_within_its_ttl_and_its_members_leave_the_stats() {
    let redis = Redis::start().unwrap();
    let mut doomed = ChatWorker::start(&redis).unwrap();
    let survivor = ChatWorker::start(&redis).unwrap();
    let dispatcher = Dispatcher::start(&redis).unwrap();
    let alice = ticket_for("alice", "Alice", "arena");
    let _on_doomed = subscribe(&doomed, "arena", Some(&alice)).await;
    let _on_survivor = subscribe(&survivor, "arena", None).await;
    eventually("alice listed, both readers counted", WAIT, async || {
        let body = stats(&dispatcher, "arena", "").await;
        (body["members"] == 1 && body["subscribers"] == 2).then_some(())
    })
    .await;

    doomed.kill();
    let killed_at = Instant::now();
    eventually(
        "the killed worker gone from the registry",
        WAIT,
        async || (live_worker_ids(&dispatcher).await == [survivor.id.clone()]).then_some(()),
    )
    .await;
    let gone_after = killed_at.elapsed();
    // TTL 1 s in the harness; allow for the polling.
    assert!(gone_after < Duration::from_millis(2000), "{gone_after:?}");

    for _ in 0..10 {
        let (status, body) = join_room(&dispatcher, "arena", None).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["worker"]["id"], survivor.id.as_str());
    }
    let body = stats(&dispatcher, "arena", "").await;
    assert_eq!(body["members"], 0, "{body}");
    assert_eq!(body["users"], json!([]));
    assert_eq!(body["subscribers"], 1, "{body}");
}

#[tokio::test]
async fn a_draining_worker_leaves_the_registry_at_once_and_one_without_nginx_expires() {
    let redis = Redis::start().unwrap();
    let options = WorkerOptions {
        heartbeat_ttl_ms: 3000,
        ..Default::default()
    };
    let mut draining = ChatWorker::start_with(&redis, options.clone()).unwrap();
    let mut headless = ChatWorker::start_with(&redis, options).unwrap();
    let dispatcher = Dispatcher::start(&redis).unwrap();
    wait_for_live_workers(&dispatcher, 2).await;

    // SIGTERM: the sidecar removes its entry before it drains.
    draining.stop_sidecar();
    assert!(
        !live_worker_ids(&dispatcher).await.contains(&draining.id),
        "a draining worker is still offered"
    );

    // nginx gone, sidecar alive: it stops announcing and expires (TTL 3 s).
    headless.kill_nginx();
    let stopped = Instant::now();
    eventually(
        "the worker without nginx expired",
        Duration::from_secs(6),
        async || live_worker_ids(&dispatcher).await.is_empty().then_some(()),
    )
    .await;
    assert!(
        stopped.elapsed() < Duration::from_millis(4500),
        "{:?}",
        stopped.elapsed()
    );
    let (status, body) = join_room(&dispatcher, "lobby", None).await;
    assert_eq!(status, 503, "{body}");
}

#[tokio::test]
async fn members_count_once_across_connections_and_workers_and_are_paginated() {
    let redis = Redis::start().unwrap();
    let a = ChatWorker::start(&redis).unwrap();
    let b = ChatWorker::start(&redis).unwrap();
    let dispatcher = Dispatcher::start(&redis).unwrap();
    let (alice, bob, carol) = (
        ticket_for("alice", "Alice", "hall"),
        ticket_for("bob", "Bob", "hall"),
        ticket_for("carol", "Carol", "hall"),
    );
    let options = |ticket| SubscribeOptions {
        ticket: Some(ticket),
        ..Default::default()
    };
    let _readers = vec![
        subscribe(&a, "hall", Some(&alice)).await,
        Subscriber::open(Transport::EventSource, &a, "hall", options(&alice))
            .await
            .unwrap(),
        subscribe(&b, "hall", Some(&alice)).await,
        subscribe(&a, "hall", Some(&bob)).await,
        subscribe(&b, "hall", Some(&carol)).await,
        subscribe(&b, "hall", None).await,
    ];
    let body = eventually("six readers, three members", WAIT, async || {
        let body = stats(&dispatcher, "hall", "").await;
        (body["subscribers"] == 6 && body["members"] == 3).then_some(body)
    })
    .await;
    assert_eq!(
        body["users"],
        json!([
            {"id": "alice", "public": {"name": "Alice"}},
            {"id": "bob", "public": {"name": "Bob"}},
            {"id": "carol", "public": {"name": "Carol"}},
        ])
    );
    let page = stats(&dispatcher, "hall", "?limit=2&skip=1").await;
    let ids: Vec<&str> = page["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["bob", "carol"]);
    assert_eq!(page["members"], 3);
    let page = stats(&dispatcher, "hall", "?limit=2&skip=3").await;
    assert_eq!(page["users"], json!([]));
    drop(_readers);
    eventually("everyone gone from the stats", WAIT, async || {
        let body = stats(&dispatcher, "hall", "").await;
        (body["members"] == 0 && body["subscribers"] == 0).then_some(())
    })
    .await;
    for worker in [&a, &b] {
        assert!(
            !worker.nginx_log().contains("exited on signal"),
            "{}",
            worker.nginx_log()
        );
    }
}

#[tokio::test]
async fn join_and_leave_events_reach_readers_and_a_busy_room_gets_count_events_instead() {
    let redis = Redis::start().unwrap();
    let worker = ChatWorker::start_with(
        &redis,
        WorkerOptions {
            presence_threshold: 4,
            count_interval_ms: 300,
            ..Default::default()
        },
    )
    .unwrap();
    let watch = SubscribeOptions {
        events: true,
        ..Default::default()
    };
    let mut observer = Subscriber::open(Transport::EventSource, &worker, "quiet", watch)
        .await
        .unwrap();
    let alice = ticket_for("alice", "Alice", "quiet");
    let alice_reader = subscribe(&worker, "quiet", Some(&alice)).await;
    let joined = eventually("alice's join event", WAIT, async || {
        observer
            .drain_for(Duration::from_millis(100))
            .await
            .into_iter()
            .find(|item| item["ev"] == "join")
    })
    .await;
    assert_eq!(
        joined["user"],
        json!({"id": "alice", "public": {"name": "Alice"}})
    );
    assert_eq!(joined["room"], "quiet");
    assert!(joined["id"].is_string() && joined["ts"].is_u64());
    drop(alice_reader);
    let left = eventually("alice's leave event", WAIT, async || {
        observer
            .drain_for(Duration::from_millis(100))
            .await
            .into_iter()
            .find(|item| item["ev"] == "leave")
    })
    .await;
    assert_eq!(
        left["user"],
        json!({"id": "alice", "public": {"name": "Alice"}}),
        "a leave says who left, as the join did"
    );

    // A busy room: from 4 readers on, no join/leave, only counts.
    let mut crowd = Vec::new();
    let mut busy_observer = Subscriber::open(Transport::WebSocket, &worker, "busy", watch)
        .await
        .unwrap();
    for _ in 0..4 {
        crowd.push(subscribe(&worker, "busy", None).await);
    }
    eventually("a count event with the crowd", WAIT, async || {
        busy_observer
            .drain_for(Duration::from_millis(100))
            .await
            .into_iter()
            .find(|item| item["ev"] == "count" && item["subscribers"] == 5)
    })
    .await;
    let bob = ticket_for("bob", "Bob", "busy");
    crowd.push(subscribe(&worker, "busy", Some(&bob)).await);
    let seen = busy_observer.drain_for(Duration::from_millis(1200)).await;
    assert!(
        seen.iter().all(|item| item["ev"] != "join"),
        "a busy room got a join event: {seen:?}"
    );
    assert!(
        seen.iter()
            .any(|item| item["ev"] == "count" && item["subscribers"] == 6 && item["members"] == 1),
        "no count event with bob: {seen:?}"
    );
}

#[tokio::test]
async fn history_comes_in_order_by_limit_and_before_and_expires() {
    let redis = Redis::start().unwrap();
    let worker = ChatWorker::start_with(
        &redis,
        WorkerOptions {
            history_ttl_secs: 1,
            ..Default::default()
        },
    )
    .unwrap();
    let dispatcher = Dispatcher::start(&redis).unwrap();
    wait_for_live_workers(&dispatcher, 1).await;
    let token = token_for("alice", "Alice");
    let mut ids = Vec::new();
    for n in 0..10 {
        let (status, ack) =
            post_message(&worker, "log", Some(&token), &msg(&format!("m{n}"))).await;
        assert_eq!(status, 202);
        ids.push(ack["id"].as_str().unwrap().to_string());
    }
    let page = |query: &str| {
        let url = format!("{}/rooms/log/messages{query}", dispatcher.base_url());
        async move {
            let (status, body) = get_json(&url).await;
            assert_eq!(status, 200, "{body}");
            let got: Vec<String> = body["messages"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["id"].as_str().unwrap().to_string())
                .collect();
            (got, body["more"].clone())
        }
    };
    assert_eq!(page("").await, (ids.clone(), json!(false)));
    assert_eq!(page("?limit=3").await, (ids[7..].to_vec(), json!(true)));
    assert_eq!(
        page(&format!("?limit=3&before={}", ids[7])).await,
        (ids[4..7].to_vec(), json!(true))
    );
    assert_eq!(
        page(&format!("?before={}", ids[2])).await,
        (ids[..2].to_vec(), json!(false))
    );
    let (status, joined) = join_room(&dispatcher, "log", None).await;
    assert_eq!(status, 200);
    assert_eq!(joined["history"].as_array().unwrap().len(), 10);
    assert_eq!(joined["history"][9]["msg"], "m9");

    tokio::time::sleep(Duration::from_millis(2200)).await;
    assert_eq!(page("").await.0, Vec::<String>::new(), "history expired");
}

/// A client joins (getting history from the dispatcher) while messages keep
/// coming, then subscribes: history followed by the live stream, minus the
/// items it already has (by id), is every message from the first one in
/// its history on, in order, each once.
#[tokio::test]
async fn joiner_history_and_live_stream_meet_without_gap_or_duplicate() {
    let redis = Redis::start().unwrap();
    let worker = ChatWorker::start(&redis).unwrap();
    let dispatcher = Dispatcher::start(&redis).unwrap();
    wait_for_live_workers(&dispatcher, 1).await;
    let token = token_for("alice", "Alice");
    let posting = {
        let url = worker.base_url();
        let token = token.clone();
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut sent = Vec::new();
            for n in 0..120 {
                sent.push(post_at(&client, &url, "flow", &token, &format!("m{n}")).await);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            sent
        })
    };
    tokio::time::sleep(Duration::from_millis(400)).await;
    let (status, joined) = join_room(&dispatcher, "flow", None).await;
    assert_eq!(status, 200, "{joined}");
    let history: Vec<String> = joined["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect();
    assert!(!history.is_empty());
    // Messages go on between the join and the subscription.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut reader = subscribe(&worker, "flow", None).await;
    let sent = posting.await.unwrap();

    let live: Vec<String> = items(&reader.frames_until(500, Duration::from_secs(3)).await)
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect();
    let mut seen_live = std::collections::HashSet::new();
    assert!(
        live.iter().all(|id| seen_live.insert(id.clone())),
        "the live stream repeated an item"
    );
    let mut merged = history.clone();
    merged.extend(live.into_iter().filter(|id| !history.contains(id)));
    let first = sent.iter().position(|id| *id == history[0]).unwrap();
    assert_eq!(merged, sent[first..].to_vec());
}

#[tokio::test]
async fn without_workers_join_is_503_and_without_redis_health_and_join_fail() {
    let mut redis = Redis::start().unwrap();
    let dispatcher = Dispatcher::start(&redis).unwrap();
    let (status, body) = join_room(&dispatcher, "lobby", None).await;
    assert_eq!(
        (status, body),
        (503, json!({"error": "no worker available"}))
    );
    let (status, _) = get_json(&format!("{}/healthz", dispatcher.base_url())).await;
    assert_eq!(status, 200);

    redis.stop();
    let (status, body) = get_json(&format!("{}/healthz", dispatcher.base_url())).await;
    assert_eq!(status, 503);
    assert!(body["error"].is_string(), "{body}");
    let (status, body) = join_room(&dispatcher, "lobby", None).await;
    assert_eq!(status, 503);
    assert!(body["error"].is_string(), "{body}");
}

#[tokio::test]
async fn bad_requests_to_the_dispatcher_get_json_errors() {
    let redis = Redis::start().unwrap();
    let dispatcher = Dispatcher::start(&redis).unwrap();
    let base = dispatcher.base_url();
    let client = reqwest::Client::new();
    let cases = [
        (client.post(format!("{base}/join/bad%20room")), 400),
        (
            client.post(format!("{base}/join/lobby")).body("{not json"),
            400,
        ),
        (client.get(format!("{base}/rooms/lobby/stats?limit=x")), 400),
        (
            client.get(format!("{base}/rooms/lobby/messages?limit=-1")),
            400,
        ),
        (
            client.get(format!("{base}/rooms/{}/messages", "x".repeat(65))),
            400,
        ),
        (client.get(format!("{base}/join/lobby")), 405),
        (client.get(format!("{base}/nothing/here")), 404),
        // Development-only endpoints are off unless configured.
        (
            client
                .post(format!("{base}/dev/token"))
                .body(r#"{"name":"x"}"#),
            404,
        ),
        (client.get(format!("{base}/demo/index.html")), 404),
    ];
    for (request, expected) in cases {
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        assert_eq!(status, expected, "{body}");
        assert!(body["error"].is_string(), "{status}: {body}");
    }
    // CORS: any origin by default, no credentials.
    let response = client
        .post(format!("{base}/join/lobby"))
        .header("Origin", "https://site.example")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["access-control-allow-origin"], "*");
}

/// A room nobody reads on a worker any more is let go (its nchan channel
/// deleted, its members forgotten); a reader who comes back later finds the
/// whole history in the stream, including what was posted meanwhile.
#[tokio::test]
async fn an_abandoned_room_is_let_go_and_served_again_from_history() {
    let redis = Redis::start().unwrap();
    let worker = worker_letting_rooms_go_quickly(&redis);
    let dispatcher = Dispatcher::start(&redis).unwrap();
    let token = token_for("alice", "Alice");
    let mut sent = Vec::new();
    let mut post = async |text: &str| {
        let (status, ack) = post_message(&worker, "ephemeral", Some(&token), &msg(text)).await;
        assert_eq!(status, 202, "{ack}");
        sent.push(ack["id"].as_str().unwrap().to_string());
    };
    let ticket = ticket_for("alice", "Alice", "ephemeral");
    let reader = subscribe(&worker, "ephemeral", Some(&ticket)).await;
    post("one").await;
    post("two").await;
    drop(reader);
    eventually("the room let go", Duration::from_secs(8), async || {
        worker
            .sidecar_log()
            .contains("no readers left here, stopped serving")
            .then_some(())
    })
    .await;
    let body = stats(&dispatcher, "ephemeral", "").await;
    assert_eq!(
        (body["members"].clone(), body["subscribers"].clone()),
        (json!(0), json!(0))
    );
    post("three").await;

    let mut back = subscribe(&worker, "ephemeral", None).await;
    let got: Vec<String> = items(&back.frames_until(3, WAIT).await)
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(got, sent, "the whole history, in order, once");
    assert!(back.drain_for(Duration::from_millis(300)).await.is_empty());
}

/// Each serving of a room reads a channel of its own: a room let go and
/// served again never reuses the nchan channel deleted when it was let go
/// (nchan 1.3.6 can stall a reader catching up on a channel deleted and
/// made again: docs/operations.md, "Channels"). Rounds of a reader coming,
/// reading and leaving while the room's chat goes on: each reader gets
/// every message from its first one on, in order, with no gap, up to what
/// was posted after it arrived.
#[tokio::test]
async fn a_room_let_go_and_served_again_while_its_chat_goes_on_reads_a_new_channel_each_time() {
    use std::sync::{Arc, Mutex};
    let redis = Redis::start().unwrap();
    let worker = worker_letting_rooms_go_quickly(&redis);
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let poster = tokio::spawn({
        let (acked, stop, url) = (acked.clone(), stop.clone(), worker.base_url());
        async move {
            let token = token_for("alice", "Alice");
            let client = reqwest::Client::new();
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let id = post_at(&client, &url, "busy", &token, &format!("m{n}")).await;
                acked.lock().unwrap().push(id);
                n += 1;
                tokio::time::sleep(Duration::from_millis(40)).await;
            }
        }
    });
    let let_go = || worker.sidecar_log().matches("stopped serving").count();
    let mut channels = Vec::new();
    for round in 0..4 {
        let mut reader = subscribe(&worker, "busy", None).await;
        let channel = worker.channel_of("busy").await.expect("served");
        assert!(
            !channels.contains(&channel),
            "round {round} reads {channel} again"
        );
        channels.push(channel);
        // Read until a message posted a little after the reader came.
        let target = {
            let at_arrival = acked.lock().unwrap().len();
            eventually("posts after the reader came", WAIT, async || {
                acked.lock().unwrap().get(at_arrival + 5).cloned()
            })
            .await
        };
        let mut got: Vec<String> = Vec::new();
        let deadline = Instant::now() + WAIT;
        while !got.contains(&target) {
            assert!(
                Instant::now() < deadline,
                "round {round}: {target} never came; got {got:?}"
            );
            let frames = reader.frames_until(1, Duration::from_millis(500)).await;
            got.extend(
                items(&frames)
                    .iter()
                    .filter(|i| i.get("msg").is_some())
                    .filter_map(|i| i["id"].as_str().map(str::to_owned)),
            );
        }
        got.truncate(got.iter().position(|id| *id == target).unwrap() + 1);
        let all = acked.lock().unwrap().clone();
        let first = all
            .iter()
            .position(|id| *id == got[0])
            .expect("an acked message");
        assert_eq!(
            got,
            all[first..first + got.len()],
            "round {round}: a gap or a reorder"
        );
        drop(reader);
        let before = let_go();
        eventually("the room let go", Duration::from_secs(8), async || {
            (let_go() > before).then_some(())
        })
        .await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    poster.await.unwrap();
}

#[tokio::test]
async fn the_recently_active_list_reaches_readers_joins_and_stats_newest_poster_first() {
    let redis = Redis::start().unwrap();
    let worker = ChatWorker::start_with(
        &redis,
        WorkerOptions {
            count_interval_ms: 300,
            ..Default::default()
        },
    )
    .unwrap();
    let dispatcher = Dispatcher::start(&redis).unwrap();
    dispatcher.wait_for_workers(1).await;
    let watch = SubscribeOptions {
        active: true,
        ..Default::default()
    };
    let mut reader = Subscriber::open(Transport::WebSocket, &worker, "talk", watch)
        .await
        .unwrap();
    for (sub, name) in [
        ("ann", "Ann"),
        ("bob", "Bob"),
        ("ann", "Ann"),
        ("cid", "Cid"),
    ] {
        let (status, body) =
            post_message(&worker, "talk", Some(&token_for(sub, name)), &msg("hi")).await;
        assert_eq!(status, 202, "{body}");
    }
    let ids = |users: &Value| -> Vec<String> {
        users
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["id"].as_str().unwrap().to_owned())
            .collect()
    };
    // Readers: `active` events, the last one listing every poster once,
    // the newest first, with their public data; fewer events than posts.
    let mut events = Vec::new();
    let last = eventually("the full active list", WAIT, async || {
        for item in reader.drain_for(Duration::from_millis(100)).await {
            if item["ev"] == "active" {
                events.push(item);
            }
        }
        events
            .last()
            .filter(|e| ids(&e["users"]) == ["cid", "ann", "bob"])
            .cloned()
    })
    .await;
    assert_eq!(last["users"][0]["public"]["name"], "Cid");
    assert!(events.len() < 4, "one event per post: {events:?}");
    // Joins and stats: the same list, from history.
    let (status, joined) = join_room(&dispatcher, "talk", None).await;
    assert_eq!(status, 200, "{joined}");
    assert_eq!(ids(&joined["active"]), ["cid", "ann", "bob"]);
    let stats = stats(&dispatcher, "talk", "").await;
    assert_eq!(ids(&stats["active"]), ["cid", "ann", "bob"]);
    assert_eq!(stats["active"][1]["public"]["name"], "Ann");
}
