//! The link between an upgraded connection's read task and the application task that drives it (an async session): a small bounded queue of received messages, and the wake-ups both ways.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::task::Waker;

use bytes::Bytes;

use super::notify::{LocalNotify, Notified};

/// A whole message received by a connection driven by an async session,
/// copied out of the core's read buffer so that the application's task can
/// hold it across `.await`s.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OwnedMessage {
    /// A text message (valid UTF-8).
    Text(String),
    /// A binary message.
    Binary(Bytes),
}

/// Shared by a connection's read task (which pushes what arrives and stops
/// reading while the queue is full), the core's flusher (which wakes
/// senders once the outbox drained) and the session task (which pops).
///
/// All on one core: `Cell`s, no locks.
pub(crate) struct SessionLink {
    gen: u32,
    capacity: usize,
    queue: RefCell<VecDeque<OwnedMessage>>,
    /// The connection is gone: nothing more arrives, nothing can be sent.
    ended: Cell<bool>,
    /// A message arrived or the connection ended: for `recv`.
    arrived: LocalNotify,
    /// The queue has room again or the connection ended: for the read task.
    room: LocalNotify,
    /// Senders waiting for the outbox to go back under its low-water mark.
    drain_waiters: RefCell<Vec<Waker>>,
}

impl SessionLink {
    /// The link of the connection with generation `gen`; at most
    /// `capacity` (at least 1) received messages wait in it.
    pub(crate) fn new(gen: u32, capacity: usize) -> Self {
        Self {
            gen,
            capacity: capacity.max(1),
            queue: RefCell::new(VecDeque::new()),
            ended: Cell::new(false),
            arrived: LocalNotify::default(),
            room: LocalNotify::default(),
            drain_waiters: RefCell::new(Vec::new()),
        }
    }

    /// The generation of the connection this link belongs to.
    pub(crate) fn gen(&self) -> u32 {
        self.gen
    }

    /// Whether the read task must stop handing over messages (and so stop
    /// reading the socket) until the session takes some.
    pub(crate) fn is_full(&self) -> bool {
        self.queue.borrow().len() >= self.capacity
    }

    /// A message for the session.
    pub(crate) fn push(&self, msg: OwnedMessage) {
        self.queue.borrow_mut().push_back(msg);
        self.arrived.notify();
    }

    /// The oldest message waiting, if any; makes room for the read task.
    pub(crate) fn pop(&self) -> Option<OwnedMessage> {
        let mut q = self.queue.borrow_mut();
        let was_full = q.len() >= self.capacity;
        let msg = q.pop_front();
        if q.is_empty() {
            // A connection between messages keeps no queue memory.
            *q = VecDeque::new();
        }
        drop(q);
        if was_full && msg.is_some() {
            self.room.notify();
        }
        msg
    }

    /// Waits for a message or the end (may return spuriously: re-check).
    pub(crate) fn arrived(&self) -> Notified<'_> {
        self.arrived.notified()
    }

    /// Waits for room or the end (may return spuriously: re-check).
    pub(crate) fn room(&self) -> Notified<'_> {
        self.room.notified()
    }

    /// The connection is gone: wakes every waiter for good.
    pub(crate) fn end(&self) {
        self.ended.set(true);
        self.arrived.notify();
        self.room.notify();
        self.wake_drained();
    }

    pub(crate) fn is_ended(&self) -> bool {
        self.ended.get()
    }

    /// Wakes `waker` at the next drain (or the end).
    pub(crate) fn wait_drain(&self, waker: &Waker) {
        let mut w = self.drain_waiters.borrow_mut();
        if !w.iter().any(|x| x.will_wake(waker)) {
            w.push(waker.clone());
        }
    }

    /// The outbox went back under its low-water mark.
    pub(crate) fn wake_drained(&self) {
        let waiters = std::mem::take(&mut *self.drain_waiters.borrow_mut());
        for w in waiters {
            w.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_queue_reports_full_at_its_capacity_and_frees_its_memory_when_empty() {
        let l = SessionLink::new(1, 2);
        assert!(!l.is_full());
        l.push(OwnedMessage::Text("a".into()));
        l.push(OwnedMessage::Binary(Bytes::from_static(b"b")));
        assert!(l.is_full());
        assert_eq!(l.pop(), Some(OwnedMessage::Text("a".into())));
        assert!(!l.is_full());
        assert_eq!(l.queue.borrow().len(), 1);
        assert!(l.pop().is_some());
        assert_eq!(l.queue.borrow().capacity(), 0);
        assert_eq!(l.pop(), None);
    }
}
