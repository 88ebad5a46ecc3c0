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
    /// What was dropped because the queue was full, for the task to make
    /// up for.
    lost: Lost,
    /// The mailbox is gone: the task sends what it holds and ends.
    closed: bool,
    /// The task is gone: inputs are dropped, not kept for nobody.
    task_gone: bool,
}

/// What a room task lost to a full queue since it last looked.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum Lost {
    #[default]
    Nothing,
    /// Items or resync requests: the task catches up from history.
    Items,
    /// A refill request too (nchan lost the room's frames): the task
    /// publishes the whole history again, which covers the items.
    Refill,
}

/// Inputs kept at most this long (capacity) once a backlog is gone: a
/// room that once queued thousands of items does not keep the room for
/// them while it is idle.
const KEPT_CAPACITY: usize = 64;

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

/// The input was dropped.
#[derive(Debug, PartialEq, Eq)]
pub enum Dropped {
    /// The queue was full: the task will catch up from history. `first`:
    /// the first input dropped since it last did.
    Full { first: bool },
    /// The task is gone (it panicked; its room is dropped at the next
    /// sweep or serve request).
    TaskGone,
}

/// The sending half, in the room's entry. Dropping it closes the inbox.
pub struct Mailbox {
    shared: Arc<Shared>,
    capacity: usize,
}

impl Mailbox {
    /// Queues `input` for the task, or drops it if `capacity` inputs wait
    /// already (the task then catches up from history) or the task is
    /// gone.
    pub fn push(&self, input: RoomInput) -> Result<(), Dropped> {
        {
            let mut queue = self.shared.queue();
            if queue.task_gone {
                return Err(Dropped::TaskGone);
            }
            if queue.inputs.len() >= self.capacity {
                let first = queue.lost == Lost::Nothing;
                queue.lost = match (queue.lost, &input) {
                    (_, RoomInput::Refill) | (Lost::Refill, _) => Lost::Refill,
                    _ => Lost::Items,
                };
                drop(queue);
                self.shared.input.notify_one();
                return Err(Dropped::Full { first });
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
        self.shared.queue().lost = Lost::Items;
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
                if let Some(input) = pop(&mut queue) {
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
        pop(&mut self.shared.queue())
    }

    /// What was dropped since the last call.
    pub fn take_lost(&self) -> Lost {
        std::mem::take(&mut self.shared.queue().lost)
    }

    /// The task has backfilled nchan.
    pub fn set_ready(&self) {
        self.shared.readiness.store(READY, Ordering::Release);
        self.shared.readiness_changed.notify_waiters();
    }
}

/// The next input; gives a drained backlog's room back.
fn pop(queue: &mut Queue) -> Option<RoomInput> {
    let input = queue.inputs.pop_front();
    if queue.inputs.is_empty() && queue.inputs.capacity() > KEPT_CAPACITY {
        queue.inputs = VecDeque::new();
    }
    input
}

impl Drop for Inbox {
    fn drop(&mut self) {
        {
            let mut queue = self.shared.queue();
            queue.task_gone = true;
            queue.inputs = VecDeque::new();
        }
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
        assert_eq!(mailbox.push(item(3)), Err(Dropped::Full { first: true }));
        assert_eq!(mailbox.push(item(4)), Err(Dropped::Full { first: false }));
        assert_eq!(inbox.take_lost(), Lost::Items);
        assert_eq!(inbox.take_lost(), Lost::Nothing);
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

    #[tokio::test]
    async fn a_dropped_refill_is_made_up_by_a_refill() {
        let (mailbox, inbox) = inbox(1);
        mailbox.push(item(1)).unwrap();
        assert!(mailbox.push(RoomInput::Refill).is_err());
        assert!(mailbox.push(item(2)).is_err());
        assert_eq!(inbox.take_lost(), Lost::Refill);
    }

    #[tokio::test]
    async fn closing_the_mailbox_ends_a_task_waiting_for_input() {
        let (mailbox, mut inbox) = inbox(8);
        let task = tokio::spawn(async move { inbox.recv().await.is_none() });
        tokio::task::yield_now().await;
        drop(mailbox);
        let ended = tokio::time::timeout(Duration::from_secs(5), task).await;
        assert!(ended.unwrap().unwrap());
    }

    #[tokio::test]
    async fn a_receive_given_up_loses_nothing() {
        let (mailbox, mut inbox) = inbox(8);
        // Polled once (waiting), then dropped, as a select! does when
        // another branch wins.
        let given_up = tokio::time::timeout(Duration::from_millis(10), inbox.recv()).await;
        assert!(given_up.is_err());
        mailbox.push(item(3)).unwrap();
        let got = tokio::time::timeout(Duration::from_secs(5), inbox.recv()).await;
        assert_eq!(text(got.unwrap()), "3");
    }

    #[tokio::test]
    async fn a_task_that_ends_after_it_was_ready_stays_ready_and_takes_no_more_inputs() {
        let (mailbox, inbox) = inbox(8);
        inbox.set_ready();
        drop(inbox);
        assert!(mailbox.readiness().wait().await);
        assert_eq!(mailbox.push(item(1)), Err(Dropped::TaskGone));
    }

    #[tokio::test]
    async fn a_drained_backlog_gives_its_room_back() {
        let (mailbox, mut inbox) = inbox(10_000);
        for n in 0..1000 {
            mailbox.push(item(n)).unwrap();
        }
        while inbox.try_recv().is_some() {}
        assert_eq!(mailbox.shared.queue().inputs.capacity(), 0);
    }
}
