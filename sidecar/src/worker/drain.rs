//! Gradual drain for deploys (`chatup drain`, `POST /v1/drain`): moves this
//! worker's readers to the other workers at a set rate, without a reconnect
//! spike and without a message lost.
//!
//! 1. The module refuses new readers (503: the client tries another
//!    worker), and the next heartbeat, at once, announces the worker as
//!    draining: dispatchers send it nobody unless no other worker is live.
//! 2. Every room served here gets a `migrate` event, to this worker's
//!    readers only: each client leaves at a random moment within
//!    readers / rate seconds, through the dispatcher, at once (no
//!    back-off), and resumes from history there. Random moments spread
//!    evenly: about `rate` readers a second, whatever the rooms' sizes.
//! 3. Readers still here a little after that window (clients that do not
//!    know the event) are disconnected room by room, at most `rate`
//!    readers a second, by deleting their rooms' channels.
//!
//! Draining lasts until the sidecar stops (the deploy restarts it) or
//! `DELETE /v1/drain` cancels it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chatup_wire::EventKind;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::nchan::{Nchan, NchanError};
use crate::worker::membership::Membership;
use crate::worker::rooms::Rooms;

/// How long after the window readers that did not move are disconnected.
const STRAGGLER_GRACE: Duration = Duration::from_secs(5);
/// A `migrate` event is obeyed this long after its window (clients whose
/// clock is behind, or that were busy).
const MIGRATE_SLACK: Duration = Duration::from_secs(60);
/// The shortest window: a handful of readers still leave spread out.
const MIN_WINDOW: Duration = Duration::from_secs(1);

/// What `GET /v1/drain` (and starting one) answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainStatus {
    pub draining: bool,
    /// Readers still connected to this worker's nginx.
    pub readers: u64,
    /// Readers when the drain started.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub readers_at_start: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate: Option<u64>,
    /// The window the readers were told to leave within.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub elapsed_ms: Option<u64>,
}

struct Draining {
    started: Instant,
    rate: u64,
    window: Duration,
    readers_at_start: u64,
    stop: CancellationToken,
}

pub struct Drain {
    nchan: Nchan,
    rooms: Arc<Rooms>,
    membership: Arc<Membership>,
    worker_id: String,
    default_rate: u64,
    state: Mutex<Option<Draining>>,
    /// Starts and cancels one at a time: each tells nginx, then records
    /// the state, and the two must not interleave.
    changing: tokio::sync::Mutex<()>,
    /// Wakes the heartbeat, so that dispatchers learn of a drain at once.
    announce: Arc<Notify>,
}

impl Drain {
    pub fn new(
        nchan: Nchan,
        rooms: Arc<Rooms>,
        membership: Arc<Membership>,
        worker_id: String,
        default_rate: u64,
        announce: Arc<Notify>,
    ) -> Self {
        Self {
            nchan,
            rooms,
            membership,
            worker_id,
            default_rate,
            state: Mutex::new(None),
            changing: tokio::sync::Mutex::new(()),
            announce,
        }
    }

