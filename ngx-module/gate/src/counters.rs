//! What the module counts for the operator's metrics: chat POSTs by the
//! status the module answered, and refusals for a token by reason. The
//! counters live in the readers zone's shared memory, next to the reader
//! table, so that every nginx worker process adds to the same ones without
//! a lock (atomics in shared memory); the sidecar reads them through
//! `GET /readers?counters` and exports them (`chatup_nginx_*`).

use std::sync::atomic::{AtomicU64, Ordering};

use chatup_wire::readers::ModuleCounters;

use crate::{GateError, TokenFailure};

/// The statuses chat POSTs end with (408: the body never came; 499: the
/// client went away first); anything else is counted as `"other"`.
pub const POST_STATUSES: [u16; 14] = [
    202, 400, 401, 403, 404, 405, 408, 413, 415, 422, 429, 499, 500, 503,
];

/// Reasons besides [`TokenFailure`]: no token, and a valid token whose
/// `rooms` claim does not include the room.
const MISSING: usize = TokenFailure::ALL.len();
const ROOM_NOT_ALLOWED: usize = TokenFailure::ALL.len() + 1;

/// Zeroed memory is a valid, all-zero set of counters.
#[repr(C)]
#[derive(Default)]
pub struct Counters {
    posts: [AtomicU64; POST_STATUSES.len() + 1],
    token_failures: [AtomicU64; TokenFailure::ALL.len() + 2],
}

impl Counters {
    /// A chat POST was answered with `status`.
    pub fn post_answered(&self, status: u16) {
        let slot = POST_STATUSES
            .iter()
            .position(|s| *s == status)
            .unwrap_or(POST_STATUSES.len());
        self.posts[slot].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts `err` if it is a refusal for the request's token.
    pub fn refused(&self, err: &GateError) {
        if let GateError::AdditionalRoom { error, .. } = err {
            return self.refused(error);
        }
        let slot = match err {
            GateError::MissingToken => MISSING,
            GateError::RoomNotAllowed => ROOM_NOT_ALLOWED,
            GateError::BadToken(failure, _) => TokenFailure::ALL
                .iter()
                .position(|f| f == failure)
                .unwrap_or(MISSING),
            _ => return,
        };
        self.token_failures[slot].fetch_add(1, Ordering::Relaxed);
    }

    /// The counts so far, for nginx started as `boot`.
    pub fn snapshot(&self, boot: String) -> ModuleCounters {
        let mut counters = ModuleCounters {
            boot,
            ..Default::default()
        };
        let labels = POST_STATUSES.iter().map(|s| s.to_string());
        for (label, count) in labels.chain(["other".to_owned()]).zip(self.posts.iter()) {
            counters.posts.insert(label, count.load(Ordering::Relaxed));
        }
        let reasons = TokenFailure::ALL
            .iter()
            .map(|f| f.label())
            .chain(["missing", "room_not_allowed"]);
        for (reason, count) in reasons.zip(self.token_failures.iter()) {
            counters
                .token_failures
                .insert(reason.to_owned(), count.load(Ordering::Relaxed));
        }
        counters
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn posts_are_counted_by_status_and_unknown_statuses_as_other() {
        let counters = Counters::default();
        counters.post_answered(202);
        counters.post_answered(202);
        counters.post_answered(401);
        counters.post_answered(418);
        let snapshot = counters.snapshot("b1".into());
        assert_eq!(snapshot.boot, "b1");
        assert_eq!(snapshot.posts["202"], 2);
        assert_eq!(snapshot.posts["401"], 1);
        assert_eq!(snapshot.posts["other"], 1);
        assert_eq!(snapshot.posts["503"], 0);
    }

    #[test]
    fn token_refusals_are_counted_by_reason_and_other_errors_are_not() {
        let counters = Counters::default();
        counters.refused(&GateError::MissingToken);
        counters.refused(&GateError::RoomNotAllowed);
        counters.refused(&GateError::BadToken(
            TokenFailure::Expired,
            "token expired".into(),
        ));
        counters.refused(&GateError::BadToken(
            TokenFailure::Expired,
            "token expired".into(),
        ));
        counters.refused(&GateError::EmptyMessage);
        let snapshot = counters.snapshot("b1".into());
        assert_eq!(snapshot.token_failures["missing"], 1);
        assert_eq!(snapshot.token_failures["room_not_allowed"], 1);
        assert_eq!(snapshot.token_failures["expired"], 2);
        assert_eq!(snapshot.token_failures["bad_signature"], 0);
        assert_eq!(
            snapshot.token_failures.values().sum::<u64>(),
            4,
            "an empty message is not a token failure"
        );
    }
}
