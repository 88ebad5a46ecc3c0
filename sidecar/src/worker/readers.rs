//! The readers of this worker's nginx, as its ChatUp module counts them:
//! polled from the module's `/readers` location on nginx's internal
//! socket, then turned into room reader counts (load, sweeps, busy rooms)
//! and member joins and leaves.
//!
//! - At start the first poll returns everything: rooms that nginx still
//!   serves (readers connected through the previous sidecar) are served
//!   again at once, resuming after the last message nchan has, and this
//!   worker's member lists in Redis are replaced with the module's.
//! - A new `boot` means nginx restarted: every reader and channel is gone,
//!   so every room is let go (readers come back and get it afresh) and
//!   every member leaves.
//! - A new `respawns` count means an nginx worker process died and was
//!   respawned: nchan lost the frames of the channels it owned, so every
//!   room publishes its history again (readers drop what they have).
//! - A member whose connections drop to zero leaves only after
//!   [`LEAVE_GRACE`]: a long-poll reader between two polls, or a page
//!   reload, is not a leave and a join.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chatup_wire::readers::{MemberConnections, ReaderChanges};
use serde_json::{Map, Value};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::nchan::Nchan;
use crate::presence::{Member, Presence};
use crate::worker::membership::Membership;
use crate::worker::room::Origin;
use crate::worker::rooms::Rooms;

/// How often the module is polled.
pub const POLL_INTERVAL: Duration = Duration::from_millis(250);
/// How long a member may be without a connection before it has left.
pub const LEAVE_GRACE: Duration = Duration::from_secs(3);
/// How long a recovered room may take to be served again.
const RECOVER_WAIT: Duration = Duration::from_secs(10);

/// A member of a room: (room, user id).
type MemberKey = (String, String);

struct MemberState {
    connections: u64,
    /// When its connections dropped to zero (a pending leave).
    gone_since: Option<Instant>,
    /// Its public data, for its leave event (the module's entry may be
    /// gone by then).
    public: Option<Map<String, Value>>,
}

pub struct ReaderFeed {
    nchan: Nchan,
    rooms: Arc<Rooms>,
    membership: Arc<Membership>,
    presence: Presence,
    worker_id: String,
    ttl_ms: u64,
    boot: Option<String>,
    since: u64,
    respawns: u64,
    /// Readers per room on this nginx (rooms with at least one).
    readers: HashMap<String, u64>,
    members: HashMap<(String, String), MemberState>,
    failing: bool,
}

