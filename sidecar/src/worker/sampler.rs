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
//! The rate is counted per second of the messages' own time (the
//! millisecond in their id, when a module accepted them, never later than
//! this worker's clock), not of when this worker handles them: every worker
//! counts the same seconds, and a backlog handled at once is not taken for
//! a burst. A room becomes hot when a second holds more than
//! `hot_room_rate` messages (judged at the burst's pace, from its first
//! message in that second, so a burst is cut while it happens, and more as
//! it grows) and cools down after a second under 80% of it (so that a room
//! hovering at the threshold does not flap).

/// A room cools down under this share of `hot_room_rate`.
const COOL_DOWN_SHARE: f64 = 0.8;
/// A burst is judged over at least this much of its second, in ms.
const SHORTEST_MEASURE_MS: u64 = 100;
/// A second is closed by the clock (no message of a later one came) this
/// long after it ended.
const CLOSE_AFTER_MS: u64 = 1000;

/// What a room task should tell its readers about sampling.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SampledState {
    /// The room is hot: readers get a sample (while it cools down, the
    /// share may be 1).
    pub on: bool,
    /// Messages a second the room gets (the last full second, or the
    /// current one's pace when it made the room hot).
    pub rate: u64,
    /// The share of ordinary messages shown (1.0: all).
    pub keep: f64,
}

pub struct Sampler {
    /// Messages a second above which readers get a sample; 0: never.
    threshold: u64,
    /// The second being counted (Unix seconds), its messages so far, and
    /// when its first one was made (Unix ms; a burst's pace runs from it).
    second: u64,
    this_second: u64,
    first_ms: Option<u64>,
    state: SampledState,
    /// The state changed and readers were not told yet.
    changed: bool,
}

impl Sampler {
    pub fn new(threshold: u64) -> Self {
        Self {
            threshold,
            second: 0,
            this_second: 0,
            first_ms: None,
            state: SampledState {
                on: false,
                rate: 0,
                keep: 1.0,
            },
            changed: false,
        }
    }

    /// Whether a live message with this id goes to readers; `exempt` for
    /// moderators' and the server's messages, which always do. `now_ms`:
    /// this worker's clock (Unix ms), which bounds the id's time.
    pub fn keep(&mut self, id: &str, exempt: bool, now_ms: u64) -> bool {
        if self.threshold == 0 {
            return true;
        }
        let made_ms = chatup_wire::id::made_at_millis(id).map_or(now_ms, |ms| ms.min(now_ms));
        let second = made_ms / 1000;
        self.roll(second);
        self.this_second += 1;
        // The pace of the second being counted, from its own messages (a
        // late one from an earlier second is counted, not timed): over the
        // threshold, the room is hot at once, and while the burst grows
        // within its second the share shrinks with it.
        if second == self.second {
            let first_ms = *self.first_ms.get_or_insert(made_ms);
            if self.this_second > self.threshold {
                let elapsed_ms = made_ms.saturating_sub(first_ms).max(SHORTEST_MEASURE_MS);
                let pace = self.this_second * 1000 / elapsed_ms;
                if pace > self.threshold && (!self.state.on || pace > self.state.rate) {
                    self.set(pace);
                }
            }
        }
        self.keeps(id, exempt)
    }

    /// Whether a message with this id goes to readers under the current
    /// share, without counting it (messages from history, on a catch-up).
    pub fn keeps(&self, id: &str, exempt: bool) -> bool {
        exempt || share_of(id) < self.state.keep
    }

