//! Redis Sentinel: workers and a dispatcher on a Sentinel group (a master,
//! a replica, three sentinels) follow the master when it dies, under
//! continuous posting, with no restart of any chatup process. Every
//! message acknowledged (202) before, during and after the failover
//! reaches every reader once and in order, and is in the new master's
//! history; posts in between are refused with 503 and go through when
//! retried with their idempotency key.

use std::time::{Duration, Instant};

use chatup_testkit::clients::{eventually, get_json};
use chatup_testkit::load::{check_acknowledged_delivered, readers_on, Poster};
use chatup_testkit::sentinel::SentinelGroup;
use chatup_testkit::Dispatcher;

const ROOM: &str = "sentinel";

// Several threads: the group's own calls block (they poll redis-cli),
// while the poster and the readers go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_killed_under_load_loses_no_acknowledged_message() {
    let figures = failover_under_load(SentinelGroup::start().unwrap()).await;
    println!("SENTINEL {figures}");
}

/// `rediss+sentinel://`: the sentinels and the servers serve TLS only and
/// want the client certificate; the workers and the dispatcher ask the
/// sentinels, and reach the master they name, over TLS, before and after
/// the failover.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls_a_master_killed_under_load_loses_no_acknowledged_message() {
    let group = SentinelGroup::start_tls().unwrap();
    assert!(group.url().starts_with("rediss+sentinel://"));
    let figures = failover_under_load(group).await;
    println!("SENTINEL over TLS {figures}");
}

/// Two workers and a dispatcher on `group`, a poster and four readers;
/// the master killed once posting is under way, and started again (as a
/// replica) after the failover. Returns the figures.
async fn failover_under_load(mut group: SentinelGroup) -> String {
    let (a, b, dispatcher) = Dispatcher::with_two_workers(&group.url(), group.tls())
        .await
        .unwrap();
    let readers = readers_on(&[&a, &b], ROOM).await;
    let poster = Poster::start(
        vec![a.base_url(), b.base_url()],
        ROOM,
        Duration::from_millis(50),
    );
    let acked_by = async |count: usize, what: &str| {
        eventually(what, Duration::from_secs(30), async || {
            (poster.acked_count() >= count).then_some(())
        })
        .await
    };
    acked_by(20, "posting under way").await;

    let old = group.kill_master().unwrap();
    let killed = Instant::now();
    let new = tokio::task::block_in_place(|| group.wait_for_failover(old, Duration::from_secs(20)))
        .unwrap();
    let failover = killed.elapsed();
    // Messages wait for a replica (`redis_min_replicas`, 1 with Sentinel):
    // until the old master is back, as a replica of the new one, posts are
    // refused (503) rather than acknowledged on one copy.
    tokio::task::block_in_place(|| group.restart(old)).unwrap();
    let during = poster.acked_count();
    acked_by(during + 20, "posting on the new master").await;
    let posted = poster.stop().await;

    let figures = check_acknowledged_delivered("sentinel failover", &readers, &posted).await;
    // The new master's history holds every acknowledged message.
    let history = group.master_cli(&["LRANGE", &format!("chatup:{{{ROOM}}}:history"), "0", "-1"]);
    // (the last 100: history_length)
    let recent = &posted.acked[posted.acked.len().saturating_sub(100)..];
    let missing: Vec<&String> = recent
        .iter()
        .filter(|id| !history.contains(id.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "acknowledged but not in the new master's history: {missing:?}"
    );
    let (status, body) = get_json(&format!(
        "{}/rooms/{ROOM}/messages?limit=1",
        dispatcher.base_url()
    ))
    .await;
    assert_eq!(status, 200, "the dispatcher follows the new master: {body}");
    assert_eq!(
        body["messages"][0]["id"],
        posted.acked.last().unwrap().as_str()
    );
    format!(
        "failover from :{old} to :{new} in {:.1} s: {figures}",
        failover.as_secs_f64()
    )
}
