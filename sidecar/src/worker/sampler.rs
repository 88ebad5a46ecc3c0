//! Hot-room protection: when a room's messages come faster than people can
//! read (`hot_room_rate` a second), its readers get a sample of them. Every
//! message of a moderator or of the site's server is kept; of the rest, a
//! share that brings the room back to about `hot_room_rate` a second.
//! History keeps everything, and posters are answered as always.
//!
//! Which messages are kept depends on the message id and the share alone
//! (a hash of the id under a threshold), so every worker of a room, each
//! measuring the same Redis stream, keeps nearly the same ones: a reader
//! who moves to another worker sees the same conversation.
//!
//! The rate is counted per second; a room becomes hot when a second holds
//! more than `hot_room_rate` messages, and cools down after a second under
//! 80% of it (so that a room hovering at the threshold does not flap).

use std::time::Duration;

use tokio::time::Instant;

/// A room cools down under this share of `hot_room_rate`.
const COOL_DOWN_SHARE: f64 = 0.8;
/// The rate is measured over seconds.
const SECOND: Duration = Duration::from_secs(1);

/// What a room task should tell its readers about sampling.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SampledState {
    /// Readers get a sample.
    pub on: bool,
    /// Messages a second the room gets (the last full second, or the
    /// current one's pace when it made the room hot).
    pub rate: u64,
    /// The share of ordinary messages shown (1.0: all).
    pub keep: f64,
}

/// A burst is judged over at least this much of its second.
const SHORTEST_MEASURE: Duration = Duration::from_millis(100);

pub struct Sampler {
    /// Messages a second above which readers get a sample; 0: never.
    threshold: u64,
    second_started: Instant,
    this_second: u64,
    state: SampledState,
    /// The state changed and readers were not told yet.
    changed: bool,
}

impl Sampler {
    pub fn new(threshold: u64, now: Instant) -> Self {
        Self {
            threshold,
            second_started: now,
            this_second: 0,
            state: SampledState {
                on: false,
                rate: 0,
                keep: 1.0,
            },
            changed: false,
        }
    }

    /// Whether a live message with this id goes to readers; `exempt` for
    /// moderators' and the server's messages, which always do.
    pub fn keep(&mut self, id: &str, exempt: bool, now: Instant) -> bool {
        if self.threshold == 0 {
            return true;
        }
        self.roll(now);
        self.this_second += 1;
        // A second already over the threshold makes the room hot at once,
        // at the pace of this second so far: a burst is cut while it
        // happens, not a second later.
        if !self.state.on && self.this_second > self.threshold {
            let elapsed = now
                .duration_since(self.second_started)
                .max(SHORTEST_MEASURE);
            self.set((self.this_second as f64 / elapsed.as_secs_f64()) as u64);
        }
        exempt || share_of(id) < self.state.keep
    }

    /// Closes the seconds that have passed: the rate becomes the last
    /// one's count, and the room heats up, cools down or keeps its share.
    fn roll(&mut self, now: Instant) {
        if now.duration_since(self.second_started) < SECOND {
            return;
        }
        let seconds = now.duration_since(self.second_started).as_secs();
        // A quiet second (or more) in between counts as nothing.
        let rate = if seconds == 1 { self.this_second } else { 0 };
        self.second_started += SECOND * seconds as u32;
        self.this_second = 0;
        if self.state.on || rate > self.threshold {
            self.set(rate);
        }
    }

    /// Hot above the threshold, cool again under 80% of it; while hot, the
    /// share shown brings the room back to the threshold.
    fn set(&mut self, rate: u64) {
        let threshold = self.threshold as f64;
        let on = if self.state.on {
            rate as f64 >= threshold * COOL_DOWN_SHARE
        } else {
            rate > self.threshold
        };
        let keep = if on {
            (threshold / rate.max(1) as f64).min(1.0)
        } else {
            1.0
        };
        if on != self.state.on {
            self.changed = true;
        }
        self.state = SampledState { on, rate, keep };
    }

