//! A reader that behaves as the JS client does around workers, for storm
//! tests and benchmarks with hundreds of readers (a browser each would not
//! fit the machine): it joins through the dispatcher (history first),
//! reads a chat worker over WebSocket, resumes from its last frame after a
//! drop, moves to another worker after three failed attempts (`exclude`),
//! backs off with jitter, obeys `Retry-After`, and moves at once, at a
//! random moment within the window, on a `migrate` event (a drain). Every
//! message id is kept once, in the order it first arrived. It may read an
//! additional room over the same connection (`also`), as the client does.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use crate::clients::{Frame, SubscribeOptions, Subscriber, Transport};

/// As the JS client's defaults: three failures on one worker, then another.
const FAILURES_BEFORE_SWITCH: u32 = 3;
const BACKOFF_BASE: Duration = Duration::from_millis(500);
const BACKOFF_CAP: Duration = Duration::from_secs(15);
const BACKOFF_MIN: Duration = Duration::from_millis(100);

#[derive(Debug, Default)]
struct State {
    /// Its room (the additional one's messages are told apart by theirs).
    room: String,
    ids: Vec<String>,
    seen: HashSet<String>,
    /// The newest message of its own room kept: where a new join starts.
    newest_own: Option<String>,
    /// Stream messages older than this were not asked for: the join's
    /// history starts after it (see `follow`).
    floor: Option<String>,
    /// The same for the additional room: after the newest message of it
    /// kept (which the join asks to start after), else its history's first.
    additional_floors: HashMap<String, String>,
    newest_additional: HashMap<String, String>,
    /// Joins whose history said more was missed than history keeps.
    gaps: usize,
    /// The worker it reads, while it does.
    reading_on: Option<String>,
    /// When it last stopped reading (lost or left its worker).
    stopped_at: Option<Instant>,
    /// How long each outage lasted: from losing a worker to reading again.
    outages: Vec<Duration>,
    migrations: usize,
    /// When it left a draining worker, each time.
    departures: Vec<Instant>,
    switches: usize,
    refused_joins: usize,
}

pub struct Follower {
    state: Arc<Mutex<State>>,
    task: JoinHandle<()>,
}

impl Drop for Follower {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Follower {
    /// Starts following `room` through the dispatcher at `dispatcher`
    /// (returns at once: see [`reading_on`](Self::reading_on)). A join and
    /// the subscription after it hold a permit of `gate`: thousands of
    /// followers in one process must not open more sockets at once than
    /// it may (browsers are on machines of their own).
    /// With `also`, it reads that room too, over the same connection.
    pub fn start(
        http: reqwest::Client,
        gate: Arc<Semaphore>,
        dispatcher: &str,
        room: &str,
        also: Option<&str>,
    ) -> Self {
        let state = Arc::new(Mutex::new(State {
            room: room.to_owned(),
            ..State::default()
        }));
        let task = tokio::spawn(follow(
            http,
            gate,
            dispatcher.to_owned(),
            room.to_owned(),
            also.map(str::to_owned),
            state.clone(),
        ));
        Self { state, task }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }

    /// The worker it reads now, if it reads.
    pub fn reading_on(&self) -> Option<String> {
        self.lock().reading_on.clone()
    }

    pub fn ids(&self) -> Vec<String> {
        self.lock().ids.clone()
    }

    pub fn has_all(&self, ids: &[String]) -> bool {
        let state = self.lock();
        ids.iter().all(|id| state.seen.contains(id))
    }

    /// From losing (or leaving) a worker to reading on the next, each time.
    pub fn outages(&self) -> Vec<Duration> {
        self.lock().outages.clone()
    }

    /// Moves on a `migrate` event.
    pub fn migrations(&self) -> usize {
        self.lock().migrations
    }

    /// When it left a draining worker, each time.
    pub fn departures(&self) -> Vec<Instant> {
        self.lock().departures.clone()
    }

    /// Moves after failing on a worker.
    pub fn switches(&self) -> usize {
        self.lock().switches
    }

    /// Joins whose answer said messages were missed (`history_gap`).
    pub fn gaps(&self) -> usize {
        self.lock().gaps
    }

