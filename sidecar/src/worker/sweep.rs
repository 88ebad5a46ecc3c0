//! The periodic sweep: lets go of rooms nobody reads here any more (and
//! of their members in Redis), and forgets idle rate-limit buckets.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::presence::Presence;
use crate::worker::ingest::Checks;
use crate::worker::rooms::Rooms;

pub struct Sweeper {
    pub rooms: Arc<Rooms>,
    pub checks: Arc<Checks>,
    pub presence: Presence,
    pub worker_id: String,
    pub every: Duration,
}

impl Sweeper {
    pub async fn run(self, stop: CancellationToken) {
        let mut tick = tokio::time::interval(self.every);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            self.checks.rate_limiter.forget_idle(Instant::now());
            self.checks.slow_mode.forget_old(Instant::now());
            self.rooms.restart_dead_tasks();
            for room in self.rooms.sweep().await {
                if let Err(e) = self.presence.forget(&room, &self.worker_id).await {
                    tracing::warn!(room, error = %e, "cannot forget a dropped room's members; they expire");
                }
            }
        }
    }
}
