//! The subscriptions a client holds: topic → local streams, each topic's last position, and what to send after a reconnect. No I/O.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

/// Where a topic's stream stood: the last message's offset within an epoch
/// of the server's per-topic history.
///
/// The server does not number messages yet, so no message carries one and
/// positions stay `None`; the registry keeps the field so that resubscribing
/// can ask for recovery from it once the protocol has offsets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    /// The message's offset in the topic's history.
    pub offset: u64,
    /// The history's epoch; offsets from another epoch do not compare.
    pub epoch: String,
}

/// A message delivered on a subscribed topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The topic.
    pub topic: Arc<str>,
    /// The publisher's `data`, the JSON text byte for byte.
    pub data: Arc<str>,
    /// The message's position, when the server sends one (not yet).
    pub position: Option<Position>,
}

/// What a [`Subscription`](crate::Subscription) yields.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A message.
    Message(Message),
    /// The topic was subscribed again on a new connection; messages
    /// published while there was none may be missing.
    Gap {
        /// Whether the missed messages were recovered. Always `false` for
        /// now: the server keeps no per-topic history yet.
        recovered: bool,
        /// The last position seen before the gap, if messages carried one.
        last: Option<Position>,
    },
    /// The server refused the subscription (e.g. `forbidden` after a
    /// reconnect with a token that no longer grants the topic).
    Refused {
        /// The error code.
        code: String,
        /// The error message.
        message: String,
    },
}

#[derive(Debug, Default)]
struct Topic {
    sinks: Vec<(u64, UnboundedSender<Event>)>,
    position: Option<Position>,
    /// Subscribed on an earlier connection: the next resubscribe is a gap.
    was_live: bool,
}

/// Topics and their local subscribers.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    topics: HashMap<Arc<str>, Topic>,
    next: u64,
}

impl Registry {
    /// Adds a local subscriber; `true` in the result when the topic is new
    /// (the server must be told). `connected`: it is being subscribed on
    /// the current connection, so the next one has a gap to report.
    pub fn add(
        &mut self,
        topic: &str,
        connected: bool,
    ) -> (Arc<str>, u64, UnboundedReceiver<Event>, bool) {
        let (tx, rx) = unbounded_channel();
        self.next += 1;
        let id = self.next;
        let new = !self.topics.contains_key(topic);
        let key: Arc<str> = match self.topics.get_key_value(topic) {
            Some((k, _)) => k.clone(),
            None => topic.into(),
        };
        let t = self.topics.entry(key.clone()).or_default();
        t.sinks.push((id, tx));
        t.was_live |= connected;
        (key, id, rx, new)
    }

    /// Removes a local subscriber; `true` when it was the topic's last (the
    /// server should be told).
    pub fn remove(&mut self, topic: &str, id: u64) -> bool {
        let Some(t) = self.topics.get_mut(topic) else {
            return false;
        };
        t.sinks.retain(|(i, _)| *i != id);
        if t.sinks.is_empty() {
            self.topics.remove(topic);
            true
        } else {
            false
        }
    }

    /// Hands a message to every local subscriber of `topic`; returns how many.
    pub fn deliver(&mut self, topic: &str, data: &str, position: Option<Position>) -> usize {
        let Some(t) = self.topics.get_mut(topic) else {
            return 0;
        };
        if position.is_some() {
            t.position.clone_from(&position);
        }
        let msg = Message {
            topic: self.topics.get_key_value(topic).expect("present").0.clone(),
            data: data.into(),
            position,
        };
        let t = self.topics.get_mut(topic).expect("present");
        t.sinks
            .retain(|(_, tx)| tx.send(Event::Message(msg.clone())).is_ok());
        t.sinks.len()
    }

    /// Tells the subscribers of `topics` the server refused them.
    pub fn refused<'a>(
        &mut self,
        topics: impl IntoIterator<Item = &'a str>,
        code: &str,
        message: &str,
    ) {
        for topic in topics {
            if let Some(t) = self.topics.get_mut(topic) {
                for (_, tx) in &t.sinks {
                    let _ = tx.send(Event::Refused {
                        code: code.to_owned(),
                        message: message.to_owned(),
                    });
                }
            }
        }
    }

    /// A new connection is open: the resubscribe message (`None` when there
    /// is nothing to subscribe), after telling every topic that was live on
    /// an earlier connection that it has a gap.
    pub fn on_connected(&mut self, id: u64) -> Option<String> {
        if self.topics.is_empty() {
            return None;
        }
        for t in self.topics.values_mut() {
            if t.was_live {
                for (_, tx) in &t.sinks {
                    let _ = tx.send(Event::Gap {
                        recovered: false,
                        last: t.position.clone(),
                    });
                }
            }
            t.was_live = true;
        }
        let mut topics: Vec<_> = self.topics.iter().collect();
        topics.sort_by(|a, b| a.0.cmp(b.0));
        Some(crate::protocol::resubscribe(
            topics.into_iter().map(|(k, t)| (&**k, t.position.as_ref())),
            id,
        ))
    }

    /// Ends every stream (the client stopped).
    pub fn clear(&mut self) {
        self.topics.clear();
    }

    /// The subscribed topics, sorted.
    pub fn topics(&self) -> Vec<String> {
        let mut v: Vec<String> = self.topics.keys().map(|k| k.to_string()).collect();
        v.sort();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivers_to_every_local_subscriber_and_forgets_the_last_one() {
        let mut r = Registry::default();
        let (_, a, mut ra, new_a) = r.add("t", false);
        let (_, b, mut rb, new_b) = r.add("t", false);
        assert!(new_a && !new_b);
        assert_eq!(r.deliver("t", "1", None), 2);
        assert!(matches!(ra.try_recv(), Ok(Event::Message(m)) if &*m.data == "1"));
        assert!(matches!(rb.try_recv(), Ok(Event::Message(m)) if &*m.data == "1"));
        assert!(!r.remove("t", a));
        assert!(r.remove("t", b));
        assert_eq!(r.deliver("t", "2", None), 0);
    }

    #[test]
    fn a_reconnect_resubscribes_everything_and_reports_gaps() {
        let mut r = Registry::default();
        let (_, _, mut rx, _) = r.add("b", false);
        let (_, _, _ry, _) = r.add("a", false);
        let first = r.on_connected(1).unwrap();
        assert_eq!(first, r#"{"type":"subscribe","topics":["a","b"],"id":1}"#);
        assert!(rx.try_recv().is_err(), "no gap on the first connection");
        r.deliver(
            "b",
            "x",
            Some(Position {
                offset: 4,
                epoch: "e".into(),
            }),
        );
        let _ = rx.try_recv();
        r.on_connected(2).unwrap();
        assert_eq!(
            rx.try_recv().unwrap(),
            Event::Gap {
                recovered: false,
                last: Some(Position {
                    offset: 4,
                    epoch: "e".into()
                })
            }
        );
        assert_eq!(Registry::default().on_connected(3), None);
    }
}
