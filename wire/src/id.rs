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
    fn separate_generators_do_not_collide() {
        let t = SystemTime::now();
        let a: Vec<String> = (0..100)
            .map(|_| MessageIdGenerator::new().next_id(t))
            .collect();
        let unique: std::collections::HashSet<_> = a.iter().collect();
        assert_eq!(unique.len(), a.len());
    }
}
