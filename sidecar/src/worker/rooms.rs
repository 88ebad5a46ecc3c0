//! The rooms this worker serves: one task per room, how many readers each
//! has on this nginx (as the module counts them, see `readers`), and
//! letting go of the rooms nobody reads here any more.
//!
//! Letting go is agreed with the module, so that it cannot race a reader
//! arriving: the room is first marked `releasing` here (a serve request
//! for it waits), then the module releases it only if it still has no
//! reader (atomically with its admissions). Released: the task sends what
//! it holds, the channel is deleted, and a reader coming later gets the
//! room served afresh. Not released (a reader came): it stays as it was.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::nchan::Nchan;
use crate::presence::RoomCounts;
use crate::store::Store;
use crate::telemetry::names;
use crate::worker::fanin::FaninCommand;
use crate::worker::inbox::{self, Dropped, Mailbox, Readiness};
use crate::worker::room::{self, Origin, RoomInput, RoomSettings};

/// Items queued for one room task; past it the room catches up from
/// history instead (see `room`).
const ROOM_QUEUE: usize = 65_536;
/// Sweeps in a row that must find no reader before a room is let go
/// (a long-poll reader is briefly absent between two polls).
const IDLE_SWEEPS_BEFORE_DROP: u32 = 2;

struct RoomEntry {
    /// The nchan channel of this serving (see `chatup_wire::readers::channel`).
    channel: String,
    /// The room task's inputs, and whether it has backfilled nchan.
    inputs: Mailbox,
    task: JoinHandle<()>,
    idle_sweeps: u32,
    /// Readers on this nginx, as the module last counted them.
    readers: u64,
    /// The room's counts over all workers, as last computed.
    totals: Option<RoomCounts>,
    /// Set while the module is asked to release the room: serve requests
    /// wait for the answer.
    releasing: Option<watch::Receiver<bool>>,
}

pub struct Rooms {
    rooms: Mutex<HashMap<String, RoomEntry>>,
    fanin: mpsc::UnboundedSender<FaninCommand>,
    nchan: Nchan,
    store: Store,
    settings: RoomSettings,
    /// Readers arrived since the last heartbeat took the count.
    opened: AtomicU64,
    /// Readers of this nginx (connections: one that reads additional rooms
    /// is counted in each room, and once here).
    connections: AtomicU64,
}