    /// Moves on to `second` (later messages only: one from a slower clock
    /// counts in the current second): the rate becomes the last second's
    /// count, 0 after a second without any message.
    fn roll(&mut self, second: u64) {
        if second <= self.second {
            return;
        }
        let rate = if second == self.second + 1 {
            self.this_second
        } else {
            0
        };
        self.second = second;
        self.this_second = 0;
        self.first_ms = None;
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
    /// call (the room task also repeats it while on, for new readers);
    /// `now_ms` closes the seconds that passed without messages.
    pub fn take_change(&mut self, now_ms: u64) -> Option<SampledState> {
        if self.threshold > 0 {
            // Only seconds that ended a while ago: messages of the last one
            // may still be on their way (from other workers, through Redis).
            self.roll(now_ms.saturating_sub(CLOSE_AFTER_MS) / 1000);
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

    /// `n` message ids made within second `second` (Unix), spread over it.
    fn ids(n: usize, second: u64) -> Vec<String> {
        (0..n)
            .map(|i| {
                let ms = second * 1000 + (i as u64 * 1000 / n as u64);
                ulid::Ulid::from_parts(ms, i as u128 + second as u128 * 7919).to_string()
            })
            .collect()
    }

    const T0: u64 = 1_800_000_000;

    #[test]
    fn a_quiet_room_shows_everything_and_a_hot_one_a_share_that_brings_it_back_to_the_threshold() {
        let mut sampler = Sampler::new(50);
        let late = (T0 + 60) * 1000;
        for id in ids(40, T0) {
            assert!(sampler.keep(&id, false, late));
        }
        assert_eq!(sampler.take_change(T0 * 1000 + 999), None);

        // 200 a second: hot within the first second, then a quarter shown.
        let mut shown = 0;
        for second in 1..=5 {
            for id in ids(200, T0 + second) {
                shown += usize::from(sampler.keep(&id, false, late));
            }
            if second == 1 {
                assert!(
                    sampler
                        .take_change((T0 + 1) * 1000 + 500)
                        .expect("started")
                        .on
                );
            }
        }
        // The rate: the last full second's, or the current one's pace when
        // it runs faster.
        let state = sampler.state();
        assert!((200..=210).contains(&state.rate), "{state:?}");
        assert!((state.keep - 50.0 / state.rate as f64).abs() < 1e-9);
        // The first second shows its first 50 in full, then a share at its
        // pace; the next four about a quarter each.
        assert!((230..=420).contains(&shown), "shown {shown} of 1000");
        // Moderators and the server are always shown.
        assert!(ids(30, T0 + 5)
            .iter()
            .all(|id| sampler.keep(id, true, late)));
    }

    #[test]
    fn a_room_cools_down_under_four_fifths_of_the_threshold_not_at_it() {
        let mut sampler = Sampler::new(50);
        let late = (T0 + 60) * 1000;
        let run = |sampler: &mut Sampler, second: u64, n: usize| {
            for id in ids(n, T0 + second) {
                sampler.keep(&id, false, late);
            }
            (T0 + second) * 1000 + 999
        };
        run(&mut sampler, 1, 100);
        let at = run(&mut sampler, 2, 45);
        assert!(sampler.take_change(at).unwrap().on);
        let at = run(&mut sampler, 3, 30);
        assert!(
            sampler.state().on,
            "45 a second is under the threshold but not cool"
        );
        assert_eq!(sampler.take_change(at), None);
        let at = run(&mut sampler, 4, 10);
        assert!(
            !sampler.take_change(at).expect("cooled down").on,
            "30 a second is under 40"
        );
        // Silent seconds count as quiet ones, by the worker's clock.
        run(&mut sampler, 5, 100);
        assert!(sampler.take_change((T0 + 5) * 1000 + 999).unwrap().on);
        assert!(!sampler.take_change((T0 + 8) * 1000).expect("quiet").on);
        // The clock closes a second only a second after it ended.
        run(&mut sampler, 20, 100);
        assert!(sampler.take_change((T0 + 20) * 1000 + 999).unwrap().on);
        assert_eq!(
            sampler.take_change((T0 + 21) * 1000 + 500),
            None,
            "20's messages may still come"
        );
    }

    #[test]
    fn workers_that_started_apart_and_handle_a_backlog_keep_the_same_messages() {
        let (mut early, mut late) = (Sampler::new(10), Sampler::new(10));
        let mut kept = (Vec::new(), Vec::new());
        // The late one joins after the room task started elsewhere, and
        // handles its first seconds as a backlog a little later.
        assert_eq!(late.take_change((T0 - 30) * 1000), None);
        for second in 0..3 {
            let now = (T0 + second) * 1000;
            for (i, id) in ids(100, T0 + second).into_iter().enumerate() {
                // As the room task does: a clock tick between messages.
                let early_now = now + i as u64 * 10;
                early.take_change(early_now);
                if early.keep(&id, false, early_now) {
                    kept.0.push(id.clone());
                }
                let late_now = now + 900;
                late.take_change(late_now);
                if late.keep(&id, false, late_now) {
                    kept.1.push(id);
                }
            }
        }
        assert_eq!(kept.0, kept.1);
        assert!(kept.0.len() < 100, "{} of 300 kept", kept.0.len());
    }

    #[test]
    fn a_message_is_counted_no_later_than_the_workers_clock() {
        // A module whose clock runs ahead does not move the seconds on.
        let mut sampler = Sampler::new(5);
        let now = T0 * 1000 + 500;
        for id in ids(20, T0 + 3) {
            sampler.keep(&id, false, now);
        }
        assert!(sampler.state().on, "counted in the worker's current second");
    }

    #[test]
    fn off_keeps_everything() {
        let mut sampler = Sampler::new(0);
        assert!(ids(10_000, T0)
            .iter()
            .all(|id| sampler.keep(id, false, T0 * 1000)));
        assert_eq!(sampler.take_change(T0 * 1000), None);
    }
}
