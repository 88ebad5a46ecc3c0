//! The local nginx, reached over its internal unix socket: publishing
//! frames to a room's nchan channel, reading its state, deleting it; and
//! the module's reader counts (`/readers`).
//!
//! Every call is bounded by [`CALL_TIMEOUT`]: a stuck nginx must turn into
//! an error the caller handles (retry, resync), never into a room queue or
//! a heartbeat that waits forever.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chatup_wire::readers::{ModuleCounters, ReaderChanges, Released, LAST_ID_HEADER};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use hyperlocal::{UnixConnector, Uri};
use tokio::sync::Semaphore;

use crate::telemetry::names;

#[derive(Debug, thiserror::Error)]
pub enum NchanError {
    #[error("nchan unreachable: {0}")]
    Unreachable(String),
    #[error("nchan answered {0}")]
    Status(StatusCode),
    #[error("unreadable answer: {0}")]
    BadInfo(String),
    #[error("nginx did not answer within {0:?}")]
    Timeout(Duration),
}

/// Longest any call to nginx may take.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(3);

/// Requests to nginx in flight at once, and so connections to it: hyper
/// opens a new connection whenever none is free. A stream start serves
/// thousands of rooms at the same moment, each emptying its channel and
/// publishing; unbounded, that made 3,600 connections at once, each with
/// its buffers on both sides (50 MB in the sidecar for 2,000 rooms, by a
/// heap profile). Requests beyond this wait their turn (within the call's
/// timeout); the connections are kept and reused.
const MAX_REQUESTS_IN_FLIGHT: usize = 64;

#[derive(Clone)]
pub struct Nchan {
    client: Client<UnixConnector, Full<Bytes>>,
    socket: PathBuf,
    in_flight: Arc<Semaphore>,
}

impl Nchan {
    pub fn new(socket: PathBuf) -> Self {
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(MAX_REQUESTS_IN_FLIGHT)
            .build(UnixConnector);
        Self {
            client,
            socket,
            in_flight: Arc::new(Semaphore::new(MAX_REQUESTS_IN_FLIGHT)),
        }
    }

    /// A channel's publisher URI (channels: see
    /// `chatup_wire::readers::channel`).
    fn uri(&self, channel: &str) -> hyper::Uri {
        Uri::new(&self.socket, &format!("/pub/{channel}")).into()
    }

    /// Publishes one frame in `channel`; `last_id`, the id of its last
    /// message, is recorded by the module once nchan accepted it.
    pub async fn publish(
        &self,
        channel: &str,
        frame: String,
        last_id: Option<&str>,
    ) -> Result<(), NchanError> {
        let build = || {
            let mut request = Request::builder()
                .method(Method::POST)
                .uri(self.uri(channel))
                .header("Content-Type", "application/json")
                .header("Accept", "text/json");
            if let Some(id) = last_id {
                request = request.header(LAST_ID_HEADER, id);
            }
            request.body(Full::new(Bytes::from(frame)))
        };
        // The body is read in `send`, so the connection goes back to the pool.
        let started = std::time::Instant::now();
        let outcome = match self.send(build).await {
            Ok((status, _)) if status.is_success() => Ok(()),
            Ok((status, _)) => Err(NchanError::Status(status)),
            Err(e) => Err(e),
        };
        metrics::histogram!(names::NCHAN_PUBLISH_SECONDS).record(started.elapsed());
        if outcome.is_err() {
            metrics::counter!(names::NCHAN_ERRORS).increment(1);
        }
        outcome
    }

    /// The state of `channel` on this nginx (all zero if it does not
    /// exist).
    pub async fn info(&self, channel: &str) -> Result<ChannelInfo, NchanError> {
        let build = || {
            Request::builder()
                .method(Method::GET)
                .uri(self.uri(channel))
                .header("Accept", "text/json")
                .body(Full::new(Bytes::new()))
        };
        let (status, body) = self.send(build).await?;
        match status {
            StatusCode::NOT_FOUND => Ok(ChannelInfo::default()),
            s if s.is_success() => {
                serde_json::from_slice(&body).map_err(|e| NchanError::BadInfo(e.to_string()))
            }
            s => Err(NchanError::Status(s)),
        }
    }

    /// Whether nginx answers on its internal socket at all (any status).
    pub async fn probe(&self) -> Result<(), NchanError> {
        let build = || {
            Request::builder()
                .method(Method::GET)
                .uri(Uri::new(&self.socket, "/"))
                .body(Full::new(Bytes::new()))
        };
        self.send(build).await.map(drop)
    }

    /// Deletes `channel` and its buffered frames, closing its readers
    /// (nobody reads it again: a room served again gets a new channel).
    pub async fn delete(&self, channel: &str) -> Result<(), NchanError> {
        let build = || {
            Request::builder()
                .method(Method::DELETE)
                .uri(self.uri(channel))
                .body(Full::new(Bytes::new()))
        };
        match self.send(build).await?.0 {
            s if s.is_success() || s == StatusCode::NOT_FOUND => Ok(()),
            s => Err(NchanError::Status(s)),
        }
    }

