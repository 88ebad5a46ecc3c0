//! Frames: what a subscriber receives in one nchan message.
//!
//! A frame is always a JSON array of items (envelopes, later also room
//! events), oldest first. A quiet room sends arrays of one item; under load
//! the sidecar packs every item that arrived within the batching window into
//! one array, so a subscriber gets one WebSocket frame / EventSource event /
//! long-poll response for many messages.

/// Joins already-serialized JSON items into one frame without parsing them
/// again.
pub fn encode_frame<I, S>(items: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let mut frame = String::from("[");
    for (n, item) in items.into_iter().enumerate() {
        if n > 0 {
            frame.push(',');
        }
        frame.push_str(item.as_ref());
    }
    frame.push(']');
    frame
}

/// Splits a frame back into its items.
pub fn decode_frame(frame: &str) -> Result<Vec<serde_json::Value>, serde_json::Error> {
    serde_json::from_str(frame)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_round_trips() {
        let frame = encode_frame([r#"{"id":"a"}"#, r#"{"id":"b"}"#]);
        assert_eq!(frame, r#"[{"id":"a"},{"id":"b"}]"#);
        let items = decode_frame(&frame).unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!(items[1]["id"], "b");
        assert_eq!(encode_frame(Vec::<String>::new()), "[]");
    }
}
