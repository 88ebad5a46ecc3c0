//! Room names and patterns (URLs, `rooms` claims, configuration) and query
//! strings (subscribe URLs: tickets, resume ids). Nothing may panic; a
//! valid room matches itself; a dropped parameter is gone.
#![no_main]

use chatup_gate::query::{query_param, without_param};
use chatup_wire::{room_matches, validate_room, validate_room_pattern};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let (a, b) = text.split_at(
            text.char_indices()
                .nth(text.chars().count() / 2)
                .map_or(0, |(i, _)| i),
        );
        if validate_room(a).is_ok() {
            assert!(room_matches(a, a));
            assert!(validate_room_pattern(a).is_ok());
        }
        if validate_room_pattern(a).is_ok() {
            let _ = room_matches(a, b);
        }
    }
    let _ = query_param(data, "ticket");
    let _ = query_param(data, "last_event_id");
    // nginx's args (no fragment): every decodable resume id is dropped.
    let args_only = !data.contains(&b'#');
    if let Some(kept) = without_param(data, "last_event_id", |_| true).filter(|_| args_only) {
        let uri = [b"/sub/r?".as_slice(), &kept].concat();
        assert_eq!(query_param(&uri, "last_event_id"), None);
    }
});
