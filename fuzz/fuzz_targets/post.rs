//! A chat POST as the module sees it: path, content type, Authorization,
//! Idempotency-Key and body. Nothing may panic; an accepted message is
//! clean, within its limit, and cleaning it again changes nothing.
#![no_main]

use chatup_gate::body::parse_message;
use chatup_gate::post::{bearer_token, check_content_type, room_from_path};
use chatup_gate::text::clean_message;
use chatup_wire::idempotency::validate_idempotency_key;
use libfuzzer_sys::fuzz_target;

const MAX_CHARS: usize = 500;

fuzz_target!(|data: &[u8]| {
    // The input is split into the request's parts at 0xff bytes (never in
    // UTF-8), so the fuzzer can grow each part on its own.
    let mut parts = data.split(|&b| b == 0xff);
    let path = parts.next().unwrap_or_default();
    let content_type = parts.next();
    let authorization = parts.next();
    let key = parts.next();
    let body: Vec<u8> = parts.collect::<Vec<_>>().join(&0xff);

    if let Ok(room) = room_from_path(path) {
        assert!(chatup_wire::validate_room(&room).is_ok());
    }
    let _ = check_content_type(content_type);
    if let Ok(token) = bearer_token(authorization) {
        assert!(!token.is_empty());
    }
    if let Some(key) = key {
        if let Ok(key) = validate_idempotency_key(key) {
            assert!(!key.is_empty());
        }
    }
    if let Ok(msg) = parse_message(&body, MAX_CHARS) {
        assert!(!msg.is_empty());
        assert!(msg.chars().count() <= MAX_CHARS);
        assert_eq!(clean_message(&msg).as_deref(), Ok(msg.as_str()));
    }
    if let Ok(text) = std::str::from_utf8(&body) {
        if let Ok(clean) = clean_message(text) {
            assert_eq!(clean_message(&clean).as_deref(), Ok(clean.as_str()));
        }
    }
});
