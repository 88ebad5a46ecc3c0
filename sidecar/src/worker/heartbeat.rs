//! The worker's heartbeat: every `heartbeat_interval_ms` it takes the
//! readers of each room on this nginx (as the module counted them),
//! refreshes this worker's presence
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
use tokio::sync::Notify;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::nchan::Nchan;
use crate::presence::Presence;
use crate::registry::{Registry, WorkerRecord};
use crate::telemetry::names;
use crate::worker::drain::Drain;
use crate::worker::membership::Membership;
use crate::worker::rooms::Rooms;

/// Logs a recurring failure once when it starts and once when it ends,
/// instead of at every heartbeat.
#[derive(Default)]
struct Trouble {
    failing: std::sync::atomic::AtomicBool,
}

impl Trouble {
    fn report<E: std::fmt::Display>(&self, what: &str, outcome: Result<(), E>) {
        use std::sync::atomic::Ordering;
        match outcome {
            Err(e) if !self.failing.swap(true, Ordering::Relaxed) => {
                tracing::warn!(error = %e, "heartbeat: {what} is failing (logged again when it recovers)")
            }
            Err(e) => tracing::debug!(error = %e, "heartbeat: {what} still failing"),
            Ok(()) if self.failing.swap(false, Ordering::Relaxed) => {
                tracing::info!("heartbeat: {what} works again")
            }
            Ok(()) => {}
        }
    }
}

pub struct Heartbeat {
    parts: HeartbeatParts,
    presence_trouble: Trouble,
    nginx_trouble: Trouble,
    registry_trouble: Trouble,
}

/// What a heartbeat needs.
pub struct HeartbeatParts {
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
    /// Whether this worker drains (announced in its record).
    pub drain: Arc<Drain>,
    /// Beats at once when notified (a drain started or was cancelled).
    pub beat_now: Arc<Notify>,
}

impl Heartbeat {
    pub fn new(parts: HeartbeatParts) -> Self {
        Self {
            parts,
            presence_trouble: Trouble::default(),
            nginx_trouble: Trouble::default(),
            registry_trouble: Trouble::default(),
        }
    }

    pub async fn run(self, shutdown: CancellationToken) {
        if self.parts.public_url.is_none() {
            tracing::warn!("public_url is not set: this worker is not announced to dispatchers");
        }
        let mut tick = tokio::time::interval(self.parts.interval);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut next_count = Instant::now();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => {}
                _ = self.parts.beat_now.notified() => {}
            }
            let live = self.beat().await;
            if Instant::now() >= next_count {
                next_count = Instant::now() + self.parts.count_interval;
                self.send_counts(&live).await;
            }
        }
        if self.parts.public_url.is_some() {
            match self.parts.registry.remove(&self.parts.worker_id).await {
                Ok(()) => tracing::info!("removed from the registry"),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot remove this worker from the registry; it expires by itself")
                }
            }
        }
    }

    /// One heartbeat; returns the live workers it learnt of.
    async fn beat(&self) -> Vec<String> {
        let readers = self.parts.rooms.census();
        metrics::gauge!(names::ROOMS_SERVED).set(self.parts.rooms.served() as f64);
        // Connections: a reader of additional rooms is in several rooms.
        let connections = self.parts.rooms.connections();
        metrics::gauge!(names::READERS).set(connections as f64);
        let refreshed = self
            .parts
            .presence
            .refresh(&self.parts.worker_id, &readers, self.parts.ttl_ms)
            .await;
        self.presence_trouble
            .report("refreshing presence in redis", refreshed);
        let Some(url) = &self.parts.public_url else {
            return vec![self.parts.worker_id.clone()];
        };
        let probe = self.parts.nchan.probe().await;
        let nginx_down = probe.is_err();
        self.nginx_trouble.report(
            "reaching nginx (this worker is not announced meanwhile)",
            probe,
        );
        if nginx_down {
            return Vec::new();
        }
        self.parts.drain.reconcile().await;
        let record = WorkerRecord {
            id: self.parts.worker_id.clone(),
            url: url.clone(),
            subscribers: connections,
            rooms: readers.len() as u64,
            draining: self.parts.drain.is_draining(),
        };
        let opened = self.parts.rooms.take_opened();
        match self
            .parts
            .registry
            .heartbeat(&record, self.parts.ttl_ms, opened)
            .await
        {
            Ok(live) => {
                metrics::counter!(names::HEARTBEATS, "result" => "ok").increment(1);
                self.registry_trouble
                    .report::<&str>("announcing this worker", Ok(()));
                self.parts.membership.set_live_workers(live.clone());
                live
            }
            Err(e) => {
                metrics::counter!(names::HEARTBEATS, "result" => "failed").increment(1);
                self.registry_trouble
                    .report("announcing this worker", Err(e));
                Vec::new()
            }
        }
    }

    async fn send_counts(&self, live: &[String]) {
        if live.is_empty() {
            return;
        }
        let rooms = self.parts.rooms.names();
        let counts = match self.parts.presence.counts(&rooms, live).await {
            Ok(counts) => counts,
            Err(e) => {
                tracing::warn!(error = %e, "cannot count the rooms' readers");
                return;
            }
        };
        let changed = self
            .parts
            .rooms
            .record_totals(rooms.into_iter().zip(counts).collect());
        for (room, counts) in changed {
            let event = self.parts.membership.event(
                &room,
                EventKind::Count {
                    subscribers: counts.subscribers,
                    members: counts.members,
                },
            );
            self.parts.rooms.deliver(&room, event);
        }
    }
}
