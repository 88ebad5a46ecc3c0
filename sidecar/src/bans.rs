//! Bans in Redis: the list every worker keeps a copy of, and the changes
//! announced to them.
//!
//! A ban is stored in one hash (field `<room>\n<user>`, room `*` for every
//! room) with its end time, and announced on a Pub/Sub channel; workers
//! apply announcements at once and reload the whole list periodically and
//! after a Redis reconnection, so a lost announcement is repaired within
//! that period. Expired bans are ignored by everyone and removed by the
//! next reader.

use std::collections::HashMap;

use chatup_wire::RoomRule;
use redis::{AsyncCommands, Script};
use serde::{Deserialize, Serialize};

use crate::db::{Db, DbError};
use crate::keys;

/// One ban: `user` may not post in `room` (`*`: any room) until `until_ms`
/// (`None`: for good). A mute (a timeout) is a ban that removes nothing:
/// the user keeps reading, and a post is refused with `muted`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ban {
    pub user: String,
    pub room: String,
    /// End of the ban, milliseconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub mute: bool,
    /// The moderator who set it from the client (`None`: the site's
    /// server): a moderator can lift only moderators' bans.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
}

impl Ban {
    pub fn is_active(&self, now_ms: u64) -> bool {
        self.until_ms.is_none_or(|until| until > now_ms)
    }

    /// Seconds left, rounded up; `None` for a permanent ban.
    pub fn seconds_left(&self, now_ms: u64) -> Option<u64> {
        self.until_ms
            .map(|until| until.saturating_sub(now_ms).div_ceil(1000))
    }

    fn field(&self) -> String {
        field(&self.room, &self.user, self.mute)
    }

    /// Whether this ban lasts at least as long as `other` would.
    pub fn outlasts(&self, other: &Ban) -> bool {
        match (self.until_ms, other.until_ms) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(mine), Some(theirs)) => mine >= theirs,
        }
    }
}

/// A ban's field in the hash; a mute has its own, so that muting a banned
/// user does not shorten the ban.
fn field(room: &str, user: &str, mute: bool) -> String {
    if mute {
        format!("{room}\n{user}\nmute")
    } else {
        format!("{room}\n{user}")
    }
}

/// What is announced to the workers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum BanChange {
    Ban {
        ban: Ban,
    },
    Lift {
        user: String,
        room: String,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        mute: bool,
    },
    /// A room's slow mode: at most one message per user every `secs`
    /// seconds (moderators exempt); 0: off.
    Slow {
        room: String,
        secs: u64,
    },
    /// A room's rule for posting (`None`: everyone may post).
    Rule {
        room: String,
        rule: Option<RoomRule>,
    },
}

// KEYS: the ban hash. ARGV: field. Removes it; returns 1 if it was there.
const LIFT: &str = r#"return redis.call('HDEL', KEYS[1], ARGV[1])"#;

#[derive(Clone)]
pub struct BanStore {
    db: Db,
    lift: Script,
}

impl BanStore {
    pub fn new(db: Db) -> Self {
        Self {
            db,
            lift: Script::new(LIFT),
        }
    }

    /// Stores `bans` and announces them.
    pub async fn put(&self, bans: &[Ban]) -> Result<(), DbError> {
        // Nothing to send (an empty pipeline is an error to the client).
        if bans.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for ban in bans {
            let json = serde_json::to_string(ban).map_err(|e| DbError::Corrupt(e.to_string()))?;
            pipe.hset(keys::BANS, ban.field(), json).ignore();
        }
        for ban in bans {
            self.announce_in(&mut pipe, &BanChange::Ban { ban: ban.clone() })?;
        }
        let mut conn = self.db.conn();
        self.db.bounded(pipe.query_async::<()>(&mut conn)).await
    }

    /// Adds the announcement of `change` to `pipe`.
    fn announce_in(&self, pipe: &mut redis::Pipeline, change: &BanChange) -> Result<(), DbError> {
        pipe.cmd(self.db.publish_command())
            .arg(keys::BANS_CHANNEL)
            .arg(announce(change)?)
            .ignore();
        Ok(())
    }

