//! Message ids: ULIDs, unique across processes and machines and ordered by
//! the millisecond they were made in.

use std::time::SystemTime;

/// Makes ids that increase strictly within one process, even within one
/// millisecond, and carry 80 random bits so that ids from other nginx worker
/// processes and other machines do not collide.
#[derive(Default)]
pub struct MessageIdGenerator {
    inner: ulid::Generator,
}

impl MessageIdGenerator {
    pub fn new() -> Self {
        Self::default()
    }

    /// The next id for a message accepted at `now`.
    pub fn next_id(&mut self, now: SystemTime) -> String {
        match self.inner.generate_from_datetime(now) {
            Ok(id) => id.to_string(),
            // The random part overflowed within one millisecond (2^80 ids):
            // fall back to a fresh random id, still ordered by time.
            Err(_) => ulid::Ulid::from_datetime(now).to_string(),
        }
    }
}

/// The millisecond (since the Unix epoch) a message id was made in, which
/// is when the module accepted the message; `None` if `id` is not a ULID
/// (ids of server posts made elsewhere may not be).
pub fn made_at_millis(id: &str) -> Option<u64> {
    ulid::Ulid::from_string(id).ok().map(|id| id.timestamp_ms())
}

/// How far apart servers' clocks may be: a message made this much before
/// another may still have been stored after it (the JS client's
/// `CLOCK_SKEW_MS` is the same).
pub const CLOCK_SKEW_MS: u64 = 5000;

/// Milliseconds since the Unix epoch.
pub fn unix_millis(now: SystemTime) -> u64 {
    now.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn ids_increase_within_one_millisecond_and_across_time() {
        let mut generator = MessageIdGenerator::new();
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_000);
        let ids: Vec<String> = (0..1000).map(|_| generator.next_id(t)).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
        let later = generator.next_id(t + Duration::from_millis(1));
        assert!(later > *ids.last().unwrap());
        assert_eq!(later.len(), 26);
    }

    #[test]
    fn an_id_tells_the_millisecond_it_was_made_in() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        let id = MessageIdGenerator::new().next_id(t);
        assert_eq!(made_at_millis(&id), Some(1_700_000_000_123));
        assert_eq!(made_at_millis("not-an-id"), None);
    }

    #[test]
    fn separate_generators_do_not_collide() {
        let t = SystemTime::now();
        let a: Vec<String> = (0..100)
            .map(|_| MessageIdGenerator::new().next_id(t))
            .collect();
        let unique: std::collections::HashSet<_> = a.iter().collect();
        assert_eq!(unique.len(), a.len());
    }
}
