//! Tokens verified recently, so that a chatter who posts many times with
//! the same token has its signature checked once, not at every post (an
//! RS256 check is most of what a post costs nginx).
//!
//! Only tokens that passed every check are kept, under the SHA-256 of the
//! whole token (signature included: a token that differs in any byte is
//! another entry, and is checked), with the identity they carry, until
//! their `exp` (plus the leeway the check allows). The map is bounded:
//! when full, expired entries go first, and if none has expired it starts
//! over empty (the next posts are checked again; nothing is ever trusted
//! longer, only checked more often).

use std::collections::HashMap;
use std::sync::Mutex;

use sha2::{Digest, Sha256};

use crate::token::Identity;

type TokenHash = [u8; 32];

pub struct VerifiedTokens {
    capacity: usize,
    entries: Mutex<HashMap<TokenHash, Entry>>,
}

struct Entry {
    identity: Identity,
    /// Seconds since the epoch after which the token is no longer valid
    /// (its `exp` plus the leeway).
    valid_until: u64,
}

impl VerifiedTokens {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn hash(token: &str) -> TokenHash {
        Sha256::digest(token.as_bytes()).into()
    }

    /// The identity of `token`, if it was verified and is still valid at
    /// `now` (seconds since the epoch).
    pub fn get(&self, token: &str, now: u64) -> Option<Identity> {
        let key = Self::hash(token);
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        match entries.get(&key) {
            Some(entry) if now <= entry.valid_until => Some(entry.identity.clone()),
            Some(_) => {
                entries.remove(&key);
                None
            }
            None => None,
        }
    }

    /// Remembers that `token` passed every check and stays valid until
    /// `valid_until`.
    pub fn insert(&self, token: &str, identity: Identity, valid_until: u64, now: u64) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= self.capacity {
            entries.retain(|_, entry| now <= entry.valid_until);
            if entries.len() >= self.capacity {
                entries.clear();
            }
        }
        entries.insert(
            Self::hash(token),
            Entry {
                identity,
                valid_until,
            },
        );
    }

    pub fn len(&self) -> usize {
        self.entries.lock().map(|e| e.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(sub: &str) -> Identity {
        Identity {
            sub: sub.into(),
            public: None,
            rooms: None,
            role: None,
            standing: Default::default(),
            claims: None,
        }
    }

    #[test]
    fn a_token_is_known_until_it_expires_and_only_byte_for_byte() {
        let cache = VerifiedTokens::new(8);
        cache.insert("a.b.c", identity("alice"), 100, 50);
        assert_eq!(cache.get("a.b.c", 100).unwrap().sub, "alice");
        assert!(cache.get("a.b.d", 60).is_none());
        assert!(cache.get("a.b.c", 101).is_none());
        // An expired entry is dropped when seen.
        assert!(cache.is_empty());
    }

    #[test]
    fn a_full_cache_drops_expired_entries_then_starts_over() {
        let cache = VerifiedTokens::new(2);
        cache.insert("old", identity("o"), 10, 0);
        cache.insert("live", identity("l"), 100, 0);
        cache.insert("new", identity("n"), 100, 50);
        assert!(cache.get("old", 50).is_none());
        assert_eq!(cache.get("live", 50).unwrap().sub, "l");
        assert_eq!(cache.get("new", 50).unwrap().sub, "n");
        cache.insert("newer", identity("x"), 100, 50);
        assert_eq!(cache.len(), 1);
        assert_eq!(cache.get("newer", 50).unwrap().sub, "x");
    }
}
