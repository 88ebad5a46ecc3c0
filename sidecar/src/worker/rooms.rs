//! The rooms this worker serves: one task per room with local
//! subscribers, the Redis subscription that feeds it, and the sweep that
//! lets go of rooms nobody reads here any more.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::nchan::Nchan;
use crate::store::Store;
use crate::worker::fanin::FaninCommand;
use crate::worker::room::{self, RoomInput, RoomSettings};

/// Messages queued for one room task before new ones are refused (and
/// logged): nchan is then far behind.
const ROOM_QUEUE: usize = 65_536;
/// Sweeps in a row that must find no subscriber before a room is dropped;
/// long-poll subscribers are briefly absent between two polls.
const IDLE_SWEEPS_BEFORE_DROP: u32 = 2;

struct RoomEntry {
    inputs: mpsc::Sender<RoomInput>,
    task: JoinHandle<()>,
    idle_sweeps: u32,
}

pub struct Rooms {
    rooms: Mutex<HashMap<String, RoomEntry>>,
    fanin: mpsc::UnboundedSender<FaninCommand>,
    nchan: Nchan,
    store: Store,
    settings: RoomSettings,
    state_file: Option<PathBuf>,
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
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, RoomEntry>> {
        self.rooms
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Makes sure `room` is served here; waits up to `wait` for its Redis
    /// subscription, so a subscriber let in after this misses nothing that
    /// is published afterwards. Returns whether the subscription is known
    /// to be in place.
    pub async fn ensure(&self, room: &str, wait: Duration) -> bool {
        let confirmation = {
            let mut rooms = self.lock();
            if let Some(entry) = rooms.get_mut(room) {
                entry.idle_sweeps = 0;
                None
            } else {
                let (inputs, rx) = mpsc::channel(ROOM_QUEUE);
                let task = tokio::spawn(room::run(
                    room.to_owned(),
                    rx,
                    self.nchan.clone(),
                    self.store.clone(),
                    self.settings.clone(),
                ));
                rooms.insert(
                    room.to_owned(),
                    RoomEntry {
                        inputs,
                        task,
                        idle_sweeps: 0,
                    },
                );
                let (ack, confirmed) = oneshot::channel();
                let _ = self
                    .fanin
                    .send(FaninCommand::Subscribe(room.to_owned(), ack));
                tracing::info!(room, "serving room");
                Some(confirmed)
            }
        };
        let Some(confirmed) = confirmation else {
            return true;
        };
        self.save_state();
        matches!(tokio::time::timeout(wait, confirmed).await, Ok(Ok(())))
    }

    /// Hands a message from Redis to its room's task.
    pub fn deliver(&self, room: &str, message: String) {
        let rooms = self.lock();
        let Some(entry) = rooms.get(room) else { return };
        if let Err(e) = entry.inputs.try_send(RoomInput::Message(message)) {
            tracing::error!(room, error = %e, "room queue full: nchan is not keeping up, message not broadcast here (it stays in history)");
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

    /// Drops rooms that had no subscriber on this nginx for a few sweeps.
    pub async fn sweep(&self) {
        let mut dropped = Vec::new();
        for room in self.names() {
            let subscribers = match self.nchan.subscribers(&room).await {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(room, error = %e, "sweep: cannot read channel info");
                    continue;
                }
            };
            let mut rooms = self.lock();
            let Some(entry) = rooms.get_mut(&room) else {
                continue;
            };
            if subscribers > 0 {
                entry.idle_sweeps = 0;
                continue;
            }
            entry.idle_sweeps += 1;
            if entry.idle_sweeps >= IDLE_SWEEPS_BEFORE_DROP {
                rooms.remove(&room);
                let _ = self.fanin.send(FaninCommand::Unsubscribe(room.clone()));
                dropped.push(room);
            }
        }
        if !dropped.is_empty() {
            tracing::info!(rooms = ?dropped, "no subscribers left here, stopped serving");
            self.save_state();
        }
    }

    /// Ends every room task after it has sent what it holds.
    pub async fn close_all(&self) {
        let tasks: Vec<JoinHandle<()>> = self.lock().drain().map(|(_, entry)| entry.task).collect();
        for task in tasks {
            let _ = task.await;
        }
    }

    /// Rooms served before a restart, from the state file.
    pub fn load_state(&self) -> Vec<String> {
        let Some(path) = &self.state_file else {
            return Vec::new();
        };
        match std::fs::read_to_string(path) {
            Ok(text) => serde_json::from_str(&text).unwrap_or_else(|e| {
                tracing::warn!(path = %path.display(), error = %e, "ignoring unreadable state file");
                Vec::new()
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot read state file");
                Vec::new()
            }
        }
    }

    fn save_state(&self) {
        let Some(path) = &self.state_file else { return };
        let mut names = self.names();
        names.sort();
        let tmp = path.with_extension("tmp");
        let result = serde_json::to_vec(&names)
            .map_err(std::io::Error::other)
            .and_then(|bytes| std::fs::write(&tmp, bytes))
            .and_then(|()| std::fs::rename(&tmp, path));
        if let Err(e) = result {
            tracing::warn!(path = %path.display(), error = %e, "cannot save state file");
        }
    }
}
