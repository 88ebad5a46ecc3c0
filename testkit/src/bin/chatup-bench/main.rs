//! `chatup-bench`: loads a real local deployment (redis-server, chat
//! workers with nginx + nchan + the module and the shipped configuration,
//! `chatup worker`) on this machine, in three shapes of real traffic, and
//! prints what it sustains. With `--reference nchan` the same load runs in
//! the same run against nginx with nchan alone (messages published over
//! HTTP, one per request), and the ratios are printed: on a shared, noisy
//! machine only ratios from one run mean something. Asserts nothing but
//! that no message was lost and every reader got in.
//!
//!     bash ci/bench.sh big-room --readers 2000 --posters 8 --messages 200
//!     bash ci/bench.sh --reference nchan many-rooms --rooms 500 --rate 500
//!     bash ci/bench.sh --reference nchan storm --readers 20000 --rooms 2000
//!     bash ci/bench.sh storms --readers 3000 --rate 500

mod big_room;
mod many_rooms;
mod storm;
mod storms;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(
    about = "Load a local ChatUp deployment (and raw nchan, the reference) and print figures"
)]
struct Cli {
    /// Also run the same load against this reference, in the same run.
    #[arg(long, global = true)]
    reference: Option<Reference>,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Reference {
    /// nginx with nchan alone, publishing each message over HTTP.
    Nchan,
}

#[derive(Subcommand, Debug)]
enum Scenario {
    /// One room, many readers, posters as fast as answers come.
    BigRoom(big_room::Args),
    /// Many small rooms, posts at a steady rate: CPU per message, latency.
    ManyRooms(many_rooms::Args),
    /// Readers arriving all at once in new rooms: rate and memory.
    Storm(storm::Args),
    /// Stream start, worker death and rolling drain on a cluster of workers.
    Storms(storms::Args),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let reference = cli.reference.is_some();
    match cli.scenario {
        Scenario::BigRoom(args) => big_room::run(args, reference).await,
        Scenario::ManyRooms(args) => many_rooms::run(args, reference).await,
        Scenario::Storm(args) => storm::run(args, reference).await,
        Scenario::Storms(args) => {
            anyhow::ensure!(!reference, "storms has no reference run");
            storms::run(args).await
        }
    }
}
