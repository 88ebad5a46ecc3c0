//! Which (room, user) pairs this worker has recently recorded in Redis as
//! "user posted in room" (the set a ban in every room purges from).
//!
//! Recording costs a Redis round trip (`SADD` + `EXPIRE`); done for every
//! message, it was a second round trip per post on top of storing the
//! message. A chatter posts many times in the same room, and the set only
//! needs to outlive the room's history (`history_ttl_secs`), so a pair is
//! recorded again only after a refresh interval: at most
//! once a minute by default, and always well inside the set's TTL.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// At most this many pairs are remembered; when full, the memory is
/// cleared (the next post of each pair is recorded again, which is
/// harmless), so a flood of distinct users cannot grow it without bound.
const CAPACITY: usize = 65_536;

pub struct RecentPosters {
    refresh_after: Duration,
    noted: Mutex<HashMap<(String, String), Instant>>,
}

impl RecentPosters {
    /// Pairs are recorded again once `refresh_after` has passed: one
    /// minute, or half the set's TTL when that is shorter.
    pub fn new(set_ttl: Duration) -> Self {
        Self {
            refresh_after: (set_ttl / 2).min(Duration::from_secs(60)),
            noted: Mutex::new(HashMap::new()),
        }
    }

    /// Whether the pair must be recorded in Redis now; if so, it counts as
    /// recorded from `now` (call [`forget`](Self::forget) if that fails).
    pub fn needs_recording(&self, room: &str, user: &str, now: Instant) -> bool {
        let mut noted = self.noted.lock().unwrap_or_else(|e| e.into_inner());
        let key = (room.to_owned(), user.to_owned());
        if let Some(at) = noted.get(&key) {
            if now.saturating_duration_since(*at) < self.refresh_after {
                return false;
            }
        }
        if noted.len() >= CAPACITY {
            noted.clear();
        }
        noted.insert(key, now);
        true
    }

    /// Recording the pair failed: try again with its next post.
    pub fn forget(&self, room: &str, user: &str) {
        let mut noted = self.noted.lock().unwrap_or_else(|e| e.into_inner());
        noted.remove(&(room.to_owned(), user.to_owned()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pair_is_recorded_once_then_again_after_the_refresh_interval() {
        let posters = RecentPosters::new(Duration::from_secs(3600));
        let start = Instant::now();
        assert!(posters.needs_recording("lobby", "anna", start));
        assert!(!posters.needs_recording("lobby", "anna", start + Duration::from_secs(59)));
        assert!(posters.needs_recording("lobby", "anna", start + Duration::from_secs(60)));
    }

    #[test]
    fn rooms_and_users_are_recorded_separately() {
        let posters = RecentPosters::new(Duration::from_secs(3600));
        let now = Instant::now();
        assert!(posters.needs_recording("lobby", "anna", now));
        assert!(posters.needs_recording("news", "anna", now));
        assert!(posters.needs_recording("lobby", "bob", now));
    }

    #[test]
    fn a_short_ttl_is_refreshed_within_half_of_it() {
        let posters = RecentPosters::new(Duration::from_secs(10));
        let start = Instant::now();
        assert!(posters.needs_recording("lobby", "anna", start));
        assert!(!posters.needs_recording("lobby", "anna", start + Duration::from_secs(4)));
        assert!(posters.needs_recording("lobby", "anna", start + Duration::from_secs(5)));
    }

    #[test]
    fn a_failed_recording_is_retried_with_the_next_post() {
        let posters = RecentPosters::new(Duration::from_secs(3600));
        let now = Instant::now();
        assert!(posters.needs_recording("lobby", "anna", now));
        posters.forget("lobby", "anna");
        assert!(posters.needs_recording("lobby", "anna", now));
    }
}
