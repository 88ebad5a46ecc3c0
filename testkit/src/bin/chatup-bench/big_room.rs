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
    /// Above this many messages a second, readers get a sample (the
    /// workers' hot_room_rate). 0 (the default): off, every message
    /// delivered and checked. With it, the run is made twice, without and
    /// with sampling, and compared.
    #[arg(long, default_value_t = 0)]
    hot_room_rate: u64,
}

/// What one run measured.
struct Outcome {
    accepted_per_second: f64,
    fanout_p99_micros: u64,
    deliveries_per_second: f64,
    cpu_micros_per_delivery: f64,
    cpu_micros_per_message: f64,
    deliveries: usize,
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
    let options = |hot_room_rate: u64| WorkerOptions {
        batch_window_ms: args.batch_window_ms,
        hot_room_rate,
        ..WorkerOptions::for_benchmarks()
    };
    let chatup = once(&Target::chatup(args.workers, options(0))?, &args, 0).await?;
    if args.hot_room_rate > 0 {
        println!("with hot_room_rate = {}:", args.hot_room_rate);
        let rate = args.hot_room_rate;
        let sampled = once(&Target::chatup(args.workers, options(rate))?, &args, rate).await?;
        println!(
            "sampled / every message: deliveries {:.2}x, server CPU per posted message {:.2}x ({:.0} vs {:.0} µs), fan-out p99 {:.2}x",
            sampled.deliveries as f64 / chatup.deliveries.max(1) as f64,
            sampled.cpu_micros_per_message / chatup.cpu_micros_per_message,
            sampled.cpu_micros_per_message,
            chatup.cpu_micros_per_message,
            sampled.fanout_p99_micros as f64 / chatup.fanout_p99_micros.max(1) as f64,
        );
    }
    if reference {
        let raw = once(&Target::raw_nchan()?, &args, 0).await?;
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

/// One run; with `hot_room_rate`, readers get a sample: each must get
/// the same messages, and not all of them.
async fn once(target: &Target, args: &Args, hot_room_rate: u64) -> anyhow::Result<Outcome> {
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
    let sampled = hot_room_rate > 0;
    let collectors: Vec<_> = readers
        .into_iter()
        .map(|mut reader| {
            tokio::spawn(async move {
                let deadline = Instant::now() + Duration::from_secs(120);
                let (mut frames, mut latencies) = (0, Vec::with_capacity(total));
                // A sampled reader never gets them all: it is done once
                // nothing came for a while.
                let quiet = Duration::from_secs(if sampled { 3 } else { 10 });
                while latencies.len() < total && Instant::now() < deadline {
                    let Some(frame) = reader.next_frame(quiet).await else {
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
    let mut shown = Vec::new();
    for (n, collector) in collectors.into_iter().enumerate() {
        let (frame_count, latencies) = collector.await?;
        frames += frame_count;
        shown.push(latencies.len());
        if latencies.len() != total {
            missing.insert(n, total - latencies.len());
        }
        delivery.extend(latencies);
    }
    let all_done = started.elapsed();
    if sampled {
        // Every reader of a worker got the same sample; not everything.
        let (least, most) = (shown.iter().min(), shown.iter().max());
        println!("  each reader shown {least:?} to {most:?} of {total} messages");
        anyhow::ensure!(
            most < Some(&total),
            "hot_room_rate {hot_room_rate}: nothing was sampled out"
        );
        missing.clear();
    }
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
    let cpu_micros_per_message = cpu_micros as f64 / total as f64;
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
        cpu_micros_per_message,
        deliveries,
    })
}
