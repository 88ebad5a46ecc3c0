//! `chatup-bench`: measures a real local cluster (redis-server, chat
//! workers with nginx + nchan + the module, `chatup worker`), all on this
//! machine: posting throughput and latency, and fan-out latency from a POST
//! to every reader of the room. Prints figures; asserts nothing but that
//! no message was lost.
//!
//!     bash ci/bench.sh --readers 2000 --posters 8 --messages 200

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use chatup_testkit::clients::items;
use chatup_testkit::process::WorkerOptions;
use chatup_testkit::{token_for, ChatWorker, Redis, Subscriber, Transport};
use clap::Parser;

#[derive(Parser, Debug)]
#[command(about = "Load a local ChatUp cluster and print what it sustains")]
struct Args {
    /// Chat workers (nginx + sidecar pairs) sharing one Redis.
    #[arg(long, default_value_t = 2)]
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

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// The `p`-th percentile of sorted `values`.
fn percentile(values: &[u64], p: f64) -> u64 {
    if values.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * (values.len() - 1) as f64).round() as usize;
    values[rank.min(values.len() - 1)]
}

fn summary(name: &str, mut micros: Vec<u64>) {
    micros.sort_unstable();
    let ms = |v: u64| v as f64 / 1000.0;
    println!(
        "{name:<28} n={:<8} p50={:>7.2} ms  p90={:>7.2} ms  p99={:>7.2} ms  max={:>7.2} ms",
        micros.len(),
        ms(percentile(&micros, 50.0)),
        ms(percentile(&micros, 90.0)),
        ms(percentile(&micros, 99.0)),
        ms(*micros.last().unwrap_or(&0)),
    );
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(
        args.workers > 0 && args.readers > 0 && args.posters > 0,
        "counts must be at least 1"
    );
    let redis = Redis::start().context("starting redis-server")?;
    let options = WorkerOptions {
        batch_window_ms: args.batch_window_ms,
        ..Default::default()
    };
    let workers: Vec<ChatWorker> = (0..args.workers)
        .map(|_| ChatWorker::start_with(&redis, options.clone()))
        .collect::<anyhow::Result<_>>()?;
    println!(
        "cluster: {} worker(s), {} reader(s), {} poster(s) x {} messages, batch window {} ms",
        args.workers, args.readers, args.posters, args.messages, args.batch_window_ms
    );

    let room = "bench";
    let mut readers = Vec::with_capacity(args.readers);
    let connect_started = Instant::now();
    for n in 0..args.readers {
        let worker = &workers[n % workers.len()];
        readers.push(Subscriber::connect(Transport::WebSocket, worker, room, None).await?);
    }
    println!(
        "readers connected in {:.2} s",
        connect_started.elapsed().as_secs_f64()
    );

    let total = args.posters * args.messages;
    let posted = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let posters: Vec<_> = (0..args.posters)
        .map(|p| {
            let url = format!(
                "{}/rooms/{room}/messages",
                workers[p % workers.len()].base_url()
            );
            let token = token_for(&format!("poster{p}"), "Poster");
            let messages = args.messages;
            let posted = posted.clone();
            tokio::spawn(async move {
                let client = reqwest::Client::new();
                let mut latencies = Vec::with_capacity(messages);
                for _ in 0..messages {
                    let sent = now_micros();
                    let response = client
                        .post(&url)
                        .bearer_auth(&token)
                        .header("Content-Type", "application/json")
                        .body(serde_json::json!({ "msg": sent.to_string() }).to_string())
                        .send()
                        .await?;
                    anyhow::ensure!(
                        response.status() == 202,
                        "POST answered {}",
                        response.status()
                    );
                    latencies.push(now_micros() - sent);
                    posted.fetch_add(1, Ordering::Relaxed);
                }
                anyhow::Ok(latencies)
            })
        })
        .collect();

    // Every reader collects every message; delivery latency from the send
    // time carried in the message.
    let collectors: Vec<_> = readers
        .into_iter()
        .map(|mut reader| {
            tokio::spawn(async move {
                // Latency is taken as each frame arrives.
                let deadline = Instant::now() + Duration::from_secs(120);
                let (mut frames, mut latencies) = (0, Vec::with_capacity(total));
                while latencies.len() < total && Instant::now() < deadline {
                    let Some(frame) = reader.next_frame(Duration::from_secs(10)).await else {
                        break;
                    };
                    let arrived = now_micros();
                    frames += 1;
                    latencies.extend(
                        items(std::slice::from_ref(&frame))
                            .iter()
                            .filter_map(|m| m["msg"].as_str()?.parse::<u64>().ok())
                            .map(|sent| arrived.saturating_sub(sent)),
                    );
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
    println!(
        "posted {total} messages in {:.2} s: {:.0} messages/s accepted (202)",
        post_elapsed.as_secs_f64(),
        total as f64 / post_elapsed.as_secs_f64()
    );
    summary("POST -> 202", post_latencies);

    let mut delivery = Vec::new();
    let mut frames = 0;
    let mut complete = 0;
    let mut missing: HashMap<usize, usize> = HashMap::new();
    for (n, collector) in collectors.into_iter().enumerate() {
        let (frame_count, latencies) = collector.await?;
        frames += frame_count;
        if latencies.len() == total {
            complete += 1;
        } else {
            missing.insert(n, total - latencies.len());
        }
        delivery.extend(latencies);
    }
    let all_done = started.elapsed();
    println!(
        "delivered {} messages to {} readers in {:.2} s: {:.0} deliveries/s, {:.1} messages per frame",
        delivery.len(),
        args.readers,
        all_done.as_secs_f64(),
        delivery.len() as f64 / all_done.as_secs_f64(),
        delivery.len() as f64 / frames.max(1) as f64
    );
    // Delivery latency includes the time a reader's task waits to be
    // polled on this (shared) machine.
    summary("POST -> reader (fan-out)", delivery);
    println!("readers with every message: {complete} of {}", args.readers);
    anyhow::ensure!(missing.is_empty(), "readers missed messages: {missing:?}");
    Ok(())
}
