//! The local nchan, reached over nginx's internal unix socket: publishing
//! frames to a room's channel and asking how many subscribers it has.

use std::path::PathBuf;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use hyperlocal::{UnixConnector, Uri};

#[derive(Debug, thiserror::Error)]
pub enum NchanError {
    #[error("nchan unreachable: {0}")]
    Unreachable(String),
    #[error("nchan answered {0}")]
    Status(StatusCode),
    #[error("unreadable channel info: {0}")]
    BadInfo(String),
}

#[derive(Clone)]
pub struct Nchan {
    client: Client<UnixConnector, Full<Bytes>>,
    socket: PathBuf,
}

impl Nchan {
    pub fn new(socket: PathBuf) -> Self {
        let client = Client::builder(TokioExecutor::new()).build(UnixConnector);
        Self { client, socket }
    }

    fn uri(&self, room: &str) -> hyper::Uri {
        Uri::new(&self.socket, &format!("/pub/{room}")).into()
    }

    /// Publishes one frame to `room`'s channel.
    pub async fn publish(&self, room: &str, frame: String) -> Result<(), NchanError> {
        let request = Request::builder()
            .method(Method::POST)
            .uri(self.uri(room))
            .header("Content-Type", "application/json")
            .header("Accept", "text/json")
            .body(Full::new(Bytes::from(frame)))
            .map_err(|e| NchanError::Unreachable(e.to_string()))?;
        let response = self
            .client
            .request(request)
            .await
            .map_err(|e| NchanError::Unreachable(e.to_string()))?;
        let status = response.status();
        // Read the body so the connection goes back to the pool.
        let _ = response.into_body().collect().await;
        if status.is_success() {
            Ok(())
        } else {
            Err(NchanError::Status(status))
        }
    }

    /// How many subscribers `room` has on this nginx (0 if the channel does
    /// not exist).
    pub async fn subscribers(&self, room: &str) -> Result<u64, NchanError> {
        let request = Request::builder()
            .method(Method::GET)
            .uri(self.uri(room))
            .header("Accept", "text/json")
            .body(Full::new(Bytes::new()))
            .map_err(|e| NchanError::Unreachable(e.to_string()))?;
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
        match status {
            StatusCode::NOT_FOUND => Ok(0),
            s if s.is_success() => {
                let info: serde_json::Value = serde_json::from_slice(&body.to_bytes())
                    .map_err(|e| NchanError::BadInfo(e.to_string()))?;
                info["subscribers"]
                    .as_u64()
                    .ok_or_else(|| NchanError::BadInfo(info.to_string()))
            }
            s => Err(NchanError::Status(s)),
        }
    }
}
