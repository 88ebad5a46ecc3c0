//! A room task's inbox: what Redis brought for the room, resync and refill
//! requests, and whether the task has backfilled nchan yet.
//!
//! One small shared struct per room. It replaced a tokio mpsc channel (a
//! block of 32 slots allocated up front, 1.3 KB), a watch channel (eight
//! `Notify` inside) and an overflow flag: a stream start serves thousands
//! of rooms, each holding all three for as long as it is served (a heap
//! profile of 19,900 readers in 2,000 rooms, docs/operations.md).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

use crate::worker::room::RoomInput;

/// The task has not backfilled nchan yet.
const STARTING: u8 = 0;
/// The task has backfilled nchan: readers let in now miss nothing.
const READY: u8 = 1;
/// The task ended before it was ready.
const GONE: u8 = 2;

struct Shared {
    queue: Mutex<Queue>,
    /// Wakes the task: an input came, or the mailbox closed. One waiter
    /// only (the task), so a wake before it waits is kept as a permit.
    input: Notify,
    readiness: AtomicU8,
    readiness_changed: Notify,
}

#[derive(Default)]
struct Queue {
    inputs: VecDeque<RoomInput>,
    /// An input was dropped (the queue was full): the task catches up
    /// from history.
    overflowed: bool,
    /// The mailbox is gone: the task sends what it holds and ends.
    closed: bool,
}

