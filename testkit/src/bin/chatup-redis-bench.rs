//! `chatup-redis-bench`: many small rooms on one Redis server and on a
//! 3-shard Redis Cluster (sharded Pub/Sub), in one run, so that only the
//! ratios mean something on a shared machine: both without replicas, then
//! both with one replica per master and every message waiting for it
//! (WAIT 1; the server's replica under Sentinel). Two chat workers, one
//! WebSocket reader per room, posters spreading messages over the rooms.
//! Prints messages/s accepted and the CPU time of Redis and of the chatup
//! sidecars per message; asserts nothing but that no message was lost.
//!
//!     bash ci/bench-redis.sh --rooms 300 --messages 3000

use std::time::{Duration, Instant};

use anyhow::Context;
use chatup_testkit::bench::cpu_ms;
use chatup_testkit::clients::items;
use chatup_testkit::cluster::RedisCluster;
use chatup_testkit::process::WorkerOptions;
use chatup_testkit::sentinel::SentinelGroup;
use chatup_testkit::{token_for, ChatWorker, Redis, Subscriber, Transport};
use clap::Parser;

#[derive(Parser, Debug, Clone)]
#[command(about = "Many rooms on one Redis vs a 3-shard Redis Cluster")]
struct Args {
    /// Rooms, one reader each, spread over two chat workers.
    #[arg(long, default_value_t = 200)]
    rooms: usize,
    /// Messages in all, spread over the rooms.
    #[arg(long, default_value_t = 2000)]
    messages: usize,
    /// Concurrent posters.
    #[arg(long, default_value_t = 8)]
    posters: usize,
}

struct Outcome {
    per_second: f64,
    redis_cpu_per_1000: f64,
    sidecar_cpu_per_1000: f64,
}

