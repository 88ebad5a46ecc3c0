//! A room's recently active list: the last [`ACTIVE_USERS`] distinct
//! posters, newest first, with their public data, so that a room of 50,000
//! readers can show who is talking without listing everyone.
//!
//! Each room task keeps it from the messages it publishes (its backfill
//! included): no Redis write or read per message. Every worker serving the
//! room sees the same messages, so they agree; each sends the list to its
//! own readers as an `active` event when it changed, at most every
//! `count_interval_ms`. The dispatcher derives the same list from history
//! for joins and `/stats`.

use std::collections::VecDeque;

use chatup_wire::envelope::User;
pub use chatup_wire::event::ACTIVE_USERS;

#[derive(Debug, Default)]
pub struct RecentlyActive {
    users: VecDeque<User>,
    changed: bool,
}

impl RecentlyActive {
    /// `user` just posted: first in the list (once).
    pub fn note(&mut self, user: User) {
        if self.users.front().is_some_and(|first| *first == user) {
            return;
        }
        self.users.retain(|u| u.id != user.id);
        self.users.push_front(user);
        self.users.truncate(ACTIVE_USERS);
        self.changed = true;
    }

    /// The list, if it changed since the last time it was taken.
    pub fn take_if_changed(&mut self) -> Option<Vec<User>> {
        std::mem::take(&mut self.changed).then(|| self.users.iter().cloned().collect())
    }

    pub fn has_changed(&self) -> bool {
        self.changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(id: &str) -> User {
        User {
            id: id.into(),
            public: None,
            role: None,
        }
    }

    fn ids(users: &[User]) -> Vec<&str> {
        users.iter().map(|u| u.id.as_str()).collect()
    }

    #[test]
    fn the_newest_poster_comes_first_once_and_the_list_is_bounded() {
        let mut active = RecentlyActive::default();
        assert_eq!(active.take_if_changed(), None);
        for id in ["ann", "bob", "ann"] {
            active.note(user(id));
        }
        assert_eq!(ids(&active.take_if_changed().unwrap()), ["ann", "bob"]);
        active.note(user("ann"));
        assert_eq!(
            active.take_if_changed(),
            None,
            "the same first poster again"
        );
        for n in 0..ACTIVE_USERS + 5 {
            active.note(user(&format!("u{n}")));
        }
        let list = active.take_if_changed().unwrap();
        assert_eq!(list.len(), ACTIVE_USERS);
        assert_eq!(list[0].id, format!("u{}", ACTIVE_USERS + 4));
    }
}
