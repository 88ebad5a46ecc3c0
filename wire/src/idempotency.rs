//! Idempotency keys of posts: a client may send `Idempotency-Key: <key>`
//! with a message and send it again, with the same key, when it got no
//! answer. Within [`IDEMPOTENCY_TTL_SECS`], a post with a key already
//! used by the same user in the same room gets the first answer (the same
//! message id) and stores nothing: a retry after a lost answer is never a
//! duplicate.

/// The request header carrying the key.
pub const IDEMPOTENCY_HEADER: &str = "Idempotency-Key";
/// How long a key is remembered.
pub const IDEMPOTENCY_TTL_SECS: u64 = 24 * 3600;
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY_LEN} characters among A-Z a-z 0-9 - _ . :"
)]
pub struct BadIdempotencyKey;

/// Checks a key's form (it becomes part of a Redis key).
pub fn validate_idempotency_key(key: &[u8]) -> Result<&str, BadIdempotencyKey> {
    let allowed = |b: &u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':');
    if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY_LEN || !key.iter().all(allowed) {
        return Err(BadIdempotencyKey);
    }
    std::str::from_utf8(key).map_err(|_| BadIdempotencyKey)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_short_and_plain() {
        assert_eq!(
            validate_idempotency_key(b"8f14e45f-ceea-467f"),
            Ok("8f14e45f-ceea-467f")
        );
        assert!(validate_idempotency_key(b"").is_err());
        assert!(validate_idempotency_key(b"a b").is_err());
        assert!(validate_idempotency_key(b"{room}").is_err());
        assert!(validate_idempotency_key(&[b'a'; 129]).is_err());
    }
}