async fn run(
    name: &str,
    args: &Args,
    redis_url: &str,
    min_replicas: u32,
    redis_pids: &[u32],
) -> anyhow::Result<Outcome> {
    let placeholder = Redis::start()?;
    let options = WorkerOptions {
        redis_url: Some(redis_url.to_owned()),
        config_toml: format!(
            "redis_min_replicas = {min_replicas}\n{}",
            WorkerOptions::default().config_toml
        ),
        ..Default::default()
    };
    let workers: Vec<ChatWorker> = (0..2)
        .map(|_| ChatWorker::start_with(&placeholder, options.clone()))
        .collect::<anyhow::Result<_>>()?;
    let rooms: Vec<String> = (0..args.rooms).map(|n| format!("bench-{n}")).collect();
    let mut readers = Vec::new();
    for (n, room) in rooms.iter().enumerate() {
        readers.push(Subscriber::connect(Transport::WebSocket, &workers[n % 2], room, None).await?);
    }
    let sidecar_pids: Vec<u32> = workers.iter().filter_map(|w| w.sidecar_pid()).collect();
    let cpu = |pids: &[u32]| pids.iter().map(|&p| cpu_ms(p)).sum::<u64>();
    let (redis_before, sidecars_before) = (cpu(redis_pids), cpu(&sidecar_pids));

    let started = Instant::now();
    let per_poster = args.messages / args.posters;
    let posters: Vec<_> = (0..args.posters)
        .map(|p| {
            let bases: Vec<String> = workers.iter().map(ChatWorker::base_url).collect();
            let rooms = rooms.clone();
            let token = token_for(&format!("poster{p}"), "Poster");
            tokio::spawn(async move {
                let client = reqwest::Client::new();
                for m in 0..per_poster {
                    let n = p * per_poster + m;
                    let room = &rooms[n % rooms.len()];
                    let response = client
                        .post(format!("{}/rooms/{room}/messages", bases[n % 2]))
                        .bearer_auth(&token)
                        .header("Content-Type", "application/json")
                        .body(serde_json::json!({ "msg": format!("m{n}") }).to_string())
                        .send()
                        .await?;
                    anyhow::ensure!(
                        response.status() == 202,
                        "POST answered {}",
                        response.status()
                    );
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for poster in posters {
        poster.await??;
    }
    let elapsed = started.elapsed();
    let total = per_poster * args.posters;
    // Every reader gets its room's share.
    let mut delivered = 0;
    // Readers were opened in room order: reader `index` reads room `index`.
    for (index, reader) in readers.iter_mut().enumerate() {
        let deadline = Instant::now() + Duration::from_secs(30);
        let want = (0..total).filter(|n| n % args.rooms == index).count();
        let mut got = 0;
        while got < want && Instant::now() < deadline {
            let Some(frame) = reader.next_frame(Duration::from_secs(5)).await else {
                break;
            };
            got += items(std::slice::from_ref(&frame)).len();
        }
        delivered += got;
    }
    let (redis_cpu, sidecar_cpu) = (
        cpu(redis_pids) - redis_before,
        cpu(&sidecar_pids) - sidecars_before,
    );
    anyhow::ensure!(
        delivered == total,
        "{name}: delivered {delivered} of {total}"
    );
    let outcome = Outcome {
        per_second: total as f64 / elapsed.as_secs_f64(),
        redis_cpu_per_1000: redis_cpu as f64 * 1000.0 / total as f64,
        sidecar_cpu_per_1000: sidecar_cpu as f64 * 1000.0 / total as f64,
    };
    println!(
        "{name:<34} {:>8.0} msg/s accepted   Redis CPU {:>6.1} ms per 1000 msgs   sidecars CPU {:>6.1} ms per 1000 msgs   delivered {delivered}/{total}",
        outcome.per_second, outcome.redis_cpu_per_1000, outcome.sidecar_cpu_per_1000
    );
    Ok(outcome)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(
        args.rooms > 0 && args.posters > 0,
        "counts must be at least 1"
    );
    println!(
        "{} rooms (one reader each, over 2 chat workers), {} messages by {} posters",
        args.rooms, args.messages, args.posters
    );
    // Each pair compares the same durability: no replica, then a message
    // acknowledged once one replica has it (WAIT 1).
    let single = Redis::start().context("starting redis-server")?;
    let one = run(
        "one server, no replica",
        &args,
        &single.url(),
        0,
        &single.pid().into_iter().collect::<Vec<_>>(),
    )
    .await?;
    drop(single);
    // No persistence anywhere, as the single server: the test groups
    // keep an append-only file (fsync'd at every write in the Sentinel
    // group), which would be measured instead of replication.
    let cluster = RedisCluster::start_without_replicas().context("starting the cluster")?;
    cluster.config_set("appendonly", "no")?;
    let sharded = run(
        "3 shards, no replica",
        &args,
        &cluster.url(),
        0,
        &cluster.pids(),
    )
    .await?;
    drop(cluster);
    let group = SentinelGroup::start().context("starting a master and its replica")?;
    group.config_set("appendonly", "no")?;
    let replicated = run(
        "one server + replica, WAIT 1",
        &args,
        &group.url(),
        1,
        &group.server_pids(),
    )
    .await?;
    drop(group);
    let cluster = RedisCluster::start().context("starting the cluster")?;
    cluster.config_set("appendonly", "no")?;
    let sharded_replicated = run(
        "3 shards + 3 replicas, WAIT 1",
        &args,
        &cluster.url(),
        1,
        &cluster.pids(),
    )
    .await?;
    for (what, cluster, server) in [
        ("no replica", &sharded, &one),
        ("WAIT 1", &sharded_replicated, &replicated),
    ] {
        println!(
            "cluster / one server, {what}: throughput {:.2}x, Redis CPU per message {:.2}x, sidecars CPU per message {:.2}x",
            cluster.per_second / server.per_second,
            cluster.redis_cpu_per_1000 / server.redis_cpu_per_1000.max(0.001),
            cluster.sidecar_cpu_per_1000 / server.sidecar_cpu_per_1000.max(0.001),
        );
    }
    Ok(())
}
