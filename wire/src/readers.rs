//! What the nginx module tells the sidecar about readers: its answer to
//! `GET /readers?boot=B&since=S` on nginx's internal socket (the
//! `chatup_readers_status` location), and to a release request.
//!
//! The module counts readers and signed-in members per room in shared
//! memory (every nginx worker process of the box sees the same numbers).
//! Each entry carries the sequence number of its last change; a poll
//! returns the entries changed after `since` (all of them when `since` is
//! 0 or `boot` is not the module's current one), including entries that
//! dropped to zero, which is how the sidecar learns of leaves. `boot`
//! changes when nginx restarts (its shared memory, and nchan's channels,
//! are new then).

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// Changes since the sidecar's last poll.
#[derive(Debug, Serialize, Deserialize)]
pub struct ReaderChanges {
    /// Identifies this nginx's shared memory: a new value means nginx
    /// restarted, its channels are empty and every count starts again.
    pub boot: String,
    /// The sequence number to pass as `since` next time.
    pub seq: u64,
    /// Readers on this nginx now, all rooms together.
    pub readers: u64,
    /// How many times an nginx worker process started in a slot used
    /// before (it died and was respawned): nchan's channels it owned lost
    /// their frames, so served rooms must be refilled when this changes.
    #[serde(default)]
    pub respawns: u64,
    pub rooms: Vec<RoomReaders>,
    pub members: Vec<MemberConnections>,
}

/// A room's readers on this nginx.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RoomReaders {
    pub room: String,
    pub readers: u64,
    /// Whether nginx lets readers in without asking the sidecar first.
    pub served: bool,
    /// The id of the last message nchan accepted for this room from the
    /// sidecar (`X-Chatup-Last-Id` of the publishing request), so that a
    /// restarted sidecar resumes exactly after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_id: Option<String>,
}

/// A signed-in reader's connections to a room on this nginx (0: it left).
#[derive(Debug, Serialize, Deserialize)]
pub struct MemberConnections {
    pub room: String,
    pub id: String,
    /// The token's `public` claim, as it was (a JSON object).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public: Option<Box<RawValue>>,
    pub connections: u64,
}

/// The answer to `POST /readers/release?rooms=a,b`: the rooms nginx no
/// longer lets readers into without asking the sidecar (those that had no
/// reader); the others stay served.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Released {
    pub released: Vec<String>,
}

/// The answer to `POST /readers?drain=1` (or `=0`): whether the module now
/// refuses new readers (the sidecar drains this nginx for a deploy).
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Draining {
    pub draining: bool,
    /// Readers on this nginx now, all rooms together.
    pub readers: u64,
}

/// The answer to `GET /readers?counters`: what the module's nginx workers
/// counted since nginx started (`boot`, as in [`ReaderChanges`]; a new boot
/// starts from zero). Keys are statuses (`"202"`, `"401"`, ...) and token
/// failure reasons (`"expired"`, `"missing"`, ...).
#[derive(Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ModuleCounters {
    pub boot: String,
    /// Chat POSTs the module answered, by status.
    pub posts: std::collections::BTreeMap<String, u64>,
    /// Posts and readers refused for their token, by reason.
    pub token_failures: std::collections::BTreeMap<String, u64>,
}

/// The header on a frame published to nchan naming its last message, which
/// the module records as the room's `last_id`.
pub const LAST_ID_HEADER: &str = "X-Chatup-Last-Id";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_round_trip_with_public_data_as_it_was() {
        let text = r#"{"boot":"b1","seq":7,"readers":3,"respawns":0,"rooms":[{"room":"r","readers":3,"served":true,"last_id":"01J"}],"members":[{"room":"r","id":"u","public":{"name":"Zoé"},"connections":1}]}"#;
        let changes: ReaderChanges = serde_json::from_str(text).unwrap();
        assert_eq!(changes.rooms[0].last_id.as_deref(), Some("01J"));
        assert_eq!(
            changes.members[0].public.as_ref().unwrap().get(),
            r#"{"name":"Zoé"}"#
        );
        assert_eq!(serde_json::to_string(&changes).unwrap(), text);
    }
}