impl Rooms {
    pub fn new(
        fanin: mpsc::UnboundedSender<FaninCommand>,
        nchan: Nchan,
        store: Store,
        settings: RoomSettings,
    ) -> Self {
        Self {
            rooms: Mutex::new(HashMap::new()),
            fanin,
            nchan,
            store,
            settings,
            opened: AtomicU64::new(0),
            connections: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, RoomEntry>> {
        self.rooms
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Makes sure `room` is served here in `channel` and waits up to
    /// `wait` for its task to have backfilled nchan (every caller, not
    /// only the one that created it), so that a reader let in afterwards
    /// misses nothing. Returns whether the room is ready.
    ///
    /// The module names the channel readers read: a task publishing in
    /// another one (the module forgot a serving this sidecar still has, as
    /// when a serve request timed out and its readers left) is replaced.
    pub async fn ensure(&self, room: &str, channel: &str, wait: Duration, origin: Origin) -> bool {
        let deadline = tokio::time::Instant::now() + wait;
        let ready = loop {
            let releasing = {
                let mut rooms = self.lock();
                match rooms.get_mut(room) {
                    Some(entry) if entry.channel != channel && entry.releasing.is_none() => {
                        tracing::warn!(room, old = %entry.channel, new = channel, "the module serves the room in a new channel: starting over in it");
                        if let Some(old) = rooms.remove(room) {
                            old.task.abort();
                            let _ = self.fanin.send(FaninCommand::Unsubscribe(room.to_owned()));
                            // Whoever still reads the old channel is closed,
                            // and comes back to the new one.
                            let nchan = self.nchan.clone();
                            tokio::spawn(async move {
                                if let Err(e) = nchan.delete(&old.channel).await {
                                    tracing::warn!(channel = %old.channel, error = %e, "cannot delete a replaced channel");
                                }
                            });
                        }
                        break self.start_room(&mut rooms, room, channel, origin.clone());
                    }
                    Some(entry) => match &entry.releasing {
                        Some(releasing) => releasing.clone(),
                        None => {
                            entry.idle_sweeps = 0;
                            break entry.inputs.readiness();
                        }
                    },
                    None => break self.start_room(&mut rooms, room, channel, origin.clone()),
                }
            };
            // Being let go: wait for the module's answer, then look again.
            let mut releasing = releasing;
            let settled = tokio::time::timeout_at(deadline, releasing.wait_for(|done| *done)).await;
            if !matches!(settled, Ok(Ok(_))) {
                return false;
            }
        };
        let outcome = tokio::time::timeout_at(deadline, ready.wait()).await;
        matches!(outcome, Ok(true))
    }

    fn start_room(
        &self,
        rooms: &mut HashMap<String, RoomEntry>,
        room: &str,
        channel: &str,
        origin: Origin,
    ) -> Readiness {
        let (subscribed_tx, subscribed) = oneshot::channel();
        let (inputs, inbox) = inbox::inbox(ROOM_QUEUE);
        let ready = inputs.readiness();
        let task = tokio::spawn(room::run(room::RoomStart {
            channel: channel.to_owned(),
            inbox,
            nchan: self.nchan.clone(),
            store: self.store.clone(),
            settings: self.settings.clone(),
            origin,
            subscribed,
        }));
        rooms.insert(
            room.to_owned(),
            RoomEntry {
                channel: channel.to_owned(),
                inputs,
                task,
                idle_sweeps: 0,
                readers: 0,
                totals: None,
                releasing: None,
            },
        );
        let _ = self
            .fanin
            .send(FaninCommand::Subscribe(room.to_owned(), subscribed_tx));
        tracing::info!(room, channel, "serving room");
        ready
    }

    /// Hands an item (message or event) from Redis to its room's task; if
    /// the task is that far behind, it catches up from history instead.
    pub fn deliver(&self, room: &str, item: String) {
        let rooms = self.lock();
        let Some(entry) = rooms.get(room) else { return };
        if let Err(Dropped::Full { first: true }) = entry.inputs.push(RoomInput::Item(item)) {
            tracing::warn!(
                room,
                "room queue full (nchan is not keeping up): the room catches up from history"
            );
        }
    }

    /// After a Redis reconnection: every room fetches what it missed.
    pub fn resync_all(&self) {
        metrics::counter!(names::ROOM_RESYNCS).increment(1);
        for entry in self.lock().values() {
            // A full queue catches up anyway.
            let _ = entry.inputs.push(RoomInput::Resync);
        }
    }

    /// Each time the Redis connection moves to a new master (a Sentinel
    /// group's failover), every room catches up from history again: what
    /// it read before may have come from a server that was no longer the
    /// master (the old one, back with stale data until the sentinels
    /// demote it). Ends at `stop`.
    pub async fn resync_after_master_moves(
        &self,
        mut moves: tokio::sync::watch::Receiver<u64>,
        stop: tokio_util::sync::CancellationToken,
    ) {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                changed = moves.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    if !self.lock().is_empty() {
                        tracing::info!("the redis master moved: rooms catch up from its history");
                        self.resync_all();
                    }
                }
            }
        }
    }

    /// An nginx worker process died: nchan lost the frames of the channels
    /// it owned; every room publishes its history again.
    pub fn refill_all(&self) {
        for entry in self.lock().values() {
            // A full queue has the task refill once it looked at it.
            let _ = entry.inputs.push(RoomInput::Refill);
        }
    }

    pub fn names(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    /// Records the module's counts of readers here (`readers`: the rooms
    /// with at least one; every other room served has none).
    pub fn sync_readers(&self, readers: &HashMap<String, u64>) {
        for (room, entry) in self.lock().iter_mut() {
            entry.readers = readers.get(room).copied().unwrap_or(0);
        }
    }

    /// Records the module's count of readers of this nginx, all rooms
    /// together (each connection once).
    pub fn set_connections(&self, now: u64) {
        let before = self.connections.swap(now, Ordering::Relaxed);
        if now > before {
            self.opened.fetch_add(now - before, Ordering::Relaxed);
        }
    }

    /// Readers of this nginx (connections), as last recorded.
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }

