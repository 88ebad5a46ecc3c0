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

/// The nchan channel of one serving of a room: the module names a new one
/// each time it asks the sidecar to serve a room it does not serve (the
/// room, `~`, the readers zone's boot and a sequence number of that zone),
/// so a channel is never read again once let go or deleted.
///
/// Why: nchan 1.3.6 mishandles a channel deleted and made again under the
/// same id. A subscriber catching up on the new channel's buffered frames
/// in the nginx worker process that does not own the channel can get the
/// first ones and then stall (the rest come one per later publish), about
/// one catch-up in 30 on a loaded machine in our tests, with or without
/// subscribers at the deletion; never on a channel that was not deleted.
/// Fresh channel ids avoid the case instead of deleting and reusing one.
pub mod channel {
    /// Between the room and the serving's id: not a character of room names.
    pub const SEPARATOR: char = '~';

    /// The channel of serving `serving` of `room` in the readers zone `boot`.
    pub fn name(room: &str, boot: u64, serving: u64) -> String {
        format!("{room}{SEPARATOR}{:08x}.{serving}", boot as u32)
    }

    /// The room of a channel named by [`name`] (`None` for anything else).
    pub fn room_of(channel: &str) -> Option<&str> {
        let (room, serving) = channel.split_once(SEPARATOR)?;
        let (boot, seq) = serving.split_once('.')?;
        let well_formed = boot.len() == 8
            && boot.bytes().all(|b| b.is_ascii_hexdigit())
            && !seq.is_empty()
            && seq.len() <= 20
            && seq.bytes().all(|b| b.is_ascii_digit());
        (well_formed && crate::validate_room(room).is_ok()).then_some(room)
    }
}

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
    /// The nchan channel of the room's current serving (see [`channel`]),
    /// while it is served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
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
    #[test]
    fn a_channel_names_its_room_and_serving_and_nothing_else_passes_for_one() {
        let name = super::channel::name("lobby.fr", 0x1234_5678_9abc, 42);
        assert_eq!(name, "lobby.fr~56789abc.42");
        assert_eq!(super::channel::room_of(&name), Some("lobby.fr"));
        for bad in [
            "lobby",
            "lobby~",
            "lobby~56789abc",
            "lobby~56789abc.",
            "lobby~5678.1",
            "~56789abc.1",
            "lo/by~56789abc.1",
            "lobby~56789abc.1x",
        ] {
            assert_eq!(super::channel::room_of(bad), None, "{bad}");
        }
    }

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