    /// Tells the module to refuse new readers (`true`: this worker drains),
    /// or to take them again; returns the readers on this nginx now (the
    /// module's own count, not the last one polled).
    pub async fn set_draining(&self, draining: bool) -> Result<u64, NchanError> {
        let path = format!("/readers?drain={}", u8::from(draining));
        let answer: chatup_wire::readers::Draining = self.call_json(Method::POST, &path).await?;
        if answer.draining == draining {
            Ok(answer.readers)
        } else {
            Err(NchanError::BadInfo(format!(
                "draining is {}",
                answer.draining
            )))
        }
    }

    /// Whether the module refuses new readers, and the readers on this
    /// nginx now.
    pub async fn drain_state(&self) -> Result<chatup_wire::readers::Draining, NchanError> {
        self.call_json(Method::GET, "/readers?drain=status").await
    }

    /// The module's reader changes since `since` (see
    /// `chatup_wire::readers`).
    pub async fn reader_changes(
        &self,
        boot: &str,
        since: u64,
    ) -> Result<ReaderChanges, NchanError> {
        let path = format!("/readers?boot={boot}&since={since}");
        self.call_json(Method::GET, &path).await
    }

    /// Asks the module to stop letting readers into `rooms` without the
    /// sidecar; returns those it released (the ones nobody reads).
    pub async fn release(&self, rooms: &[String]) -> Result<Vec<String>, NchanError> {
        let mut released = Vec::new();
        // Room names are short and comma-free; chunks keep URLs small.
        for chunk in rooms.chunks(64) {
            let path = format!("/readers?release={}", chunk.join(","));
            let answer: Released = self.call_json(Method::POST, &path).await?;
            released.extend(answer.released);
        }
        Ok(released)
    }

    /// What the module counted since nginx started (posts by status,
    /// token refusals by reason).
    pub async fn module_counters(&self) -> Result<ModuleCounters, NchanError> {
        self.call_json(Method::GET, "/readers?counters=1").await
    }

    async fn call_json<T: serde::de::DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
    ) -> Result<T, NchanError> {
        let build = || {
            Request::builder()
                .method(method)
                .uri(Uri::new(&self.socket, path))
                .body(Full::new(Bytes::new()))
        };
        match self.send(build).await? {
            (status, body) if status.is_success() => {
                serde_json::from_slice(&body).map_err(|e| NchanError::BadInfo(e.to_string()))
            }
            (status, _) => Err(NchanError::Status(status)),
        }
    }

    /// Makes the request that `build` returns once one of the
    /// [`MAX_REQUESTS_IN_FLIGHT`] slots is free, and reads its answer.
    ///
    /// Built only then, and the exchange boxed only then: in a stream
    /// start, thousands of rooms wait here at once, and each waiting one
    /// holding its built request (headers, URI) and hyper's exchange
    /// future was 3 KB per room at the peak (a heap profile, 2,000 rooms),
    /// memory the allocator then kept.
    async fn send(
        &self,
        build: impl FnOnce() -> Result<Request<Full<Bytes>>, hyper::http::Error>,
    ) -> Result<(StatusCode, Bytes), NchanError> {
        let _waiting = InFlight::enter();
        let exchange = async {
            let _slot = self
                .in_flight
                .acquire()
                .await
                .map_err(|e| NchanError::Unreachable(e.to_string()))?;
            let request = build().map_err(|e| NchanError::Unreachable(e.to_string()))?;
            Box::pin(async {
                let response = self
                    .client
                    .request(request)
                    .await
                    .map_err(|e| NchanError::Unreachable(e.to_string()))?;
                let status = response.status();
                let body = response
                    .into_body()
                    .collect()
                    .await
                    .map_err(|e| NchanError::Unreachable(e.to_string()))?;
                Ok((status, body.to_bytes()))
            })
            .await
        };
        tokio::time::timeout(CALL_TIMEOUT, exchange)
            .await
            .map_err(|_| NchanError::Timeout(CALL_TIMEOUT))?
    }
}

/// Counts a request to nginx in [`names::NCHAN_REQUESTS_IN_FLIGHT`] from
/// its start (waiting for a slot included) until it ends or is dropped.
struct InFlight;

impl InFlight {
    fn enter() -> Self {
        metrics::gauge!(names::NCHAN_REQUESTS_IN_FLIGHT).increment(1.0);
        InFlight
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        metrics::gauge!(names::NCHAN_REQUESTS_IN_FLIGHT).decrement(1.0);
    }
}

/// nchan's channel info, as its publisher location reports it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
pub struct ChannelInfo {
    /// Frames buffered for resuming readers.
    #[serde(default)]
    pub messages: u64,
    /// Readers connected (all transports; a long-poll reader between two
    /// polls is briefly absent).
    #[serde(default)]
    pub subscribers: u64,
}
