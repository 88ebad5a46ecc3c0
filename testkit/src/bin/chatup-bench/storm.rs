//! A connection storm: `--readers` WebSocket readers arriving at once,
//! spread over `--rooms` rooms that are new to the server (a stream start:
//! a chat worker serves every room for the first time), `--in-flight`
//! handshakes at a time. Times until every reader is in, and takes the
//! server's memory (PSS of every server process) per idle reader while
//! they stay connected. With the reference, the two servers alternate,
//! `--rounds` times each.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use chatup_testkit::bench::{Pss, Target};
use chatup_testkit::process::WorkerOptions;
use tokio::net::TcpSocket;
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Readers per run (the process needs two file descriptors' worth of
    /// headroom per reader: see `ulimit -n`).
    #[arg(long, default_value_t = 5000)]
    readers: usize,
    /// Rooms the readers are spread over.
    #[arg(long, default_value_t = 500)]
    rooms: usize,
    /// Handshakes in flight at once.
    #[arg(long, default_value_t = 256)]
    in_flight: usize,
    /// Runs per server.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
}

type Socket = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// Opens one WebSocket reader from `source` (a loopback address of its own
/// per run, so closed sockets of earlier runs do not use up ports).
async fn open(url: String, source: Ipv4Addr) -> anyhow::Result<Socket> {
    let request = url.clone().into_client_request()?;
    let port = request.uri().port_u16().context("port")?;
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from((source, 0)))?;
    let stream = socket
        .connect(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
        .await?;
    let (ws, response) = tokio_tungstenite::client_async(request, stream).await?;
    anyhow::ensure!(response.status() == 101, "status {}", response.status());
    Ok(ws)
}

/// One run: every reader in; returns the time it took and the readers (to
/// be dropped by the caller once the other figures are taken).
async fn connect_all(
    base: &str,
    prefix: &str,
    args: &Args,
    source: Ipv4Addr,
) -> (Duration, Vec<Socket>, usize) {
    let ws_base = base.replacen("http", "ws", 1);
    let gate = Arc::new(Semaphore::new(args.in_flight));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(args.readers);
    for n in 0..args.readers {
        let url = format!("{ws_base}/sub/{prefix}-{}", n % args.rooms);
        let gate = gate.clone();
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire_owned().await.ok()?;
            open(url, source).await.ok()
        }));
    }
    let mut sockets = Vec::with_capacity(args.readers);
    let mut failed = 0;
    for task in tasks {
        match task.await.ok().flatten() {
            Some(ws) => sockets.push(ws),
            None => failed += 1,
        }
    }
    (started.elapsed(), sockets, failed)
}

pub async fn run(args: Args, reference: bool) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.readers > 0 && args.rooms > 0 && args.in_flight > 0 && args.rounds > 0,
        "counts must be at least 1"
    );
    let mut targets = vec![Target::chatup(1, WorkerOptions::for_benchmarks())?];
    if reference {
        targets.insert(0, Target::raw_nchan()?);
    }
    println!(
        "storm: {} readers over {} new rooms, {} handshakes in flight, {} rounds",
        args.readers, args.rooms, args.in_flight, args.rounds
    );
    let mut ratios = Vec::new();
    let mut memory = vec![Vec::new(); targets.len()];
    for round in 0..args.rounds {
        let mut rates = Vec::new();
        for (i, target) in targets.iter().enumerate() {
            // 127.0.0.2 and up: a fresh source address per run.
            let source = Ipv4Addr::new(127, 0, 0, (2 + round * targets.len() + i) as u8);
            let processes = target.processes();
            let before: Vec<Pss> = processes.iter().map(|&(_, pid)| Pss::of(pid)).collect();
            let base = target.bases().remove(0);
            let (took, sockets, failed) =
                connect_all(&base, &format!("r{round}"), &args, source).await;
            // Idle readers: give the server a moment to settle (rooms
            // served, counts sent) before its memory is taken.
            tokio::time::sleep(Duration::from_secs(2)).await;
            let grown: Vec<(&str, Pss)> = processes
                .iter()
                .zip(&before)
                .map(|(&(name, pid), &was)| (name, Pss::of(pid).minus(was)))
                .collect();
            let per_reader = grown.iter().map(|(_, kib)| kib.total).sum::<i64>().max(0) as f64
                * 1024.0
                / sockets.len().max(1) as f64;
            let rate = sockets.len() as f64 / took.as_secs_f64();
            println!(
                "round {round} {:<10} {:>6} in {:>7.3} s  {:>9.0} readers/s  {:>6.1} KB per idle reader  failed {failed}",
                target.name(),
                sockets.len(),
                took.as_secs_f64(),
                rate,
                per_reader / 1000.0,
            );
            println!("  memory grown (KiB, PSS):");
            for (name, pss) in &grown {
                println!("    {name:<13} {pss}");
            }
            anyhow::ensure!(
                failed == 0,
                "{failed} readers did not get in ({})",
                target.name()
            );
            rates.push(rate);
            memory[i].push(per_reader);
            drop(sockets);
            // Let the server see the closes before the next run.
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        if reference {
            ratios.push(rates[1] / rates[0]);
        }
    }
    // The first round's figure: later rounds reuse what the first one's
    // readers left allocated, and show next to nothing.
    for (target, bytes) in targets.iter().zip(memory) {
        println!(
            "{}: memory per idle reader (server PSS, all processes, first round): {:.2} KB",
            target.name(),
            bytes[0] / 1000.0
        );
    }
    if !ratios.is_empty() {
        ratios.sort_by(f64::total_cmp);
        println!(
            "chatup / raw nchan connect rate: median {:.2}x (min {:.2}x, max {:.2}x)",
            ratios[ratios.len() / 2],
            ratios[0],
            ratios[ratios.len() - 1]
        );
    }
    Ok(())
}