impl Shared {
    fn queue(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// An inbox for one room task, taking at most `capacity` inputs at once.
pub fn inbox(capacity: usize) -> (Mailbox, Inbox) {
    let shared = Arc::new(Shared {
        queue: Mutex::new(Queue::default()),
        input: Notify::new(),
        readiness: AtomicU8::new(STARTING),
        readiness_changed: Notify::new(),
    });
    let mailbox = Mailbox {
        shared: shared.clone(),
        capacity,
    };
    (mailbox, Inbox { shared })
}

/// The queue was full: the input was dropped, and the task will catch up
/// from history.
#[derive(Debug, PartialEq, Eq)]
pub struct Full {
    /// The first input dropped since the task last caught up.
    pub first: bool,
}

/// The sending half, in the room's entry. Dropping it closes the inbox.
pub struct Mailbox {
    shared: Arc<Shared>,
    capacity: usize,
}

impl Mailbox {
    /// Queues `input` for the task, or drops it if `capacity` inputs wait
    /// already (the task then catches up from history).
    pub fn push(&self, input: RoomInput) -> Result<(), Full> {
        {
            let mut queue = self.shared.queue();
            if queue.inputs.len() >= self.capacity {
                let first = !queue.overflowed;
                queue.overflowed = true;
                drop(queue);
                self.shared.input.notify_one();
                return Err(Full { first });
            }
            queue.inputs.push_back(input);
        }
        self.shared.input.notify_one();
        Ok(())
    }

    /// Whether the task has backfilled nchan, to wait for apart from the
    /// mailbox.
    pub fn readiness(&self) -> Readiness {
        Readiness {
            shared: self.shared.clone(),
        }
    }

    /// Makes the task catch up from history, as after an overflow.
    #[cfg(test)]
    pub fn mark_overflowed(&self) {
        self.shared.queue().overflowed = true;
    }
}

impl Drop for Mailbox {
    fn drop(&mut self) {
        self.shared.queue().closed = true;
        self.shared.input.notify_one();
    }
}

/// The task's half.
pub struct Inbox {
    shared: Arc<Shared>,
}

impl Inbox {
    /// The next input, once there is one; `None` once the mailbox is gone
    /// and every input was taken.
    pub async fn recv(&mut self) -> Option<RoomInput> {
        loop {
            {
                let mut queue = self.shared.queue();
                if let Some(input) = queue.inputs.pop_front() {
                    return Some(input);
                }
                if queue.closed {
                    return None;
                }
            }
            self.shared.input.notified().await;
        }
    }

    /// The next input, if one waits.
    pub fn try_recv(&mut self) -> Option<RoomInput> {
        self.shared.queue().inputs.pop_front()
    }

    /// Whether an input was dropped since the last call.
    pub fn take_overflowed(&self) -> bool {
        std::mem::take(&mut self.shared.queue().overflowed)
    }

    /// The task has backfilled nchan.
    pub fn set_ready(&self) {
        self.shared.readiness.store(READY, Ordering::Release);
        self.shared.readiness_changed.notify_waiters();
    }
}

impl Drop for Inbox {
    fn drop(&mut self) {
        // A task that ends (or is aborted) before it was ready never will
        // be: whoever waits is told at once.
        let _ = self.shared.readiness.compare_exchange(
            STARTING,
            GONE,
            Ordering::AcqRel,
            Ordering::Acquire,
        );
        self.shared.readiness_changed.notify_waiters();
    }
}

/// Whether a room task has backfilled nchan.
#[derive(Clone)]
pub struct Readiness {
    shared: Arc<Shared>,
}

impl Readiness {
    /// Waits until the task is ready (`true`) or ended without being so.
    pub async fn wait(&self) -> bool {
        loop {
            let changed = self.shared.readiness_changed.notified();
            tokio::pin!(changed);
            // Registered before the state is read: a change in between
            // still wakes this waiter.
            changed.as_mut().enable();
            match self.shared.readiness.load(Ordering::Acquire) {
                READY => return true,
                GONE => return false,
                _ => changed.await,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn item(n: u32) -> RoomInput {
        RoomInput::Item(n.to_string())
    }

    fn text(input: Option<RoomInput>) -> String {
        match input {
            Some(RoomInput::Item(text)) => text,
            _ => "not an item".into(),
        }
    }

    #[tokio::test]
    async fn inputs_come_in_order_and_the_closed_inbox_ends_after_the_last() {
        let (mailbox, mut inbox) = inbox(8);
        mailbox.push(item(1)).unwrap();
        mailbox.push(item(2)).unwrap();
        drop(mailbox);
        assert_eq!(text(inbox.recv().await), "1");
        assert_eq!(text(inbox.try_recv()), "2");
        assert!(inbox.recv().await.is_none());
    }

    #[tokio::test]
    async fn a_waiting_task_wakes_for_an_input_pushed_later() {
        let (mailbox, mut inbox) = inbox(8);
        let task = tokio::spawn(async move { text(inbox.recv().await) });
        tokio::task::yield_now().await;
        mailbox.push(item(7)).unwrap();
        let got = tokio::time::timeout(Duration::from_secs(5), task).await;
        assert_eq!(got.unwrap().unwrap(), "7");
    }

    #[tokio::test]
    async fn a_full_inbox_drops_the_input_and_marks_an_overflow_once() {
        let (mailbox, mut inbox) = inbox(2);
        mailbox.push(item(1)).unwrap();
        mailbox.push(item(2)).unwrap();
        assert_eq!(mailbox.push(item(3)), Err(Full { first: true }));
        assert_eq!(mailbox.push(item(4)), Err(Full { first: false }));
        assert!(inbox.take_overflowed());
        assert!(!inbox.take_overflowed());
        assert_eq!(text(inbox.recv().await), "1");
        mailbox.push(item(5)).unwrap();
        assert_eq!(text(inbox.recv().await), "2");
        assert_eq!(text(inbox.recv().await), "5");
    }

    #[tokio::test]
    async fn readiness_is_seen_by_waiters_before_and_after_it_is_set() {
        let (mailbox, inbox) = inbox(2);
        let early = mailbox.readiness();
        let waiting = tokio::spawn(async move { early.wait().await });
        tokio::task::yield_now().await;
        inbox.set_ready();
        let seen = tokio::time::timeout(Duration::from_secs(5), waiting).await;
        assert!(seen.unwrap().unwrap());
        assert!(mailbox.readiness().wait().await);
    }

    #[tokio::test]
    async fn a_task_that_ends_unready_releases_its_waiters() {
        let (mailbox, inbox) = inbox(2);
        let readiness = mailbox.readiness();
        let waiting = tokio::spawn(async move { readiness.wait().await });
        tokio::task::yield_now().await;
        drop(inbox);
        let seen = tokio::time::timeout(Duration::from_secs(5), waiting).await;
        assert!(!seen.unwrap().unwrap());
    }
}
