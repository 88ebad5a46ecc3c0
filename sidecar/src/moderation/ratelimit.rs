//! Rate limits, in the worker's memory: a token bucket per (room, user),
//! and one per user over all rooms (so that one token cannot post at the
//! room rate in many rooms at once).
//!
//! Limits are per worker, not cluster-wide: checking them costs nothing
//! (no Redis round trip before every message), and a client posts through
//! the one worker it reads from, so for a user with one tab the worker's
//! limit is the limit. A user posting through several workers at once gets
//! the rate once per worker, which bounds what a determined abuser can do
//! to (workers × rate) — bans are the answer to that, and they are
//! cluster-wide.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chatup_wire::room_matches;
use serde::Deserialize;

/// `[rate_limit]` in the worker's configuration.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    /// Messages per second a user may post in a room, on average; 0 turns
    /// the limit off.
    pub rate_per_sec: f64,
    /// Messages a user may post at once after a quiet while.
    pub burst: u32,
    /// Messages per second a user may post over all rooms together, on
    /// average; 0 turns this limit off.
    pub user_rate_per_sec: f64,
    /// Messages a user may post at once over all rooms.
    pub user_burst: u32,
    /// Moderators get `factor` times the rate and the burst.
    pub moderator_factor: f64,
    /// Other limits for the rooms matching a pattern (the first match).
    pub rooms: Vec<RoomRate>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoomRate {
    /// A room name, or a prefix followed by `*`.
    pub pattern: String,
    pub rate_per_sec: f64,
    pub burst: u32,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            rate_per_sec: 1.0,
            burst: 5,
            user_rate_per_sec: 2.0,
            user_burst: 10,
            moderator_factor: 10.0,
            rooms: Vec::new(),
        }
    }
}

impl RateLimitConfig {
    pub fn validate(&self) -> Result<(), String> {
        let check_rate = |rate: f64, burst: u32, what: &str| {
            if !(rate >= 0.0 && rate.is_finite()) {
                return Err(format!("{what}: rate_per_sec must be 0 or more"));
            }
            if rate > 0.0 && burst == 0 {
                return Err(format!("{what}: burst must be at least 1"));
            }
            Ok(())
        };
        check_rate(self.rate_per_sec, self.burst, "rate_limit")?;
        check_rate(self.user_rate_per_sec, self.user_burst, "rate_limit (user)")?;
        if !(self.moderator_factor >= 1.0 && self.moderator_factor.is_finite()) {
            return Err("rate_limit.moderator_factor must be at least 1".into());
        }
        for room in &self.rooms {
            chatup_wire::validate_room_pattern(&room.pattern)
                .map_err(|e| format!("rate_limit.rooms: pattern \"{}\": {e}", room.pattern))?;
            check_rate(room.rate_per_sec, room.burst, "rate_limit.rooms")?;
        }
        Ok(())
    }

    /// (rate per second, burst) for a message in `room`.
    fn limit_for(&self, room: &str, moderator: bool) -> (f64, f64) {
        let (rate, burst) = self
            .rooms
            .iter()
            .find(|r| room_matches(&r.pattern, room))
            .map_or((self.rate_per_sec, self.burst), |r| {
                (r.rate_per_sec, r.burst)
            });
        let factor = if moderator {
            self.moderator_factor
        } else {
            1.0
        };
        (rate * factor, f64::from(burst) * factor)
    }

    /// (rate per second, burst) of a user over all rooms.
    fn user_limit(&self, moderator: bool) -> (f64, f64) {
        let factor = if moderator {
            self.moderator_factor
        } else {
            1.0
        };
        (
            self.user_rate_per_sec * factor,
            f64::from(self.user_burst) * factor,
        )
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    /// Refills for the time since it was last looked at; returns how long
    /// until it has a token (zero if it has one).
    fn refill(&mut self, now: Instant, rate: f64, burst: f64) -> Duration {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(burst);
        self.at = now;
        if self.tokens >= 1.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64((1.0 - self.tokens) / rate)
        }
    }
}

/// The key of a user's bucket over all rooms (no room is named `*`).
const ALL_ROOMS: &str = "*";

/// Buckets idle this long are full again and can be forgotten.
const FORGET_AFTER: Duration = Duration::from_secs(600);

pub struct RateLimiter {
    config: RateLimitConfig,
    buckets: Mutex<HashMap<(String, String), Bucket>>,
}

