//! `chatup`: the ChatUp sidecar daemon.
//!
//! Thin on purpose: parse the command line and configuration, set up
//! logging, run the chosen role until SIGTERM/SIGINT.

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use chatup::config::{DispatcherArgs, DispatcherConfig, LogFormat, WorkerArgs, WorkerConfig};
use chatup::devtoken::{DevServerTokenArgs, DevTokenArgs};

#[derive(Parser)]
#[command(name = "chatup", version, about = "ChatUp sidecar daemon")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run beside a chat worker's nginx: store and fan out messages.
    Worker(Box<WorkerArgs>),
    /// Send clients to the least-loaded worker; serve stats and history.
    Dispatcher(Box<DispatcherArgs>),
    /// Move a running worker's readers to the other workers, gradually,
    /// before it is restarted (a deploy); waits until none is left.
    Drain(chatup::worker::drain_command::DrainArgs),
    /// Mint a development JWT (for local testing only).
    DevToken(DevTokenArgs),
    /// Mint a development server-API JWT (for local testing only).
    DevServerToken(DevServerTokenArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Worker(args) => {
            let config = WorkerConfig::load(&args).context("loading worker configuration")?;
            let _reporting = chatup::reporting::init(
                config.sentry_dsn.as_deref(),
                config.sentry_environment.as_deref(),
                "worker",
            );
            init_tracing(config.log_format);
            // One thread: the worker only moves bytes between nginx and
            // Redis, next to an nginx that needs the cores more. Waking
            // another runtime thread for each of those hops cost it a
            // quarter of its CPU time per message (docs/operations.md,
            // many-rooms benchmark).
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting the tokio runtime")?;
            run(runtime, move |shutdown| async move {
                let listener = chatup::worker::bind(&config)?;
                chatup::worker::run(config, listener, shutdown).await
            })
        }
        Command::Dispatcher(args) => {
            let config =
                DispatcherConfig::load(&args).context("loading dispatcher configuration")?;
            let _reporting = chatup::reporting::init(
                config.sentry_dsn.as_deref(),
                config.sentry_environment.as_deref(),
                "dispatcher",
            );
            init_tracing(config.log_format);
            // Joins come in bursts at stream starts, and dispatchers have
            // their machines to themselves: every core.
            let runtime = tokio::runtime::Runtime::new().context("starting the tokio runtime")?;
            run(runtime, move |shutdown| async move {
                let listener = chatup::dispatcher::bind(&config).await?;
                chatup::dispatcher::run(config, listener, shutdown).await
            })
        }
        Command::Drain(args) => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting the tokio runtime")?;
            runtime
                .block_on(chatup::worker::drain_command::run(&args))
                .context("draining the worker")
        }
        Command::DevToken(args) => {
            println!("{}", chatup::devtoken::mint(&args)?);
            Ok(())
        }
        Command::DevServerToken(args) => {
            println!("{}", chatup::devtoken::mint_server(&args)?);
            Ok(())
        }
    }
}

fn run<F, Fut>(runtime: tokio::runtime::Runtime, role: F) -> anyhow::Result<()>
where
    F: FnOnce(CancellationToken) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let outcome = runtime.block_on(async {
        let shutdown = CancellationToken::new();
        tokio::spawn(cancel_on_signal(shutdown.clone()));
        role(shutdown).await
    });
    if let Err(e) = &outcome {
        // Logged (and so reported, with error reporting on) before main
        // prints it and the process exits.
        tracing::error!(error = format!("{e:#}"), "chatup stopped on an error");
    }
    outcome
}

async fn cancel_on_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    let signal = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    // Cancel before logging: nothing may stand between a signal and the
    // drain.
    shutdown.cancel();
    tracing::info!("{signal}: draining");
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CHATUP_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // A log that cannot be written (stderr's reader gone) is dropped: by
    // default tracing reports that with eprintln!, which panics on the
    // same broken stderr and would kill the task that logged.
    let json = matches!(format, LogFormat::Json).then(|| {
        tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
            .log_internal_errors(false)
    });
    let text = matches!(format, LogFormat::Text).then(|| {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .log_internal_errors(false)
    });
    // Errors go to Sentry only when a DSN started its client; without one
    // the layer has nowhere to send and costs nothing.
    let reporting = sentry::Hub::current()
        .client()
        .is_some()
        .then(chatup::reporting::layer);
    tracing_subscriber::registry()
        .with(filter)
        .with(json)
        .with(text)
        .with(reporting)
        .init();
}
