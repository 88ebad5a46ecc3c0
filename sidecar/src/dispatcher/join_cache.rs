//! What a join tells about its room (reader counts and recent history),
//! kept for a moment (`join_cache_ms`, 1 s by default) and shared by the
//! joins of that moment. A stream start brings thousands of joins to one
//! room within seconds: they make one set of Redis reads per room and
//! moment, not one each, and joins that arrive while it is under way wait
//! for it rather than making their own.
//!
//! A cached history can lack what was posted in the last moment; the
//! client loses nothing by it: it subscribes from the oldest frame nchan
//! buffers (`nchan_subscriber_first_message oldest`) and drops what it has
//! twice, by id.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::OnceCell;

use crate::presence::RoomCounts;

/// Rooms remembered at most; beyond, the expired ones are dropped first
/// (and, if none had expired, all of them: a moment's cache is cheap to
/// rebuild).
const MAX_ROOMS: usize = 10_000;

#[derive(Clone)]
pub struct RoomSnapshot {
    pub counts: RoomCounts,
    pub history: Arc<Vec<Value>>,
    /// The room's slow mode and rule for posting.
    pub settings: crate::bans::RoomSettings,
}

struct Entry {
    made: Instant,
    snapshot: OnceCell<RoomSnapshot>,
}

pub struct JoinCache {
    ttl: Duration,
    rooms: Mutex<HashMap<String, Arc<Entry>>>,
}

impl JoinCache {
    /// A zero `ttl` caches nothing.
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            rooms: Mutex::new(HashMap::new()),
        }
    }

    /// `room`'s snapshot: the one made less than `ttl` ago, or the one
    /// `load` makes now (shared with every caller meanwhile). A failed load
    /// is not kept: the next caller tries again.
    pub async fn get<E, F, Fut>(&self, room: &str, load: F) -> Result<RoomSnapshot, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<RoomSnapshot, E>>,
    {
        self.get_at(room, Instant::now(), load).await
    }

    /// [`get`](Self::get) as of `now`.
    async fn get_at<E, F, Fut>(&self, room: &str, now: Instant, load: F) -> Result<RoomSnapshot, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<RoomSnapshot, E>>,
    {
        if self.ttl.is_zero() {
            return load().await;
        }
        let entry = self.entry(room, now);
        entry.snapshot.get_or_try_init(load).await.cloned()
    }

    fn entry(&self, room: &str, now: Instant) -> Arc<Entry> {
        let mut rooms = self.rooms.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = rooms.get(room) {
            if now.saturating_duration_since(entry.made) < self.ttl {
                return entry.clone();
            }
        }
        if rooms.len() >= MAX_ROOMS {
            rooms.retain(|_, e| now.saturating_duration_since(e.made) < self.ttl);
            if rooms.len() >= MAX_ROOMS {
                rooms.clear();
            }
        }
        let entry = Arc::new(Entry {
            made: now,
            snapshot: OnceCell::new(),
        });
        rooms.insert(room.to_owned(), entry.clone());
        entry
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    fn snapshot(n: u64) -> RoomSnapshot {
        RoomSnapshot {
            counts: RoomCounts {
                subscribers: n,
                members: 0,
            },
            history: Arc::new(Vec::new()),
            settings: Default::default(),
        }
    }

    #[tokio::test]
    async fn joins_of_one_moment_share_one_load() {
        let cache = Arc::new(JoinCache::new(Duration::from_secs(60)));
        let loads = Arc::new(AtomicUsize::new(0));
        let joins: Vec<_> = (0..50)
            .map(|_| {
                let (cache, loads) = (cache.clone(), loads.clone());
                tokio::spawn(async move {
                    cache
                        .get("stage", || async {
                            loads.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            Ok::<_, ()>(snapshot(7))
                        })
                        .await
                })
            })
            .collect();
        for join in joins {
            assert_eq!(join.await.unwrap().unwrap().counts.subscribers, 7);
        }
        assert_eq!(loads.load(Ordering::SeqCst), 1);
        // Another room has its own.
        let other = cache.get("other", || async { Ok::<_, ()>(snapshot(1)) });
        assert_eq!(other.await.unwrap().counts.subscribers, 1);
    }

    #[tokio::test]
    async fn a_failed_load_is_tried_again_and_a_stale_one_is_remade() {
        let cache = JoinCache::new(Duration::from_millis(50));
        let start = Instant::now();
        let at = |ms| start + Duration::from_millis(ms);
        let failed = cache.get_at("r", at(0), || async {
            Err::<RoomSnapshot, _>("redis down")
        });
        assert!(failed.await.is_err());
        let loaded = cache.get_at("r", at(0), || async { Ok::<_, &str>(snapshot(2)) });
        assert_eq!(loaded.await.unwrap().counts.subscribers, 2);
        let cached = cache.get_at("r", at(49), || async { Ok::<_, &str>(snapshot(3)) });
        assert_eq!(cached.await.unwrap().counts.subscribers, 2);
        let remade = cache.get_at("r", at(50), || async { Ok::<_, &str>(snapshot(4)) });
        assert_eq!(remade.await.unwrap().counts.subscribers, 4);
    }

    #[tokio::test]
    async fn without_a_ttl_every_join_loads() {
        let cache = JoinCache::new(Duration::ZERO);
        for n in 0..3 {
            let got = cache.get("r", || async move { Ok::<_, ()>(snapshot(n)) });
            assert_eq!(got.await.unwrap().counts.subscribers, n);
        }
    }
}