    /// Joins the dispatcher refused (503: no worker, or all at capacity).
    pub fn refused_joins(&self) -> usize {
        self.lock().refused_joins
    }
}

struct Joined {
    worker: String,
    url: String,
    history: Vec<Value>,
    gap: bool,
    /// Each additional room's recent history.
    also: Vec<(String, Vec<Value>)>,
}

enum JoinOutcome {
    Joined(Joined),
    /// Refused, come back after this long at the earliest.
    RetryAfter(Duration),
    Failed,
}

async fn join(
    http: &reqwest::Client,
    dispatcher: &str,
    room: &str,
    exclude: Option<&str>,
    after: Option<&str>,
    also: Option<&str>,
    also_after: Option<(&str, &str)>,
) -> JoinOutcome {
    let mut request = http
        .post(format!("{dispatcher}/join/{room}"))
        .timeout(Duration::from_secs(10));
    let mut body = serde_json::Map::new();
    if let Some(worker) = exclude {
        body.insert("exclude".into(), worker.into());
    }
    if let Some(id) = after {
        body.insert("after".into(), id.into());
    }
    if let Some(room) = also {
        body.insert("also".into(), serde_json::json!([room]));
    }
    if let Some((room, id)) = also_after {
        body.insert("also_after".into(), serde_json::json!({ room: id }));
    }
    if !body.is_empty() {
        request = request.json(&body);
    }
    let Ok(response) = request.send().await else {
        return JoinOutcome::Failed;
    };
    let retry_after = response
        .headers()
        .get("Retry-After")
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    match (
        status,
        body["worker"]["id"].as_str(),
        body["worker"]["url"].as_str(),
    ) {
        (200, Some(id), Some(url)) => JoinOutcome::Joined(Joined {
            worker: id.to_owned(),
            url: url.to_owned(),
            history: body["history"].as_array().cloned().unwrap_or_default(),
            gap: body["history_gap"] == true,
            also: body["also"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|extra| {
                    let room = extra["room"].as_str()?.to_owned();
                    Some((
                        room,
                        extra["history"].as_array().cloned().unwrap_or_default(),
                    ))
                })
                .collect(),
        }),
        _ => match retry_after {
            Some(secs) => JoinOutcome::RetryAfter(Duration::from_secs(secs)),
            None => JoinOutcome::Failed,
        },
    }
}

/// Full jitter between the floor and the capped exponential.
fn backoff(failures: u32) -> Duration {
    let ceiling = BACKOFF_BASE
        .saturating_mul(1 << failures.min(10))
        .min(BACKOFF_CAP);
    BACKOFF_MIN + (ceiling.saturating_sub(BACKOFF_MIN)).mul_f64(rand::random::<f64>())
}

impl State {
    /// Keeps a message of the join's history.
    fn keep(&mut self, item: &Value) {
        if item.get("ev").is_some() {
            return;
        }
        if let Some(id) = item["id"].as_str() {
            if self.seen.insert(id.to_owned()) {
                self.ids.push(id.to_owned());
                match item["room"].as_str() {
                    Some(room) if room != self.room => {
                        self.newest_additional
                            .insert(room.to_owned(), id.to_owned());
                    }
                    _ => self.newest_own = Some(id.to_owned()),
                }
            }
        }
    }

    /// Keeps a message of the stream, unless it is older than what the
    /// join asked for: the worker's channel replays frames from before the
    /// join's history (the JS client drops them the same way).
    fn keep_streamed(&mut self, item: &Value) {
        // Older by more than servers' clocks may differ (as the client).
        let made = |id: &str| chatup_wire::id::made_at_millis(id);
        let floor = match item["room"].as_str() {
            Some(room) if room != self.room => self.additional_floors.get(room).map(String::as_str),
            _ => self.floor.as_deref(),
        };
        let older = match (item["id"].as_str().and_then(made), floor.and_then(made)) {
            (Some(at), Some(floor)) => at + chatup_wire::id::CLOCK_SKEW_MS < floor,
            _ => false,
        };
        if !older {
            self.keep(item);
        }
    }

    /// Where the next join starts: after the newest message kept.
    fn newest(&self) -> Option<String> {
        self.newest_own.clone()
    }

    fn reading(&mut self, worker: &str) {
        self.reading_on = Some(worker.to_owned());
        if let Some(stopped) = self.stopped_at.take() {
            self.outages.push(stopped.elapsed());
        }
    }

