//! Additional rooms read over one connection (`?also=`, the original
//! ChatUp's `additionalChannels`): the dispatcher checks them and names
//! them in the read ticket, the module admits and counts the reader in
//! each (one connection, one reader of the box), nchan's multiplexed
//! subscriber delivers them all, and a sidecar restart loses nothing in
//! any of them.

use std::collections::HashMap;
use std::time::Duration;

use chatup_testkit::clients::{eventually, get_json, items};
use chatup_testkit::process::WorkerOptions;
use chatup_testkit::token::ticket_for;
use chatup_testkit::{
    post_message, token_for, ChatWorker, Dispatcher, Redis, SubscribeOptions, Subscriber, Transport,
};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(5);

/// A worker with `chatup_readers_additional_rooms on` (off as shipped).
fn on() -> WorkerOptions {
    WorkerOptions {
        additional_rooms: true,
        ..Default::default()
    }
}
const ROOMS: [&str; 3] = ["lobby", "news", "private-alice"];
const ALSO: &str = "news,private-alice";

/// Posts `text` in `room` through `worker`; the acknowledged id.
async fn post_acked(worker: &ChatWorker, room: &str, text: &str) -> String {
    let token = token_for("poster", "Poster");
    let body = json!({ "msg": text }).to_string();
    let (status, ack) = post_message(worker, room, Some(&token), &body).await;
    assert_eq!(status, 202, "{ack}");
    ack["id"].as_str().unwrap().to_string()
}

