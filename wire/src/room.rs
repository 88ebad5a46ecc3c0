//! Room names: what the URL, the nchan channel id and the Redis keys share.

/// Longest accepted room name, in bytes (all accepted characters are ASCII).
pub const MAX_ROOM_LEN: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoomNameError {
    #[error("room name is empty")]
    Empty,
    #[error("room name is longer than {MAX_ROOM_LEN} characters")]
    TooLong,
    #[error("room name must start with a letter or digit")]
    BadFirstCharacter,
    #[error("room name may only contain letters, digits, '-', '_', '.' and ':'")]
    BadCharacter,
}

/// Checks a room name: 1 to 64 of `[A-Za-z0-9_.:-]`, starting with a letter
/// or digit (so that `.` and `..` can never be path segments).
pub fn validate_room(name: &str) -> Result<(), RoomNameError> {
    let bytes = name.as_bytes();
    let first = *bytes.first().ok_or(RoomNameError::Empty)?;
    if bytes.len() > MAX_ROOM_LEN {
        return Err(RoomNameError::TooLong);
    }
    if !first.is_ascii_alphanumeric() {
        return Err(RoomNameError::BadFirstCharacter);
    }
    let allowed = |b: &u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':');
    if !bytes.iter().all(allowed) {
        return Err(RoomNameError::BadCharacter);
    }
    Ok(())
}

/// Whether `room` matches `pattern`: an exact room name, or a prefix
/// followed by `*` (`match-*` matches `match-42`; `*` matches every room).
pub fn room_matches(pattern: &str, room: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => room.starts_with(prefix),
        None => pattern == room,
    }
}

/// Checks a room pattern: a valid room name, or a prefix of one followed by
/// `*` (the prefix may be empty).
pub fn validate_room_pattern(pattern: &str) -> Result<(), RoomNameError> {
    match pattern.strip_suffix('*') {
        Some("") => Ok(()),
        Some(prefix) => validate_room(prefix),
        None => validate_room(pattern),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_exact_names_and_prefixes() {
        assert!(room_matches("lobby", "lobby"));
        assert!(!room_matches("lobby", "lobby2"));
        assert!(room_matches("match-*", "match-42"));
        assert!(!room_matches("match-*", "lobby"));
        assert!(room_matches("*", "anything"));
        assert!(validate_room_pattern("match-*").is_ok());
        assert!(validate_room_pattern("*").is_ok());
        assert!(validate_room_pattern("a b*").is_err());
        assert!(validate_room_pattern("-x").is_err());
    }

    #[test]
    fn accepts_documented_charset() {
        for ok in [
            "lobby",
            "a",
            "Match-42_live.fr:main",
            &"x".repeat(MAX_ROOM_LEN),
        ] {
            assert_eq!(validate_room(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn rejects_everything_else() {
        assert_eq!(validate_room(""), Err(RoomNameError::Empty));
        assert_eq!(
            validate_room(&"x".repeat(MAX_ROOM_LEN + 1)),
            Err(RoomNameError::TooLong)
        );
        assert_eq!(validate_room(".."), Err(RoomNameError::BadFirstCharacter));
        assert_eq!(validate_room("-x"), Err(RoomNameError::BadFirstCharacter));
        for bad in ["a b", "a/b", "a%20", "aé", "a\0", "a?b"] {
            assert_eq!(
                validate_room(bad),
                Err(RoomNameError::BadCharacter),
                "{bad:?}"
            );
        }
    }
}
