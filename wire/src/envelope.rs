//! The envelope: one chat message as stored in history and broadcast.

use serde::{Deserialize, Serialize};

/// The user id of the site's own server posts (`role: "system"`): no user
/// token may name it.
pub const SYSTEM_USER: &str = "system";
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::rule::Standing;

/// A chat message, built by the nginx module once the token and the body
/// have been checked. Serialized as `{"id","room","user","msg","ts"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// Unique, time-ordered id (a ULID: sorts like the time it was made).
    pub id: String,
    pub room: String,
    pub user: User,
    pub msg: String,
    /// Milliseconds since the Unix epoch, when the module accepted it.
    pub ts: u64,
    /// The poster's standing (token claims for room rules): only on the
    /// way from the module to the worker, which takes it out.
    #[serde(default, skip_serializing_if = "Standing::is_empty")]
    pub standing: Standing,
    /// The token's whole claim set, for the worker's publish hook: like
    /// `standing`, only on the way from the module to the worker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claims: Option<Claims>,
}

/// A token's claims (its payload) as JSON, kept as text: the module passes
/// them on and the worker hands them to the site's publish hook, neither
/// needs to read them.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Claims(Box<RawValue>);

impl Claims {
    pub fn new(json: Box<RawValue>) -> Self {
        Self(json)
    }

    pub fn json(&self) -> &RawValue {
        &self.0
    }
}

impl PartialEq for Claims {
    fn eq(&self, other: &Self) -> bool {
        self.0.get() == other.0.get()
    }
}

/// Who posted: the token's `sub` and its `public` display data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct User {
    /// The token's `sub` claim. Broadcast to every reader, so sites should
    /// use an identifier that is not secret.
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public: Option<Map<String, Value>>,
    /// `moderator` for a moderator's token, `system` for server posts;
    /// absent for everyone else.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
}

/// What the sidecar answers once a message is stored, and what the module
/// answers its client with `202 Accepted`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    pub id: String,
    pub ts: u64,
}

impl Envelope {
    pub fn ack(&self) -> Ack {
        Ack {
            id: self.id.clone(),
            ts: self.ts,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serializes_to_the_documented_shape() {
        let mut public = Map::new();
        public.insert("name".into(), "Ann".into());
        let envelope = Envelope {
            id: "01J0000000000000000000000A".into(),
            room: "lobby".into(),
            user: User {
                id: "u1".into(),
                public: Some(public),
                role: None,
            },
            msg: "hi".into(),
            ts: 1_700_000_000_000,
            standing: Standing::default(),
            claims: None,
        };
        let json = serde_json::to_value(&envelope).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "id": "01J0000000000000000000000A", "room": "lobby",
                "user": {"id": "u1", "public": {"name": "Ann"}},
                "msg": "hi", "ts": 1_700_000_000_000u64
            })
        );
        let back: Envelope = serde_json::from_value(json).unwrap();
        assert_eq!(back, envelope);
    }

    #[test]
    fn user_without_public_data_omits_the_field() {
        let user = User {
            id: "u1".into(),
            public: None,
            role: None,
        };
        assert_eq!(serde_json::to_string(&user).unwrap(), r#"{"id":"u1"}"#);
    }
}
