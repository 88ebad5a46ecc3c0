//! The rooms this worker serves: one task per room with local readers, the
//! Redis subscription that feeds it, how many readers it has here, and the
//! sweep that lets go of rooms nobody reads here any more.
//!
//! Readers are counted from nchan's subscribe/unsubscribe hooks (exact for
//! WebSocket and EventSource readers) and from nchan's channel info (which
//! also sees long-poll readers, but which nchan 1.3.6 gets wrong when
//! readers arrive at once in several nginx worker processes): a room has
//! the larger of the two. A room is dropped when the hooks count no
//! connection and no reader was let in (each long-poll is) for two sweeps;
//! a long-poll reader still waiting then is ended by the channel's
//! deletion and comes back through the authorize step, which serves the
//! room again.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::nchan::Nchan;
use crate::presence::RoomCounts;
use crate::store::Store;
use crate::worker::fanin::FaninCommand;
use crate::worker::room::{self, RoomInput, RoomSettings};

/// Messages queued for one room task before new ones are refused (and
/// logged): nchan is then far behind.
const ROOM_QUEUE: usize = 65_536;
/// Sweeps in a row that must find no reader before a room is dropped;
/// long-poll readers are briefly absent between two polls.
const IDLE_SWEEPS_BEFORE_DROP: u32 = 2;

struct RoomEntry {
    inputs: mpsc::Sender<RoomInput>,
    /// Turns true once the room task has backfilled nchan.
    ready: watch::Receiver<bool>,
    task: JoinHandle<()>,
    idle_sweeps: u32,
    /// Open WebSocket/EventSource connections, from nchan's hooks.
    connections: u64,
    /// Readers on this nginx at the last census.
    readers: u64,
    /// The room's counts over all workers, as last computed.
    totals: Option<RoomCounts>,
}

pub struct Rooms {
    rooms: Mutex<HashMap<String, RoomEntry>>,
    fanin: mpsc::UnboundedSender<FaninCommand>,
    nchan: Nchan,
    store: Store,
    settings: RoomSettings,
    state_file: Option<PathBuf>,
    /// Connections changed since the state file was written.
    unsaved: AtomicBool,
    /// Connections opened since the last heartbeat took the count.
    opened: AtomicU64,
}

