//! The outgoing queue: bounded by count and bytes, first in first out; full means an error, never a silent drop.

use std::collections::VecDeque;

use crate::error::Error;

/// One message waiting to be written: a JSON text frame's payload, and the
/// id of the acknowledgement it waits for, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Outgoing {
    pub text: String,
    pub ack: Option<u64>,
}

/// Messages accepted but not yet written to a connection, in order.
///
/// While connected, the writer drains it as fast as the socket takes bytes;
/// while not, it holds what was sent with [`Delivery::Queue`](crate::Delivery)
/// until the next connection.
#[derive(Debug)]
pub(crate) struct OutQueue {
    items: VecDeque<Outgoing>,
    bytes: usize,
    max_count: usize,
    max_bytes: usize,
}

impl OutQueue {
    pub fn new(max_count: usize, max_bytes: usize) -> Self {
        Self {
            items: VecDeque::new(),
            bytes: 0,
            max_count,
            max_bytes,
        }
    }

    /// Appends `item`, or hands back [`Error::QueueFull`] if it would pass
    /// either bound. A message larger than the byte bound on its own is
    /// refused even into an empty queue.
    pub fn push(&mut self, item: Outgoing) -> Result<(), Error> {
        if self.items.len() >= self.max_count || self.bytes + item.text.len() > self.max_bytes {
            return Err(Error::QueueFull {
                count: self.items.len(),
                bytes: self.bytes,
            });
        }
        self.bytes += item.text.len();
        self.items.push_back(item);
        Ok(())
    }

    /// Puts a message the writer took back at the front (it could not be
    /// written), bounds notwithstanding: it was admitted once.
    pub fn push_front(&mut self, item: Outgoing) {
        self.bytes += item.text.len();
        self.items.push_front(item);
    }

    pub fn pop(&mut self) -> Option<Outgoing> {
        let item = self.items.pop_front()?;
        self.bytes -= item.text.len();
        Some(item)
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(s: &str) -> Outgoing {
        Outgoing {
            text: s.to_owned(),
            ack: None,
        }
    }

    #[test]
    fn keeps_order_and_counts_bytes() {
        let mut q = OutQueue::new(10, 100);
        for s in ["a", "bb", "ccc"] {
            q.push(msg(s)).unwrap();
        }
        assert_eq!((q.len(), q.bytes()), (3, 6));
        let out: Vec<_> = std::iter::from_fn(|| q.pop()).map(|m| m.text).collect();
        assert_eq!(out, ["a", "bb", "ccc"]);
        assert_eq!((q.len(), q.bytes()), (0, 0));
    }

    #[test]
    fn full_by_count_or_bytes_is_an_error_and_keeps_the_queue() {
        let mut q = OutQueue::new(2, 100);
        q.push(msg("1")).unwrap();
        q.push(msg("2")).unwrap();
        assert_eq!(
            q.push(msg("3")),
            Err(Error::QueueFull { count: 2, bytes: 2 })
        );
        assert_eq!(q.len(), 2);

        let mut q = OutQueue::new(10, 5);
        q.push(msg("1234")).unwrap();
        assert!(q.push(msg("56")).is_err());
        q.push(msg("5")).unwrap();
        let mut big = OutQueue::new(10, 5);
        assert!(big.push(msg("123456")).is_err(), "too big even when empty");
    }

    #[test]
    fn a_returned_message_goes_first() {
        let mut q = OutQueue::new(1, 10);
        q.push(msg("b")).unwrap();
        q.push_front(msg("a"));
        assert_eq!(q.pop().unwrap().text, "a");
        assert_eq!(q.pop().unwrap().text, "b");
    }
}
