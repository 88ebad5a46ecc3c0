//! Many small rooms: `--rooms` rooms with `--readers-per-room` WebSocket
//! readers each, and posts at a steady `--rate` (messages/s over all
//! rooms, round-robin) for `--seconds`, as many streams with a few dozen
//! viewers each make. Batching cannot help here: a room gets a message
//! every second or so; each room has its chatter (one user, one token).
//! Prints the server's CPU per posted message (every
//! server process: nginx master and workers, sidecar, Redis) and fan-out
//! latency.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chatup_testkit::bench::{self, cpu_ms, now_micros, summary, Chatter, Target};
use chatup_testkit::clients::SubscribeOptions;
use chatup_testkit::process::WorkerOptions;
use chatup_testkit::{Subscriber, Transport};

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    #[arg(long, default_value_t = 500)]
    rooms: usize,
    #[arg(long, default_value_t = 10)]
    readers_per_room: usize,
    /// Messages per second, over all rooms.
    #[arg(long, default_value_t = 500)]
    rate: usize,
    /// How long posting lasts.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Posting connections (each a user of its own), sharing the rate.
    #[arg(long, default_value_t = 32)]
    posters: usize,
    /// Idle time between the readers getting in and the posting.
    #[arg(long, default_value_t = 7)]
    warmup_seconds: u64,
    /// Runs of each target, alternating (ChatUp, then the reference): on a
    /// shared, noisy machine one pair says little; the median ratio of
    /// several pairs says more.
    #[arg(long, default_value_t = 1)]
    runs: usize,
}

struct Outcome {
    cpu_micros_per_message: f64,
    fanout_p99_micros: u64,
}

pub async fn run(args: Args, reference: bool) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.rooms > 0 && args.readers_per_room > 0 && args.rate > 0 && args.posters > 0,
        "counts must be at least 1"
    );
    println!(
        "many rooms: {} rooms x {} readers, {} messages/s for {} s by {} posters",
        args.rooms, args.readers_per_room, args.rate, args.seconds, args.posters
    );
    anyhow::ensure!(args.runs > 0, "--runs must be at least 1");
    let mut cpu_ratios = Vec::with_capacity(args.runs);
    for run in 1..=args.runs {
        if args.runs > 1 {
            println!("run {run} of {}:", args.runs);
        }
        let chatup = once(&Target::chatup(1, WorkerOptions::for_benchmarks())?, &args).await?;
        if reference {
            let raw = once(&Target::raw_nchan()?, &args).await?;
            let cpu_ratio =
                chatup.cpu_micros_per_message / raw.cpu_micros_per_message.max(f64::EPSILON);
            println!(
                "chatup / raw nchan: server CPU per message {cpu_ratio:.2}x, fan-out p99 {:.2}x",
                chatup.fanout_p99_micros as f64 / raw.fanout_p99_micros.max(1) as f64,
            );
            cpu_ratios.push(cpu_ratio);
        }
    }
    if cpu_ratios.len() > 1 {
        cpu_ratios.sort_by(f64::total_cmp);
        println!(
            "chatup / raw nchan over {} runs: server CPU per message median {:.2}x (from {:.2}x to {:.2}x)",
            cpu_ratios.len(),
            cpu_ratios[cpu_ratios.len() / 2],
            cpu_ratios[0],
            cpu_ratios[cpu_ratios.len() - 1],
        );
    }
    Ok(())
}