impl Rooms {
    pub fn new(
        fanin: mpsc::UnboundedSender<FaninCommand>,
        nchan: Nchan,
        store: Store,
        settings: RoomSettings,
        state_file: Option<PathBuf>,
    ) -> Self {
        Self {
            rooms: Mutex::new(HashMap::new()),
            fanin,
            nchan,
            store,
            settings,
            state_file,
            unsaved: AtomicBool::new(false),
            opened: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, RoomEntry>> {
        self.rooms
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Makes sure `room` is served here. A new room's task first waits for
    /// its Redis subscription and backfills nchan from history; this waits
    /// up to `wait` for that (every caller, not only the one that created
    /// the room), so that a reader let in afterwards misses nothing.
    /// Returns whether the room is known to be ready.
    pub async fn ensure(&self, room: &str, wait: Duration) -> bool {
        let (mut ready, created) = {
            let mut rooms = self.lock();
            if let Some(entry) = rooms.get_mut(room) {
                entry.idle_sweeps = 0;
                (entry.ready.clone(), false)
            } else {
                let (subscribed_tx, subscribed) = oneshot::channel();
                let (ready_tx, ready) = watch::channel(false);
                let (inputs, rx) = mpsc::channel(ROOM_QUEUE);
                let task = tokio::spawn(room::run(room::RoomStart {
                    room: room.to_owned(),
                    inputs: rx,
                    nchan: self.nchan.clone(),
                    store: self.store.clone(),
                    settings: self.settings.clone(),
                    subscribed,
                    ready: ready_tx,
                }));
                rooms.insert(
                    room.to_owned(),
                    RoomEntry {
                        inputs,
                        ready: ready.clone(),
                        task,
                        idle_sweeps: 0,
                        connections: 0,
                        readers: 0,
                        totals: None,
                    },
                );
                let _ = self
                    .fanin
                    .send(FaninCommand::Subscribe(room.to_owned(), subscribed_tx));
                tracing::info!(room, "serving room");
                (ready, true)
            }
        };
        if created {
            self.save_state();
        }
        let outcome = tokio::time::timeout(wait, ready.wait_for(|ready| *ready)).await;
        matches!(outcome, Ok(Ok(_)))
    }

    /// Hands an item (message or event) from Redis to its room's task.
    pub fn deliver(&self, room: &str, item: String) {
        let rooms = self.lock();
        let Some(entry) = rooms.get(room) else { return };
        if let Err(e) = entry.inputs.try_send(RoomInput::Item(item)) {
            tracing::error!(room, error = %e, "room queue full: nchan is not keeping up, item not broadcast here (messages stay in history)");
        }
    }

    /// After a Redis reconnection: every room fetches what it missed.
    pub fn resync_all(&self) {
        for (room, entry) in self.lock().iter() {
            if entry.inputs.try_send(RoomInput::Resync).is_err() {
                tracing::warn!(room, "room queue full, skipping resync");
            }
        }
    }

    pub fn names(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    /// A reader connected to (`true`) or disconnected from `room` here.
    pub fn count_connection(&self, room: &str, connected: bool) {
        let mut rooms = self.lock();
        let Some(entry) = rooms.get_mut(room) else {
            tracing::debug!(room, connected, "reader hook for a room not served here");
            return;
        };
        self.unsaved.store(true, Ordering::Relaxed);
        if connected {
            self.opened.fetch_add(1, Ordering::Relaxed);
        }
        entry.connections = if connected {
            entry.connections + 1
        } else {
            entry.connections.saturating_sub(1)
        };
        tracing::debug!(
            room,
            connected,
            connections = entry.connections,
            "reader hook"
        );
    }

    /// Connections opened since the last call.
    pub fn take_opened(&self) -> u64 {
        self.opened.swap(0, Ordering::Relaxed)
    }

    /// How many readers each room has here (see the module's comment), as
    /// also remembered for the sweep and the busy check.
    pub async fn census(&self) -> Vec<(String, u64)> {
        use futures_util::StreamExt;
        let counted: Vec<(String, u64)> = futures_util::stream::iter(self.names())
            .map(|room| async move {
                let seen_by_nchan = match self.nchan.info(&room).await {
                    Ok(info) => info.subscribers,
                    Err(e) => {
                        tracing::warn!(room, error = %e, "cannot read channel info");
                        0
                    }
                };
                (room, seen_by_nchan)
            })
            .buffer_unordered(16)
            .collect()
            .await;
        let mut rooms = self.lock();
        counted
            .into_iter()
            .filter_map(|(room, seen_by_nchan)| {
                let entry = rooms.get_mut(&room)?;
                entry.readers = entry.connections.max(seen_by_nchan);
                Some((room, entry.readers))
            })
            .collect()
    }

    /// Records the rooms' counts over all workers; returns the rooms whose
    /// counts changed since the last time, for count events.
    pub fn record_totals(&self, totals: Vec<(String, RoomCounts)>) -> Vec<(String, RoomCounts)> {
        let mut rooms = self.lock();
        totals
            .into_iter()
            .filter(|(room, counts)| {
                rooms
                    .get_mut(room)
                    .is_some_and(|entry| entry.totals.replace(*counts) != Some(*counts))
            })
            .collect()
    }

    /// Whether `room` has at least `threshold` readers: over all workers
    /// as last counted, or on this worker alone right now (its connections
    /// count at once, so a sudden crowd turns join events off before the
    /// next count).
    pub fn is_busy(&self, room: &str, threshold: u64) -> bool {
        self.lock().get(room).is_some_and(|entry| {
            let overall = entry.totals.map_or(0, |t| t.subscribers);
            overall.max(entry.readers).max(entry.connections) >= threshold
        })
    }

    /// Drops rooms that had no reader on this nginx for a few sweeps, and
    /// their nchan channels (once their tasks sent what they held), so that
    /// a room served again later starts from a channel that its backfill
    /// fills completely. Returns the rooms dropped.
    pub async fn sweep(&self) -> Vec<String> {
        let dropped: Vec<(String, JoinHandle<()>)> = {
            let mut rooms = self.lock();
            let idle: Vec<String> = rooms
                .iter_mut()
                .filter_map(|(room, entry)| {
                    // nchan's own count is not trusted here (it can stay
                    // wrong either way); long-poll readers, which the
                    // hooks do not see, keep the room through `ensure`
                    // at each poll.
                    if entry.connections > 0 {
                        entry.idle_sweeps = 0;
                        return None;
                    }
                    entry.idle_sweeps += 1;
                    (entry.idle_sweeps >= IDLE_SWEEPS_BEFORE_DROP).then(|| room.clone())
                })
                .collect();
            idle.into_iter()
                .filter_map(|room| {
                    let entry = rooms.remove(&room)?;
                    let _ = self.fanin.send(FaninCommand::Unsubscribe(room.clone()));
                    Some((room, entry.task))
                })
                .collect()
        };
        if dropped.is_empty() {
            return Vec::new();
        }
        let names: Vec<String> = dropped.iter().map(|(room, _)| room.clone()).collect();
        tracing::info!(rooms = ?names, "no readers left here, stopped serving");
        self.save_state();
        for (room, task) in dropped {
            // The task ends once its inputs are gone, after a last flush.
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
            if let Err(e) = self.nchan.delete(&room).await {
                tracing::warn!(room, error = %e, "cannot delete the channel of a dropped room");
            }
        }
        names
    }

    /// Ends every room task after it has sent what it holds.
    pub async fn close_all(&self) {
        let tasks: Vec<JoinHandle<()>> = self.lock().drain().map(|(_, entry)| entry.task).collect();
        for task in tasks {
            let _ = task.await;
        }
    }

    /// Serves again the rooms served before a restart, from the state
    /// file, with the connections nginx still holds in them.
    pub async fn restore_state(&self) {
        let Some(path) = &self.state_file else { return };
        let saved: BTreeMap<String, u64> = match std::fs::read_to_string(path) {
            Ok(text) => serde_json::from_str(&text).unwrap_or_else(|e| {
                tracing::warn!(path = %path.display(), error = %e, "ignoring unreadable state file");
                BTreeMap::new()
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot read state file");
                BTreeMap::new()
            }
        };
        for (room, connections) in saved {
            self.ensure(&room, Duration::ZERO).await;
            if let Some(entry) = self.lock().get_mut(&room) {
                entry.connections = connections;
            }
        }
    }

    /// Writes the state file if connections changed since it was written.
    pub fn save_state_if_changed(&self) {
        if self.unsaved.swap(false, Ordering::Relaxed) {
            self.save_state();
        }
    }

    /// Writes the rooms served and their connections to the state file.
    fn save_state(&self) {
        let Some(path) = &self.state_file else { return };
        let rooms: BTreeMap<String, u64> = self
            .lock()
            .iter()
            .map(|(room, entry)| (room.clone(), entry.connections))
            .collect();
        let tmp = path.with_extension("tmp");
        let result = serde_json::to_vec(&rooms)
            .map_err(std::io::Error::other)
            .and_then(|bytes| std::fs::write(&tmp, bytes))
            .and_then(|()| std::fs::rename(&tmp, path));
        if let Err(e) = result {
            tracing::warn!(path = %path.display(), error = %e, "cannot save state file");
        }
    }
}