impl RateLimiter {
    pub fn new(config: RateLimitConfig) -> Self {
        Self {
            config,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes a token for `user` in `room` at `now`, and one from the
    /// user's bucket over all rooms, or says how long to wait (then takes
    /// neither).
    pub fn take(
        &self,
        room: &str,
        user: &str,
        moderator: bool,
        now: Instant,
    ) -> Result<(), Duration> {
        let limits = [
            (room, self.config.limit_for(room, moderator)),
            (ALL_ROOMS, self.config.user_limit(moderator)),
        ];
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let mut wait = Duration::ZERO;
        for (scope, (rate, burst)) in limits {
            if rate <= 0.0 {
                continue;
            }
            let bucket = buckets
                .entry((scope.to_owned(), user.to_owned()))
                .or_insert(Bucket {
                    tokens: burst,
                    at: now,
                });
            wait = wait.max(bucket.refill(now, rate, burst));
        }
        if !wait.is_zero() {
            return Err(wait);
        }
        for (scope, (rate, _)) in limits {
            if rate > 0.0 {
                if let Some(bucket) = buckets.get_mut(&(scope.to_owned(), user.to_owned())) {
                    bucket.tokens -= 1.0;
                }
            }
        }
        Ok(())
    }

    /// Forgets buckets nobody used for a long while (they are full).
    pub fn forget_idle(&self, now: Instant) {
        self.buckets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, bucket| now.saturating_duration_since(bucket.at) < FORGET_AFTER);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(rate: f64, burst: u32) -> RateLimiter {
        RateLimiter::new(RateLimitConfig {
            rate_per_sec: rate,
            burst,
            user_rate_per_sec: 0.0,
            user_burst: 0,
            moderator_factor: 10.0,
            rooms: vec![RoomRate {
                pattern: "vip-*".into(),
                rate_per_sec: 100.0,
                burst: 100,
            }],
        })
    }

    #[test]
    fn a_burst_is_allowed_then_the_rate_holds() {
        let limiter = limiter(2.0, 3);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(limiter.take("lobby", "u", false, t0).is_ok());
        }
        let wait = limiter.take("lobby", "u", false, t0).unwrap_err();
        assert!((wait.as_secs_f64() - 0.5).abs() < 1e-6, "{wait:?}");
        // Half a second later one token is back, not two.
        let t1 = t0 + Duration::from_millis(500);
        assert!(limiter.take("lobby", "u", false, t1).is_ok());
        assert!(limiter.take("lobby", "u", false, t1).is_err());
        // Another user, another room: their own buckets.
        assert!(limiter.take("lobby", "v", false, t1).is_ok());
        assert!(limiter.take("other", "u", false, t1).is_ok());
    }

    #[test]
    fn rooms_and_moderators_get_their_own_limits() {
        let limiter = limiter(1.0, 1);
        let t0 = Instant::now();
        assert!(limiter.take("lobby", "u", false, t0).is_ok());
        assert!(limiter.take("lobby", "u", false, t0).is_err());
        for _ in 0..10 {
            assert!(limiter.take("lobby", "mod", true, t0).is_ok());
        }
        assert!(limiter.take("lobby", "mod", true, t0).is_err());
        for _ in 0..100 {
            assert!(limiter.take("vip-1", "u", false, t0).is_ok());
        }
    }

    #[test]
    fn one_user_cannot_post_at_the_room_rate_in_many_rooms_at_once() {
        let limiter = RateLimiter::new(RateLimitConfig {
            rate_per_sec: 1.0,
            burst: 5,
            user_rate_per_sec: 2.0,
            user_burst: 10,
            ..Default::default()
        });
        let t0 = Instant::now();
        let posted = (0..100)
            .filter(|n| {
                limiter
                    .take(&format!("room-{}", n % 20), "u", false, t0)
                    .is_ok()
            })
            .count();
        assert_eq!(posted, 10, "the user's burst over all rooms");
        // A refusal by the user's bucket takes nothing from the room's.
        let t1 = t0 + Duration::from_millis(500);
        assert!(limiter.take("room-0", "u", false, t1).is_ok());
        assert!(
            limiter.take("room-0", "v", false, t1).is_ok(),
            "others are not slowed"
        );
    }

    #[test]
    fn zero_rate_means_no_limit_and_bad_settings_are_named() {
        let limiter = limiter(0.0, 0);
        let t0 = Instant::now();
        for _ in 0..1000 {
            assert!(limiter.take("lobby", "u", false, t0).is_ok());
        }
        let mut config = RateLimitConfig {
            burst: 0,
            ..Default::default()
        };
        assert!(config.validate().unwrap_err().contains("burst"));
        config.burst = 1;
        config.rooms.push(RoomRate {
            pattern: "bad room".into(),
            rate_per_sec: 1.0,
            burst: 1,
        });
        assert!(config.validate().unwrap_err().contains("bad room"));
    }
}