impl ReaderFeed {
    pub fn new(
        nchan: Nchan,
        rooms: Arc<Rooms>,
        membership: Arc<Membership>,
        presence: Presence,
        worker_id: String,
        ttl_ms: u64,
    ) -> Self {
        Self {
            nchan,
            rooms,
            membership,
            presence,
            worker_id,
            ttl_ms,
            boot: None,
            since: 0,
            respawns: 0,
            readers: HashMap::new(),
            members: HashMap::new(),
            failing: false,
        }
    }

    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(POLL_INTERVAL);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            self.poll().await;
            self.apply_leaves(Instant::now()).await;
        }
    }

    async fn poll(&mut self) {
        let boot = self.boot.clone().unwrap_or_default();
        let changes = match self.nchan.reader_changes(&boot, self.since).await {
            Ok(changes) => changes,
            Err(e) => {
                if !std::mem::replace(&mut self.failing, true) {
                    tracing::warn!(error = %e, "cannot read reader counts from nginx (logged again when it works)");
                }
                return;
            }
        };
        if std::mem::replace(&mut self.failing, false) {
            tracing::info!("reading reader counts from nginx works again");
        }
        let respawned =
            self.boot.as_ref() == Some(&changes.boot) && changes.respawns != self.respawns;
        self.respawns = changes.respawns;
        self.rooms.set_connections(changes.readers);
        match &self.boot {
            None => self.start_from(changes).await,
            Some(known) if *known != changes.boot => self.nginx_restarted(changes).await,
            Some(_) => self.apply(changes).await,
        }
        if respawned {
            tracing::warn!("an nginx worker process was respawned: refilling every room's channel");
            self.rooms.refill_all();
        }
    }

    /// The first poll: take over what nginx serves.
    async fn start_from(&mut self, changes: ReaderChanges) {
        tracing::info!(
            rooms = changes.rooms.len(),
            readers = changes.readers,
            members = changes.members.len(),
            "took over nginx's readers"
        );
        self.serve_served_rooms(&changes);
        let mut by_room: HashMap<String, Vec<(Member, u64)>> = HashMap::new();
        for m in changes.members.iter().filter(|m| m.connections > 0) {
            by_room
                .entry(m.room.clone())
                .or_default()
                .push((member_of(m), m.connections));
            self.members.insert(
                (m.room.clone(), m.id.clone()),
                MemberState {
                    connections: m.connections,
                    gone_since: None,
                    public: member_of(m).public,
                },
            );
        }
        for (room, members) in &by_room {
            if let Err(e) = self
                .presence
                .replace_members(room, &self.worker_id, members, self.ttl_ms)
                .await
            {
                tracing::warn!(room, error = %e, "cannot record the members of a room taken over");
            }
        }
        self.record_rooms(&changes);
        self.boot = Some(changes.boot);
        self.since = changes.seq;
    }

    /// Serves the rooms nginx lets readers into without asking (readers
    /// may be in their channels already), resuming after the last message
    /// each channel has.
    fn serve_served_rooms(&self, changes: &ReaderChanges) {
        for room in changes.rooms.iter().filter(|r| r.served) {
            let (rooms, name) = (self.rooms.clone(), room.room.clone());
            // A module from before channels were named per serving (nginx
            // not restarted yet after an upgrade) reads the room's name.
            let channel = room.channel.clone().unwrap_or_else(|| name.clone());
            let origin = Origin::Recovered {
                last_id: room.last_id.clone(),
            };
            tokio::spawn(async move {
                if !rooms.ensure(&name, &channel, RECOVER_WAIT, origin).await {
                    tracing::warn!(room = name, "a room nginx serves is not ready yet");
                }
            });
        }
    }

    /// nginx restarted: its channels and readers are new. Readers may have
    /// come back already, and the module may have marked their rooms
    /// served (asking this sidecar before it saw the restart): those rooms
    /// are taken over like at start, the others are let go.
    async fn nginx_restarted(&mut self, changes: ReaderChanges) {
        tracing::warn!(
            "nginx restarted: its readers and channels are new; serving its rooms afresh"
        );
        let dropped = self.rooms.forget_all();
        for room in dropped {
            if let Err(e) = self.presence.forget(&room, &self.worker_id).await {
                tracing::warn!(room, error = %e, "cannot forget a room's members; they expire");
            }
        }
        self.readers.clear();
        self.serve_served_rooms(&changes);
        // Members: those back already stay (no leave, no join); the others
        // left; new ones joined.
        let before: Vec<(MemberKey, Option<Map<String, Value>>)> = self
            .members
            .drain()
            .map(|(key, state)| (key, state.public))
            .collect();
        self.boot = Some(changes.boot.clone());
        self.since = 0;
        for m in changes.members.iter().filter(|m| m.connections > 0) {
            let key = (m.room.clone(), m.id.clone());
            let back = before.iter().any(|(k, _)| *k == key);
            self.members.insert(
                key,
                MemberState {
                    connections: m.connections,
                    gone_since: None,
                    public: member_of(m).public,
                },
            );
            self.connected(m, !back).await;
        }
        for ((room, id), public) in before {
            if !self.members.contains_key(&(room.clone(), id.clone())) {
                if let Err(e) = self.membership.member_left(&room, &id, public).await {
                    tracing::warn!(room, error = %e, "cannot record a member's leave");
                }
            }
        }
        self.record_rooms(&changes);
        self.since = changes.seq;
    }

    async fn apply(&mut self, changes: ReaderChanges) {
        self.record_rooms(&changes);
        for m in &changes.members {
            let key = (m.room.clone(), m.id.clone());
            let known = self
                .members
                .get(&key)
                .map(|s| (s.connections, s.gone_since));
            match (known, m.connections) {
                (None, 0) => {}
                (None, n) => {
                    self.members.insert(
                        key,
                        MemberState {
                            connections: n,
                            gone_since: None,
                            public: member_of(m).public,
                        },
                    );
                    self.connected(m, true).await;
                }
                (Some((_, _)), 0) => {
                    if let Some(state) = self.members.get_mut(&key) {
                        state.connections = 0;
                        state.gone_since.get_or_insert_with(Instant::now);
                    }
                }
                (Some((before, _)), n) => {
                    if let Some(state) = self.members.get_mut(&key) {
                        state.connections = n;
                        state.gone_since = None;
                        // A renamed user reconnected: its newest data.
                        if let Some(public) = member_of(m).public {
                            state.public = Some(public);
                        }
                    }
                    if before != n {
                        self.connected(m, false).await;
                    }
                }
            }
        }
        self.since = changes.seq;
    }

    async fn connected(&self, m: &MemberConnections, arrived: bool) {
        if let Err(e) = self
            .membership
            .member_connected(&m.room, member_of(m), m.connections, arrived)
            .await
        {
            tracing::warn!(room = m.room, error = %e, "cannot record a member");
        }
    }

    /// Members without a connection for longer than the grace left.
    async fn apply_leaves(&mut self, now: Instant) {
        let gone: Vec<(String, String)> = self
            .members
            .iter()
            .filter(|(_, s)| s.gone_since.is_some_and(|t| now >= t + LEAVE_GRACE))
            .map(|(key, _)| key.clone())
            .collect();
        for key in gone {
            let public = self.members.remove(&key).and_then(|state| state.public);
            if let Err(e) = self.membership.member_left(&key.0, &key.1, public).await {
                tracing::warn!(room = key.0, error = %e, "cannot record a member's leave");
            }
        }
    }

    fn record_rooms(&mut self, changes: &ReaderChanges) {
        for room in &changes.rooms {
            if room.readers == 0 {
                self.readers.remove(&room.room);
            } else {
                self.readers.insert(room.room.clone(), room.readers);
            }
        }
        self.rooms.sync_readers(&self.readers);
    }
}

fn member_of(m: &MemberConnections) -> Member {
    Member {
        id: m.id.clone(),
        public: m
            .public
            .as_ref()
            .and_then(|p| serde_json::from_str::<Map<String, Value>>(p.get()).ok()),
    }
}
