//! One big room: WebSocket readers spread over the chat workers, posters
//! sending one message after the other as fast as the answers come.
//! Prints posting throughput and latency, fan-out latency (POST to each
//! reader), messages per frame, and the server's CPU per delivery.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chatup_testkit::bench::{self, now_micros, summary, Target};
use chatup_testkit::clients::SubscribeOptions;
use chatup_testkit::process::WorkerOptions;
use chatup_testkit::{Subscriber, Transport};

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Chat workers (nginx + sidecar pairs) sharing one Redis (the
    /// reference has one nginx).
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// WebSocket readers, spread over the workers.
    #[arg(long, default_value_t = 500)]
    readers: usize,
    /// Concurrent posters, each with its own user token.
    #[arg(long, default_value_t = 4)]
    posters: usize,
    /// Messages each poster sends, one after the other.
    #[arg(long, default_value_t = 250)]
    messages: usize,
    /// The workers' batching window.
    #[arg(long, default_value_t = 30)]
    batch_window_ms: u64,
}

/// What one run measured.
struct Outcome {
    accepted_per_second: f64,
    fanout_p99_micros: u64,
    deliveries_per_second: f64,
    cpu_micros_per_delivery: f64,
}

pub async fn run(args: Args, reference: bool) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.workers > 0 && args.readers > 0 && args.posters > 0,
        "counts must be at least 1"
    );
    println!(
        "big room: {} reader(s), {} poster(s) x {} messages, {} chat worker(s), batch window {} ms",
        args.readers, args.posters, args.messages, args.workers, args.batch_window_ms
    );
    let options = WorkerOptions {
        batch_window_ms: args.batch_window_ms,
        ..WorkerOptions::for_benchmarks()
    };
    let chatup = once(&Target::chatup(args.workers, options)?, &args).await?;
    if reference {
        let raw = once(&Target::raw_nchan()?, &args).await?;
        println!(
            "chatup / raw nchan: accepted {:.2}x, deliveries/s {:.2}x, fan-out p99 {:.2}x, CPU per delivery {:.2}x",
            chatup.accepted_per_second / raw.accepted_per_second,
            chatup.deliveries_per_second / raw.deliveries_per_second,
            chatup.fanout_p99_micros as f64 / raw.fanout_p99_micros.max(1) as f64,
            chatup.cpu_micros_per_delivery / raw.cpu_micros_per_delivery.max(f64::EPSILON),
        );
    }
    Ok(())
}

async fn once(target: &Target, args: &Args) -> anyhow::Result<Outcome> {
    println!("{}:", target.name());
    let room = "bench";
    let bases = target.bases();
    let mut readers = Vec::with_capacity(args.readers);
    let connect_started = Instant::now();
    for n in 0..args.readers {
        let base = &bases[n % bases.len()];
        readers.push(
            Subscriber::open_at(
                Transport::WebSocket,
                base,
                room,
                SubscribeOptions::default(),
            )
            .await?,
        );
    }
    println!(
        "  readers connected in {:.2} s",
        connect_started.elapsed().as_secs_f64()
    );

    let total = args.posters * args.messages;
    let cpu_before = target.cpu_ms();
    let started = Instant::now();
    let posters: Vec<_> = (0..args.posters)
        .map(|p| {
            let base = bases[p % bases.len()].clone();
            let mut poster = target.poster(p);
            let messages = args.messages;
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(messages);
                for _ in 0..messages {
                    let sent = now_micros();
                    poster.post(&base, room, &sent.to_string()).await?;
                    latencies.push(now_micros() - sent);
                }
                anyhow::Ok(latencies)
            })
        })
        .collect();

    // Every reader collects every message; delivery latency from the send
    // time carried in the message, taken as each frame arrives.
    let collectors: Vec<_> = readers
        .into_iter()
        .map(|mut reader| {
            tokio::spawn(async move {
                let deadline = Instant::now() + Duration::from_secs(120);
                let (mut frames, mut latencies) = (0, Vec::with_capacity(total));
                while latencies.len() < total && Instant::now() < deadline {
                    let Some(frame) = reader.next_frame(Duration::from_secs(10)).await else {
                        break;
                    };
                    let arrived = now_micros();
                    frames += 1;
                    latencies.extend(bench::latencies(&frame, arrived));
                }
                (frames, latencies)
            })
        })
        .collect();

    let mut post_latencies = Vec::new();
    for poster in posters {
        post_latencies.extend(poster.await??);
    }
    let post_elapsed = started.elapsed();
    let accepted_per_second = total as f64 / post_elapsed.as_secs_f64();
    println!(
        "  posted {total} messages in {:.2} s: {accepted_per_second:.0} messages/s accepted",
        post_elapsed.as_secs_f64(),
    );
    summary("POST -> accepted", post_latencies);

    let mut delivery = Vec::new();
    let mut frames = 0;
    let mut missing: HashMap<usize, usize> = HashMap::new();
    for (n, collector) in collectors.into_iter().enumerate() {
        let (frame_count, latencies) = collector.await?;
        frames += frame_count;
        if latencies.len() != total {
            missing.insert(n, total - latencies.len());
        }
        delivery.extend(latencies);
    }
    let all_done = started.elapsed();
    let cpu_micros = (target.cpu_ms() - cpu_before) * 1000;
    let deliveries = delivery.len();
    let deliveries_per_second = deliveries as f64 / all_done.as_secs_f64();
    println!(
        "  delivered {deliveries} messages to {} readers in {:.2} s: {deliveries_per_second:.0} deliveries/s, {:.1} messages per frame",
        args.readers,
        all_done.as_secs_f64(),
        deliveries as f64 / frames.max(1) as f64
    );
    // Delivery latency includes the time a reader's task waits to be
    // polled on this (shared) machine.
    let fanout_p99_micros = summary("POST -> reader (fan-out)", delivery);
    let cpu_micros_per_delivery = cpu_micros as f64 / deliveries.max(1) as f64;
    println!(
        "  server CPU: {:.2} s, {cpu_micros_per_delivery:.2} µs per delivery, {:.0} µs per message",
        cpu_micros as f64 / 1e6,
        cpu_micros as f64 / total as f64
    );
    anyhow::ensure!(missing.is_empty(), "readers missed messages: {missing:?}");
    Ok(Outcome {
        accepted_per_second,
        fanout_p99_micros,
        deliveries_per_second,
        cpu_micros_per_delivery,
    })
}
