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

use std::time::Duration;

use serde::Deserialize;
use tokio::sync::oneshot;
use tokio::time::{sleep_until, Instant};

use crate::nchan::{Nchan, NchanError};
use crate::store::Store;
use crate::telemetry::names;
use crate::worker::active::RecentlyActive;
use crate::worker::batch::{Frame, FrameLimits, Item, Pending, RecentIds};
use crate::worker::inbox::{Inbox, Lost};
use crate::worker::sampler::Sampler;
use chatup_wire::{EventKind, MessageIdGenerator, RoomEvent, User};
use std::future::Future;

/// Message ids remembered per room for de-duplication, per message of
/// history: a resync brings back at most `history_length` messages (all of
/// them when the last one published here is gone from history), and those
/// must all be known; twice that leaves room for the live ones that arrive
/// around a resync.
const RECENT_IDS_PER_HISTORY_MESSAGE: usize = 2;
/// Attempts to publish a frame before giving up on it (and resyncing).
const PUBLISH_ATTEMPTS: u32 = 4;
/// Wait before catching up again after nchan refused a frame.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(1);

/// How long a new room waits for its Redis subscription before it
/// backfills anyway (Redis is down: the resync after reconnecting covers).
const SUBSCRIBE_WAIT: Duration = Duration::from_secs(2);

/// Now, in Unix milliseconds (message ids carry the same clock).
fn wall_clock_ms() -> u64 {
    chatup_wire::id::unix_millis(std::time::SystemTime::now())
}

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
    /// The recently active list is sent at most this often (and the
    /// `sampled` event repeated, while the room is hot).
    pub active_every: Duration,
    /// Messages a second above which readers get a sample (0: never).
    pub hot_room_rate: u64,
}

#[cfg(test)]
impl RoomSettings {
    /// Small windows, so that tests wait little.
    pub fn for_tests() -> Self {
        Self {
            window: Duration::from_millis(10),
            limits: FrameLimits {
                max_items: 100,
                max_bytes: 1 << 20,
            },
            history_length: 100,
            active_every: Duration::from_millis(50),
            hot_room_rate: 0,
        }
    }
}

/// The fields of an item a room task needs: its id, and `ev` for events
/// (which are not kept in history).
#[derive(Deserialize)]
struct Stamp {
    id: String,
    #[serde(default)]
    ev: Option<serde::de::IgnoredAny>,
    /// A message's poster, for the recently active list.
    #[serde(default)]
    user: Option<User>,
}

/// Where a room task puts its frames: the local nchan (a fake in tests).
pub trait Channels: Send + Sync + 'static {
    /// Publishes one frame in `channel`; `last_id` names its last message.
    fn publish(
        &self,
        channel: &str,
        frame: String,
        last_id: Option<&str>,
    ) -> impl Future<Output = Result<(), NchanError>> + Send;
}

impl Channels for Nchan {
    fn publish(
        &self,
        channel: &str,
        frame: String,
        last_id: Option<&str>,
    ) -> impl Future<Output = Result<(), NchanError>> + Send {
        Nchan::publish(self, channel, frame, last_id)
    }
}

/// Why a room is served.
#[derive(Debug, Clone)]
pub enum Origin {
    /// On a reader's request: its channel is new (the module names a new
    /// one for each serving), nobody reads it yet.
    Fresh,
    /// nginx served it before this sidecar started, or this channel was
    /// filled before (a serve request asked again): readers may be in the
    /// channel, which holds everything up to `last_id`.
    Recovered { last_id: Option<String> },
}

struct RoomTask<C> {
    /// The nchan channel of this serving of the room, which names the room
    /// too (one string, not two: see `run` on the size of idle rooms).
    channel: String,
    nchan: C,
    store: Store,
    settings: RoomSettings,
    recent: RecentIds,
    pending: Pending,
    /// The last message nchan accepted from this task.
    last_published: Option<String>,
    /// Set when items were not delivered: catch up from history then.
    behind_since: Option<Instant>,
    active: RecentlyActive,
    /// When the recently active list may be sent next.
    next_active: Instant,
    event_ids: MessageIdGenerator,
    /// Boxed: its state lives on the heap rather than in the future that
    /// every idle room holds.
    sampler: Box<Sampler>,
    /// When a hot room's `sampled` event is repeated (for new readers).
    next_sampled: Instant,
}

