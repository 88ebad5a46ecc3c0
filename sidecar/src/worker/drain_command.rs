//! `chatup drain`: the operator's side of a gradual drain. Asks the running
//! `chatup worker` (on its unix socket) to drain, then follows it until no
//! reader is left, printing progress: the step before a deploy restarts
//! this worker (docs/operations.md, "Rolling deploys").

use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use hyperlocal::{UnixConnector, Uri};

use crate::config::{WorkerArgs, WorkerConfig};
use crate::worker::drain::DrainStatus;

#[derive(Debug, clap::Args)]
pub struct DrainArgs {
    /// The worker's TOML configuration (for its socket, `listen`).
    #[arg(long, short, env = "CHATUP_CONFIG")]
    pub config: Option<PathBuf>,
    /// The worker's unix socket [default: `listen` of the configuration]
    #[arg(long, env = "CHATUP_LISTEN")]
    pub listen: Option<PathBuf>,
    /// Readers a second to move [default: the worker's drain_rate]
    #[arg(long)]
    pub rate: Option<u64>,
    /// Stop draining: the worker takes readers again.
    #[arg(long)]
    pub cancel: bool,
    /// Start the drain and return at once.
    #[arg(long)]
    pub no_wait: bool,
    /// Give up waiting after this many seconds (exit status 1).
    #[arg(long, default_value_t = 600)]
    pub timeout_secs: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum DrainCommandError {
    #[error("reading the worker's configuration: {0}")]
    Config(#[from] crate::config::ConfigError),
    #[error("cannot reach the worker at {socket}: {error}")]
    Unreachable { socket: String, error: String },
    #[error("the worker answered {status}: {body}")]
    Refused { status: u16, body: String },
    #[error("{readers} readers were still connected after {secs} s")]
    TimedOut { readers: u64, secs: u64 },
    #[error("the worker stopped draining (cancelled, or its sidecar restarted) with {readers} readers: it takes readers again")]
    NotDraining { readers: u64 },
}

/// How often progress is read and printed.
const POLL: Duration = Duration::from_secs(1);

pub async fn run(args: &DrainArgs) -> Result<(), DrainCommandError> {
    let socket = match &args.listen {
        Some(socket) => socket.clone(),
        None => {
            let worker = WorkerArgs {
                config: args.config.clone(),
                ..Default::default()
            };
            WorkerConfig::load(&worker)?.listen
        }
    };
    let worker = WorkerApi::new(socket);
    if args.cancel {
        let status = worker.call(Method::DELETE, "/v1/drain").await?;
        println!("drain cancelled: {} readers here", status.readers);
        return Ok(());
    }
    let path = match args.rate {
        Some(rate) => format!("/v1/drain?rate={rate}"),
        None => "/v1/drain".to_owned(),
    };
    let status = worker.call(Method::POST, &path).await?;
    println!(
        "draining {} readers at {} a second: they leave within {:.1} s",
        status.readers_at_start.unwrap_or(status.readers),
        status.rate.unwrap_or_default(),
        status.window_ms.unwrap_or_default() as f64 / 1000.0
    );
    if args.no_wait {
        return Ok(());
    }
    let started = Instant::now();
    let mut readers = status.readers;
    while readers > 0 {
        if started.elapsed() >= Duration::from_secs(args.timeout_secs) {
            return Err(DrainCommandError::TimedOut {
                readers,
                secs: args.timeout_secs,
            });
        }
        tokio::time::sleep(POLL).await;
        let status = worker.call(Method::GET, "/v1/drain").await?;
        if !status.draining {
            return Err(DrainCommandError::NotDraining {
                readers: status.readers,
            });
        }
        readers = status.readers;
        println!(
            "{:>6.1} s: {readers} readers left",
            started.elapsed().as_secs_f64()
        );
    }
    println!("drained: no reader left; the worker can be restarted");
    Ok(())
}

struct WorkerApi {
    client: Client<UnixConnector, Full<Bytes>>,
    socket: PathBuf,
}

impl WorkerApi {
    fn new(socket: PathBuf) -> Self {
        Self {
            client: Client::builder(TokioExecutor::new()).build(UnixConnector),
            socket,
        }
    }

    async fn call(&self, method: Method, path: &str) -> Result<DrainStatus, DrainCommandError> {
        let unreachable = |error: String| DrainCommandError::Unreachable {
            socket: self.socket.display().to_string(),
            error,
        };
        let request = Request::builder()
            .method(method)
            .uri(hyper::Uri::from(Uri::new(&self.socket, path)))
            .body(Full::new(Bytes::new()))
            .map_err(|e| unreachable(e.to_string()))?;
        let response = tokio::time::timeout(Duration::from_secs(10), self.client.request(request))
            .await
            .map_err(|_| unreachable("no answer within 10 s".into()))?
            .map_err(|e| unreachable(e.to_string()))?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| unreachable(e.to_string()))?
            .to_bytes();
        if !status.is_success() {
            return Err(DrainCommandError::Refused {
                status: status.as_u16(),
                body: String::from_utf8_lossy(&body).into_owned(),
            });
        }
        serde_json::from_slice(&body).map_err(|e| DrainCommandError::Refused {
            status: status.as_u16(),
            body: format!("unreadable answer: {e}"),
        })
    }
}
