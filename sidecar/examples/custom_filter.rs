//! A chat worker with a message filter of the deployer's own.
//!
//! Build your own `chatup`-like binary around `chatup::worker::run_with_filters`
//! and pass it your filters: they run in every room after the configured
//! ones, on the worker's request path, before anything reaches Redis.
//!
//!     cargo run --example custom_filter -- --config conf/chatup-worker.toml
//!
//! A message refused by a filter gets `422 {"error": "message rejected",
//! "reason": <your reason>}`.

use std::sync::Arc;

use chatup::config::{WorkerArgs, WorkerConfig};
use chatup::moderation::filters::{Candidate, MessageFilter, Verdict};
use clap::Parser;
use tokio_util::sync::CancellationToken;

/// Refuses messages written in capitals only ("shouting").
struct NoShouting {
    /// Shorter messages ("OK", "LOL") are let through.
    min_letters: usize,
}

impl MessageFilter for NoShouting {
    fn name(&self) -> &str {
        "no_shouting"
    }

    fn check(&self, message: &mut Candidate<'_>) -> Verdict {
        let letters: Vec<char> = message.text.chars().filter(|c| c.is_alphabetic()).collect();
        if letters.len() >= self.min_letters && letters.iter().all(|c| c.is_uppercase()) {
            Verdict::Reject("please do not shout".into())
        } else {
            Verdict::Pass
        }
    }
}

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    worker: WorkerArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().init();
    let config = WorkerConfig::load(&Cli::parse().worker)?;
    let shutdown = CancellationToken::new();
    let on_signal = shutdown.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        on_signal.cancel();
    });
    let filters: Vec<Arc<dyn MessageFilter>> = vec![Arc::new(NoShouting { min_letters: 5 })];
    let listener = chatup::worker::bind(&config)?;
    chatup::worker::run_with_filters(config, listener, filters, shutdown).await
}
