//! Room rules: who may post in a room beyond holding a valid token, set by
//! a site's server at run time (`POST /rules`): a minimum `tier` (a site's
//! levels: follower, subscriber, ...) and a minimum account age (the
//! token's `since`). Moderators are exempt; reading is never restricted by
//! a rule.

use serde::{Deserialize, Serialize};

/// What a user token says of its user's standing with the site: its
/// `tier` and `since` claims. The module puts it in the envelope it hands
/// to the worker, which checks the room's rule with it and takes it out
/// before the message is stored or broadcast.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Standing {
    /// The `tier` claim: a whole number, higher is more (absent: 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<u64>,
    /// The `since` claim: when the account was made (or followed the
    /// channel), in seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<u64>,
}

impl Standing {
    pub fn is_empty(&self) -> bool {
        self.tier.is_none() && self.since.is_none()
    }
}

/// Longest rule label, in characters.
pub const MAX_LABEL_CHARS: usize = 64;

/// A room's rule for posting.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoomRule {
    /// The lowest `tier` that may post (0: any).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub min_tier: u64,
    /// How old (`since`) an account must be to post, in seconds (0: any).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub min_age_secs: u64,
    /// Who may post, in the site's words ("subscribers"), for the widget.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl RoomRule {
    /// Whether the rule lets everyone post (then it is no rule).
    pub fn is_open(&self) -> bool {
        self.min_tier == 0 && self.min_age_secs == 0
    }

    /// Whether a user of this standing may post at `now_secs`. An account
    /// age is required only when the rule asks for one; a `since` in the
    /// future is an account of no age.
    pub fn admits(&self, standing: &Standing, now_secs: u64) -> bool {
        let tier_ok = standing.tier.unwrap_or(0) >= self.min_tier;
        let age_ok = self.min_age_secs == 0
            || standing
                .since
                .is_some_and(|since| now_secs.saturating_sub(since) >= self.min_age_secs);
        tier_ok && age_ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rule_admits_by_tier_and_account_age() {
        let subscribers = RoomRule {
            min_tier: 2,
            ..Default::default()
        };
        let week_old = RoomRule {
            min_age_secs: 7 * 86_400,
            ..Default::default()
        };
        let now = 1_800_000_000;
        let standing = |tier: Option<u64>, since: Option<u64>| Standing { tier, since };
        assert!(subscribers.admits(&standing(Some(2), None), now));
        assert!(subscribers.admits(&standing(Some(3), None), now));
        assert!(!subscribers.admits(&standing(Some(1), None), now));
        assert!(!subscribers.admits(&standing(None, None), now));
        assert!(week_old.admits(&standing(None, Some(now - 8 * 86_400)), now));
        assert!(!week_old.admits(&standing(None, Some(now - 86_400)), now));
        assert!(
            !week_old.admits(&standing(None, None), now),
            "no since: no age"
        );
        assert!(!week_old.admits(&standing(None, Some(now + 60)), now));
        assert!(RoomRule::default().admits(&standing(None, None), now));
        assert!(RoomRule::default().is_open() && !week_old.is_open());
    }

    #[test]
    fn rules_and_standings_serialize_only_what_they_say() {
        let rule = RoomRule {
            min_tier: 2,
            min_age_secs: 0,
            label: Some("subscribers".into()),
        };
        assert_eq!(
            serde_json::to_value(&rule).unwrap(),
            serde_json::json!({"min_tier": 2, "label": "subscribers"})
        );
        assert!(serde_json::from_str::<RoomRule>(r#"{"min_tierr": 2}"#).is_err());
        assert_eq!(serde_json::to_string(&Standing::default()).unwrap(), "{}");
    }
}
