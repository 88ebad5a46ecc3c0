//! Batching policy, free of I/O: how items become frames, and which items
//! were already delivered.

use std::collections::{HashSet, VecDeque};

use chatup_wire::frame::encode_frame;

/// Limits of one frame.
#[derive(Debug, Clone, Copy)]
pub struct FrameLimits {
    pub max_items: usize,
    pub max_bytes: usize,
}

/// An item waiting to be sent: its text, its id, and whether it is a
/// message (kept in history) rather than a room event.
#[derive(Debug, Clone)]
pub struct Item {
    pub text: String,
    pub id: String,
    pub is_message: bool,
}

/// One frame ready to publish.
#[derive(Debug)]
pub struct Frame {
    pub text: String,
    /// The ids of its messages (to remember once published: only
    /// messages can come again, from history; events are not kept there).
    pub message_ids: Vec<String>,
    /// The id of its last message, if it has one.
    pub last_message_id: Option<String>,
}

/// Items waiting to be sent, cut into frames within the limits.
#[derive(Debug, Default)]
pub struct Pending {
    items: Vec<Item>,
    ids: HashSet<String>,
    bytes: usize,
}

impl Pending {
    /// Queues `item` unless an item with its id is already waiting.
    pub fn push(&mut self, item: Item) -> bool {
        if !self.ids.insert(item.id.clone()) {
            return false;
        }
        self.bytes += item.text.len() + 1;
        self.items.push(item);
        true
    }

    pub fn contains(&self, id: &str) -> bool {
        self.ids.contains(id)
    }

    /// Takes every waiting item out, in order.
    pub fn take_items(&mut self) -> Vec<Item> {
        self.ids.clear();
        self.bytes = 0;
        std::mem::take(&mut self.items)
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// True when the next frame cannot take more: send now rather than wait
    /// for the window to close.
    pub fn is_full(&self, limits: FrameLimits) -> bool {
        self.items.len() >= limits.max_items || self.bytes >= limits.max_bytes
    }

    /// Empties the queue into frames (JSON arrays), in order, each within
    /// the limits (an item larger than `max_bytes` goes alone).
    pub fn take_frames(&mut self, limits: FrameLimits) -> Vec<Frame> {
        let mut frames = Vec::new();
        let mut current: Vec<Item> = Vec::new();
        let mut bytes = 2;
        for item in self.items.drain(..) {
            let full =
                current.len() >= limits.max_items || bytes + item.text.len() + 1 > limits.max_bytes;
            if !current.is_empty() && full {
                frames.push(Frame::of(std::mem::take(&mut current)));
                bytes = 2;
            }
            bytes += item.text.len() + 1;
            current.push(item);
        }
        if !current.is_empty() {
            frames.push(Frame::of(current));
        }
        self.bytes = 0;
        self.ids.clear();
        frames
    }
}

impl Frame {
    fn of(items: Vec<Item>) -> Self {
        Self {
            text: encode_frame(items.iter().map(|i| i.text.as_str())),
            last_message_id: items
                .iter()
                .rev()
                .find(|i| i.is_message)
                .map(|i| i.id.clone()),
            message_ids: items
                .into_iter()
                .filter(|i| i.is_message)
                .map(|i| i.id)
                .collect(),
        }
    }
}

/// The ids delivered most recently, to drop the duplicates that a resync
/// from history may bring. Grows as messages come, up to `capacity`: a
/// room that is quiet, or new, costs next to nothing (every served room
/// has one, and a worker may serve tens of thousands).
#[derive(Debug)]
pub struct RecentIds {
    order: VecDeque<String>,
    set: HashSet<String>,
    capacity: usize,
}

impl RecentIds {
    pub fn new(capacity: usize) -> Self {
        Self {
            order: VecDeque::new(),
            set: HashSet::new(),
            capacity: capacity.max(1),
        }
    }

    pub fn contains(&self, id: &str) -> bool {
        self.set.contains(id)
    }

    /// Records `id`; false if it was already there.
    pub fn insert(&mut self, id: &str) -> bool {
        if self.set.contains(id) {
            return false;
        }
        if self.order.len() == self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        self.order.push_back(id.to_owned());
        self.set.insert(id.to_owned());
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: FrameLimits = FrameLimits {
        max_items: 3,
        max_bytes: 1000,
    };

    fn item(text: &str, is_message: bool) -> Item {
        Item {
            text: text.to_string(),
            id: format!("id-{text}"),
            is_message,
        }
    }

    #[test]
    fn frames_respect_the_item_limit_and_keep_order() {
        let mut pending = Pending::default();
        for n in 0..7 {
            assert!(pending.push(item(&n.to_string(), n != 5)));
        }
        assert!(!pending.push(item("3", true)), "already waiting");
        assert!(pending.is_full(LIMITS));
        let frames = pending.take_frames(LIMITS);
        let texts: Vec<&str> = frames.iter().map(|f| f.text.as_str()).collect();
        assert_eq!(texts, ["[0,1,2]", "[3,4,5]", "[6]"]);
        // Item 5 is an event: only messages are remembered.
        assert_eq!(frames.iter().map(|f| f.message_ids.len()).sum::<usize>(), 6);
        assert_eq!(
            frames[1].last_message_id.as_deref(),
            Some("id-4"),
            "5 is an event"
        );
        assert!(pending.is_empty());
    }

    #[test]
    fn frames_respect_the_byte_limit_and_oversized_items_go_alone() {
        let limits = FrameLimits {
            max_items: 100,
            max_bytes: 12,
        };
        let mut pending = Pending::default();
        for text in ["\"aaaa\"", "\"bbbb\"", "\"cccccccccccccccc\"", "\"d\""] {
            pending.push(item(text, true));
        }
        let frames: Vec<String> = pending
            .take_frames(limits)
            .into_iter()
            .map(|f| f.text)
            .collect();
        assert_eq!(
            frames,
            [
                "[\"aaaa\"]",
                "[\"bbbb\"]",
                "[\"cccccccccccccccc\"]",
                "[\"d\"]"
            ]
        );
    }

    #[test]
    fn recent_ids_drop_duplicates_and_forget_old_ones() {
        let mut recent = RecentIds::new(2);
        assert!(recent.insert("a"));
        assert!(!recent.insert("a"));
        assert!(recent.insert("b"));
        assert!(recent.insert("c"));
        assert!(recent.insert("a"), "a was evicted");
        assert!(!recent.insert("c"));
    }
}
