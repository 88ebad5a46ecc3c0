//! Redis key and channel names. The room sits in a `{hash tag}`, so that
//! all of one room's keys land in the same Redis Cluster slot.

/// The Pub/Sub channel a room's messages are published on.
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
}