    /// The state to announce if sampling started or stopped since the last
    /// call (the room task also repeats it while on, for new readers).
    pub fn take_change(&mut self, now: Instant) -> Option<SampledState> {
        if self.threshold > 0 {
            self.roll(now);
        }
        std::mem::take(&mut self.changed).then_some(self.state)
    }

    pub fn state(&self) -> SampledState {
        self.state
    }
}

/// Where an id falls in [0, 1): the same on every worker, every build and
/// every run (FNV-1a, whose output is fixed by its definition, unlike
/// std's `DefaultHasher`).
fn share_of(id: &str) -> f64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let hash = id
        .bytes()
        .fold(OFFSET, |h, b| (h ^ u64::from(b)).wrapping_mul(PRIME));
    (hash >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize, second: usize) -> Vec<String> {
        (0..n).map(|i| format!("01M{second:04}{i:019}")).collect()
    }

    #[test]
    fn a_quiet_room_shows_everything_and_a_hot_one_a_share_that_brings_it_back_to_the_threshold() {
        let start = Instant::now();
        let mut sampler = Sampler::new(50, start);
        for id in ids(40, 0) {
            assert!(sampler.keep(&id, false, start));
        }
        assert_eq!(sampler.take_change(start), None);

        // 200 a second: hot within the first second, then a quarter shown.
        let mut shown = 0;
        for second in 1..=5u32 {
            let at = start + SECOND * second;
            for id in ids(200, second as usize) {
                shown += usize::from(sampler.keep(&id, false, at));
            }
            if second == 1 {
                let change = sampler.take_change(at).expect("sampling started");
                assert!(change.on);
            }
        }
        let state = sampler.state();
        assert_eq!(state.rate, 200);
        assert!((state.keep - 0.25).abs() < 1e-9);
        // The first second shows its first 50 in full, then a tenth (its
        // pace: 51 at once); the next four about a quarter each.
        assert!((200..=420).contains(&shown), "shown {shown} of 1000");

        // Moderators and the server are always shown.
        assert!(ids(30, 9)
            .iter()
            .all(|id| sampler.keep(id, true, start + SECOND * 5)));
    }

    #[test]
    fn a_room_cools_down_under_four_fifths_of_the_threshold_not_at_it() {
        let start = Instant::now();
        let mut sampler = Sampler::new(50, start);
        let mut second = 0u32;
        let mut run = |sampler: &mut Sampler, n: usize| {
            second += 1;
            let at = start + SECOND * second;
            for id in ids(n, second as usize) {
                sampler.keep(&id, false, at);
            }
            at
        };
        run(&mut sampler, 100);
        let at = run(&mut sampler, 45);
        assert!(sampler.take_change(at).unwrap().on);
        let at = run(&mut sampler, 30);
        assert!(
            sampler.state().on,
            "45 a second is under the threshold but not cool"
        );
        assert_eq!(sampler.take_change(at), None);
        let at = run(&mut sampler, 10);
        let change = sampler.take_change(at).expect("cooled down");
        assert!(!change.on, "30 a second is under 40");
        // A silence of several seconds counts as a quiet second.
        assert_eq!(sampler.take_change(at + SECOND * 10), None);
    }

    #[test]
    fn every_worker_keeps_the_same_messages() {
        let start = Instant::now();
        let (mut one, mut two) = (Sampler::new(10, start), Sampler::new(10, start));
        let at = start + SECOND;
        let mut kept = (Vec::new(), Vec::new());
        for second in 0..3u32 {
            for id in ids(100, second as usize) {
                let at = at + SECOND * second;
                if one.keep(&id, false, at) {
                    kept.0.push(id.clone());
                }
                if two.keep(&id, false, at) {
                    kept.1.push(id);
                }
            }
        }
        assert_eq!(kept.0, kept.1);
        assert!(kept.0.len() < 200, "{} of 300 kept", kept.0.len());
    }

    #[test]
    fn off_keeps_everything() {
        let start = Instant::now();
        let mut sampler = Sampler::new(0, start);
        assert!(ids(10_000, 0)
            .iter()
            .all(|id| sampler.keep(id, false, start)));
        assert_eq!(sampler.take_change(start), None);
    }
}
