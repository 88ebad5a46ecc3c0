//! Room events: items that travel in frames beside messages, told apart by
//! their `ev` field (messages have none).
//!
//! - `join` / `leave`: a signed-in member arrived in, or left, the room
//!   (first connection / last connection over all workers);
//! - `count`: the room's readers and members, sent periodically when they
//!   changed; in busy rooms it replaces join and leave events;
//! - `rmUserMsg`: a user was banned from the room: remove their messages;
//! - `rmMsg`: a moderator deleted one message (`msg_id`): remove it;
//! - `active`: the room's recently active list changed: the last
//!   [`ACTIVE_USERS`] distinct posters, newest first (at most every few
//!   seconds);
//! - `slow`: the room's slow mode changed (`secs`, 0: off);
//! - `rule`: the room's rule for posting changed (`rule`, null: none);
//! - `sampled`: the room gets more messages than people can read: readers
//!   see a sample (`on`, the room's `rate` a second, the `share` shown;
//!   repeated while on, and once with `on: false` when it ends);
//! - `migrate`: the chat worker `worker` is draining (a deploy): each of its
//!   readers moves to another worker at a random moment within `within_ms`
//!   (through the dispatcher, at once, no back-off), so that they leave at
//!   an even rate; ignored after `until` (Unix ms);
//! - any other name: a custom event a site's server posted, with `data`.
//!
//! Events carry an `id` (a ULID, like messages) so that clients can drop
//! an item they already have; they are not kept in history.

use serde::{Deserialize, Serialize};

use crate::envelope::User;
use crate::rule::RoomRule;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoomEvent {
    pub id: String,
    pub room: String,
    #[serde(flatten)]
    pub kind: EventKind,
    /// Milliseconds since the Unix epoch.
    pub ts: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "ev", rename_all = "lowercase")]
pub enum EventKind {
    Join {
        user: User,
    },
    Leave {
        user: User,
    },
    Count {
        subscribers: u64,
        members: u64,
    },
    #[serde(rename = "rmUserMsg")]
    RmUserMsg {
        user: User,
    },
    /// A moderator deleted the message `msg_id` (removed from history):
    /// remove it from the screen.
    #[serde(rename = "rmMsg")]
    RmMsg {
        msg_id: String,
    },
    Migrate {
        worker: String,
        within_ms: u64,
        until: u64,
        /// The drain was cancelled: stay (and forget an earlier `migrate`
        /// of this worker).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        cancel: bool,
    },
    Active {
        users: Vec<User>,
    },
    /// The room's slow mode changed: at most one message per user every
    /// `secs` seconds (moderators exempt); 0: off.
    Slow {
        secs: u64,
    },
    /// The room's rule for posting changed (`None`: everyone may post).
    Rule {
        rule: Option<RoomRule>,
    },
    /// Readers see a sample of the room's messages (every moderator's and
    /// server message, `share` of the others), or, `on: false`, all again.
    Sampled {
        on: bool,
        /// Messages a second the room gets.
        rate: u64,
        /// The share of ordinary messages shown, from 0 to 1.
        share: f64,
    },
}

/// How many posters a room's recently active list holds.
pub const ACTIVE_USERS: usize = 10;

/// Event names a site's server cannot use for its own events.
pub const RESERVED_EVENTS: [&str; 10] = [
    "join",
    "leave",
    "count",
    "rmUserMsg",
    "rmMsg",
    "migrate",
    "active",
    "slow",
    "rule",
    "sampled",
];

/// A custom event posted by a site's server (`POST /messages` on a
/// dispatcher): its own name in `ev`, any JSON in `data`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CustomEvent {
    pub id: String,
    pub room: String,
    pub ev: String,
    #[serde(default)]
    pub data: serde_json::Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<User>,
    pub ts: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn events_serialize_with_an_ev_field() {
        let join = RoomEvent {
            id: "01J".into(),
            room: "lobby".into(),
            kind: EventKind::Join {
                user: User {
                    id: "ann".into(),
                    public: None,
                    role: None,
                },
            },
            ts: 5,
        };
        assert_eq!(
            serde_json::to_value(&join).unwrap(),
            json!({"id": "01J", "room": "lobby", "ev": "join", "user": {"id": "ann"}, "ts": 5})
        );
        let count: RoomEvent = serde_json::from_value(json!({
            "id": "01K", "room": "lobby", "ev": "count", "subscribers": 7, "members": 2, "ts": 6
        }))
        .unwrap();
        assert_eq!(
            count.kind,
            EventKind::Count {
                subscribers: 7,
                members: 2
            }
        );
        let removal = RoomEvent {
            id: "01L".into(),
            room: "lobby".into(),
            kind: EventKind::RmUserMsg {
                user: User {
                    id: "troll".into(),
                    public: None,
                    role: None,
                },
            },
            ts: 7,
        };
        assert_eq!(serde_json::to_value(&removal).unwrap()["ev"], "rmUserMsg");
        let deletion = RoomEvent {
            id: "01M".into(),
            room: "lobby".into(),
            kind: EventKind::RmMsg {
                msg_id: "01H".into(),
            },
            ts: 8,
        };
        assert_eq!(
            serde_json::to_value(&deletion).unwrap(),
            json!({"id": "01M", "room": "lobby", "ev": "rmMsg", "msg_id": "01H", "ts": 8})
        );
    }
}