    /// Lifts the ban (or the mute) of `user` in `room` (exactly that room,
    /// or `*`); returns whether there was one. Announced either way.
    pub async fn lift(&self, user: &str, room: &str, mute: bool) -> Result<bool, DbError> {
        let mut invocation = self.lift.prepare_invoke();
        invocation.key(keys::BANS).arg(field(room, user, mute));
        let mut conn = self.db.conn();
        let removed: i64 = self.db.bounded(invocation.invoke_async(&mut conn)).await?;
        let change = BanChange::Lift {
            user: user.to_owned(),
            room: room.to_owned(),
            mute,
        };
        self.db
            .bounded(
                redis::cmd(self.db.publish_command())
                    .arg(keys::BANS_CHANNEL)
                    .arg(announce(&change)?)
                    .query_async::<()>(&mut conn),
            )
            .await?;
        Ok(removed > 0)
    }

    /// The ban (or the mute) of `user` in exactly `room`, if one is in
    /// force at `now_ms`.
    pub async fn get(
        &self,
        user: &str,
        room: &str,
        mute: bool,
        now_ms: u64,
    ) -> Result<Option<Ban>, DbError> {
        let mut conn = self.db.conn();
        let json: Option<String> = self
            .db
            .bounded(conn.hget(keys::BANS, field(room, user, mute)))
            .await?;
        Ok(json
            .and_then(|json| serde_json::from_str::<Ban>(&json).ok())
            .filter(|ban| ban.is_active(now_ms)))
    }

    /// Sets `room`'s slow mode (`secs` 0: off) and announces it.
    pub async fn set_slow(&self, room: &str, secs: u64) -> Result<(), DbError> {
        let change = BanChange::Slow {
            room: room.to_owned(),
            secs,
        };
        let mut pipe = redis::pipe();
        if secs == 0 {
            pipe.hdel(keys::SLOW_MODE, room).ignore();
        } else {
            pipe.hset(keys::SLOW_MODE, room, secs).ignore();
        }
        self.announce_in(&mut pipe, &change)?;
        let mut conn = self.db.conn();
        self.db.bounded(pipe.query_async::<()>(&mut conn)).await
    }

    /// Sets `room`'s rule for posting (`None` or an open rule: none) and
    /// announces it.
    pub async fn set_rule(&self, room: &str, rule: Option<RoomRule>) -> Result<(), DbError> {
        let rule = rule.filter(|r| !r.is_open());
        let mut pipe = redis::pipe();
        match &rule {
            None => pipe.hdel(keys::ROOM_RULES, room).ignore(),
            Some(rule) => {
                let json =
                    serde_json::to_string(rule).map_err(|e| DbError::Corrupt(e.to_string()))?;
                pipe.hset(keys::ROOM_RULES, room, json).ignore()
            }
        };
        let change = BanChange::Rule {
            room: room.to_owned(),
            rule,
        };
        self.announce_in(&mut pipe, &change)?;
        let mut conn = self.db.conn();
        self.db.bounded(pipe.query_async::<()>(&mut conn)).await
    }

    /// The rooms with a rule for posting (unreadable entries are skipped).
    pub async fn rules(&self) -> Result<HashMap<String, RoomRule>, DbError> {
        let mut conn = self.db.conn();
        let raw: HashMap<String, String> = self.db.bounded(conn.hgetall(keys::ROOM_RULES)).await?;
        Ok(raw
            .into_iter()
            .filter_map(|(room, json)| Some((room, serde_json::from_str(&json).ok()?)))
            .collect())
    }

    /// The rooms in slow mode, with their seconds.
    pub async fn slow_modes(&self) -> Result<HashMap<String, u64>, DbError> {
        let mut conn = self.db.conn();
        self.db.bounded(conn.hgetall(keys::SLOW_MODE)).await
    }

