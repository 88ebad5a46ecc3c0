//! One task per room served by this worker: it takes the room's messages
//! and events from Redis, drops duplicates, and publishes them into the
//! local nchan in order, batched.
//!
//! Catching up is by message id, never by time: the task knows the id of
//! the last message nchan accepted from it (`last_published`), and
//! whenever it may have missed something (start, Redis reconnection, a full
//! queue, a frame nchan refused) it publishes what Redis history holds
//! after that id. Ids that were published already are dropped.
//!
//! Start: once the room's Redis subscription is in place, a room served on
//! a reader's request ([`Origin::Fresh`]) starts from an empty channel
//! filled with the whole history (no reader is in it yet, so nobody sees a
//! frame twice); a room that nginx was already serving before this sidecar
//! started ([`Origin::Recovered`]) resumes after the last message nchan has
//! (the module records it). Live items that arrive meanwhile wait in the
//! queue and follow, minus duplicates.
//!
//! Batching: a message arriving while the room is quiet goes out at once;
//! after each send, messages arriving within the batching window are
//! collected and go out together when it closes, as one frame.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{sleep_until, Instant};

use crate::nchan::{Nchan, NchanError};
use crate::store::Store;
use crate::worker::batch::{Frame, FrameLimits, Item, Pending, RecentIds};

/// Ids remembered per room for de-duplication.
const RECENT_IDS: usize = 4096;
/// Attempts to publish a frame before giving up on it (and resyncing).
const PUBLISH_ATTEMPTS: u32 = 4;
/// Wait before catching up again after nchan refused a frame.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(1);

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
    /// nchan lost frames of the room (an nginx worker process died):
    /// publish the whole history again (readers drop what they have).
    Refill,
}

#[derive(Clone)]
pub struct RoomSettings {
    pub window: Duration,
    pub limits: FrameLimits,
    pub history_length: usize,
}

/// The fields of an item a room task needs: its id, and `ev` for events
/// (which are not kept in history).
#[derive(Deserialize)]
struct Stamp {
    id: String,
    #[serde(default)]
    ev: Option<serde::de::IgnoredAny>,
}

/// Why a room is served.
#[derive(Debug, Clone)]
pub enum Origin {
    /// On a reader's request: nobody reads its channel yet.
    Fresh,
    /// nginx served it before this sidecar started: readers are in its
    /// channel, which holds everything up to `last_id`.
    Recovered { last_id: Option<String> },
}

struct RoomTask {
    room: String,
    nchan: Nchan,
    store: Store,
    settings: RoomSettings,
    recent: RecentIds,
    pending: Pending,
    /// The last message nchan accepted from this task.
    last_published: Option<String>,
    /// Set when items were not delivered: catch up from history then.
    behind_since: Option<Instant>,
}

