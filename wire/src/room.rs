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

/// Most rooms a reader reads over one connection besides its own
/// (`?also=` on the subscribe URL, `also` in a join).
pub const MAX_ADDITIONAL_ROOMS: usize = 8;
/// The subscribe URL's query parameter naming the additional rooms,
/// comma-separated.
pub const ADDITIONAL_ROOMS_PARAM: &str = "also";

/// Why a list of additional rooms is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdditionalRoomsError {
    #[error("at most {MAX_ADDITIONAL_ROOMS} additional rooms can be read over one connection")]
    TooMany,
    #[error("additional rooms (?also=) are off on this chat worker")]
    Off,
    #[error("additional room {room:?}: {error}")]
    BadRoom { room: String, error: RoomNameError },
}

/// The rooms a reader of `room` reads besides it, from `names`: each a
/// valid room name; empty names, repeats and `room` itself are left out
/// (a client that lists its own room reads it once).
pub fn additional_rooms<'a>(
    room: &str,
    names: impl IntoIterator<Item = &'a str>,
) -> Result<Vec<String>, AdditionalRoomsError> {
    let mut rooms: Vec<String> = Vec::new();
    for name in names {
        if name.is_empty() || name == room || rooms.iter().any(|r| r == name) {
            continue;
        }
        validate_room(name).map_err(|error| AdditionalRoomsError::BadRoom {
            room: name.chars().take(MAX_ROOM_LEN + 1).collect(),
            error,
        })?;
        if rooms.len() == MAX_ADDITIONAL_ROOMS {
            return Err(AdditionalRoomsError::TooMany);
        }
        rooms.push(name.to_owned());
    }
    Ok(rooms)
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

    #[test]
    fn additional_rooms_are_valid_distinct_and_few() {
        assert_eq!(
            additional_rooms("lobby", ["news", "", "lobby", "news", "private-u1"]),
            Ok(vec!["news".to_owned(), "private-u1".to_owned()])
        );
        assert_eq!(additional_rooms("lobby", []), Ok(vec![]));
        assert_eq!(
            additional_rooms("lobby", ["a b"]),
            Err(AdditionalRoomsError::BadRoom {
                room: "a b".into(),
                error: RoomNameError::BadCharacter
            })
        );
        let many: Vec<String> = (0..=MAX_ADDITIONAL_ROOMS)
            .map(|i| format!("r{i}"))
            .collect();
        assert_eq!(
            additional_rooms("lobby", many.iter().map(String::as_str)),
            Err(AdditionalRoomsError::TooMany)
        );
        assert_eq!(
            additional_rooms(
                "lobby",
                many[..MAX_ADDITIONAL_ROOMS].iter().map(String::as_str)
            )
            .map(|r| r.len()),
            Ok(MAX_ADDITIONAL_ROOMS)
        );
    }
}