    /// Every ban in force at `now_ms` (expired ones are removed).
    pub async fn all(&self, now_ms: u64) -> Result<Vec<Ban>, DbError> {
        let mut conn = self.db.conn();
        let raw: HashMap<String, String> = self.db.bounded(conn.hgetall(keys::BANS)).await?;
        let mut bans = Vec::new();
        let mut expired = Vec::new();
        for (field, json) in raw {
            match serde_json::from_str::<Ban>(&json) {
                Ok(ban) if ban.is_active(now_ms) => bans.push(ban),
                _ => expired.push(field),
            }
        }
        if !expired.is_empty() {
            // Best effort: a later reader removes them otherwise.
            let _ = self
                .db
                .bounded(conn.hdel::<_, _, ()>(keys::BANS, &expired))
                .await;
        }
        bans.sort_by(|a, b| (&a.room, &a.user).cmp(&(&b.room, &b.user)));
        Ok(bans)
    }
}

/// What a room's moderation says to a reader who joins.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RoomSettings {
    /// Slow mode, in seconds (0: off).
    pub slow_mode: u64,
    /// The rule for posting, if any.
    pub rule: Option<RoomRule>,
}

/// `room`'s slow mode and rule, in one round trip.
pub async fn room_settings(db: &Db, room: &str) -> Result<RoomSettings, DbError> {
    let mut pipe = redis::pipe();
    pipe.hget(keys::SLOW_MODE, room)
        .hget(keys::ROOM_RULES, room);
    let mut conn = db.conn();
    let (secs, rule): (Option<u64>, Option<String>) =
        db.bounded(pipe.query_async(&mut conn)).await?;
    Ok(RoomSettings {
        slow_mode: secs.unwrap_or(0),
        rule: rule.and_then(|json| serde_json::from_str(&json).ok()),
    })
}

fn announce(change: &BanChange) -> Result<String, DbError> {
    serde_json::to_string(change).map_err(|e| DbError::Corrupt(e.to_string()))
}

/// The bans in force, in memory: what a worker checks each message
/// against, without asking Redis.
#[derive(Debug, Default)]
pub struct BanList {
    /// By (room, user, mute).
    bans: HashMap<(String, String, bool), Ban>,
    /// Rooms in slow mode, with their seconds.
    slow: HashMap<String, u64>,
    /// Rooms with a rule for posting.
    rules: HashMap<String, RoomRule>,
}

impl BanList {
    pub fn from_bans(bans: Vec<Ban>) -> Self {
        Self::from_parts(bans, HashMap::new(), HashMap::new())
    }

    pub fn from_parts(
        bans: Vec<Ban>,
        slow: HashMap<String, u64>,
        rules: HashMap<String, RoomRule>,
    ) -> Self {
        let mut list = Self {
            slow,
            rules,
            ..Self::default()
        };
        for ban in bans {
            list.apply(BanChange::Ban { ban });
        }
        list
    }

    /// `room`'s slow mode in seconds, if it is on.
    pub fn slow_mode(&self, room: &str) -> Option<u64> {
        self.slow.get(room).copied().filter(|&secs| secs > 0)
    }

    /// `room`'s rule for posting, if it has one.
    pub fn rule(&self, room: &str) -> Option<&RoomRule> {
        self.rules.get(room)
    }

    pub fn apply(&mut self, change: BanChange) {
        match change {
            BanChange::Ban { ban } => {
                self.bans
                    .insert((ban.room.clone(), ban.user.clone(), ban.mute), ban);
            }
            BanChange::Lift { user, room, mute } => {
                self.bans.remove(&(room, user, mute));
            }
            BanChange::Slow { room, secs: 0 } => {
                self.slow.remove(&room);
            }
            BanChange::Slow { room, secs } => {
                self.slow.insert(room, secs);
            }
            BanChange::Rule { room, rule: None } => {
                self.rules.remove(&room);
            }
            BanChange::Rule {
                room,
                rule: Some(rule),
            } => {
                self.rules.insert(room, rule);
            }
        }
    }