    /// Readers arrived since the last call.
    pub fn take_opened(&self) -> u64 {
        self.opened.swap(0, Ordering::Relaxed)
    }

    /// How many rooms this worker serves.
    pub fn served(&self) -> usize {
        self.lock().len()
    }

    /// How many readers each room has here.
    pub fn census(&self) -> Vec<(String, u64)> {
        self.lock()
            .iter()
            .map(|(room, entry)| (room.clone(), entry.readers))
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
    /// as last counted, or on this worker alone right now (a sudden crowd
    /// turns join events off before the next count).
    pub fn is_busy(&self, room: &str, threshold: u64) -> bool {
        self.lock().get(room).is_some_and(|entry| {
            let overall = entry.totals.map_or(0, |t| t.subscribers);
            overall.max(entry.readers) >= threshold
        })
    }

    /// Starts again, in the same channel, the room tasks that ended while
    /// their room is still served here; returns those rooms. A task ends
    /// on its own only by panicking (otherwise it ends once its entry is
    /// gone), and its room's readers would read a silent chat until they
    /// left. The new task publishes the whole history: readers drop the
    /// messages they have (by id) and get the ones they missed.
    pub fn restart_dead_tasks(&self) -> Vec<String> {
        let mut rooms = self.lock();
        let dead: Vec<String> = rooms
            .iter()
            .filter(|(_, entry)| entry.task.is_finished() && entry.releasing.is_none())
            .map(|(room, _)| room.clone())
            .collect();
        for room in &dead {
            let Some(old) = rooms.remove(room) else {
                continue;
            };
            tracing::error!(room, channel = %old.channel, "a room task ended on its own (a bug): serving the room again in its channel, from the whole history");
            metrics::counter!(names::ROOM_TASK_RESTARTS).increment(1);
            self.start_room(
                &mut rooms,
                room,
                &old.channel,
                Origin::Recovered { last_id: None },
            );
            if let Some(entry) = rooms.get_mut(room) {
                entry.readers = old.readers;
                entry.totals = old.totals;
            }
        }
        dead
    }

    /// Lets go of the rooms that had no reader here for a few sweeps and
    /// that the module agrees to release; returns them.
    pub async fn sweep(&self) -> Vec<String> {
        // Each candidate has its own signal: a serve request waiting for a
        // room the module keeps goes on at once, one for a room let go
        // once its channel is deleted.
        let mut settled: HashMap<String, watch::Sender<bool>> = HashMap::new();
        // Each candidate's channel: the entry let go must still be that
        // serving (nginx restarting meanwhile starts rooms over).
        let mut channels: HashMap<String, String> = HashMap::new();
        {
            let mut rooms = self.lock();
            for (room, entry) in rooms.iter_mut() {
                if entry.readers > 0 || entry.releasing.is_some() {
                    entry.idle_sweeps = 0;
                    continue;
                }
                entry.idle_sweeps += 1;
                if entry.idle_sweeps >= IDLE_SWEEPS_BEFORE_DROP {
                    let (done, waiting) = watch::channel(false);
                    entry.releasing = Some(waiting);
                    settled.insert(room.clone(), done);
                    channels.insert(room.clone(), entry.channel.clone());
                }
            }
        }
        if settled.is_empty() {
            return Vec::new();
        }
        let candidates: Vec<String> = settled.keys().cloned().collect();
        let released = match self.nchan.release(&candidates).await {
            Ok(released) => released,
            Err(e) => {
                tracing::warn!(error = %e, "cannot release idle rooms; trying again at the next sweep");
                Vec::new()
            }
        };
        let dropped: Vec<(String, String, JoinHandle<()>)> = {
            let mut rooms = self.lock();
            candidates
                .iter()
                .filter_map(|room| {
                    let same_serving = rooms
                        .get(room)
                        .is_some_and(|entry| channels.get(room) == Some(&entry.channel));
                    if released.contains(room) && same_serving {
                        let entry = rooms.remove(room)?;
                        let _ = self.fanin.send(FaninCommand::Unsubscribe(room.clone()));
                        Some((room.clone(), entry.channel, entry.task))
                    } else {
                        if let Some(entry) = rooms.get_mut(room) {
                            entry.releasing = None;
                            entry.idle_sweeps = 0;
                        }
                        if let Some(done) = settled.remove(room) {
                            let _ = done.send(true);
                        }
                        None
                    }
                })
                .collect()
        };
        if !dropped.is_empty() {
            let names: Vec<&String> = dropped.iter().map(|(room, _, _)| room).collect();
            tracing::info!(rooms = ?names, "no readers left here, stopped serving");
        }
        let mut names = Vec::new();
        for (room, channel, task) in dropped {
            // The task ends once its inputs are gone, after a last flush.
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
            // Frees its frames now; nobody reads this channel again.
            if let Err(e) = self.nchan.delete(&channel).await {
                tracing::warn!(room, error = %e, "cannot delete the channel of a dropped room");
            }
            // A serve request waiting on this room looks again: it finds
            // none, and serves it afresh.
            if let Some(done) = settled.remove(&room) {
                let _ = done.send(true);
            }
            names.push(room);
        }
        names
    }

    /// The channel `room` is served in here, if it is.
    pub fn channel(&self, room: &str) -> Option<String> {
        self.lock().get(room).map(|entry| entry.channel.clone())
    }

    /// nginx restarted: its channels are gone with every reader. Room
    /// tasks stop at once (what they hold would only half-fill new
    /// channels); readers coming back get their rooms served afresh.
    pub fn forget_all(&self) -> Vec<String> {
        let mut rooms = self.lock();
        let names: Vec<String> = rooms.keys().cloned().collect();
        for (room, entry) in rooms.drain() {
            entry.task.abort();
            let _ = self.fanin.send(FaninCommand::Unsubscribe(room));
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
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use std::sync::Arc;

    use chatup_testkit::process::Redis;

    use super::*;

    const WAIT: Duration = Duration::from_secs(10);

    /// Subscriptions asked of the fan-in, each confirmed at once.
    async fn next_subscription(commands: &mut mpsc::UnboundedReceiver<FaninCommand>) -> String {
        loop {
            let command = tokio::time::timeout(WAIT, commands.recv())
                .await
                .expect("a subscription within the wait")
                .expect("the fan-in channel open");
            if let FaninCommand::Subscribe(room, ack) = command {
                let _ = ack.send(());
                return room;
            }
        }
    }

    #[tokio::test]
    async fn a_room_task_that_died_is_started_again_in_its_channel() {
        let redis = Redis::start().unwrap();
        let (fanin, mut commands) = mpsc::unbounded_channel();
        let rooms = Arc::new(Rooms::new(
            fanin,
            Nchan::new("/nonexistent/nginx.sock".into()),
            Store::for_tests(&redis.url()),
            RoomSettings::for_tests(),
        ));
        let channel = "lobby~0000abcd.1";
        let serving = {
            let rooms = rooms.clone();
            tokio::spawn(async move { rooms.ensure("lobby", channel, WAIT, Origin::Fresh).await })
        };
        assert_eq!(next_subscription(&mut commands).await, "lobby");
        assert!(serving.await.unwrap(), "the room is served (empty history)");
        assert!(
            rooms.restart_dead_tasks().is_empty(),
            "a live task is left alone"
        );

        // A panic ends a task as an abort does.
        rooms.lock().get("lobby").unwrap().task.abort();
        let deadline = tokio::time::Instant::now() + WAIT;
        while !rooms.lock().get("lobby").unwrap().task.is_finished() {
            assert!(tokio::time::Instant::now() < deadline, "the task ends");
            tokio::task::yield_now().await;
        }

        assert_eq!(rooms.restart_dead_tasks(), ["lobby"]);
        assert_eq!(next_subscription(&mut commands).await, "lobby");
        assert_eq!(rooms.channel("lobby").as_deref(), Some(channel));
        assert!(!rooms.lock().get("lobby").unwrap().task.is_finished());
        assert!(rooms.restart_dead_tasks().is_empty());
    }
}
