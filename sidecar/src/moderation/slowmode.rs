//! Slow mode's memory on this worker: when each user last posted in each
//! room that is in slow mode, so that the next post comes no sooner than
//! the room's seconds later. Per worker, like the rate limits (no Redis
//! round trip per post): a user posts through the worker they read from.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The longest slow mode the server API sets; entries older are forgotten.
pub const MAX_SLOW_MODE_SECS: u64 = 3600;

#[derive(Default)]
pub struct SlowMode {
    last_post: Mutex<HashMap<(String, String), Instant>>,
}

impl SlowMode {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Instant>> {
        self.last_post.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How long `user` must still wait to post in `room`, whose slow mode
    /// is `secs`; `None` if they may post now.
    pub fn wait(&self, room: &str, user: &str, secs: u64, now: Instant) -> Option<Duration> {
        let last = *self.lock().get(&(room.to_owned(), user.to_owned()))?;
        (last + Duration::from_secs(secs))
            .checked_duration_since(now)
            .filter(|wait| !wait.is_zero())
    }

    /// `user` posted in `room` (a room in slow mode) at `now`.
    pub fn posted(&self, room: &str, user: &str, now: Instant) {
        self.lock().insert((room.to_owned(), user.to_owned()), now);
    }

    /// Forgets posts older than any slow mode lasts (periodically).
    pub fn forget_old(&self, now: Instant) {
        let keep = Duration::from_secs(MAX_SLOW_MODE_SECS);
        self.lock().retain(|_, at| now.duration_since(*at) < keep);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_waits_the_rooms_seconds_between_posts_others_do_not() {
        let slow = SlowMode::default();
        let t0 = Instant::now();
        assert_eq!(slow.wait("r", "ann", 10, t0), None);
        slow.posted("r", "ann", t0);
        assert_eq!(
            slow.wait("r", "ann", 10, t0 + Duration::from_secs(4)),
            Some(Duration::from_secs(6))
        );
        assert_eq!(slow.wait("r", "bob", 10, t0), None);
        assert_eq!(slow.wait("other", "ann", 10, t0), None);
        assert_eq!(
            slow.wait("r", "ann", 10, t0 + Duration::from_secs(10)),
            None
        );
        slow.forget_old(t0 + Duration::from_secs(MAX_SLOW_MODE_SECS));
        assert!(slow.lock().is_empty());
    }
}
