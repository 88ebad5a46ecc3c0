//! Real subscribers (WebSocket, EventSource, long-poll, as nchan speaks
//! them) and a poster, for tests and benchmarks.

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use crate::{ChatWorker, Dispatcher};

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

/// How to subscribe.
#[derive(Debug, Clone, Copy, Default)]
pub struct SubscribeOptions<'a> {
    /// Resume after this nchan message id.
    pub last_id: Option<&'a str>,
    /// Subscribe as the member this read ticket names (`?ticket=`; see
    /// `token::ticket_for`).
    pub ticket: Option<&'a str>,
    /// Keep room events (join, leave, count, ...) in frames; by default
    /// frames hold messages only, as a test of messages wants.
    pub events: bool,
    /// Keep `active` events (the recently active list) too: they follow
    /// every posting, and would get in the way of tests of other events.
    pub active: bool,
    /// Additional rooms read over the same connection (`?also=`,
    /// comma-separated).
    pub also: Option<&'a str>,
}

/// A frame from nchan's data, with or without its events; `None` when
/// nothing is left.
fn parse_frame(nchan_id: String, data: &str, (events, active): (bool, bool)) -> Option<Frame> {
    let mut items = chatup_wire::frame::decode_frame(data)
        .unwrap_or_else(|e| panic!("bad frame {data:?}: {e}"));
    items.retain(|item| match item.get("ev") {
        None => true,
        Some(ev) if ev == "active" => active,
        Some(_) => events,
    });
    (!items.is_empty()).then_some(Frame { nchan_id, items })
}

/// Sends a frame on, if it has items; false once nobody listens.
fn forward(tx: &mpsc::UnboundedSender<Frame>, frame: Option<Frame>) -> bool {
    frame.is_none_or(|frame| tx.send(frame).is_ok())
}

impl Subscriber {
    /// Subscribes to `room` on `worker`, from `last_id` if given (nchan's
    /// message id), anonymously, receiving messages only.
    pub async fn connect(
        transport: Transport,
        worker: &ChatWorker,
        room: &str,
        last_id: Option<&str>,
    ) -> anyhow::Result<Self> {
        let options = SubscribeOptions {
            last_id,
            ..Default::default()
        };
        Self::open(transport, worker, room, options).await
    }

    /// Subscribes to `room` on `worker`. Returns once the subscription is
    /// open (WebSocket, EventSource) or the first poll is sent (long-poll).
    pub async fn open(
        transport: Transport,
        worker: &ChatWorker,
        room: &str,
        options: SubscribeOptions<'_>,
    ) -> anyhow::Result<Self> {
        Self::open_at(transport, &worker.base_url(), room, options).await
    }

    /// Like [`open`](Self::open), on the chat worker at `base_url`
    /// (`http://host:port`).
    pub async fn open_at(
        transport: Transport,
        base_url: &str,
        room: &str,
        options: SubscribeOptions<'_>,
    ) -> anyhow::Result<Self> {
        let ws_url = base_url.replacen("http", "ws", 1);
        let (tx, frames) = mpsc::unbounded_channel();
        let events = (options.events, options.active);
        let mut params = Vec::new();
        if let Some(ticket) = options.ticket {
            params.push(format!("ticket={ticket}"));
        }
        if let Some(also) = options.also {
            params.push(format!("also={also}"));
        }
        let to_query = |params: &[String]| {
            if params.is_empty() {
                String::new()
            } else {
                format!("?{}", params.join("&"))
            }
        };
        // EventSource resumes with its header instead.
        let base_query = to_query(&params);
        if let Some(id) = options.last_id {
            params.insert(0, format!("last_event_id={id}"));
        }
        let query = to_query(&params);
        let task = match transport {
            Transport::WebSocket => {
                let url = format!("{ws_url}/sub/{room}{query}");
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
                            if !forward(&tx, parse_frame(id.to_string(), data, events)) {
                                return;
                            }
                        }
                    }
                })
            }
            Transport::EventSource => {
                let mut request = reqwest::Client::new()
                    .get(format!("{base_url}/sub/{room}{base_query}"))
                    .header("Accept", "text/event-stream");
                if let Some(id) = options.last_id {
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
                                && !forward(&tx, parse_frame(id, &data.join("\n"), events))
                            {
                                return;
                            }
                        }
                    }
                })
            }
            Transport::LongPoll => {
                let url = format!("{base_url}/sub/{room}{query}");
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
                            if !forward(&tx, parse_frame(id, &body, events)) {
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

    /// The next frame; `None` once the subscription ended.
    pub async fn next(&mut self) -> Option<Frame> {
        self.frames.recv().await
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
    let response = post_request(worker, room, token, body)
        .send()
        .await
        .expect("POST");
    let status = response.status().as_u16();
    let json = response.json().await.unwrap_or(Value::Null);
    (status, json)
}

/// A chat POST of `body` to `room`, with `token` as a bearer token.
fn post_request(
    worker: &ChatWorker,
    room: &str,
    token: Option<&str>,
    body: &str,
) -> reqwest::RequestBuilder {
    let request = reqwest::Client::new()
        .post(format!("{}/rooms/{room}/messages", worker.base_url()))
        .header("Content-Type", "application/json")
        .body(body.to_string());
    match token {
        Some(token) => request.bearer_auth(token),
        None => request,
    }
}

/// Like [`post_message`], as the JS client posts: with an
/// `Idempotency-Key`, sent again while the worker answers 503 (for up to
/// 20 s), so a write the worker could not yet confirm on Redis replicas
/// (a replica slow to acknowledge on a loaded machine) is answered for
/// sure, and stored once.
pub async fn post_message_retrying(
    worker: &ChatWorker,
    room: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, Value) {
    let key = format!(
        "test-{}",
        chatup_wire::MessageIdGenerator::new().next_id(std::time::SystemTime::now())
    );
    eventually(
        "a post answered other than 503",
        Duration::from_secs(20),
        async || {
            let response = post_request(worker, room, token, body)
                .header("Idempotency-Key", &key)
                .send()
                .await
                .expect("POST");
            let status = response.status().as_u16();
            let json = response.json().await.unwrap_or(Value::Null);
            (status != 503).then_some((status, json))
        },
    )
    .await
}

/// GETs `url`; returns the status and the JSON body (Null if not JSON).
pub async fn get_json(url: &str) -> (u16, Value) {
    let response = reqwest::Client::new()
        .get(url)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .expect("GET");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// `POST /join/{room}` on a dispatcher, with `{"exclude": ...}` if given.
pub async fn join_room(dispatcher: &Dispatcher, room: &str, exclude: Option<&str>) -> (u16, Value) {
    let mut request = reqwest::Client::new()
        .post(format!("{}/join/{room}", dispatcher.base_url()))
        .timeout(Duration::from_secs(10));
    if let Some(worker) = exclude {
        request = request.json(&serde_json::json!({ "exclude": worker }));
    }
    let response = request.send().await.expect("POST /join");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Polls `check` until it returns `Some` (its value) or `timeout` passes
/// (then panics naming `what`): tests wait on events, never on bare sleeps.
pub async fn eventually<T>(
    what: &str,
    timeout: Duration,
    mut check: impl AsyncFnMut() -> Option<T>,
) -> T {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