/// What a room task starts from.
pub struct RoomStart<C> {
    /// The nchan channel of this serving, which names the room (see
    /// `chatup_wire::readers::channel`).
    pub channel: String,
    /// Inputs, overflows, and where the task says it is ready (once the
    /// backfill is in nchan).
    pub inbox: Inbox,
    pub nchan: C,
    pub store: Store,
    pub settings: RoomSettings,
    pub origin: Origin,
    /// Fires once Redis confirmed the room's subscription.
    pub subscribed: oneshot::Receiver<()>,
}

/// The room's task. Its calls to nchan and Redis are boxed where they are
/// awaited: a future is as big as its biggest await, a room spends nearly
/// all its life waiting for input, and thousands of idle rooms would each
/// hold the room for an HTTP call's state (2.4 KB a room unboxed; the test
/// `an_idle_room_task_is_small` keeps it small).
pub async fn run<C: Channels>(start: RoomStart<C>) {
    let RoomStart {
        channel,
        mut inbox,
        nchan,
        store,
        settings,
        origin,
        subscribed,
    } = start;
    let recent = RecentIds::new(settings.history_length * RECENT_IDS_PER_HISTORY_MESSAGE);
    let settings_rate = settings.hot_room_rate;
    let mut task = RoomTask {
        channel,
        nchan,
        store,
        settings,
        recent,
        pending: Pending::default(),
        last_published: None,
        behind_since: None,
        active: RecentlyActive::default(),
        next_active: Instant::now(),
        event_ids: MessageIdGenerator::new(),
        sampler: Box::new(Sampler::new(settings_rate)),
        next_sampled: Instant::now(),
    };
    if tokio::time::timeout(SUBSCRIBE_WAIT, subscribed)
        .await
        .is_err()
    {
        tracing::warn!(room = %task.room(), "redis subscription not confirmed, backfilling anyway");
    }
    task.start(origin).await;
    task.send_active_if_due();
    task.flush().await;
    inbox.set_ready();
    let mut next_send = Instant::now();
    let mut open = true;
    while open {
        let retry_at = task.behind_since.map(|since| since + RETRY_AFTER_FAILURE);
        let active_at = task.active.has_changed().then_some(task.next_active);
        // A hot room wakes to repeat its `sampled` event, or to find it
        // went quiet.
        let sampled_at = task.sampler.state().on.then_some(task.next_sampled);
        // One timer for both: each branch's timer is part of the task's
        // future, which every idle room holds.
        let wake_at = active_at.into_iter().chain(sampled_at).min();
        tokio::select! {
            input = inbox.recv() => match input {
                Some(input) => task.take(input).await,
                None => break,
            },
            _ = sleep_until(retry_at.unwrap_or_else(Instant::now)), if retry_at.is_some() => {
                task.behind_since = None;
                task.resync().await;
            }
            _ = sleep_until(wake_at.unwrap_or_else(Instant::now)), if wake_at.is_some() => {}
        }
        match inbox.take_lost() {
            Lost::Nothing => {}
            Lost::Items => {
                tracing::warn!(room = %task.room(), "room queue overflowed: catching up from history");
                task.resync().await;
            }
            Lost::Refill => {
                tracing::warn!(room = %task.room(), "room queue overflowed, a refill among what it dropped");
                task.take(RoomInput::Refill).await;
            }
        }
        // Collect until the window after the previous send closes (at once
        // if the room was quiet) or the frame is full.
        while Instant::now() < next_send && !task.pending.is_full(task.settings.limits) {
            tokio::select! {
                input = inbox.recv() => match input {
                    Some(input) => task.take(input).await,
                    None => { open = false; break; }
                },
                _ = sleep_until(next_send) => break,
            }
        }
        while !task.pending.is_full(task.settings.limits) {
            match inbox.try_recv() {
                Some(input) => task.take(input).await,
                None => break,
            }
        }
        task.send_active_if_due();
        task.send_sampled_if_due();
        if !task.pending.is_empty() {
            task.flush().await;
            next_send = Instant::now() + task.settings.window;
        }
    }
    // Inputs closed (room dropped or shutdown): send what is left.
    task.flush().await;
    tracing::debug!(room = %task.room(), "room task ended");
}

impl<C: Channels> RoomTask<C> {
    /// The room served.
    fn room(&self) -> &str {
        // A channel named by a module from before channels were named per
        // serving is the room's name itself.
        chatup_wire::readers::channel::room_of(&self.channel).unwrap_or(&self.channel)
    }