/// What a room task starts from.
pub struct RoomStart {
    pub room: String,
    pub inputs: mpsc::Receiver<RoomInput>,
    pub nchan: Nchan,
    pub store: Store,
    pub settings: RoomSettings,
    pub origin: Origin,
    /// Set by whoever could not queue an item for this room (queue full).
    pub overflowed: Arc<AtomicBool>,
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
        origin,
        overflowed,
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
        last_published: None,
        behind_since: None,
    };
    if tokio::time::timeout(SUBSCRIBE_WAIT, subscribed)
        .await
        .is_err()
    {
        tracing::warn!(room = %task.room, "redis subscription not confirmed, backfilling anyway");
    }
    task.start(origin).await;
    task.flush().await;
    let _ = ready.send(true);
    let mut next_send = Instant::now();
    let mut open = true;
    while open {
        let retry_at = task.behind_since.map(|since| since + RETRY_AFTER_FAILURE);
        tokio::select! {
            input = inputs.recv() => match input {
                Some(input) => task.take(input).await,
                None => break,
            },
            _ = sleep_until(retry_at.unwrap_or_else(Instant::now)), if retry_at.is_some() => {
                task.behind_since = None;
                task.resync().await;
            }
        }
        if overflowed.swap(false, Ordering::Relaxed) {
            tracing::warn!(room = %task.room, "room queue overflowed: catching up from history");
            task.resync().await;
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
            RoomInput::Refill => {
                tracing::info!(room = %self.room, "nchan lost frames: publishing the history again");
                self.recent = RecentIds::new(RECENT_IDS);
                self.last_published = None;
                self.resync().await;
            }
        }
    }

    fn queue(&mut self, text: String) {
        let Ok(stamp) = serde_json::from_str::<Stamp>(&text) else {
            tracing::warn!(room = %self.room, "dropping an item without id from redis");
            return;
        };
        if self.recent.contains(&stamp.id) {
            return;
        }
        self.pending.push(Item {
            text,
            id: stamp.id,
            is_message: stamp.ev.is_none(),
        });
    }

    async fn start(&mut self, origin: Origin) {
        match origin {
            Origin::Fresh => {
                // A channel left from before (frames published by a task
                // that was let go a moment ago) would make the backfill
                // appear twice: start from an empty one.
                if let Err(e) = self.nchan.delete(&self.room).await {
                    tracing::warn!(room = %self.room, error = %e, "cannot empty the channel of a new room");
                }
            }
            Origin::Recovered { last_id } => {
                tracing::info!(room = %self.room, last_id = ?last_id, "resuming a room nginx still serves");
                self.last_published = last_id;
            }
        }
        self.resync().await;
    }

    /// Queues what Redis history holds after the last message published
    /// (all of it if none was, or if that one is no longer in history).
    async fn resync(&mut self) {
        let history = match self
            .store
            .recent(&self.room, self.settings.history_length)
            .await
        {
            Ok(history) => history,
            Err(e) => {
                tracing::warn!(room = %self.room, error = %e, "resync: cannot read history, retrying");
                self.behind_since = Some(Instant::now());
                return;
            }
        };
        let ids: Vec<Option<String>> = history
            .iter()
            .map(|m| serde_json::from_str::<Stamp>(m).ok().map(|s| s.id))
            .collect();
        let start = match &self.last_published {
            None => 0,
            Some(last) => match ids.iter().position(|id| id.as_deref() == Some(last)) {
                Some(at) => at + 1,
                None => {
                    if history.len() >= self.settings.history_length {
                        tracing::error!(room = %self.room, last = %last,
                            "the last message published here is no longer in history: readers here may miss messages older than the history");
                    }
                    0
                }
            },
        };
        let before = self.pending.len();
        for message in history.into_iter().skip(start) {
            self.queue(message);
        }
        let recovered = self.pending.len() - before;
        if recovered > 0 {
            tracing::info!(room = %self.room, recovered, "delivering messages from history that this worker had not broadcast");
        }
    }

    async fn flush(&mut self) {
        for frame in self.pending.take_frames(self.settings.limits) {
            if self.behind_since.is_some() {
                // A frame before this one was lost: publishing this one
                // would leave a gap. The catch-up brings them back in order.
                continue;
            }
            match self.publish(&frame).await {
                Ok(()) => {
                    for id in &frame.ids {
                        self.recent.insert(id);
                    }
                    if let Some(id) = frame.last_message_id {
                        self.last_published = Some(id);
                    }
                }
                Err(e) => {
                    tracing::error!(room = %self.room, error = %e,
                        "nchan refused a frame: catching up from history once it is back");
                    self.behind_since = Some(Instant::now());
                }
            }
        }
    }

    async fn publish(&self, frame: &Frame) -> Result<(), NchanError> {
        let mut delay = Duration::from_millis(50);
        let mut attempt = 1;
        loop {
            let last_id = frame.last_message_id.as_deref();
            match self
                .nchan
                .publish(&self.room, frame.text.clone(), last_id)
                .await
            {
                Ok(()) => return Ok(()),
                Err(e) if attempt == PUBLISH_ATTEMPTS => return Err(e),
                Err(e) => {
                    tracing::warn!(room = %self.room, attempt, error = %e, "publishing to nchan failed, retrying");
                    tokio::time::sleep(delay).await;
                    delay *= 3;
                    attempt += 1;
                }
            }
        }
    }
}
