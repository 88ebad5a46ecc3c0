//! The storm scenarios of #15 on a local cluster (Redis, `--workers` chat
//! workers, a dispatcher), with readers that behave as the JS client does
//! around workers (`chatup_testkit::follower`) and a poster per room whose
//! acknowledged messages every reader must get:
//! - `stream-start`: `--readers` join one room at once;
//! - `worker-death`: a worker with readers on it is killed;
//! - `rolling-drain`: every worker in turn is drained (`chatup drain`) at
//!   `--rate` and restarted.
//!
//! Fails if a reader was left behind or missed a message.

use std::time::Duration;

use chatup_testkit::storms::{self, StormCluster};
use clap::ValueEnum;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Storm {
    StreamStart,
    WorkerDeath,
    RollingDrain,
}

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Which storm (default: all three, one after the other).
    #[arg(long, value_enum)]
    only: Option<Storm>,
    /// Readers (one WebSocket and its joins each).
    #[arg(long, default_value_t = 3000)]
    readers: usize,
    /// Rooms the readers of worker-death and rolling-drain are spread over.
    #[arg(long, default_value_t = 30)]
    rooms: usize,
    #[arg(long, default_value_t = 3)]
    workers: usize,
    /// The dispatcher's worker_capacity (readers per worker).
    #[arg(long)]
    capacity: Option<u64>,
    /// rolling-drain: readers a second each drain moves.
    #[arg(long, default_value_t = 500)]
    rate: u64,
    /// Longest wait for any step.
    #[arg(long, default_value_t = 180)]
    timeout_secs: u64,
}

fn secs(d: Option<Duration>) -> String {
    d.map_or("never".into(), |d| format!("{:.2} s", d.as_secs_f64()))
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let timeout = Duration::from_secs(args.timeout_secs);
    println!(
        "storms: {} readers, {} workers, capacity {:?}",
        args.readers, args.workers, args.capacity
    );
    let wanted = |storm: Storm| args.only.is_none_or(|only| only as u8 == storm as u8);
    let mut failures = Vec::new();
    if wanted(Storm::StreamStart) {
        let cluster = StormCluster::start(args.workers, args.capacity).await?;
        let start = storms::stream_start(&cluster, args.readers, timeout).await;
        println!(
            "stream start: {} readers join one room at once",
            start.readers
        );
        println!(
            "  all reading after {}; readers per worker {:?}; joins refused {}",
            secs(start.all_reading),
            start.spread,
            start.refused_joins
        );
        println!("  {}", start.delivery.line());
        if start.all_reading.is_none() || start.delivery.total_missed() > 0 {
            failures.push("stream start");
        }
    }
    if wanted(Storm::WorkerDeath) {
        let mut cluster = StormCluster::start(args.workers, args.capacity).await?;
        let death = storms::worker_death(&mut cluster, args.readers, args.rooms, timeout).await;
        println!(
            "worker death: {} readers over {} rooms, one worker killed with {} on it",
            args.readers, args.rooms, death.orphaned
        );
        println!(
            "  its readers read again: 99% after {:.2} s, all after {}; readers per survivor {:?}; survivors' peak CPU {:.0}% of a core",
            death.p99_back.as_secs_f64(),
            secs(death.all_back),
            death.spread,
            death.peak_cpu * 100.0
        );
        println!("  {}", death.delivery.line());
        if death.all_back.is_none() || death.delivery.total_missed() > 0 {
            failures.push("worker death");
        }
    }
    if wanted(Storm::RollingDrain) {
        let mut cluster = StormCluster::start(args.workers, args.capacity).await?;
        let rolling =
            storms::rolling_drain(&mut cluster, args.readers, args.rooms, args.rate, timeout).await;
        println!(
            "rolling drain: {} readers over {} rooms, every worker drained at {}/s and restarted in turn",
            args.readers, args.rooms, rolling.rate
        );
        for step in &rolling.steps {
            println!(
                "  {}: {} readers moved in {:.2} s ({} on the event, {} cut off), at most {} left within one second",
                step.worker,
                step.readers,
                step.took.as_secs_f64(),
                step.migrated,
                step.switched,
                step.peak_departures_per_sec
            );
        }
        println!("  {}", rolling.delivery.line());
        if rolling.delivery.total_missed() > 0 || rolling.steps.iter().any(|s| !s.drained) {
            failures.push("rolling drain");
        }
    }
    anyhow::ensure!(failures.is_empty(), "failed: {failures:?}");
    Ok(())
}