async fn once(target: &Target, args: &Args) -> anyhow::Result<Outcome> {
    println!("{}:", target.name());
    let base = target.bases().remove(0);
    let rooms: Vec<String> = (0..args.rooms).map(|n| format!("room-{n}")).collect();
    let mut readers = Vec::with_capacity(args.rooms * args.readers_per_room);
    for room in &rooms {
        for _ in 0..args.readers_per_room {
            readers.push(
                Subscriber::open_at(
                    Transport::WebSocket,
                    &base,
                    room,
                    SubscribeOptions::default(),
                )
                .await?,
            );
        }
    }
    // Before the clock starts: every room served (a chat worker serves a
    // room from its first reader on; that cost is the storm scenario's),
    // and the first count events of the new readers sent (one per room,
    // within the shipped count_interval_ms of 5 s). Both are a stream
    // start's costs, not a steady chat's.
    tokio::time::sleep(Duration::from_secs(args.warmup_seconds)).await;

    // One chatter per room, posting there with their own token (signed
    // before the clock starts; nginx verifies each once, in the run).
    let chatters: Arc<Vec<Chatter>> = Arc::new(
        (0..rooms.len())
            .map(|n| Chatter::new(&format!("chatter{n}")))
            .collect(),
    );
    let total = args.rate * args.seconds as usize;
    let per_poster = total / args.posters;
    let total = per_poster * args.posters;
    let interval = Duration::from_secs_f64(args.posters as f64 / args.rate as f64);
    let run_time = interval * per_poster as u32;
    let pids = target.pids();
    let cpu_before: Vec<u64> = pids.iter().map(|&p| cpu_ms(p)).collect();
    let started = Instant::now();
    let posters: Vec<_> = (0..args.posters)
        .map(|p| {
            let base = base.clone();
            let rooms = rooms.clone();
            let chatters = chatters.clone();
            let mut poster = target.poster(p);
            let posters = args.posters;
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(interval);
                // Open loop: a late tick does not shift the ones after it.
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                for m in 0..per_poster {
                    tick.tick().await;
                    let n = (m * posters + p) % rooms.len();
                    let text = now_micros().to_string();
                    poster
                        .post_as_chatter(&base, &rooms[n], &text, &chatters[n])
                        .await?;
                }
                anyhow::Ok(())
            })
        })
        .collect();
    let collectors: Vec<_> = readers
        .into_iter()
        .enumerate()
        .map(|(n, mut reader)| {
            let room = n / args.readers_per_room;
            // Message `m` of poster `p` is number m * posters + p overall,
            // posted into room (that number) % rooms.
            let want = (0..total).filter(|g| g % rooms.len() == room).count();
            tokio::spawn(async move {
                // A room may get its messages late in the run (at low rates,
                // its only one near the end): wait for the whole run, not
                // for a gap between frames.
                let deadline = Instant::now() + run_time + Duration::from_secs(10);
                let mut latencies = Vec::with_capacity(want);
                while latencies.len() < want && Instant::now() < deadline {
                    let left = deadline.saturating_duration_since(Instant::now());
                    let Some(frame) = reader.next_frame(left).await else {
                        break;
                    };
                    let arrived = now_micros();
                    latencies.extend(bench::latencies(&frame, arrived));
                }
                // The reader goes back to the caller, still connected: its
                // leaving is a storm's cost, not this chat's, and must not
                // fall into the CPU measured here.
                (want, latencies, reader)
            })
        })
        .collect();
    for poster in posters {
        poster.await??;
    }
    let posting = started.elapsed();
    let mut delivery = Vec::new();
    let mut short = 0;
    let mut connected = Vec::with_capacity(collectors.len());
    for collector in collectors {
        let (want, latencies, reader) = collector.await?;
        short += want.saturating_sub(latencies.len());
        delivery.extend(latencies);
        connected.push(reader);
    }
    let cpu_per_process: Vec<u64> = pids
        .iter()
        .zip(&cpu_before)
        .map(|(&p, before)| cpu_ms(p) - before)
        .collect();
    let cpu_micros = cpu_per_process.iter().sum::<u64>() * 1000;
    drop(connected);
    println!(
        "  posted {total} messages in {:.2} s ({:.0}/s), {} deliveries",
        posting.as_secs_f64(),
        total as f64 / posting.as_secs_f64(),
        delivery.len()
    );
    let fanout_p99_micros = summary("POST -> reader (fan-out)", delivery);
    let cpu_micros_per_message = cpu_micros as f64 / total as f64;
    println!(
        "  server CPU: {:.2} s, {cpu_micros_per_message:.0} µs per posted message (per process, ms: {cpu_per_process:?})",
        cpu_micros as f64 / 1e6,
    );
    anyhow::ensure!(short == 0, "readers missed {short} deliveries");
    Ok(Outcome {
        cpu_micros_per_message,
        fanout_p99_micros,
    })
}
