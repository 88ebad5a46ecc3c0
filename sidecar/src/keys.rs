//! Redis key and channel names.
//!
//! A room's keys carry the room in a `{hash tag}`, so that they all land in
//! one Redis Cluster slot (and a room's transactions and scripts stay in
//! one slot). The worker registry lives under the `{chatup-registry}` tag
//! for the same reason: the dispatcher's pick is one script over it.

/// The Pub/Sub channel a room's messages and events are published on.
pub fn room_channel(room: &str) -> String {
    format!("chatup:{{{room}}}:live")
}

/// The room a Pub/Sub channel name belongs to.
pub fn room_of_channel(channel: &str) -> Option<&str> {
    channel.strip_prefix("chatup:{")?.strip_suffix("}:live")
}

/// The list holding a room's last messages, oldest first.
pub fn history(room: &str) -> String {
    format!("chatup:{{{room}}}:history")
}

/// String: the answer (`{"id","ts"}`) to `user`'s post with idempotency
/// key `key` in `room`, kept for the key's lifetime.
pub fn idempotency(room: &str, user: &str, key: &str) -> String {
    format!("chatup:{{{room}}}:idem:{key}:{user}")
}

/// Hash: user id → number of connections of that member to `room` on
/// `worker`. Expires with the worker's heartbeat.
pub fn member_connections(room: &str, worker: &str) -> String {
    format!("chatup:{{{room}}}:w:{worker}:conns")
}

/// Hash: user id → the member's `public` data (JSON), beside
/// [`member_connections`].
pub fn member_public(room: &str, worker: &str) -> String {
    format!("chatup:{{{room}}}:w:{worker}:public")
}

/// String: how many readers `room` has on `worker` (all of them, anonymous
/// included). Expires with the worker's heartbeat.
pub fn subscriber_count(room: &str, worker: &str) -> String {
    format!("chatup:{{{room}}}:w:{worker}:subs")
}

/// Set: the rooms `user` posted in recently (for bans in every room).
/// Expires with the history.
pub fn user_rooms(user: &str) -> String {
    format!("chatup:{{u:{user}}}:rooms")
}

/// String: a server token's `jti`, kept until the token expires (replays
/// are refused).
pub fn used_server_token(jti: &str) -> String {
    // `:jti:`: no room key ends that way (a room may be named chatup-jti).
    format!("chatup:{{chatup-jti}}:jti:{jti}")
}

/// Hash: `<room>\n<user>` → a ban (JSON); room `*` for every room.
pub const BANS: &str = "chatup:{chatup-bans}:all";
/// Hash: room → the seconds of its slow mode (at most one message per user
/// that often); absent: off. Announced on the bans' channel.
pub const SLOW_MODE: &str = "chatup:{chatup-bans}:slow";
/// Hash: room → its rule for posting (JSON, `chatup_wire::RoomRule`);
/// absent: everyone may post. Announced on the bans' channel.
pub const ROOM_RULES: &str = "chatup:{chatup-bans}:rules";
/// Pub/Sub channel announcing ban changes to the workers (the bans' hash
/// tag: on a cluster it is a shard channel of the bans' shard).
/// Not `:live`: the room named `chatup-bans` has that channel.
pub const BANS_CHANNEL: &str = "chatup:{chatup-bans}:announce";

/// Hash: worker id → its record (JSON: id, url, load figures).
pub const REGISTRY_RECORDS: &str = "chatup:{chatup-registry}:records";
/// Hash: worker id → when its entry expires (Redis server time, ms).
pub const REGISTRY_EXPIRY: &str = "chatup:{chatup-registry}:expiry";
/// Hash: worker id → its load: readers at its last heartbeat plus the
/// clients dispatchers sent it since (and earlier ones still expected).
pub const REGISTRY_LOAD: &str = "chatup:{chatup-registry}:load";
/// Hash: worker id → the load its last heartbeat set.
pub const REGISTRY_BASELINE: &str = "chatup:{chatup-registry}:baseline";
/// Hash: worker id → clients sent to it that had not connected at its last
/// heartbeat.
pub const REGISTRY_PENDING: &str = "chatup:{chatup-registry}:pending";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_names_round_trip() {
        assert_eq!(room_channel("lobby"), "chatup:{lobby}:live");
        assert_eq!(room_of_channel(&room_channel("a.b:c")), Some("a.b:c"));
        assert_eq!(room_of_channel("other"), None);
        assert_eq!(history("lobby"), "chatup:{lobby}:history");
    }

    #[test]
    fn a_rooms_keys_share_its_hash_tag() {
        for key in [
            member_connections("r1", "w"),
            member_public("r1", "w"),
            subscriber_count("r1", "w"),
        ] {
            assert!(key.starts_with("chatup:{r1}:w:w:"), "{key}");
        }
    }
}
