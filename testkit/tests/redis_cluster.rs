//! Redis Cluster: two chat workers and a dispatcher on a cluster of three
//! shards (three masters, three replicas). Rooms land on every shard and
//! travel by sharded Pub/Sub; posting, fan-out across workers, history,
//! presence, bans and server posts work as on one server.

use std::time::Duration;

use std::time::Instant;

use chatup_testkit::clients::{eventually, get_json, items};
use chatup_testkit::cluster::RedisCluster;
use chatup_testkit::load::{check_acknowledged_delivered, Poster, ResumingReader};
use chatup_testkit::process::WorkerOptions;
use chatup_testkit::token::{server_token, ticket_for};
use chatup_testkit::{
    post_message, token_for, ChatWorker, Dispatcher, Redis, SubscribeOptions, Subscriber, Transport,
};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(15);

fn msg(text: &str) -> String {
    json!({ "msg": text }).to_string()
}

async fn server_call(dispatcher: &Dispatcher, path: &str, token: &str) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!("{}{path}", dispatcher.base_url()))
        .header("Content-Type", "application/jwt")
        .body(token.to_string())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_spread_over_the_shards_and_everything_works_as_on_one_server() {
    let cluster = RedisCluster::start().unwrap();
    let options = || WorkerOptions {
        redis_url: Some(cluster.url()),
        ..Default::default()
    };
    // The harness's Redis is a placeholder: every part uses the cluster.
    let unused = Redis::start().unwrap();
    let a = ChatWorker::start_with(&unused, options()).unwrap();
    let b = ChatWorker::start_with(&unused, options()).unwrap();
    let dispatcher = Dispatcher::start_on(&cluster.url()).unwrap();
    eventually("both workers announced", WAIT, async || {
        let (_, body) = get_json(&format!("{}/workers", dispatcher.operator_url())).await;
        (body["workers"].as_array().map(Vec::len) == Some(2)).then_some(())
    })
    .await;

    // Twelve rooms, read on b (alice signed in), written on a.
    let rooms: Vec<String> = (0..12).map(|n| format!("shard-room-{n}")).collect();
    let mut readers = Vec::new();
    for room in &rooms {
        let ticket = ticket_for("alice", "Alice", room);
        let options = SubscribeOptions {
            ticket: Some(&ticket),
            ..Default::default()
        };
        readers.push(
            Subscriber::open(Transport::WebSocket, &b, room, options)
                .await
                .unwrap(),
        );
    }
    let token = token_for("bob", "Bob");
    for room in &rooms {
        let (status, ack) = post_message(&a, room, Some(&token), &msg(room)).await;
        assert_eq!(status, 202, "{room}: {ack}");
    }
    for (room, reader) in rooms.iter().zip(readers.iter_mut()) {
        let got = items(&reader.frames_until(1, WAIT).await);
        assert_eq!(got[0]["msg"], room.as_str(), "{room}");
    }
    // Every shard holds some of the rooms.
    for master in cluster.master_ports() {
        let keys: u64 = cluster.cli(master, &["DBSIZE"]).parse().unwrap();
        assert!(keys > 0, "the master on :{master} holds no key");
    }

    // History and presence through the dispatcher.
    let (status, history) = get_json(&format!(
        "{}/rooms/shard-room-3/messages",
        dispatcher.base_url()
    ))
    .await;
    assert_eq!(status, 200, "{history}");
    assert_eq!(history["messages"][0]["msg"], "shard-room-3");
    let stats = eventually("alice listed in a room", WAIT, async || {
        let (_, body) = get_json(&format!(
            "{}/rooms/shard-room-7/stats",
            dispatcher.base_url()
        ))
        .await;
        (body["members"] == 1).then_some(body)
    })
    .await;
    assert_eq!(stats["users"][0]["id"], "alice", "{stats}");
    // The heartbeats' reader counts, per room on its shard.
    eventually("the reader counted", WAIT, async || {
        let (status, join) =
            chatup_testkit::clients::join_room(&dispatcher, "shard-room-7", None).await;
        assert_eq!(status, 200, "{join}");
        (join["room"]["subscribers"] == 1).then_some(())
    })
    .await;

    // A server post reaches its room's readers; a ban holds on every worker.
    let post = server_token(
        "post",
        json!({"items": [{"room": "shard-room-5", "msg": "from the site"}]}),
    );
    let (status, body) = server_call(&dispatcher, "/messages", &post).await;
    assert_eq!(status, 200, "{body}");
    let got = items(&readers[5].frames_until(1, WAIT).await);
    assert_eq!(got[0]["msg"], "from the site");
    let ban = server_token("ban", json!({"bans": [{"user": "bob", "room": "*"}]}));
    let (status, body) = server_call(&dispatcher, "/bans", &ban).await;
    assert_eq!(status, 200, "{body}");
    for worker in [&a, &b] {
        eventually("the ban on every worker", WAIT, async || {
            let (status, _) = post_message(worker, "shard-room-1", Some(&token), &msg("hi")).await;
            (status == 403).then_some(())
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_master_killed_under_load_loses_no_acknowledged_message() {
    const ROOM: &str = "cluster-failover";
    let mut cluster = RedisCluster::start().unwrap();
    let options = || WorkerOptions {
        redis_url: Some(cluster.url()),
        ..Default::default()
    };
    let unused = Redis::start().unwrap();
    let a = ChatWorker::start_with(&unused, options()).unwrap();
    let b = ChatWorker::start_with(&unused, options()).unwrap();
    let dispatcher = Dispatcher::start_on(&cluster.url()).unwrap();
    eventually("both workers announced", WAIT, async || {
        let (_, body) = get_json(&format!("{}/workers", dispatcher.operator_url())).await;
        (body["workers"].as_array().map(Vec::len) == Some(2)).then_some(())
    })
    .await;
    let mut readers = Vec::new();
    for worker in [&a, &b] {
        for transport in [Transport::EventSource, Transport::WebSocket] {
            readers.push(
                ResumingReader::start(transport, &worker.base_url(), ROOM)
                    .await
                    .unwrap(),
            );
        }
    }
    let poster = Poster::start(
        vec![a.base_url(), b.base_url()],
        ROOM,
        Duration::from_millis(50),
    );
    let acked_by = async |count: usize, what: &str| {
        eventually(what, Duration::from_secs(40), async || {
            (poster.acked_count() >= count).then_some(())
        })
        .await
    };
    acked_by(20, "posting under way").await;

    let history_key = format!("chatup:{{{ROOM}}}:history");
    let old = cluster.master_of(&history_key).unwrap();
    cluster.kill(old);
    let killed = Instant::now();
    let new = tokio::task::block_in_place(|| {
        cluster.wait_for_failover(&history_key, old, Duration::from_secs(30))
    })
    .unwrap();
    let failover = killed.elapsed();
    // Acknowledged means on a replica (redis_min_replicas, 1 on a cluster):
    // the shard's new master has none until the old one is back.
    tokio::task::block_in_place(|| cluster.restart(old)).unwrap();
    let during = poster.acked_count();
    acked_by(during + 20, "posting on the new master").await;
    let posted = poster.stop().await;

    let figures = check_acknowledged_delivered("cluster failover", &readers, &posted).await;
    let history = cluster.cli(new, &["LRANGE", &history_key, "0", "-1"]);
    let recent = &posted.acked[posted.acked.len().saturating_sub(100)..];
    let missing: Vec<&String> = recent
        .iter()
        .filter(|id| !history.contains(id.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "acknowledged but not in the new master's history: {missing:?}"
    );
    println!(
        "CLUSTER failover of the room's shard from :{old} to :{new} in {:.1} s: {figures}",
        failover.as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_moved_to_another_shard_under_load_loses_no_acknowledged_message() {
    const ROOM: &str = "cluster-reshard";
    let cluster = RedisCluster::start().unwrap();
    let options = || WorkerOptions {
        redis_url: Some(cluster.url()),
        ..Default::default()
    };
    let unused = Redis::start().unwrap();
    let a = ChatWorker::start_with(&unused, options()).unwrap();
    let b = ChatWorker::start_with(&unused, options()).unwrap();
    let dispatcher = Dispatcher::start_on(&cluster.url()).unwrap();
    eventually("both workers announced", WAIT, async || {
        let (_, body) = get_json(&format!("{}/workers", dispatcher.operator_url())).await;
        (body["workers"].as_array().map(Vec::len) == Some(2)).then_some(())
    })
    .await;
    let mut readers = Vec::new();
    for worker in [&a, &b] {
        for transport in [Transport::EventSource, Transport::WebSocket] {
            readers.push(
                ResumingReader::start(transport, &worker.base_url(), ROOM)
                    .await
                    .unwrap(),
            );
        }
    }
    let poster = Poster::start(
        vec![a.base_url(), b.base_url()],
        ROOM,
        Duration::from_millis(50),
    );
    let acked_by = async |count: usize, what: &str| {
        eventually(what, Duration::from_secs(40), async || {
            (poster.acked_count() >= count).then_some(())
        })
        .await
    };
    acked_by(20, "posting under way").await;

    let history_key = format!("chatup:{{{ROOM}}}:history");
    let old = cluster.master_of(&history_key).unwrap();
    let new = *cluster.master_ports().iter().find(|&&p| p != old).unwrap();
    let moving = Instant::now();
    tokio::task::block_in_place(|| cluster.move_slot_of(&history_key, new)).unwrap();
    let moved = moving.elapsed();
    assert_eq!(cluster.master_of(&history_key), Some(new));
    let after = poster.acked_count();
    acked_by(after + 20, "posting on the room's new shard").await;
    let posted = poster.stop().await;

    let figures = check_acknowledged_delivered("cluster reshard", &readers, &posted).await;
    let history = cluster.cli(new, &["LRANGE", &history_key, "0", "-1"]);
    let recent = &posted.acked[posted.acked.len().saturating_sub(100)..];
    let missing: Vec<&String> = recent
        .iter()
        .filter(|id| !history.contains(id.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "acknowledged but not in the new shard's history: {missing:?}"
    );
    println!(
        "CLUSTER room moved from :{old} to :{new} in {:.1} s: {figures}",
        moved.as_secs_f64()
    );
}
