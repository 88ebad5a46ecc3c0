//! Readers admitted and counted by the ChatUp module (issue: no nchan
//! authorize/subscribe/unsubscribe requests): restarts that keep readers
//! fed, tokens that never block reading a public room, a full worker that
//! refuses cleanly, and counts that stay true when readers vanish.

use std::time::Duration;

use chatup_testkit::clients::{eventually, get_json, items};
use chatup_testkit::process::WorkerOptions;
use chatup_testkit::token::{now_secs, ticket_exactly, ticket_for};
use chatup_testkit::{
    post_message, token_for, ChatWorker, Dispatcher, Redis, SubscribeOptions, Subscriber, Transport,
};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(5);

fn msg(text: &str) -> String {
    json!({ "msg": text }).to_string()
}

/// Posts `text` through `worker` and returns the acknowledged id.
async fn post_acked(worker: &ChatWorker, room: &str, text: &str) -> String {
    let token = token_for("poster", "Poster");
    let (status, ack) = post_message(worker, room, Some(&token), &msg(text)).await;
    assert_eq!(status, 202, "{ack}");
    ack["id"].as_str().unwrap().to_string()
}

/// Ids of the messages in `items`, in order.
fn ids(items: &[Value]) -> Vec<String> {
    items
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_string())
        .collect()
}

async fn worker_subscribers(dispatcher: &Dispatcher, id: &str) -> Option<u64> {
    let (_, body) = get_json(&format!("{}/workers", dispatcher.operator_url())).await;
    body["workers"].as_array()?.iter().find(|w| w["id"] == id)?["subscribers"].as_u64()
}

#[tokio::test]
async fn a_sidecar_killed_and_restarted_keeps_feeding_its_readers_every_message_once_in_order() {
    let redis = Redis::start().unwrap();
    let mut reading = ChatWorker::start(&redis).unwrap();
    let posting = ChatWorker::start(&redis).unwrap();
    let mut readers = Vec::new();
    for transport in [
        Transport::EventSource,
        Transport::WebSocket,
        Transport::LongPoll,
    ] {
        readers.push(
            Subscriber::connect(transport, &reading, "restart", None)
                .await
                .unwrap(),
        );
    }
    let mut acked = Vec::new();
    acked.push(post_acked(&posting, "restart", "before").await);
    for reader in &mut readers {
        assert_eq!(items(&reader.frames_until(1, WAIT).await).len(), 1);
    }

    reading.kill_sidecar();
    for n in 0..3 {
        acked.push(post_acked(&posting, "restart", &format!("while down {n}")).await);
    }
    reading.start_sidecar().unwrap();
    for n in 0..3 {
        acked.push(post_acked(&posting, "restart", &format!("after {n}")).await);
    }

    for reader in &mut readers {
        let got = items(&reader.frames_until(6, Duration::from_secs(10)).await);
        assert_eq!(ids(&got), acked[1..], "every message once, in order");
        let extra = reader.drain_for(Duration::from_millis(300)).await;
        assert!(extra.is_empty(), "duplicates: {extra:?}");
    }
    assert!(
        reading
            .sidecar_log()
            .contains("resuming a room nginx still serves"),
        "{}",
        reading.sidecar_log()
    );
}

#[tokio::test]
async fn an_expired_or_malformed_ticket_reads_a_public_room_anonymously() {
    let redis = Redis::start().unwrap();
    let worker = ChatWorker::start(&redis).unwrap();
    let dispatcher = Dispatcher::start(&redis).unwrap();
    let expired = ticket_exactly(&json!({
        "iss": "chatup", "aud": "chatup-read", "sub": "late", "rooms": ["lobby"],
        "iat": now_secs() - 900, "exp": now_secs() - 600,
    }));
    let mut readers = Vec::new();
    for ticket in [expired.as_str(), "garbage"] {
        for transport in [Transport::EventSource, Transport::WebSocket] {
            let options = SubscribeOptions {
                ticket: Some(ticket),
                ..Default::default()
            };
            let reader = Subscriber::open(transport, &worker, "lobby", options)
                .await
                .unwrap_or_else(|e| panic!("{transport:?} with a bad token: {e}"));
            readers.push(reader);
        }
    }
    let id = post_acked(&worker, "lobby", "hello").await;
    for reader in &mut readers {
        assert_eq!(
            ids(&items(&reader.frames_until(1, WAIT).await)),
            std::slice::from_ref(&id)
        );
    }
    // Counted as readers, not listed as members.
    let stats = eventually("the readers counted", WAIT, async || {
        let (_, body) = get_json(&format!("{}/rooms/lobby/stats", dispatcher.base_url())).await;
        (body["subscribers"] == 4).then_some(body)
    })
    .await;
    assert_eq!(stats["members"], 0, "{stats}");

    // A room that needs a token still refuses them, with a JSON 401.
    let client = reqwest::Client::new();
    for ticket in [expired.as_str(), "garbage"] {
        let response = client
            .get(format!(
                "{}/sub/private-x?ticket={ticket}",
                worker.base_url()
            ))
            .header("Accept", "text/event-stream")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401);
        let body: Value = response.json().await.unwrap();
        assert!(body["error"].is_string(), "{body}");
    }
}

