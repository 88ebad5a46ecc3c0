//! One task per room served by this worker: it takes the room's messages
//! from Redis, drops duplicates, and publishes them into the local nchan in
//! order, batched.
//!
//! Batching: a message arriving while the room is quiet goes out at once;
//! after each send, messages arriving within the batching window are
//! collected and go out together when it closes, as one frame.

use std::time::Duration;

use serde::Deserialize;
use tokio::sync::mpsc;
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

pub enum RoomInput {
    /// A serialized envelope from the room's Redis channel.
    Message(String),
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

pub async fn run(
    room: String,
    mut inputs: mpsc::Receiver<RoomInput>,
    nchan: Nchan,
    store: Store,
    settings: RoomSettings,
) {
    let mut task = RoomTask {
        room,
        nchan,
        store,
        settings,
        recent: RecentIds::new(RECENT_IDS),
        pending: Pending::default(),
        last_ts: chatup_wire::id::unix_millis(std::time::SystemTime::now()),
    };
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
            RoomInput::Message(message) => self.queue(message),
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
            tracing::info!(room = %self.room, recovered, "resync: delivering messages missed while redis was unreachable");
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
