//! One task per room served by this worker: it takes the room's messages
//! and events from Redis, drops duplicates, and publishes them into the
//! local nchan in order, batched.
//!
//! Start: once the room's Redis subscription is in place, the task
//! backfills nchan from the room's history: all of it into a channel that
//! holds nothing yet (so a reader who fetched history from a dispatcher a
//! moment ago finds no gap), or what may have been missed around a
//! restart into a channel that still holds frames. Live items that arrive
//! meanwhile wait in the queue and follow, minus duplicates.
//!
//! Batching: a message arriving while the room is quiet goes out at once;
//! after each send, messages arriving within the batching window are
//! collected and go out together when it closes, as one frame.

use std::time::Duration;

use serde::Deserialize;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{sleep_until, Instant};

use crate::nchan::Nchan;
use crate::store::Store;
use crate::worker::batch::{FrameLimits, Pending, RecentIds};

/// Ids remembered per room for de-duplication.
const RECENT_IDS: usize = 4096;
/// Clock skew tolerated between machines when a resync decides which
/// history entries were possibly missed.
const RESYNC_SKEW_MS: u64 = 2000;
/// Attempts to publish a frame before giving up on it.
const PUBLISH_ATTEMPTS: u32 = 4;

/// How long a new room waits for its Redis subscription before it
/// backfills anyway (Redis is down: the resync after reconnecting covers).
const SUBSCRIBE_WAIT: Duration = Duration::from_secs(2);

pub enum RoomInput {
    /// A serialized envelope or event from the room's Redis channel, or an
    /// event of this worker's own (counts).
    Item(String),
    /// The Redis subscription was re-established: messages published while
    /// it was down are fetched from history.
    Resync,
}

#[derive(Clone)]
pub struct RoomSettings {
    pub window: Duration,
    pub limits: FrameLimits,
    pub history_length: usize,
}

/// The fields of an envelope a room task needs.
#[derive(Deserialize)]
struct Stamp {
    id: String,
    ts: u64,
}

struct RoomTask {
    room: String,
    nchan: Nchan,
    store: Store,
    settings: RoomSettings,
    recent: RecentIds,
    pending: Pending,
    /// Timestamp of the newest message delivered, or of the task's start.
    last_ts: u64,
}

/// What a room task starts from.
pub struct RoomStart {
    pub room: String,
    pub inputs: mpsc::Receiver<RoomInput>,
    pub nchan: Nchan,
    pub store: Store,
    pub settings: RoomSettings,
    /// Fires once Redis confirmed the room's subscription.
    pub subscribed: oneshot::Receiver<()>,
    /// Set once the backfill is in nchan.
    pub ready: watch::Sender<bool>,
}

pub async fn run(start: RoomStart) {
    let RoomStart {
        room,
        mut inputs,
        nchan,
        store,
        settings,
        subscribed,
        ready,
    } = start;
    let mut task = RoomTask {
        room,
        nchan,
        store,
        settings,
        recent: RecentIds::new(RECENT_IDS),
        pending: Pending::default(),
        last_ts: chatup_wire::id::unix_millis(std::time::SystemTime::now()),
    };
    if tokio::time::timeout(SUBSCRIBE_WAIT, subscribed)
        .await
        .is_err()
    {
        tracing::warn!(room = %task.room, "redis subscription not confirmed, backfilling anyway");
    }
    task.backfill().await;
    task.flush().await;
    let _ = ready.send(true);
    let mut next_send = Instant::now();
    let mut open = true;
    while open {
        match inputs.recv().await {
            Some(input) => task.take(input).await,
            None => break,
        }
        // Collect until the window after the previous send closes (at once
        // if the room was quiet) or the frame is full.
        while Instant::now() < next_send && !task.pending.is_full(task.settings.limits) {
            tokio::select! {
                input = inputs.recv() => match input {
                    Some(input) => task.take(input).await,
                    None => { open = false; break; }
                },
                _ = sleep_until(next_send) => break,
            }
        }
        while !task.pending.is_full(task.settings.limits) {
            match inputs.try_recv() {
                Ok(input) => task.take(input).await,
                Err(_) => break,
            }
        }
        if !task.pending.is_empty() {
            task.flush().await;
            next_send = Instant::now() + task.settings.window;
        }
    }
    // Inputs closed (room dropped or shutdown): send what is left.
    task.flush().await;
    tracing::debug!(room = %task.room, "room task ended");
}

impl RoomTask {
    async fn take(&mut self, input: RoomInput) {
        match input {
            RoomInput::Item(item) => self.queue(item),
            RoomInput::Resync => self.resync().await,
        }
    }

    fn queue(&mut self, message: String) {
        let Ok(stamp) = serde_json::from_str::<Stamp>(&message) else {
            tracing::warn!(room = %self.room, "dropping a message without id/ts from redis");
            return;
        };
        if self.recent.insert(&stamp.id) {
            self.last_ts = self.last_ts.max(stamp.ts);
            self.pending.push(message);
        }
    }

    /// Fills a new room's channel: with the whole history when it holds
    /// nothing, else with what may have been missed (see `resync`).
    async fn backfill(&mut self) {
        match self.nchan.info(&self.room).await {
            Ok(info) if info.messages == 0 => self.last_ts = 0,
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(room = %self.room, error = %e, "backfill: cannot read channel info")
            }
        }
        self.resync().await;
    }

    /// Publishes the history entries this worker may have missed while its
    /// Redis subscription was down (those newer than what it delivered,
    /// allowing for clock skew, and not delivered already).
    async fn resync(&mut self) {
        let floor = self.last_ts.saturating_sub(RESYNC_SKEW_MS);
        let history = match self
            .store
            .recent(&self.room, self.settings.history_length)
            .await
        {
            Ok(history) => history,
            Err(e) => {
                tracing::warn!(room = %self.room, error = %e, "resync: cannot read history");
                return;
            }
        };
        let before = self.pending.len();
        for message in history {
            if serde_json::from_str::<Stamp>(&message).is_ok_and(|s| s.ts >= floor) {
                self.queue(message);
            }
        }
        let recovered = self.pending.len() - before;
        if recovered > 0 {
            tracing::info!(room = %self.room, recovered, "delivering messages from history that this worker had not broadcast");
        }
    }

    async fn flush(&mut self) {
        for (frame, count) in self.pending.take_frames(self.settings.limits) {
            self.publish(frame, count).await;
        }
    }

    async fn publish(&self, frame: String, count: usize) {
        let mut delay = Duration::from_millis(50);
        for attempt in 1..=PUBLISH_ATTEMPTS {
            match self.nchan.publish(&self.room, frame.clone()).await {
                Ok(()) => return,
                Err(e) if attempt == PUBLISH_ATTEMPTS => {
                    // The messages stay in Redis history; readers of this
                    // worker recover them when they rejoin.
                    tracing::error!(room = %self.room, messages = count, error = %e,
                        "could not publish a frame to nchan; its messages reach this worker's readers only through history");
                }
                Err(e) => {
                    tracing::warn!(room = %self.room, attempt, error = %e, "publishing to nchan failed, retrying");
                    tokio::time::sleep(delay).await;
                    delay *= 3;
                }
            }
        }
    }
}
