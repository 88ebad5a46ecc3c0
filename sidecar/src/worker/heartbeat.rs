//! The worker's heartbeat: every `heartbeat_interval_ms` it counts the
//! readers of each room on this nginx, refreshes this worker's presence
//! keys, and announces itself and its load in the registry. Every
//! `count_interval_ms` it also recomputes each served room's counts over
//! all live workers and sends the rooms whose counts changed a `count`
//! event (to this worker's readers only: every worker does the same for
//! its own).
//!
//! On shutdown it removes the worker from the registry at once, so that no
//! dispatcher sends a client to a worker that is draining; while its nginx
//! does not answer it stops announcing itself, so that it expires.

use std::sync::Arc;
use std::time::Duration;

use chatup_wire::EventKind;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::nchan::Nchan;
use crate::presence::Presence;
use crate::registry::{Registry, WorkerRecord};
use crate::worker::membership::Membership;
use crate::worker::rooms::Rooms;

pub struct Heartbeat {
    pub registry: Registry,
    pub nchan: Nchan,
    pub presence: Presence,
    pub rooms: Arc<Rooms>,
    pub membership: Arc<Membership>,
    pub worker_id: String,
    /// `None`: the worker serves its readers but is not announced.
    pub public_url: Option<String>,
    pub interval: Duration,
    pub ttl_ms: u64,
    pub count_interval: Duration,
}

impl Heartbeat {
    pub async fn run(self, shutdown: CancellationToken) {
        if self.public_url.is_none() {
            tracing::warn!("public_url is not set: this worker is not announced to dispatchers");
        }
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut next_count = Instant::now();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => {}
            }
            let live = self.beat().await;
            if Instant::now() >= next_count {
                next_count = Instant::now() + self.count_interval;
                self.send_counts(&live).await;
            }
        }
        if self.public_url.is_some() {
            match self.registry.remove(&self.worker_id).await {
                Ok(()) => tracing::info!("removed from the registry"),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot remove this worker from the registry; it expires by itself")
                }
            }
        }
    }

    /// One heartbeat; returns the live workers it learnt of.
    async fn beat(&self) -> Vec<String> {
        let readers = self.rooms.census().await;
        self.rooms.save_state_if_changed();
        if let Err(e) = self
            .presence
            .refresh(&self.worker_id, &readers, self.ttl_ms)
            .await
        {
            tracing::warn!(error = %e, "heartbeat: cannot refresh presence");
        }
        let Some(url) = &self.public_url else {
            return vec![self.worker_id.clone()];
        };
        if let Err(e) = self.nchan.probe().await {
            tracing::warn!(error = %e, "nginx does not answer: not announcing this worker");
            return Vec::new();
        }
        let record = WorkerRecord {
            id: self.worker_id.clone(),
            url: url.clone(),
            subscribers: readers.iter().map(|(_, n)| n).sum(),
            rooms: readers.len() as u64,
        };
        let opened = self.rooms.take_opened();
        match self.registry.heartbeat(&record, self.ttl_ms, opened).await {
            Ok(live) => {
                *self
                    .membership
                    .live_workers
                    .write()
                    .unwrap_or_else(|p| p.into_inner()) = live.clone();
                live
            }
            Err(e) => {
                tracing::warn!(error = %e, "heartbeat: cannot announce this worker");
                Vec::new()
            }
        }
    }

    async fn send_counts(&self, live: &[String]) {
        if live.is_empty() {
            return;
        }
        let rooms = self.rooms.names();
        let counts = match self.presence.counts(&rooms, live).await {
            Ok(counts) => counts,
            Err(e) => {
                tracing::warn!(error = %e, "cannot count the rooms' readers");
                return;
            }
        };
        let changed = self
            .rooms
            .record_totals(rooms.into_iter().zip(counts).collect());
        for (room, counts) in changed {
            let event = self.membership.event(
                &room,
                EventKind::Count {
                    subscribers: counts.subscribers,
                    members: counts.members,
                },
            );
            self.rooms.deliver(&room, event);
        }
    }
}