    fn stopped(&mut self) {
        self.reading_on = None;
        self.stopped_at = Some(Instant::now());
    }
}

/// What the `migrate` events for `worker` in `frame` say, the last one
/// winning: leave at this moment (`Some(Some(at))`), stay after all (a
/// cancelled drain: `Some(None)`), or nothing (`None`).
fn migration(frame: &Frame, worker: &str) -> Option<Option<Instant>> {
    let now_ms = chatup_wire::id::unix_millis(std::time::SystemTime::now());
    frame
        .items
        .iter()
        .filter(|item| item["ev"] == "migrate" && item["worker"] == worker)
        .filter_map(|item| {
            if item["cancel"] == true {
                return Some(None);
            }
            item["until"].as_u64().filter(|&until| until >= now_ms)?;
            let within = item["within_ms"].as_u64().unwrap_or(0);
            Some(Some(
                Instant::now() + Duration::from_millis(within).mul_f64(rand::random::<f64>()),
            ))
        })
        .next_back()
}

async fn follow(
    http: reqwest::Client,
    gate: Arc<Semaphore>,
    dispatcher: String,
    room: String,
    also: Option<String>,
    state: Arc<Mutex<State>>,
) {
    let mut exclude: Option<String> = None;
    let mut join_failures = 0;
    loop {
        // Back in a room it read: everything after its newest message
        // (all that is stored if it has none).
        let after = exclude
            .as_ref()
            .map(|_| state.lock().unwrap().newest().unwrap_or_default());
        let also_after = also.as_deref().and_then(|extra| {
            let s = state.lock().unwrap();
            s.newest_additional
                .get(extra)
                .map(|id| (extra.to_owned(), id.clone()))
        });
        let outcome = {
            let _permit = gate.acquire().await;
            join(
                &http,
                &dispatcher,
                &room,
                exclude.as_deref(),
                after.as_deref(),
                also.as_deref(),
                also_after
                    .as_ref()
                    .map(|(room, id)| (room.as_str(), id.as_str())),
            )
            .await
        };
        let joined = match outcome {
            JoinOutcome::Joined(joined) => joined,
            JoinOutcome::RetryAfter(at_least) => {
                state.lock().unwrap().refused_joins += 1;
                tokio::time::sleep(at_least.mul_f64(1.0 + rand::random::<f64>())).await;
                continue;
            }
            JoinOutcome::Failed => {
                join_failures += 1;
                tokio::time::sleep(backoff(join_failures)).await;
                continue;
            }
        };
        join_failures = 0;
        {
            let mut s = state.lock().unwrap();
            s.gaps += usize::from(joined.gap);
            s.floor = after.filter(|a| !a.is_empty()).or_else(|| {
                joined
                    .history
                    .first()
                    .and_then(|m| m["id"].as_str())
                    .map(str::to_owned)
            });
            for message in &joined.history {
                s.keep(message);
            }
            for (extra, history) in &joined.also {
                let floor = s.newest_additional.get(extra).cloned().or_else(|| {
                    history
                        .first()
                        .and_then(|m| m["id"].as_str())
                        .map(str::to_owned)
                });
                if let Some(floor) = floor {
                    s.additional_floors.insert(extra.clone(), floor);
                }
                for message in history {
                    s.keep(message);
                }
            }
        }
        // The additional room, if the dispatcher let it be read.
        let reading_also = also
            .as_deref()
            .filter(|extra| joined.also.iter().any(|(room, _)| room == extra));
        let mut failures = 0;
        let mut last_id: Option<String> = None;
        let moved = loop {
            let options = SubscribeOptions {
                last_id: last_id.as_deref(),
                events: true,
                also: reading_also,
                ..Default::default()
            };
            let subscription = {
                let _permit = gate.acquire().await;
                Subscriber::open_at(Transport::WebSocket, &joined.url, &room, options).await
            };
            let mut migrate_at: Option<Instant> = None;
            if let Ok(mut sub) = subscription {
                failures = 0;
                state.lock().unwrap().reading(&joined.worker);
                loop {
                    let leave = async {
                        match migrate_at {
                            Some(at) => tokio::time::sleep_until(at.into()).await,
                            None => std::future::pending().await,
                        }
                    };
                    tokio::select! {
                        frame = sub.next() => match frame {
                            Some(frame) => {
                                last_id = Some(frame.nchan_id.clone());
                                match migration(&frame, &joined.worker) {
                                    Some(Some(at)) if migrate_at.is_none() => migrate_at = Some(at),
                                    Some(None) => migrate_at = None,
                                    _ => {}
                                }
                                let mut s = state.lock().unwrap();
                                for item in &frame.items {
                                    s.keep_streamed(item);
                                }
                            }
                            None => break,
                        },
                        _ = leave => break,
                    }
                }
                state.lock().unwrap().stopped();
                if migrate_at.is_some() {
                    break true;
                }
            }
            failures += 1;
            tokio::time::sleep(backoff(failures)).await;
            if failures >= FAILURES_BEFORE_SWITCH {
                break false;
            }
        };
        let mut s = state.lock().unwrap();
        if moved {
            s.migrations += 1;
            s.departures.push(Instant::now());
        } else {
            s.switches += 1;
        }
        exclude = Some(joined.worker);
    }
}
