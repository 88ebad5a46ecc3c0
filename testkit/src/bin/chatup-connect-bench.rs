//! `chatup-connect-bench`: how fast readers get in, on a ChatUp chat worker
//! (shipped nginx configuration: the module admits and counts each reader,
//! the sidecar serves each new room) against raw nchan (nginx with nchan
//! alone) on the same machine, in the same run, alternating, so that the
//! ratio means something on a shared, noisy machine.
//!
//!     bash ci/bench-connect.sh --readers 10000 --rooms 1000
//!
//! Each run opens `--readers` WebSocket readers spread over `--rooms` rooms
//! that are new to the server (a stream start: the chat worker serves every
//! room for the first time), with `--in-flight` handshakes at once, and
//! times until every reader is in. Asserts nothing but that every reader
//! got in.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use chatup_testkit::{ChatWorker, RawNchan, Redis};
use clap::Parser;
use tokio::net::TcpSocket;
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

#[derive(Parser, Debug)]
#[command(about = "Time readers connecting to ChatUp and to raw nchan, side by side")]
struct Args {
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
    /// Runs per server (alternating).
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
async fn run(
    base: &str,
    prefix: &str,
    args: &Args,
    source: Ipv4Addr,
) -> (Duration, Vec<Socket>, usize) {
    let gate = Arc::new(Semaphore::new(args.in_flight));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(args.readers);
    for n in 0..args.readers {
        let url = format!("{base}/sub/{prefix}-{}", n % args.rooms);
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

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(
        args.readers > 0 && args.rooms > 0 && args.in_flight > 0,
        "counts must be at least 1"
    );
    let redis = Redis::start().context("starting redis-server")?;
    let worker = ChatWorker::start(&redis).context("starting a chat worker")?;
    let raw = RawNchan::start().context("starting raw nchan")?;
    println!(
        "{} readers over {} new rooms, {} handshakes in flight, {} rounds",
        args.readers, args.rooms, args.in_flight, args.rounds
    );
    let mut ratios = Vec::new();
    for round in 0..args.rounds {
        let mut rates = [0.0f64; 2];
        for (i, (name, base)) in [("raw nchan", raw.ws_url()), ("chatup", worker.ws_url())]
            .into_iter()
            .enumerate()
        {
            // 127.0.0.2 and up: a fresh source address per run.
            let source = Ipv4Addr::new(127, 0, 0, (2 + round * 2 + i) as u8);
            let (took, sockets, failed) = run(&base, &format!("r{round}"), &args, source).await;
            let rate = sockets.len() as f64 / took.as_secs_f64();
            println!(
                "round {round} {name:<10} {:>6} in {:>7.3} s  {:>9.0} readers/s  failed {failed}",
                sockets.len(),
                took.as_secs_f64(),
                rate
            );
            anyhow::ensure!(failed == 0, "{failed} readers did not get in ({name})");
            rates[i] = rate;
            drop(sockets);
            // Let the server see the closes before the next run.
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        ratios.push(rates[1] / rates[0]);
    }
    ratios.sort_by(f64::total_cmp);
    println!(
        "chatup / raw nchan connect rate: median {:.2}x (min {:.2}x, max {:.2}x)",
        ratios[ratios.len() / 2],
        ratios[0],
        ratios[ratios.len() - 1]
    );
    Ok(())
}