    async fn take(&mut self, input: RoomInput) {
        match input {
            RoomInput::Item(item) => self.queue(item, true),
            RoomInput::Resync => Box::pin(self.resync()).await,
            RoomInput::Refill => {
                tracing::info!(room = %self.room(), "nchan lost frames: publishing the history again");
                self.recent =
                    RecentIds::new(self.settings.history_length * RECENT_IDS_PER_HISTORY_MESSAGE);
                self.last_published = None;
                Box::pin(self.resync()).await;
            }
        }
    }

    /// Queues an item for the next frame; `live` for one from the room's
    /// channel (a hot room's are sampled), not from history.
    fn queue(&mut self, text: String, live: bool) {
        let Ok(stamp) = serde_json::from_str::<Stamp>(&text) else {
            tracing::warn!(room = %self.room(), "dropping an item without id from redis");
            return;
        };
        if self.recent.contains(&stamp.id) {
            return;
        }
        let is_message = stamp.ev.is_none();
        if let (true, Some(user)) = (is_message, stamp.user) {
            let exempt = matches!(user.role.as_deref(), Some("moderator" | "system"));
            self.active.note(user);
            // Live messages are counted; a catch-up's from history only
            // follow the share of the moment (they were counted, or missed).
            let shown = if live {
                self.sampler.keep(&stamp.id, exempt, wall_clock_ms())
            } else {
                self.sampler.keeps(&stamp.id, exempt)
            };
            if !shown {
                // Kept in history, not shown here; remembered as published
                // so that a plain catch-up does not bring it back.
                self.recent.insert(&stamp.id);
                metrics::counter!(names::MESSAGES_SAMPLED_OUT).increment(1);
                return;
            }
        }
        self.pending.push(Item {
            text,
            id: stamp.id,
            is_message,
        });
    }

    /// Queues an `active` event if the list changed and its interval has
    /// passed since the last one (the loop wakes up for it otherwise).
    fn send_active_if_due(&mut self) {
        let now = Instant::now();
        if now < self.next_active {
            return;
        }
        let Some(users) = self.active.take_if_changed() else {
            return;
        };
        self.queue_own_event(EventKind::Active { users });
        self.next_active = now + self.settings.active_every;
    }

    /// Queues an event of this worker's own for the room's readers.
    fn queue_own_event(&mut self, kind: EventKind) {
        let made = std::time::SystemTime::now();
        let event = RoomEvent {
            id: self.event_ids.next_id(made),
            room: self.room().to_owned(),
            kind,
            ts: chatup_wire::id::unix_millis(made),
        };
        let Ok(text) = serde_json::to_string(&event) else {
            return;
        };
        self.pending.push(Item {
            text,
            id: event.id,
            is_message: false,
        });
    }

    /// Queues a `sampled` event when sampling started or stopped, and
    /// repeats it every `active_every` while on (for readers who arrived).
    fn send_sampled_if_due(&mut self) {
        let now = Instant::now();
        let state = match self.sampler.take_change(wall_clock_ms()) {
            Some(changed) => changed,
            None if self.sampler.state().on && now >= self.next_sampled => self.sampler.state(),
            None => return,
        };
        self.next_sampled = now + self.settings.active_every;
        if state.on {
            tracing::info!(room = %self.room(), rate = state.rate, share = state.keep, "hot room: readers get a sample");
        }
        self.queue_own_event(EventKind::Sampled {
            on: state.on,
            rate: state.rate,
            share: (state.keep * 100.0).round() / 100.0,
        });
    }

    async fn start(&mut self, origin: Origin) {
        match origin {
            // A new channel (never deleted: see
            // `chatup_wire::readers::channel`): the whole history goes in.
            Origin::Fresh => {}
            Origin::Recovered { last_id } => {
                tracing::info!(room = %self.room(), channel = %self.channel, last_id = ?last_id, "resuming a room nginx still serves");
                self.last_published = last_id;
            }
        }
        Box::pin(self.resync()).await;
    }