    pub fn is_draining(&self) -> bool {
        self.lock().is_some()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Draining>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Readers on this nginx: the module's count now (the last poll lags
    /// behind readers that just arrived), else the last poll's. Not the
    /// sum over rooms: a reader of additional rooms is in several.
    async fn readers(&self) -> u64 {
        match self.nchan.drain_state().await {
            Ok(state) => state.readers,
            Err(_) => self.rooms.connections(),
        }
    }

    pub async fn status(&self) -> DrainStatus {
        let readers = self.readers().await;
        self.status_with(readers)
    }

    fn status_with(&self, readers: u64) -> DrainStatus {
        match &*self.lock() {
            None => DrainStatus {
                draining: false,
                readers,
                readers_at_start: None,
                rate: None,
                window_ms: None,
                elapsed_ms: None,
            },
            Some(d) => DrainStatus {
                draining: true,
                readers,
                readers_at_start: Some(d.readers_at_start),
                rate: Some(d.rate),
                window_ms: Some(d.window.as_millis() as u64),
                elapsed_ms: Some(d.started.elapsed().as_millis() as u64),
            },
        }
    }

    /// Starts draining at `rate` readers a second (the configured rate if
    /// none); a drain already under way goes on as it was. Runs to its end
    /// even if the caller stops waiting (a task of its own): nginx told to
    /// refuse readers must not be left without the drain recorded.
    pub async fn start(self: &Arc<Self>, rate: Option<u64>) -> Result<DrainStatus, NchanError> {
        let drain = self.clone();
        tokio::spawn(async move { drain.start_now(rate).await })
            .await
            .unwrap_or_else(|e| Err(NchanError::Unreachable(format!("drain task: {e}"))))
    }

    async fn start_now(self: &Arc<Self>, rate: Option<u64>) -> Result<DrainStatus, NchanError> {
        let _changing = self.changing.lock().await;
        if self.is_draining() {
            return Ok(self.status().await);
        }
        let rate = rate.unwrap_or(self.default_rate).max(1);
        // New readers first: anyone let in after the events below would
        // not hear of the drain until the stragglers are disconnected.
        let readers = self.nchan.set_draining(true).await?;
        let window = Duration::from_millis(readers.saturating_mul(1000) / rate).max(MIN_WINDOW);
        let stop = CancellationToken::new();
        *self.lock() = Some(Draining {
            started: Instant::now(),
            rate,
            window,
            readers_at_start: readers,
            stop: stop.clone(),
        });
        self.announce.notify_one();
        tracing::info!(
            readers,
            rate,
            window_ms = window.as_millis() as u64,
            "draining: readers are moving to other workers"
        );
        let until = chatup_wire::id::unix_millis(std::time::SystemTime::now())
            + (window + MIGRATE_SLACK).as_millis() as u64;
        // Every room served, even one the census has no reader in yet.
        for room in &self.rooms.names() {
            let event = self.membership.event(
                room,
                EventKind::Migrate {
                    worker: self.worker_id.clone(),
                    within_ms: window.as_millis() as u64,
                    until,
                    cancel: false,
                },
            );
            self.rooms.deliver(room, event);
        }
        let drain = self.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = tokio::time::sleep(window + STRAGGLER_GRACE) => drain.disconnect_stragglers(rate, &stop).await,
            }
        });
        Ok(self.status_with(readers))
    }

    /// Stops draining: new readers are let in again, and the readers that
    /// have not moved yet stay (a `migrate` event with `cancel`: the one
    /// the channel buffers would make later readers leave otherwise).
    pub async fn cancel(self: &Arc<Self>) -> Result<DrainStatus, NchanError> {
        let drain = self.clone();
        tokio::spawn(async move { drain.cancel_now().await })
            .await
            .unwrap_or_else(|e| Err(NchanError::Unreachable(format!("drain task: {e}"))))
    }

    async fn cancel_now(&self) -> Result<DrainStatus, NchanError> {
        let _changing = self.changing.lock().await;
        let readers = self.nchan.set_draining(false).await?;
        let cancelled = self.lock().take();
        if let Some(d) = cancelled {
            d.stop.cancel();
            for room in &self.rooms.names() {
                let event = self.membership.event(
                    room,
                    EventKind::Migrate {
                        worker: self.worker_id.clone(),
                        within_ms: 0,
                        until: 0,
                        cancel: true,
                    },
                );
                self.rooms.deliver(room, event);
            }
            tracing::info!("drain cancelled: this worker takes readers again");
        }
        self.announce.notify_one();
        Ok(self.status_with(readers))
    }

    /// Makes nginx's flag agree with this drain's state (once a heartbeat):
    /// a reset lost at start, or nginx reloaded by hand, must not leave
    /// nginx refusing every reader while the worker is announced as live.
    pub async fn reconcile(&self) {
        let Ok(_changing) = self.changing.try_lock() else {
            return; // a start or cancel is under way: it sets the flag
        };
        let Ok(state) = self.nchan.drain_state().await else {
            return; // nginx down: the heartbeat reports it
        };
        let wanted = self.is_draining();
        if state.draining != wanted {
            tracing::warn!(
                nginx = state.draining,
                sidecar = wanted,
                "nginx's draining flag disagreed with this worker's: corrected"
            );
            if let Err(e) = self.nchan.set_draining(wanted).await {
                tracing::warn!(error = %e, "cannot correct nginx's draining flag");
            }
        }
    }

    /// Disconnects the readers that did not move, a room at a time,
    /// pausing a second whenever the next room would pass `rate` readers
    /// in that second (a room bigger than the rate goes at once). Readers
    /// of additional rooms count in each of their rooms here, and leave
    /// with the first of them to go.
    async fn disconnect_stragglers(&self, rate: u64, stop: &CancellationToken) {
        let mut rooms: Vec<(String, u64)> = self
            .rooms
            .census()
            .into_iter()
            .filter(|(_, n)| *n > 0)
            .collect();
        if rooms.is_empty() {
            tracing::info!("drained: no reader left");
            return;
        }
        tracing::warn!(
            readers = self.rooms.connections(),
            rooms = rooms.len(),
            "drain: disconnecting the readers that did not move"
        );
        rooms.sort_by(|a, b| a.0.cmp(&b.0));
        let mut budget = rate;
        for (room, readers) in rooms {
            if stop.is_cancelled() {
                return;
            }
            if readers > budget {
                tokio::time::sleep(Duration::from_secs(1)).await;
                budget = rate;
            }
            budget = budget.saturating_sub(readers);
            // Cancelled during the pause: the room stays as it is (the
            // module also serves afresh a room whose channel is deleted
            // outside a drain).
            if stop.is_cancelled() {
                return;
            }
            let Some(channel) = self.rooms.channel(&room) else {
                continue;
            };
            if let Err(e) = self.nchan.delete(&channel).await {
                tracing::warn!(room, error = %e, "drain: cannot disconnect a room's readers");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_says_what_a_drain_does() {
        let status = DrainStatus {
            draining: true,
            readers: 3,
            readers_at_start: Some(10),
            rate: Some(5),
            window_ms: Some(2000),
            elapsed_ms: Some(100),
        };
        assert_eq!(
            serde_json::to_value(&status).unwrap(),
            serde_json::json!({"draining": true, "readers": 3, "readers_at_start": 10,
                "rate": 5, "window_ms": 2000, "elapsed_ms": 100})
        );
    }
}
