//! Redis Cluster: two chat workers and a dispatcher on a cluster of three
//! shards (three masters, three replicas). Rooms land on every shard and
//! travel by sharded Pub/Sub; posting, fan-out across workers, history,
//! presence, bans and server posts work as on one server; a shard's master
//! killed, and a room moved to another shard, under posting, lose no
//! acknowledged message.

use std::time::{Duration, Instant};

use chatup_testkit::clients::{eventually, get_json, items};
use chatup_testkit::cluster::RedisCluster;
use chatup_testkit::load::{check_acknowledged_delivered, readers_on, Poster};
use chatup_testkit::token::{server_token, ticket_for};
use chatup_testkit::{
    post_message, post_message_retrying, token_for, ChatWorker, Dispatcher, SubscribeOptions,
    Subscriber, Transport,
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

/// Two chat workers and a dispatcher on `cluster` (over TLS if it is),
/// announced.
async fn chat_on(cluster: &RedisCluster) -> (ChatWorker, ChatWorker, Dispatcher) {
    Dispatcher::with_two_workers(&cluster.url(), cluster.tls())
        .await
        .unwrap()
}

/// Posts into `room` every 50 ms through two workers, with four readers;
/// once 20 posts are acknowledged runs `fault` (which returns what it did),
/// waits for 20 more, then checks acknowledged against delivered and
/// against the history on the room's shard. Returns the figures.
async fn under_load(
    cluster: &mut RedisCluster,
    room: &str,
    fault: impl FnOnce(&mut RedisCluster, &str) -> String,
) -> String {
    let (a, b, _dispatcher) = chat_on(cluster).await;
    let readers = readers_on(&[&a, &b], room).await;
    let poster = Poster::start(
        vec![a.base_url(), b.base_url()],
        room,
        Duration::from_millis(50),
    );
    let acked_by = async |count: usize, what: &str| {
        eventually(what, Duration::from_secs(40), async || {
            (poster.acked_count() >= count).then_some(())
        })
        .await
    };
    acked_by(20, "posting under way").await;
    let history_key = format!("chatup:{{{room}}}:history");
    let started = Instant::now();
    let what = tokio::task::block_in_place(|| fault(cluster, &history_key));
    let took = started.elapsed();
    let after = poster.acked_count();
    acked_by(after + 20, "posting after the fault").await;
    let posted = poster.stop().await;

    let figures = check_acknowledged_delivered(room, &readers, &posted).await;
    let shard = cluster.master_of(&history_key).unwrap();
    let history = cluster.cli(shard, &["LRANGE", &history_key, "0", "-1"]);
    // (the last 100: history_length)
    let recent = &posted.acked[posted.acked.len().saturating_sub(100)..];
    let missing: Vec<&String> = recent
        .iter()
        .filter(|id| !history.contains(id.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "acknowledged but not in the history on :{shard}: {missing:?}"
    );
    format!("{what} in {:.1} s: {figures}", took.as_secs_f64())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_spread_over_the_shards_and_everything_works_as_on_one_server() {
    let cluster = RedisCluster::start().unwrap();
    let (a, b, dispatcher) = chat_on(&cluster).await;

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
        // As the client posts: a worker's first writes can wait on a
        // replica still catching up (503, then a retry with the same key).
        let (status, ack) = post_message_retrying(&a, room, Some(&token), &msg(room)).await;
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

/// Kills the master of `key`'s shard, waits for its replica to take over,
/// and starts the old one again.
fn fail_over(cluster: &mut RedisCluster, key: &str) -> String {
    let old = cluster.master_of(key).unwrap();
    cluster.kill(old);
    let new = cluster
        .wait_for_failover(key, old, Duration::from_secs(30))
        .unwrap();
    // Acknowledged means on a replica (redis_min_replicas, 1 on a
    // cluster): the shard's new master has none until the old one is
    // back, as a supervisor would start it.
    cluster.restart(old).unwrap();
    format!("the room's shard failed over from :{old} to :{new}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_master_killed_under_load_loses_no_acknowledged_message() {
    let mut cluster = RedisCluster::start().unwrap();
    let figures = under_load(&mut cluster, "cluster-failover", fail_over).await;
    println!("CLUSTER {figures}");
}

/// `rediss+cluster://`: every node serves TLS only and wants the client
/// certificate; the workers and the dispatcher find the other nodes from
/// the seeds, and the promoted replica, over TLS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls_a_shard_master_killed_under_load_loses_no_acknowledged_message() {
    let mut cluster = RedisCluster::start_tls().unwrap();
    assert!(cluster.url().starts_with("rediss+cluster://"));
    let figures = under_load(&mut cluster, "cluster-tls", fail_over).await;
    println!("CLUSTER over TLS {figures}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_moved_to_another_shard_under_load_loses_no_acknowledged_message() {
    let mut cluster = RedisCluster::start().unwrap();
    let figures = under_load(&mut cluster, "cluster-reshard", |cluster, key| {
        let old = cluster.master_of(key).unwrap();
        let new = *cluster.master_ports().iter().find(|&&p| p != old).unwrap();
        cluster.move_slot_of(key, new).unwrap();
        assert_eq!(cluster.master_of(key), Some(new));
        format!("the room moved from :{old} to :{new}")
    })
    .await;
    println!("CLUSTER {figures}");
}