/// Joins `room` with `body` as the user `token` names (if any).
async fn join(
    dispatcher: &Dispatcher,
    room: &str,
    token: Option<&str>,
    body: Value,
) -> (u16, Value) {
    let mut request = reqwest::Client::new()
        .post(format!("{}/join/{room}", dispatcher.base_url()))
        .json(&body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// The ids of each room's messages in `items`, in the order received.
fn ids_by_room(items: &[Value]) -> HashMap<String, Vec<String>> {
    let mut rooms: HashMap<String, Vec<String>> = HashMap::new();
    for item in items {
        rooms
            .entry(item["room"].as_str().unwrap().to_owned())
            .or_default()
            .push(item["id"].as_str().unwrap().to_owned());
    }
    rooms
}

/// `rooms` without the message `id`: the news channel may replay what it
/// held before the readers came (nchan's oldest frame first), which they
/// did not ask for and the test does not count.
fn without(mut rooms: HashMap<String, Vec<String>>, id: &str) -> HashMap<String, Vec<String>> {
    for ids in rooms.values_mut() {
        ids.retain(|i| i != id);
    }
    rooms
}

/// What `reader` received, added to `got`, once it holds every message of
/// `acked` (or 10 s passed).
async fn receive_all(
    reader: &mut Subscriber,
    acked: &HashMap<String, Vec<String>>,
    before: &str,
    mut got: Vec<Value>,
) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let has_all = |got: &[Value]| {
        let by_room = without(ids_by_room(got), before);
        acked.iter().all(|(room, ids)| {
            by_room
                .get(room)
                .is_some_and(|have| ids.iter().all(|id| have.contains(id)))
        })
    };
    while !has_all(&got) {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let frames = reader.frames_until(1, left).await;
        if frames.is_empty() {
            break;
        }
        got.extend(items(&frames));
    }
    got
}

/// The room's stats, asked as alice (`private-*` rooms need a token).
async fn stats(dispatcher: &Dispatcher, room: &str) -> Value {
    reqwest::Client::new()
        .get(format!("{}/rooms/{room}/stats", dispatcher.base_url()))
        .bearer_auth(token_for("alice", "Alice"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap_or(Value::Null)
}

async fn subscribe_status(worker: &ChatWorker, query: &str) -> (u16, Value) {
    let response = reqwest::Client::new()
        .get(format!("{}/sub/lobby?{query}", worker.base_url()))
        .header("Accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn one_connection_reads_its_room_and_its_additional_rooms_every_message_once_through_a_sidecar_restart(
) {
    let redis = Redis::start().unwrap();
    let mut reading = ChatWorker::start_with(&redis, on()).unwrap();
    let posting = ChatWorker::start_with(&redis, on()).unwrap();
    let dispatcher = Dispatcher::start(&redis).unwrap();
    // Nothing is posted before the readers come: nchan 1.3.6's multiplexed
    // subscribers can stall catching up on a backlog (see
    // a_rolling_deploy_loses_no_message_of_a_room_or_of_its_additional_room);
    // the additional rooms' history in joins is checked in the next test.
    let before = "";

    // The join checks the additional rooms, answers their history and
    // names them in the ticket. Repeats and the room itself are dropped.
    let alice = token_for("alice", "Alice");
    let (status, answer) = join(
        &dispatcher,
        "lobby",
        Some(&alice),
        json!({ "also": ["news", "private-alice", "news", "lobby"] }),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let also = answer["also"].as_array().unwrap();
    assert_eq!(also.len(), 2, "{answer}");
    assert_eq!(also[0]["room"], "news");
    assert_eq!(also[0]["history"], json!([]), "{answer}");
    assert_eq!(also[1]["room"], "private-alice");
    let ticket = answer["ticket"].as_str().unwrap().to_owned();

    let mut readers = Vec::new();
    for transport in [
        Transport::WebSocket,
        Transport::EventSource,
        Transport::LongPoll,
    ] {
        let options = SubscribeOptions {
            ticket: Some(&ticket),
            also: Some(ALSO),
            ..Default::default()
        };
        readers.push(
            Subscriber::open(transport, &reading, "lobby", options)
                .await
                .unwrap_or_else(|e| panic!("{transport:?}: {e}")),
        );
    }
    // Counted in every room; one reader of the worker per connection;
    // a member of its own room only.
    for room in ROOMS {
        eventually("the readers counted in each room", WAIT, async || {
            (stats(&dispatcher, room).await["subscribers"] == 3).then_some(())
        })
        .await;
    }
    assert_eq!(stats(&dispatcher, "lobby").await["members"], 1);
    assert_eq!(stats(&dispatcher, "news").await["members"], 0);
    let (_, workers) = get_json(&format!("{}/workers", dispatcher.operator_url())).await;
    let entry = workers["workers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["id"] == reading.id.as_str())
        .unwrap()
        .clone();
    assert_eq!(entry["subscribers"], 3, "{workers}");

    let mut acked: HashMap<String, Vec<String>> = HashMap::new();
    for room in ROOMS {
        acked
            .entry(room.to_owned())
            .or_default()
            .push(post_acked(&posting, room, &format!("first in {room}")).await);
    }
    let mut received: Vec<Vec<Value>> = Vec::new();
    for reader in &mut readers {
        received.push(receive_all(reader, &acked, before, Vec::new()).await);
    }

    reading.kill_sidecar();
    for n in 0..2 {
        for room in ROOMS {
            acked
                .get_mut(room)
                .unwrap()
                .push(post_acked(&posting, room, &format!("while down {n} in {room}")).await);
        }
    }
    reading.start_sidecar().unwrap();
    for room in ROOMS {
        acked
            .get_mut(room)
            .unwrap()
            .push(post_acked(&posting, room, &format!("after in {room}")).await);
    }

    for (reader, got) in readers.iter_mut().zip(received) {
        let mut got = receive_all(reader, &acked, before, got).await;
        // Anything more would be a duplicate.
        got.extend(reader.drain_for(Duration::from_millis(300)).await);
        assert_eq!(
            without(ids_by_room(&got), before),
            acked,
            "every message of every room once, in order"
        );
    }

    // Readers that leave are uncounted in every room.
    drop(readers);
    for room in ROOMS {
        eventually(
            "the readers gone from each room",
            Duration::from_secs(10),
            async || (stats(&dispatcher, room).await["subscribers"] == 0).then_some(()),
        )
        .await;
    }
}

#[tokio::test]
async fn additional_rooms_are_refused_with_json_errors_when_they_may_not_be_read() {
    let redis = Redis::start().unwrap();
    let worker = ChatWorker::start_with(&redis, on()).unwrap();
    let dispatcher = Dispatcher::start(&redis).unwrap();

    // As shipped, additional rooms are off: a clear 400.
    let shipped = ChatWorker::start(&redis).unwrap();
    let response = reqwest::Client::new()
        .get(format!("{}/sub/lobby?also=news", shipped.base_url()))
        .header("Accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("off"), "{body}");
    drop(shipped);

    // On the worker: a room that needs a token, without a ticket, or with a
    // ticket that leaves it out; names that are not rooms; too many.
    let lobby_only = ticket_for("alice", "Alice", "lobby");
    let nine: Vec<String> = (0..9).map(|n| format!("r{n}")).collect();
    for (query, expected) in [
        ("also=private-alice".to_owned(), 401),
        (format!("also=private-alice&ticket={lobby_only}"), 403),
        ("also=news,a%20b".to_owned(), 400),
        (format!("also={}", nine.join(",")), 400),
    ] {
        let (status, body) = subscribe_status(&worker, &query).await;
        assert_eq!(status, expected, "{query}: {body}");
        assert!(body["error"].is_string(), "{query}: {body}");
    }
    // Nothing of a refused reader is counted (refused before counting).
    for room in ["lobby", "news"] {
        eventually("nobody counted", WAIT, async || {
            (stats(&dispatcher, room).await["subscribers"] == 0).then_some(())
        })
        .await;
    }

    // On the dispatcher: the same rules. An additional room the reader
    // may not read is left out, and said so: it does not keep the reader
    // from its room.
    let (status, body) = join(
        &dispatcher,
        "lobby",
        None,
        json!({ "also": ["private-x", "news"] }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["also"].as_array().unwrap().len(), 1, "{body}");
    assert_eq!(body["also"][0]["room"], "news");
    assert_eq!(body["also_refused"][0]["room"], "private-x", "{body}");
    assert_eq!(body["also_refused"][0]["status"], 401, "{body}");
    assert!(body["also_refused"][0]["error"].is_string(), "{body}");
    let alice = token_for("alice", "Alice");
    let (status, body) = join(
        &dispatcher,
        "lobby",
        Some(&alice),
        json!({ "also": ["private-alice"] }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["also"][0]["token_only"], true, "{body}");
    let (status, body) = join(&dispatcher, "lobby", None, json!({ "also": ["a b"] })).await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = join(&dispatcher, "lobby", None, json!({ "also": nine })).await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = join(&dispatcher, "lobby", None, json!({ "also": "news" })).await;
    assert_eq!(status, 400, "{body}");

    // Joining again, a reader asks each additional room for what followed
    // the last message it has of it; one trimmed from history is a gap.
    let mut posted = Vec::new();
    for n in 0..3 {
        posted.push(post_acked(&worker, "news", &format!("news {n}")).await);
    }
    let (status, body) = join(
        &dispatcher,
        "lobby",
        None,
        json!({ "also": ["news"], "also_after": { "news": posted[0] } }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let history: Vec<&str> = body["also"][0]["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(history, [posted[1].as_str(), posted[2].as_str()], "{body}");
    assert!(body["also"][0].get("history_gap").is_none(), "{body}");
    let (_, body) = join(
        &dispatcher,
        "lobby",
        None,
        json!({ "also": ["news"], "also_after": { "news": "01AAAAAAAAAAAAAAAAAAAAAAAA" } }),
    )
    .await;
    assert_eq!(body["also"][0]["history_gap"], true, "{body}");
    let (status, _) = join(
        &dispatcher,
        "lobby",
        None,
        json!({ "also": ["news"], "also_after": { "news": "not an id!" } }),
    )
    .await;
    assert_eq!(status, 400);

    // A fresh ticket covers the additional rooms asked for.
    let response = reqwest::Client::new()
        .post(format!("{}/tickets/lobby", dispatcher.base_url()))
        .bearer_auth(&alice)
        .json(&json!({ "also": ["private-alice"] }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["rooms"], json!(["lobby", "private-alice"]), "{body}");
    let ticket = body["ticket"].as_str().unwrap();
    let options = SubscribeOptions {
        ticket: Some(ticket),
        also: Some("private-alice"),
        ..Default::default()
    };
    let mut reader = Subscriber::open(Transport::WebSocket, &worker, "lobby", options)
        .await
        .unwrap();
    let id = post_acked(&worker, "private-alice", "for alice").await;
    let got = items(&reader.frames_until(1, WAIT).await);
    assert_eq!(got[0]["id"], id.as_str());
    assert_eq!(got[0]["room"], "private-alice");
}

/// A rolling deploy (every worker drained in turn, then restarted) whose
/// readers read a site-wide room besides their own over the same
/// connection: drains delete channels under nchan's multiplexed
/// subscribers, which must then move on without losing a message of
/// either room. It fails about one run in three: a reader that moves to
/// another worker gets that worker's buffered frames one at a time, one
/// for each new publish, and never catches up (it missed the last 1.5 s
/// of both rooms when the posts stopped). Without the additional room the
/// same deploy passes every time. Kept, ignored, to check a fix.
#[tokio::test]
#[ignore = "fails: nchan 1.3.6's multiplexed subscribers catch up on buffered frames one per new publish (docs/operations.md, \"Readers\"); run with --ignored to check a fix"]
async fn a_rolling_deploy_loses_no_message_of_a_room_or_of_its_additional_room() {
    use chatup_testkit::storms::{self, StormCluster};
    let timeout = Duration::from_secs(60);
    let options = WorkerOptions {
        additional_rooms: true,
        ..WorkerOptions::for_benchmarks()
    };
    let mut cluster = StormCluster::start_with(2, None, options).await.unwrap();
    cluster.also = Some("announcements".into());
    let rolling = storms::rolling_drain(&mut cluster, 40, 4, 20, timeout).await;
    println!("rolling drain with an additional room: {rolling:#?}");
    for step in &rolling.steps {
        assert!(step.drained, "{step:?}");
        assert_eq!(step.migrated + step.switched, step.readers, "{step:?}");
    }
    let delivery = &rolling.delivery;
    assert!(delivery.acked > 0);
    assert_eq!(delivery.total_missed(), 0, "{}", delivery.line());
    assert_eq!(delivery.out_of_order, 0, "{}", delivery.line());
    assert_eq!(delivery.given_up, 0, "{}", delivery.line());
    for worker in &cluster.workers {
        assert!(
            !worker.nginx_log().contains("exited on signal"),
            "{}",
            worker.nginx_log()
        );
    }
}

/// Deletes the nchan channel `room` is served in, through the worker's
/// internal socket, as the sidecar does when it drains.
async fn delete_channel(worker: &ChatWorker, room: &str) -> String {
    let channel = worker.channel_of(room).await.expect("the room is served");
    worker
        .internal_request("DELETE", &format!("/pub/{channel}"))
        .await
}

/// nchan's multiplexed subscribers have a history of trouble when one of
/// their channels is deleted (slact/nchan#591: messages stop arriving,
/// then a worker crashes). A deletion (here an operator's, outside a
/// drain) closes the multiplexed reader and leaves the readers of other
/// rooms alone, nginx survives it, and the deleted room is served afresh
/// in a new channel, whose readers get every message. In the channel nchan
/// made again, a reader catching up could stall (about one run in ten on a
/// loaded machine, with or without multiplexed subscribers:
/// docs/operations.md, "Channels").
#[tokio::test]
async fn a_deleted_channel_closes_its_multiplexed_readers_and_the_next_ones_read_every_room() {
    let redis = Redis::start().unwrap();
    let worker = ChatWorker::start_with(&redis, on()).unwrap();
    let both = || SubscribeOptions {
        also: Some("news"),
        ..Default::default()
    };
    let mut multiplexed = Subscriber::open(Transport::WebSocket, &worker, "lobby", both())
        .await
        .unwrap();
    let mut single = Subscriber::connect(Transport::WebSocket, &worker, "lobby", None)
        .await
        .unwrap();
    let first = post_acked(&worker, "news", "first").await;
    let frames = multiplexed.frames_until(1, WAIT).await;
    assert_eq!(items(&frames)[0]["id"], first.as_str());

    let deleted = worker.channel_of("news").await.expect("served");
    let answer = delete_channel(&worker, "news").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let closed =
        tokio::time::timeout(WAIT, async { while multiplexed.next().await.is_some() {} }).await;
    assert!(closed.is_ok(), "the multiplexed reader was not closed");

    let mut acked: HashMap<String, Vec<String>> = HashMap::new();
    for n in 0..3 {
        for room in ["lobby", "news"] {
            let id = post_acked(&worker, room, &format!("{room} {n}")).await;
            acked.entry(room.to_owned()).or_default().push(id);
        }
    }
    // The next readers read a new channel.
    let mut news = Subscriber::connect(Transport::WebSocket, &worker, "news", None)
        .await
        .unwrap();
    let channel = worker.channel_of("news").await.expect("served");
    assert_ne!(channel, deleted, "the deleted channel is read again");
    // Served afresh: the room's whole history, then what follows.
    let mut history = vec![first.clone()];
    history.extend(acked["news"].iter().cloned());
    let got: Vec<String> = items(&news.frames_until(history.len(), WAIT).await)
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(got, history);
    // A reader coming back over one connection is not asserted here:
    // nchan 1.3.6's multiplexed subscribers catch up on buffered frames one
    // per new publish when a channel is owned by the other nginx worker
    // process (see
    // a_rolling_deploy_loses_no_message_of_a_room_or_of_its_additional_room).
    let lobby: Vec<String> = items(&single.frames_until(3, WAIT).await)
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(lobby, acked["lobby"]);
    let log = worker.nginx_log();
    assert!(
        !log.contains("exited on signal") && !log.contains("[alert]"),
        "{log}"
    );
}
