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

/// Bytes of topic names one resubscribe message carries at most (a single
/// longer name still goes, alone).
pub(crate) const RESUBSCRIBE_BYTES: usize = 16 * 1024;

/// Splits `items` into runs whose `size` adds up to at most `max` (a run
/// holds at least one item).
fn chunks<T>(items: &[T], size: impl Fn(&T) -> usize, max: usize) -> Vec<&[T]> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, item) in items.iter().enumerate() {
        let n = size(item);
        if i > start && bytes + n > max {
            out.push(&items[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes += n;
    }
    if start < items.len() {
        out.push(&items[start..]);
    }
    out
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

    /// A new connection is open: the resubscribe messages, each with an id
    /// from `next_id` (none when there is nothing to subscribe), after
    /// telling every topic that was live on an earlier connection that it
    /// has a gap.
    ///
    /// Topics go in messages of at most about [`RESUBSCRIBE_BYTES`] of
    /// names: the server refuses a message over its `max_message_size`
    /// (64 KiB by default) as a whole, which would lose every subscription
    /// of a client that holds many long topic names.
    pub fn on_connected(&mut self, mut next_id: impl FnMut() -> u64) -> Vec<(u64, String)> {
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
        let mut out = Vec::new();
        for chunk in chunks(&topics, |(k, _)| k.len() + 3, RESUBSCRIBE_BYTES) {
            let id = next_id();
            let text = crate::protocol::resubscribe(
                chunk.iter().map(|(k, t)| (&***k, t.position.as_ref())),
                id,
            );
            out.push((id, text));
        }
        out
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
        let first = r.on_connected(|| 1);
        assert_eq!(
            first,
            [(
                1,
                r#"{"type":"subscribe","topics":["a","b"],"id":1}"#.to_owned()
            )]
        );
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
        assert_eq!(r.on_connected(|| 2).len(), 1);
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
        assert!(Registry::default().on_connected(|| 3).is_empty());
    }

    #[test]
    fn many_long_topics_are_resubscribed_in_several_messages() {
        let mut r = Registry::default();
        let names: Vec<String> = (0..1000)
            .map(|i| format!("{i:04}{}", "x".repeat(96)))
            .collect();
        for n in &names {
            let _ = r.add(n, false);
        }
        let mut id = 0;
        let msgs = r.on_connected(|| {
            id += 1;
            id
        });
        assert!(msgs.len() > 1);
        let mut seen = Vec::new();
        for (i, (mid, text)) in msgs.iter().enumerate() {
            assert_eq!(*mid, i as u64 + 1);
            assert!(text.len() < RESUBSCRIBE_BYTES + 1024, "{}", text.len());
            let v: serde_json::Value = serde_json::from_str(text).unwrap();
            assert_eq!(v["id"], *mid);
            seen.extend(
                v["topics"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|t| t.as_str().unwrap().to_owned()),
            );
        }
        assert_eq!(seen, names, "every topic once, in order");
    }

    #[test]
    fn chunks_respect_the_bound_and_keep_everything() {
        let items = [5, 5, 5, 20, 1, 1];
        let c = chunks(&items, |n| *n, 10);
        assert_eq!(c, [&[5, 5][..], &[5][..], &[20][..], &[1, 1][..]]);
        assert!(chunks(&[] as &[usize], |n| *n, 10).is_empty());
    }
}
