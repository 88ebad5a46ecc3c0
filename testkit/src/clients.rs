//! Real subscribers (WebSocket, EventSource, long-poll, as nchan speaks
//! them) and a poster, for tests and benchmarks.

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use crate::ChatWorker;

/// One nchan message as a subscriber received it: nchan's message id (for
/// resuming) and the frame's items.
#[derive(Debug, Clone)]
pub struct Frame {
    pub nchan_id: String,
    pub items: Vec<Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    WebSocket,
    EventSource,
    LongPoll,
}

pub struct Subscriber {
    frames: mpsc::UnboundedReceiver<Frame>,
    task: JoinHandle<()>,
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn parse_frame(nchan_id: String, data: &str) -> Frame {
    let items = chatup_wire::frame::decode_frame(data)
        .unwrap_or_else(|e| panic!("bad frame {data:?}: {e}"));
    Frame { nchan_id, items }
}

impl Subscriber {
    /// Subscribes to `room` on `worker`, from `last_id` if given (nchan's
    /// message id). Returns once the subscription is open (WebSocket,
    /// EventSource) or the first poll is sent (long-poll).
    pub async fn connect(
        transport: Transport,
        worker: &ChatWorker,
        room: &str,
        last_id: Option<&str>,
    ) -> anyhow::Result<Self> {
        let (tx, frames) = mpsc::unbounded_channel();
        let query = last_id
            .map(|id| format!("?last_event_id={id}"))
            .unwrap_or_default();
        let task = match transport {
            Transport::WebSocket => {
                let url = format!("{}/sub/{room}{query}", worker.ws_url());
                let mut request = url.into_client_request()?;
                request
                    .headers_mut()
                    .insert("Sec-WebSocket-Protocol", "ws+meta.nchan".parse()?);
                let (mut ws, _) = tokio_tungstenite::connect_async(request).await?;
                tokio::spawn(async move {
                    while let Some(Ok(message)) = ws.next().await {
                        if let Message::Text(text) = message {
                            let (meta, data) =
                                text.split_once("\n\n").unwrap_or(("", text.as_str()));
                            let id = meta
                                .lines()
                                .find_map(|l| l.strip_prefix("id: "))
                                .unwrap_or_default();
                            if tx.send(parse_frame(id.to_string(), data)).is_err() {
                                return;
                            }
                        }
                    }
                })
            }
            Transport::EventSource => {
                let mut request = reqwest::Client::new()
                    .get(format!("{}/sub/{room}", worker.base_url()))
                    .header("Accept", "text/event-stream");
                if let Some(id) = last_id {
                    request = request.header("Last-Event-ID", id);
                }
                let response = request.send().await?;
                anyhow::ensure!(
                    response.status() == 200,
                    "eventsource: status {}",
                    response.status()
                );
                let mut body = response.bytes_stream();
                tokio::spawn(async move {
                    let mut buffer = String::new();
                    while let Some(Ok(chunk)) = body.next().await {
                        buffer.push_str(&String::from_utf8_lossy(&chunk));
                        while let Some(end) = buffer.find("\n\n") {
                            let event: String = buffer.drain(..end + 2).collect();
                            let mut id = String::new();
                            let mut data = Vec::new();
                            for line in event.lines() {
                                if let Some(v) = line.strip_prefix("id: ") {
                                    id = v.to_string();
                                } else if let Some(v) = line.strip_prefix("data: ") {
                                    data.push(v);
                                }
                            }
                            if !data.is_empty()
                                && tx.send(parse_frame(id, &data.join("\n"))).is_err()
                            {
                                return;
                            }
                        }
                    }
                })
            }
            Transport::LongPoll => {
                let url = format!("{}/sub/{room}{query}", worker.base_url());
                tokio::spawn(async move {
                    let client = reqwest::Client::new();
                    let (mut modified, mut etag) = (None::<String>, None::<String>);
                    loop {
                        let mut request = client.get(&url);
                        if let (Some(m), Some(e)) = (&modified, &etag) {
                            request = request
                                .header("If-Modified-Since", m)
                                .header("If-None-Match", e);
                        }
                        let Ok(response) = request.send().await else {
                            return;
                        };
                        let header = |name: &str| {
                            response
                                .headers()
                                .get(name)
                                .and_then(|v| v.to_str().ok())
                                .map(String::from)
                        };
                        let (m, e) = (header("Last-Modified"), header("Etag"));
                        let status = response.status();
                        let Ok(body) = response.text().await else {
                            return;
                        };
                        if status == 200 {
                            let id = format!(
                                "{}|{}",
                                m.clone().unwrap_or_default(),
                                e.clone().unwrap_or_default()
                            );
                            if tx.send(parse_frame(id, &body)).is_err() {
                                return;
                            }
                            (modified, etag) = (m, e);
                        } else if status != 304 && status != 408 {
                            return;
                        }
                    }
                })
            }
        };
        Ok(Self { frames, task })
    }

    /// The next frame, if one comes within `timeout`.
    pub async fn next_frame(&mut self, timeout: Duration) -> Option<Frame> {
        tokio::time::timeout(timeout, self.frames.recv())
            .await
            .ok()
            .flatten()
    }

    /// Frames until `count` items arrived or `timeout` passed.
    pub async fn frames_until(&mut self, count: usize, timeout: Duration) -> Vec<Frame> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut frames = Vec::new();
        let mut items = 0;
        while items < count {
            match tokio::time::timeout_at(deadline, self.frames.recv()).await {
                Ok(Some(frame)) => {
                    items += frame.items.len();
                    frames.push(frame);
                }
                _ => break,
            }
        }
        frames
    }

    /// Every item that arrives within `window`.
    pub async fn drain_for(&mut self, window: Duration) -> Vec<Value> {
        let mut items = Vec::new();
        let deadline = tokio::time::Instant::now() + window;
        while let Ok(Some(frame)) = tokio::time::timeout_at(deadline, self.frames.recv()).await {
            items.extend(frame.items);
        }
        items
    }
}

/// The items of `frames`, in order.
pub fn items(frames: &[Frame]) -> Vec<Value> {
    frames.iter().flat_map(|f| f.items.clone()).collect()
}

/// POSTs `body` to `/rooms/{room}/messages` with `token` as a bearer token;
/// returns the status and the JSON body (Null if none or not JSON).
pub async fn post_message(
    worker: &ChatWorker,
    room: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, Value) {
    let mut request = reqwest::Client::new()
        .post(format!("{}/rooms/{room}/messages", worker.base_url()))
        .header("Content-Type", "application/json")
        .body(body.to_string());
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("POST");
    let status = response.status().as_u16();
    let json = response.json().await.unwrap_or(Value::Null);
    (status, json)
}