#[tokio::test]
async fn readers_past_the_limit_get_a_json_503_and_every_admitted_reader_keeps_receiving() {
    let redis = Redis::start().unwrap();
    let options = WorkerOptions {
        max_readers: 5,
        ..Default::default()
    };
    let worker = ChatWorker::start_with(&redis, options).unwrap();
    let mut admitted = Vec::new();
    for n in 0..5 {
        let room = if n % 2 == 0 { "full-a" } else { "full-b" };
        admitted.push((
            room,
            Subscriber::connect(Transport::WebSocket, &worker, room, None)
                .await
                .unwrap(),
        ));
    }
    let client = reqwest::Client::new();
    for room in ["full-a", "full-c"] {
        let response = client
            .get(format!("{}/sub/{room}", worker.base_url()))
            .header("Accept", "text/event-stream")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 503);
        assert_eq!(
            response.headers().get("retry-after").map(|v| v.as_bytes()),
            Some(&b"1"[..])
        );
        let body: Value = response.json().await.unwrap();
        assert!(
            body["error"].as_str().unwrap().contains("readers"),
            "{body}"
        );
    }
    let a = post_acked(&worker, "full-a", "to a").await;
    let b = post_acked(&worker, "full-b", "to b").await;
    for (room, reader) in &mut admitted {
        let want = if *room == "full-a" { &a } else { &b };
        assert_eq!(
            ids(&items(&reader.frames_until(1, WAIT).await)),
            std::slice::from_ref(want)
        );
    }
    // One leaves: one more gets in.
    admitted.pop();
    eventually("a place freed", WAIT, async || {
        let response = client
            .get(format!("{}/sub/full-c", worker.base_url()))
            .header("Accept", "text/event-stream")
            .send()
            .await
            .ok()?;
        (response.status() == 200).then_some(())
    })
    .await;
    assert!(
        !worker.nginx_log().contains("exited on signal"),
        "{}",
        worker.nginx_log()
    );
}

#[tokio::test]
async fn readers_that_vanish_are_uncounted_within_seconds_and_their_rooms_let_go() {
    let redis = Redis::start().unwrap();
    let options = WorkerOptions {
        room_sweep_secs: 1,
        ..Default::default()
    };
    let worker = ChatWorker::start_with(&redis, options).unwrap();
    let dispatcher = Dispatcher::start(&redis).unwrap();

    // 500 readers over 50 rooms, a fifth of them signed in, opened and
    // dropped at once (many before nchan even took them).
    let client = reqwest::Client::new();
    let mut opening = Vec::new();
    for n in 0..500 {
        let room = format!("vanish-{}", n % 50);
        let ticket = (n % 5 == 0).then(|| ticket_for(&format!("user{n}"), "U", &room));
        let query = ticket.map(|t| format!("?ticket={t}")).unwrap_or_default();
        let request = client
            .get(format!("{}/sub/{room}{query}", worker.base_url()))
            .header("Accept", "text/event-stream")
            .timeout(Duration::from_millis(if n % 2 == 0 { 1 } else { 300 }));
        opening.push(tokio::spawn(async move {
            // Read a little of the stream (or nothing), then drop it.
            if let Ok(response) = request.send().await {
                let _ = tokio::time::timeout(Duration::from_millis(50), response.bytes()).await;
            }
        }));
    }
    for task in opening {
        let _ = task.await;
    }

    // Readers kept by nginx worker processes that are then killed: their
    // requests' cleanups never run; the respawned processes clear them.
    let mut kept = Vec::new();
    for n in 0..20 {
        let ticket = ticket_for(&format!("kept{n}"), "K", "vanish-kept");
        let options = SubscribeOptions {
            ticket: Some(&ticket),
            ..Default::default()
        };
        kept.push(
            Subscriber::open(Transport::WebSocket, &worker, "vanish-kept", options)
                .await
                .unwrap(),
        );
    }
    eventually("the kept readers counted", WAIT, async || {
        (worker_subscribers(&dispatcher, &worker.id).await == Some(20)).then_some(())
    })
    .await;
    for pid in worker.nginx_worker_pids() {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
    }

    eventually(
        "no reader counted any more",
        Duration::from_secs(10),
        async || (worker_subscribers(&dispatcher, &worker.id).await == Some(0)).then_some(()),
    )
    .await;
    // Members leave once they stayed away for the leave grace (a page
    // reload or a long-poll between two polls is not a leave).
    for room in ["vanish-0", "vanish-kept"] {
        eventually("no member listed", Duration::from_secs(10), async || {
            let (_, stats) =
                get_json(&format!("{}/rooms/{room}/stats", dispatcher.base_url())).await;
            (stats["subscribers"] == 0 && stats["members"] == 0).then_some(())
        })
        .await;
    }
    // The rooms nobody reads are let go.
    eventually(
        "the empty rooms let go",
        Duration::from_secs(10),
        async || {
            let (_, body) = get_json(&format!("{}/workers", dispatcher.operator_url())).await;
            let entry = body["workers"]
                .as_array()?
                .iter()
                .find(|w| w["id"] == worker.id.as_str())?
                .clone();
            (entry["rooms"] == 0).then_some(())
        },
    )
    .await;
    // And a reader coming now is served again.
    let mut late = Subscriber::connect(Transport::WebSocket, &worker, "vanish-kept", None)
        .await
        .unwrap();
    let id = post_acked(&worker, "vanish-kept", "still here").await;
    let got = ids(&items(&late.frames_until(1, WAIT).await));
    assert_eq!(got.last(), Some(&id));
}