    /// The ban keeping `user` from posting in `room` at `now_ms`, if any
    /// (the one lasting longest when both a room and a global ban apply);
    /// else the mute, if any.
    pub fn find(&self, room: &str, user: &str, now_ms: u64) -> Option<&Ban> {
        let find = |mute: bool| {
            [room, "*"]
                .into_iter()
                .filter_map(|r| self.bans.get(&(r.to_owned(), user.to_owned(), mute)))
                .filter(|ban| ban.is_active(now_ms))
                .max_by_key(|ban| ban.until_ms.unwrap_or(u64::MAX))
        };
        find(false).or_else(|| find(true))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ban(room: &str, until_ms: Option<u64>) -> Ban {
        Ban {
            user: "troll".into(),
            room: room.into(),
            until_ms,
            reason: None,
            mute: false,
            by: None,
        }
    }

    #[test]
    fn a_ban_applies_to_its_room_or_everywhere_until_it_ends() {
        let mut list = BanList::from_bans(vec![ban("lobby", Some(10_000))]);
        assert!(list.find("lobby", "troll", 5_000).is_some());
        assert!(list.find("lobby", "troll", 10_000).is_none(), "expired");
        assert!(list.find("other", "troll", 5_000).is_none());
        assert!(list.find("lobby", "someone", 5_000).is_none());
        list.apply(BanChange::Ban {
            ban: ban("*", None),
        });
        let found = list.find("other", "troll", 50_000).unwrap();
        assert_eq!(found.seconds_left(50_000), None);
        assert_eq!(list.find("lobby", "troll", 5_000).unwrap().room, "*");
        list.apply(BanChange::Lift {
            user: "troll".into(),
            room: "*".into(),
            mute: false,
        });
        assert_eq!(
            list.find("lobby", "troll", 5_000)
                .unwrap()
                .seconds_left(5_000),
            Some(5)
        );
    }

    #[test]
    fn a_mute_is_found_after_a_ban_and_neither_replaces_the_other() {
        let mute = Ban {
            mute: true,
            ..ban("lobby", Some(3_000))
        };
        let mut list = BanList::from_bans(vec![mute, ban("lobby", Some(10_000))]);
        assert!(
            !list.find("lobby", "troll", 1_000).unwrap().mute,
            "the ban first"
        );
        list.apply(BanChange::Lift {
            user: "troll".into(),
            room: "lobby".into(),
            mute: false,
        });
        let found = list.find("lobby", "troll", 1_000).unwrap();
        assert!(found.mute);
        assert_eq!(found.seconds_left(1_000), Some(2));
        assert!(
            list.find("lobby", "troll", 3_000).is_none(),
            "the timeout is over"
        );
        assert_ne!(
            ban("r", None).field(),
            Ban {
                mute: true,
                ..ban("r", None)
            }
            .field()
        );
    }

    #[test]
    fn slow_mode_is_set_per_room_and_turned_off_with_zero() {
        let mut list = BanList::default();
        assert_eq!(list.slow_mode("r"), None);
        list.apply(BanChange::Slow {
            room: "r".into(),
            secs: 30,
        });
        assert_eq!(list.slow_mode("r"), Some(30));
        assert_eq!(list.slow_mode("other"), None);
        let json = serde_json::to_string(&BanChange::Slow {
            room: "r".into(),
            secs: 0,
        })
        .unwrap();
        assert_eq!(json, r#"{"op":"slow","room":"r","secs":0}"#);
        list.apply(serde_json::from_str(&json).unwrap());
        assert_eq!(list.slow_mode("r"), None);
    }

    #[test]
    fn a_rooms_rule_is_set_replaced_and_removed_by_announcements() {
        let mut list = BanList::default();
        let subscribers = RoomRule {
            min_tier: 2,
            ..Default::default()
        };
        list.apply(BanChange::Rule {
            room: "r".into(),
            rule: Some(subscribers.clone()),
        });
        assert_eq!(list.rule("r"), Some(&subscribers));
        assert_eq!(list.rule("other"), None);
        let json = serde_json::to_string(&BanChange::Rule {
            room: "r".into(),
            rule: None,
        })
        .unwrap();
        assert_eq!(json, r#"{"op":"rule","room":"r","rule":null}"#);
        list.apply(serde_json::from_str(&json).unwrap());
        assert_eq!(list.rule("r"), None);
    }

    #[test]
    fn changes_round_trip_as_json() {
        let change = BanChange::Lift {
            user: "u".into(),
            room: "*".into(),
            mute: false,
        };
        let json = serde_json::to_string(&change).unwrap();
        assert_eq!(json, r#"{"op":"lift","user":"u","room":"*"}"#);
        assert_eq!(serde_json::from_str::<BanChange>(&json).unwrap(), change);
    }
}
