//! The worker's copy of the ban list.
//!
//! Kept current by the announcements on the bans channel (applied as they
//! arrive, through the worker's Redis subscription) and by a full reload
//! every `bans_refresh_secs` and after each Redis reconnection. So a ban is
//! in force on every worker as soon as its announcement arrives (well under
//! a second), and a lost announcement is repaired within
//! `bans_refresh_secs`. While Redis is unreachable the last list stays in
//! force.

use std::sync::RwLock;
use std::time::{Duration, SystemTime};

use chatup_wire::id::unix_millis;
use chatup_wire::RoomRule;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::bans::{Ban, BanChange, BanList, BanStore};

pub struct BanCache {
    list: RwLock<BanList>,
    store: BanStore,
    reload_now: Notify,
}

impl BanCache {
    pub fn new(store: BanStore) -> Self {
        Self {
            list: RwLock::new(BanList::default()),
            store,
            reload_now: Notify::new(),
        }
    }

    /// The ban keeping `user` from posting in `room` now, if any.
    pub fn find(&self, room: &str, user: &str) -> Option<Ban> {
        let now = unix_millis(SystemTime::now());
        self.list
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .find(room, user, now)
            .cloned()
    }

    /// Applies an announcement from the bans channel.
    pub fn announcement(&self, payload: &str) {
        match serde_json::from_str::<BanChange>(payload) {
            Ok(change) => {
                tracing::info!(?change, "ban change");
                self.list
                    .write()
                    .unwrap_or_else(|p| p.into_inner())
                    .apply(change);
            }
            Err(e) => tracing::warn!(error = %e, "unreadable ban announcement"),
        }
    }

    /// Asks for a full reload (the Redis subscription was re-established:
    /// announcements may have been missed).
    pub fn reload_soon(&self) {
        self.reload_now.notify_one();
    }

    async fn reload(&self) {
        let loaded = async {
            let bans = self.store.all(unix_millis(SystemTime::now())).await?;
            let slow = self.store.slow_modes().await?;
            let rules = self.store.rules().await?;
            Ok::<_, crate::db::DbError>(BanList::from_parts(bans, slow, rules))
        };
        match loaded.await {
            Ok(list) => *self.list.write().unwrap_or_else(|p| p.into_inner()) = list,
            Err(e) => tracing::warn!(error = %e, "cannot reload bans; keeping the last list"),
        }
    }

    /// `room`'s slow mode in seconds, if it is on.
    pub fn slow_mode(&self, room: &str) -> Option<u64> {
        self.list
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .slow_mode(room)
    }

    /// `room`'s rule for posting, if it has one.
    pub fn rule(&self, room: &str) -> Option<RoomRule> {
        self.list
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .rule(room)
            .cloned()
    }

    /// Reloads at start, every `period`, and when asked to.
    pub async fn run(&self, period: Duration, shutdown: CancellationToken) {
        loop {
            self.reload().await;
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(period) => {}
                _ = self.reload_now.notified() => {}
            }
        }
    }
}