#[tokio::test]
async fn a_worker_short_of_connections_refuses_readers_with_503_and_keeps_every_admitted_one() {
    let redis = Redis::start().unwrap();
    let options = WorkerOptions {
        // 2 nginx processes x 256 connections, 64 of each kept in reserve.
        worker_connections: Some(256),
        ..Default::default()
    };
    let worker = ChatWorker::start_with(&redis, options).unwrap();
    let mut opening = Vec::new();
    for n in 0..600 {
        let base = worker.base_url();
        opening.push(tokio::spawn(async move {
            let room = format!("crowd-{}", n % 20);
            match Subscriber::open_at(
                Transport::EventSource,
                &base,
                &room,
                SubscribeOptions::default(),
            )
            .await
            {
                Ok(reader) => Ok((room, reader)),
                Err(e) => Err(e.to_string()),
            }
        }));
    }
    let mut admitted = Vec::new();
    let (mut refused, mut dropped) = (0, 0);
    for task in opening {
        match task.await.unwrap() {
            Ok(reader) => admitted.push(reader),
            Err(e) if e.contains("status 503") => refused += 1,
            // nginx itself, out of connections, closes connections that
            // have not sent their request yet ("reusing connections"), as
            // raw nchan does: a refusal too, never an admitted reader.
            Err(e) if e.contains("error sending request") => dropped += 1,
            Err(e) => panic!("refused otherwise than with 503: {e}"),
        }
    }
    assert!(refused + dropped > 0, "600 readers fit in 512 connections?");
    // At least one process's worth: its 256 connections less the reserve
    // (readers arriving at once mostly land on one process).
    assert!(admitted.len() >= 150, "only {} admitted", admitted.len());
    for n in 0..20 {
        post_acked(&worker, &format!("crowd-{n}"), "to everyone").await;
    }
    for (room, reader) in &mut admitted {
        let got = items(&reader.frames_until(1, Duration::from_secs(10)).await);
        assert_eq!(got.len(), 1, "an admitted reader of {room} got {got:?}");
    }
    let log = worker.nginx_log();
    assert!(!log.contains("exited on signal"), "{log}");
    println!(
        "admitted {}, refused {refused} with 503, {dropped} dropped by nginx",
        admitted.len()
    );
}

#[tokio::test]
async fn a_signed_in_reader_s_token_reaches_no_url_and_no_log() {
    let redis = Redis::start().unwrap();
    let worker = ChatWorker::start(&redis).unwrap();
    let dispatcher = Dispatcher::start(&redis).unwrap();
    // As the client does: the site's token goes to the dispatcher in a
    // header, and the reader subscribes with the ticket it gets back.
    let token = token_for("anna", "Anna");
    let join: Value = reqwest::Client::new()
        .post(format!("{}/join/logged", dispatcher.base_url()))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ticket = join["ticket"].as_str().expect("a read ticket").to_string();
    assert!(join["ticket_expires_at"].as_u64().unwrap() <= now_secs() + 300);
    let options = SubscribeOptions {
        ticket: Some(&ticket),
        ..Default::default()
    };
    let mut reader = Subscriber::open(Transport::EventSource, &worker, "logged", options)
        .await
        .unwrap();
    eventually("anna listed as a member", WAIT, async || {
        let (_, body) = get_json(&format!("{}/rooms/logged/stats", dispatcher.base_url())).await;
        (body["members"] == 1).then_some(())
    })
    .await;
    let id = post_acked(&worker, "logged", "hello").await;
    assert_eq!(ids(&items(&reader.frames_until(1, WAIT).await)), [id]);
    drop(reader);
    let access_log = worker.dir().join("nginx-access.log");
    let log = eventually("the reader's request logged", WAIT, async || {
        let log = std::fs::read_to_string(&access_log).ok()?;
        log.contains("/sub/logged").then_some(log)
    })
    .await;
    let signature = token.rsplit('.').next().unwrap();
    let logs = [
        log,
        worker.nginx_log(),
        worker.sidecar_log(),
        dispatcher.log(),
    ];
    for log in &logs {
        assert!(
            !log.contains(signature),
            "the site's token in a log:\n{log}"
        );
        assert!(!log.contains("token="), "{log}");
    }
    // Nor does the ticket reach the access log.
    assert!(!logs[0].contains(ticket.rsplit('.').next().unwrap()));
}
