//! Continuous load for fault tests: a poster that records which messages
//! were acknowledged (202) and how the others were refused, and readers
//! that resume by themselves after their connection drops (from the last
//! nchan id they saw, dropping ids they already have, as the JS client
//! does). A fault test compares, per reader, what was acknowledged with
//! what was delivered.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::task::JoinHandle;

use crate::clients::{SubscribeOptions, Subscriber, Transport};
use crate::token::token_for;

/// What a reader got.
#[derive(Debug, Default)]
struct Delivered {
    /// Message ids, each once, in the order they arrived.
    ids: Vec<String>,
    seen: HashSet<String>,
    /// Items that arrived again after a resume (dropped).
    duplicates: usize,
    /// Times the reader had to reconnect.
    reconnects: usize,
    /// Longest time without a new message.
    longest_gap: Duration,
    last_new: Option<Instant>,
}

/// A reader that reconnects to the same worker when its connection ends.
pub struct ResumingReader {
    pub name: String,
    delivered: Arc<Mutex<Delivered>>,
    task: JoinHandle<()>,
}

impl Drop for ResumingReader {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ResumingReader {
    /// Subscribes to `room` at `base_url` and waits until the first
    /// subscription is open.
    pub async fn start(transport: Transport, base_url: &str, room: &str) -> anyhow::Result<Self> {
        let first =
            Subscriber::open_at(transport, base_url, room, SubscribeOptions::default()).await?;
        let delivered = Arc::new(Mutex::new(Delivered::default()));
        let (base, room_name, record) = (base_url.to_owned(), room.to_owned(), delivered.clone());
        let task = tokio::spawn(async move {
            let mut subscription = Some(first);
            let mut last_id: Option<String> = None;
            loop {
                if let Some(mut sub) = subscription.take() {
                    while let Some(frame) = sub.next().await {
                        last_id = Some(frame.nchan_id.clone());
                        let mut d = record.lock().unwrap();
                        for item in frame.items {
                            let Some(id) = item["id"].as_str() else {
                                continue;
                            };
                            if d.seen.insert(id.to_owned()) {
                                d.ids.push(id.to_owned());
                                let now = Instant::now();
                                if let Some(last) = d.last_new {
                                    d.longest_gap = d.longest_gap.max(now - last);
                                }
                                d.last_new = Some(now);
                            } else {
                                d.duplicates += 1;
                            }
                        }
                    }
                    record.lock().unwrap().reconnects += 1;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                let options = SubscribeOptions {
                    last_id: last_id.as_deref(),
                    ..Default::default()
                };
                subscription = Subscriber::open_at(transport, &base, &room_name, options)
                    .await
                    .ok();
            }
        });
        Ok(Self {
            name: format!("{transport:?} on {base_url}"),
            delivered,
            task,
        })
    }

    pub fn ids(&self) -> Vec<String> {
        self.delivered.lock().unwrap().ids.clone()
    }

    pub fn duplicates(&self) -> usize {
        self.delivered.lock().unwrap().duplicates
    }

    pub fn reconnects(&self) -> usize {
        self.delivered.lock().unwrap().reconnects
    }

    pub fn longest_gap(&self) -> Duration {
        self.delivered.lock().unwrap().longest_gap
    }
}

/// A resuming reader of `room` over EventSource and one over WebSocket
/// on each of `workers`.
pub async fn readers_on(workers: &[&crate::ChatWorker], room: &str) -> Vec<ResumingReader> {
    let mut readers = Vec::new();
    for worker in workers {
        for transport in [Transport::EventSource, Transport::WebSocket] {
            readers.push(
                ResumingReader::start(transport, &worker.base_url(), room)
                    .await
                    .expect("a resuming reader"),
            );
        }
    }
    readers
}

/// What the poster saw.
#[derive(Debug, Default)]
pub struct Posted {
    /// Ids acknowledged (202), in the order they were.
    pub acked: Vec<String>,
    /// Every refusal answered, retried ones included: status and body.
    pub refused: Vec<(u16, Value)>,
    /// Attempts that got no HTTP answer (the worker's nginx was down or
    /// stuck).
    pub unanswered: usize,
    /// Posts never acknowledged, retries exhausted.
    pub given_up: usize,
}

/// How long a post is retried (with its idempotency key) before the
/// poster gives up on it.
const RETRY_FOR: Duration = Duration::from_secs(20);

/// Posts one message at a time, every `interval`, through each worker in
/// turn, until stopped. A post that gets no answer, or a 503, is sent
/// again with the same `Idempotency-Key` (as the JS client does), so its
/// final answer says for sure whether it was stored.
pub struct Poster {
    posted: Arc<Mutex<Posted>>,
    stop: Arc<AtomicBool>,
    task: Option<JoinHandle<()>>,
}

impl Poster {
    pub fn start(base_urls: Vec<String>, room: &str, interval: Duration) -> Self {
        let posted = Arc::new(Mutex::new(Posted::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (record, stopped, room) = (posted.clone(), stop.clone(), room.to_owned());
        let task = tokio::spawn(async move {
            let client = reqwest::Client::new();
            let token = token_for("load", "Load");
            let mut n = 0usize;
            while !stopped.load(Ordering::SeqCst) {
                let base = &base_urls[n % base_urls.len()];
                let started = Instant::now();
                let acked = loop {
                    let response = client
                        .post(format!("{base}/rooms/{room}/messages"))
                        .bearer_auth(&token)
                        .header("Content-Type", "application/json")
                        .header("Idempotency-Key", format!("load-{n}"))
                        .body(serde_json::json!({ "msg": format!("m{n}") }).to_string())
                        // A worker that does not answer (nginx stopped)
                        // must not hold the poster for long.
                        .timeout(Duration::from_secs(2))
                        .send()
                        .await;
                    let retry = match response {
                        Ok(response) => {
                            let status = response.status().as_u16();
                            let body: Value = response.json().await.unwrap_or(Value::Null);
                            match (status, body["id"].as_str()) {
                                (202, Some(id)) => break Some(id.to_owned()),
                                _ => {
                                    let retry = status == 503;
                                    record.lock().unwrap().refused.push((status, body));
                                    retry
                                }
                            }
                        }
                        Err(_) => {
                            record.lock().unwrap().unanswered += 1;
                            true
                        }
                    };
                    if !retry || started.elapsed() > RETRY_FOR {
                        break None;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                };
                {
                    let mut p = record.lock().unwrap();
                    match acked {
                        Some(id) => p.acked.push(id),
                        None => p.given_up += 1,
                    }
                }
                n += 1;
                tokio::time::sleep(interval).await;
            }
        });
        Self {
            posted,
            stop,
            task: Some(task),
        }
    }

    /// How many messages were acknowledged so far.
    pub fn acked_count(&self) -> usize {
        self.posted.lock().unwrap().acked.len()
    }

    /// How many attempts were refused or unanswered so far.
    pub fn failed_count(&self) -> usize {
        let p = self.posted.lock().unwrap();
        p.refused.len() + p.unanswered
    }

    /// Stops posting (after the post under way) and returns what was seen.
    pub async fn stop(mut self) -> Posted {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        std::mem::take(&mut *self.posted.lock().unwrap())
    }
}

impl Drop for Poster {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Waits (30 s at most) until every reader has every acknowledged message,
/// then asserts that each got exactly those, in order, and that every
/// refusal was a 503 with a JSON error and no post was given up; returns
/// the figures as a line.
pub async fn check_acknowledged_delivered(
    name: &str,
    readers: &[ResumingReader],
    posted: &Posted,
) -> String {
    let acked = &posted.acked;
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline
        && !readers.iter().all(|r| {
            let ids = r.ids();
            acked.iter().all(|id| ids.contains(id))
        })
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for reader in readers {
        assert_eq!(
            &reader.ids(),
            acked,
            "{name}: {} got other messages than were acknowledged, or out of order",
            reader.name
        );
    }
    for (status, body) in &posted.refused {
        assert_eq!(*status, 503, "{name}: refused with {status}: {body}");
        assert!(
            body["error"].is_string(),
            "{name}: refusal without a JSON error: {body}"
        );
    }
    assert_eq!(posted.given_up, 0, "{name}: posts never acknowledged");
    let duplicates: Vec<usize> = readers.iter().map(|r| r.duplicates()).collect();
    let reconnects: Vec<usize> = readers.iter().map(|r| r.reconnects()).collect();
    let longest_gap = readers
        .iter()
        .map(|r| r.longest_gap())
        .max()
        .unwrap_or_default();
    format!(
        "acked {} (all delivered to {} readers, in order), answers 503 {}, attempts unanswered {}, duplicates dropped per reader {duplicates:?}, reconnects {reconnects:?}, longest gap {:.1} s",
        acked.len(),
        readers.len(),
        posted.refused.len(),
        posted.unanswered,
        longest_gap.as_secs_f64(),
    )
}