    /// Queues what Redis history holds after the last message published
    /// (all of it if none was, or if that one is no longer in history).
    async fn resync(&mut self) {
        let history = match Box::pin(self.store.recent(self.room(), self.settings.history_length))
            .await
        {
            Ok(history) => history,
            Err(e) => {
                tracing::warn!(room = %self.room(), error = %e, "resync: cannot read history, retrying");
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
                    // In a hot room the last message shown here may be far
                    // back: the history's sample follows the share.
                    if history.len() >= self.settings.history_length && !self.sampler.state().on {
                        tracing::error!(room = %self.room(), last = %last,
                            "the last message published here is no longer in history: readers here may miss messages older than the history");
                    }
                    0
                }
            },
        };
        // History gives the order: what was waiting goes after it (events,
        // which history lacks, and messages newer than this read), minus
        // what history brought already.
        let waiting = self.pending.take_items();
        for message in history.into_iter().skip(start) {
            self.queue(message, false);
        }
        let recovered = self.pending.len()
            - waiting
                .iter()
                .filter(|w| self.pending.contains(&w.id))
                .count();
        for item in waiting {
            self.pending.push(item);
        }
        if recovered > 0 {
            tracing::info!(room = %self.room(), recovered, "delivering messages from history that this worker had not broadcast");
        }
    }

    async fn flush(&mut self) {
        for frame in self.pending.take_frames(self.settings.limits) {
            if self.behind_since.is_some() {
                // A frame before this one was lost: publishing this one
                // would leave a gap. The catch-up brings them back in order.
                continue;
            }
            match Box::pin(self.publish(&frame)).await {
                Ok(()) => {
                    record_published(&frame);
                    for id in &frame.message_ids {
                        self.recent.insert(id);
                    }
                    if let Some(id) = frame.last_message_id {
                        self.last_published = Some(id);
                    }
                }
                Err(e) => {
                    metrics::counter!(names::FRAMES_UNDELIVERED).increment(1);
                    tracing::error!(room = %self.room(), error = %e,
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
                .publish(&self.channel, frame.text.clone(), last_id)
                .await
            {
                Ok(()) => return Ok(()),
                Err(e) if attempt == PUBLISH_ATTEMPTS => return Err(e),
                Err(e) => {
                    tracing::warn!(room = %self.room(), attempt, error = %e, "publishing to nchan failed, retrying");
                    tokio::time::sleep(delay).await;
                    delay *= 3;
                    attempt += 1;
                }
            }
        }
    }
}

/// Counts a frame nchan took, its messages, and how long after their
/// acceptance they reached nchan here.
fn record_published(frame: &Frame) {
    metrics::counter!(names::FRAMES_PUBLISHED).increment(1);
    if frame.message_ids.is_empty() {
        return;
    }
    metrics::histogram!(names::FRAME_MESSAGES).record(frame.message_ids.len() as f64);
    let now = chatup_wire::id::unix_millis(std::time::SystemTime::now());
    let delay = metrics::histogram!(names::MESSAGE_PUBLISH_DELAY_SECONDS);
    for made_at in frame
        .message_ids
        .iter()
        .filter_map(|id| chatup_wire::id::made_at_millis(id))
    {
        delay.record(now.saturating_sub(made_at) as f64 / 1000.0);
    }
}

/// The room lifecycle in-process: a real Redis on a run-time port, a fake
/// nchan that records frames (and refuses them when told), no sleeps: each
/// test waits for the frames it expects, with a timeout.
#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use chatup_testkit::process::Redis;
    use tokio::sync::Notify;

    use super::*;
    use crate::worker::inbox::{inbox, Mailbox};
    use std::sync::Arc;

    const WAIT: Duration = Duration::from_secs(10);

    #[derive(Default)]
    struct Fake {
        frames: Mutex<Vec<(Vec<String>, Option<String>)>>,
        /// The user ids of each `active` event.
        active: Mutex<Vec<Vec<String>>>,
        refuse: Mutex<u32>,
        changed: Notify,
    }

    /// The channel of the rooms served in these tests.
    const CHANNEL: &str = "r~00000001.1";

    #[derive(Clone, Default)]
    struct FakeNchan(Arc<Fake>);

    impl Channels for FakeNchan {
        async fn publish(
            &self,
            channel: &str,
            frame: String,
            last_id: Option<&str>,
        ) -> Result<(), NchanError> {
            {
                let mut refuse = self.0.refuse.lock().unwrap();
                if *refuse > 0 {
                    *refuse -= 1;
                    return Err(NchanError::Unreachable("refused by the test".into()));
                }
            }
            assert_eq!(channel, CHANNEL);
            let items: Vec<serde_json::Value> = serde_json::from_str(&frame).unwrap();
            // Recently active lists apart: the tests of delivery follow
            // messages and the events they send.
            let (active, items): (Vec<_>, Vec<_>) =
                items.into_iter().partition(|i| i["ev"] == "active");
            for event in active {
                let users = event["users"].as_array().unwrap();
                let ids = users.iter().map(|u| u["id"].as_str().unwrap().to_owned());
                self.0.active.lock().unwrap().push(ids.collect());
            }
            let ids: Vec<String> = items
                .iter()
                .map(|i| i["id"].as_str().unwrap().to_owned())
                .collect();
            if !ids.is_empty() {
                self.0
                    .frames
                    .lock()
                    .unwrap()
                    .push((ids, last_id.map(str::to_owned)));
            }
            self.0.changed.notify_waiters();
            Ok(())
        }
    }

    impl FakeNchan {
        fn ids(&self) -> Vec<String> {
            let frames = self.0.frames.lock().unwrap();
            frames.iter().flat_map(|(ids, _)| ids.clone()).collect()
        }

        /// Waits until `count` ids were published.
        async fn until(&self, count: usize) -> Vec<String> {
            let deadline = tokio::time::Instant::now() + WAIT;
            loop {
                let changed = self.0.changed.notified();
                let ids = self.ids();
                if ids.len() >= count {
                    return ids;
                }
                assert!(
                    tokio::time::timeout_at(deadline, changed).await.is_ok(),
                    "{count} ids not published within {WAIT:?}: {ids:?}"
                );
            }
        }
    }

    struct Room {
        nchan: FakeNchan,
        store: Store,
        inputs: Mailbox,
        _redis: Redis,
    }

    fn message(n: usize) -> (String, String) {
        let id = chatup_wire::MessageIdGenerator::new().next_id(std::time::SystemTime::now());
        let id = format!("{id}-{n}");
        let text = serde_json::json!({"id": id, "room": "r", "user": {"id": "u"}, "msg": format!("m{n}"), "ts": 1})
            .to_string();
        (id, text)
    }

    /// Stores messages in history (as the ingest does) and returns them.
    async fn store(store: &Store, range: std::ops::Range<usize>) -> Vec<(String, String)> {
        let mut stored = Vec::new();
        for n in range {
            let (id, text) = message(n);
            store.append("r", &text).await.unwrap();
            stored.push((id, text));
        }
        stored
    }

    fn store_at(url: &str) -> Store {
        Store::for_tests(url)
    }

    fn settings() -> RoomSettings {
        RoomSettings::for_tests()
    }

    async fn start(origin: Origin, history: usize) -> (Room, Vec<(String, String)>) {
        let redis = Redis::start().unwrap();
        let store = store_at(&redis.url());
        let stored = self::store(&store, 0..history).await;
        let origin = match origin {
            Origin::Recovered { last_id: Some(n) } => Origin::Recovered {
                last_id: Some(stored[n.parse::<usize>().unwrap()].0.clone()),
            },
            other => other,
        };
        let nchan = FakeNchan::default();
        let (inputs, inbox) = inbox(1024);
        let (subscribed_tx, subscribed) = oneshot::channel();
        let _ = subscribed_tx.send(());
        tokio::spawn(run(RoomStart {
            channel: CHANNEL.into(),
            inbox,
            nchan: nchan.clone(),
            store: store.clone(),
            settings: settings(),
            origin,
            subscribed,
        }));
        assert!(tokio::time::timeout(WAIT, inputs.readiness().wait())
            .await
            .unwrap());
        let room = Room {
            nchan,
            store,
            inputs,
            _redis: redis,
        };
        (room, stored)
    }

    fn ids_of(stored: &[(String, String)]) -> Vec<String> {
        stored.iter().map(|(id, _)| id.clone()).collect()
    }

    /// Thousands of rooms wait idle at once: each task's future must not
    /// carry the state of an HTTP or Redis call (see `run`).
    #[tokio::test]
    async fn an_idle_room_task_is_small() {
        let store = store_at("redis://127.0.0.1:1");
        let (_inputs, inbox) = inbox(1);
        let (_subscribed_tx, subscribed) = oneshot::channel();
        let task = run(RoomStart {
            channel: CHANNEL.into(),
            inbox,
            nchan: Nchan::new("/nonexistent.sock".into()),
            store,
            settings: settings(),
            origin: Origin::Fresh,
            subscribed,
        });
        let size = std::mem::size_of_val(&task);
        // 1,568 bytes as measured: waiting on the inbox keeps its waiter
        // (about 70 bytes) in the future, where the queue it replaced kept
        // 1.3 KB on the heap. An HTTP call's state would add kilobytes.
        assert!(size <= 1600, "a room task's future is {size} bytes");
    }

    /// A message by `user`.
    fn message_by(n: usize, user: &str) -> String {
        let (id, _) = message(n);
        serde_json::json!({"id": id, "room": "r", "user": {"id": user}, "msg": "hi", "ts": 1})
            .to_string()
    }

    #[tokio::test]
    async fn the_recently_active_list_follows_the_posters_at_most_every_interval() {
        let (room, _) = start(Origin::Fresh, 2).await;
        room.nchan.until(2).await;
        // The backfill's poster ("u") is sent with it.
        let first = room.nchan.0.active.lock().unwrap().clone();
        assert_eq!(first, [vec!["u".to_owned()]]);
        for (n, user) in ["ann", "bob", "ann"].into_iter().enumerate() {
            room.inputs
                .push(RoomInput::Item(message_by(10 + n, user)))
                .unwrap();
        }
        // Three messages, one list (the interval holds the rest back),
        // newest poster first.
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let active = room.nchan.0.active.lock().unwrap().clone();
            if active.last().map(Vec::len) == Some(3) {
                assert_eq!(active.last().unwrap(), &["ann", "bob", "u"]);
                assert!(active.len() <= 3, "{active:?}");
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "{active:?}");
            let changed = room.nchan.0.changed.notified();
            let _ = tokio::time::timeout(Duration::from_millis(100), changed).await;
        }
        assert_eq!(room.nchan.until(5).await.len(), 5);
    }

    #[tokio::test]
    async fn a_fresh_room_publishes_the_history_then_live_items_once() {
        let (room, stored) = start(Origin::Fresh, 3).await;
        assert_eq!(room.nchan.until(3).await, ids_of(&stored));
        let live = store(&room.store, 3..4).await;
        for (_, text) in stored.iter().skip(2).chain(&live) {
            room.inputs.push(RoomInput::Item(text.clone())).unwrap();
        }
        let mut all = ids_of(&stored);
        all.extend(ids_of(&live));
        assert_eq!(
            room.nchan.until(4).await,
            all,
            "the repeat of m2 is dropped"
        );
        let frames = room.nchan.0.frames.lock().unwrap();
        assert_eq!(
            frames.last().unwrap().1.as_ref(),
            Some(&live[0].0),
            "last id recorded"
        );
    }

    #[tokio::test]
    async fn a_recovered_room_resumes_after_the_last_message_its_channel_has() {
        let (room, stored) = start(
            Origin::Recovered {
                last_id: Some("2".into()),
            },
            5,
        )
        .await;
        assert_eq!(room.nchan.until(2).await, ids_of(&stored[3..]));
    }

    #[tokio::test]
    async fn a_refused_frame_is_caught_up_from_history_without_a_gap_or_a_reorder() {
        let (room, _) = start(Origin::Fresh, 0).await;
        *room.nchan.0.refuse.lock().unwrap() = PUBLISH_ATTEMPTS;
        let first = store(&room.store, 0..1).await;
        room.inputs
            .push(RoomInput::Item(first[0].1.clone()))
            .unwrap();
        // While the task is behind, a later message must wait for it.
        let later = store(&room.store, 1..3).await;
        for (_, text) in &later {
            room.inputs.push(RoomInput::Item(text.clone())).unwrap();
        }
        let mut all = ids_of(&first);
        all.extend(ids_of(&later));
        assert_eq!(room.nchan.until(3).await, all);
    }

    #[tokio::test]
    async fn an_overflowed_queue_is_caught_up_from_history_in_order() {
        let (room, _) = start(Origin::Fresh, 0).await;
        // Three messages stored; only the last reached the queue (the
        // others were dropped by a full queue).
        let stored = store(&room.store, 0..3).await;
        room.inputs.mark_overflowed();
        room.inputs
            .push(RoomInput::Item(stored[2].1.clone()))
            .unwrap();
        assert_eq!(room.nchan.until(3).await, ids_of(&stored));
    }

    #[tokio::test]
    async fn a_refill_publishes_the_whole_history_again() {
        let (room, stored) = start(Origin::Fresh, 2).await;
        room.nchan.until(2).await;
        room.inputs.push(RoomInput::Refill).unwrap();
        let mut twice = ids_of(&stored);
        twice.extend(ids_of(&stored));
        assert_eq!(room.nchan.until(4).await, twice);
    }
}
