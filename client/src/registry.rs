//! The subscriptions a client holds: topic → local streams, each topic's last position, and what to send after a reconnect. No I/O.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

use crate::protocol::Stream;

/// Where a topic's stream stands: an offset within an epoch of the server's
/// per-topic history (topics the server keeps history for, its `--history`
/// patterns; other topics have no positions).
///
/// A client keeps, per topic, the position of the last message it received
/// (or the one a `subscribed` reply gave, before any message), and after a
/// reconnect asks the server to replay what followed it.
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
    /// The message's position, on a history topic.
    pub position: Option<Position>,
}

/// What a [`Subscription`](crate::Subscription) yields.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A message.
    Message(Message),
    /// The topic was subscribed again on a new connection (reported when
    /// the server's answer arrives, before any message of the new
    /// connection).
    Gap {
        /// `true`: the server replays exactly the messages published since
        /// `last`; they follow this event, in order, then the live stream.
        /// Nothing was lost. `false`: messages published while there was no
        /// connection may be missing (the topic keeps no history, the epoch
        /// changed, e.g. the server restarted, or the missed messages are
        /// no longer all kept); the stream goes on from `position`.
        recovered: bool,
        /// The position the client had before the gap (a history topic's
        /// last message, or its position when subscribed).
        last: Option<Position>,
        /// The topic's position the server reported in its answer (a
        /// history topic): its latest message when it was subscribed again.
        /// After `recovered: true`, the replayed messages end there.
        position: Option<Position>,
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
    /// Resubscribed after a gap: the next `subscribed` answer naming the
    /// topic reports it (once, even if several connections fail first).
    gap: bool,
}

/// What became of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Delivered {
    /// Handed to `subscribers` local subscribers. `skipped`: offsets
    /// missing right before it in the same epoch, messages of the open
    /// connection the server did not send (its `drop` slow-consumer policy
    /// skips messages for a subscriber too far behind).
    To { subscribers: usize, skipped: u64 },
    /// Dropped: its offset is not beyond the topic's position in the same
    /// epoch, so it was delivered already.
    Duplicate,
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

    /// Hands a message to every local subscriber of `topic`, unless its
    /// position shows it was delivered already.
    pub fn deliver(&mut self, topic: &str, data: &str, position: Option<Position>) -> Delivered {
        let Some(t) = self.topics.get_mut(topic) else {
            return Delivered::To {
                subscribers: 0,
                skipped: 0,
            };
        };
        let mut skipped = 0;
        if let (Some(p), Some(last)) = (&position, &t.position) {
            if p.epoch == last.epoch {
                if p.offset <= last.offset {
                    return Delivered::Duplicate;
                }
                skipped = p.offset - last.offset - 1;
            }
        }
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
        Delivered::To {
            subscribers: t.sinks.len(),
            skipped,
        }
    }

    /// A `subscribed` answer: takes the positions it gives and reports the
    /// gap of each topic resubscribed after one.
    ///
    /// A position is taken from the answer only where it is where the
    /// stream goes on from: not after `recovered: true` (the replayed
    /// messages follow, and advance the position), nor over one the client
    /// has in the same epoch (a topic subscribed again on the same
    /// connection; its messages advance the position).
    pub fn subscribed(&mut self, topics: &[String], streams: Option<&HashMap<String, Stream>>) {
        for topic in topics {
            let Some(t) = self.topics.get_mut(topic.as_str()) else {
                continue;
            };
            let stream = streams.and_then(|s| s.get(topic));
            let last = t.position.clone();
            if let Some(s) = stream {
                let take = match s.recovered {
                    Some(true) => false,
                    Some(false) => true,
                    None => t.position.as_ref().is_none_or(|p| p.epoch != s.epoch),
                };
                if take {
                    t.position = Some(s.position());
                }
            }
            if t.gap {
                t.gap = false;
                let gap = Event::Gap {
                    recovered: stream.is_some_and(|s| s.recovered == Some(true)),
                    last,
                    position: stream.map(Stream::position),
                };
                for (_, tx) in &t.sinks {
                    let _ = tx.send(gap.clone());
                }
            }
        }
    }

    /// The topic's position, if it has one.
    pub fn position(&self, topic: &str) -> Option<Position> {
        self.topics.get(topic).and_then(|t| t.position.clone())
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
    /// from `next_id` (none when there is nothing to subscribe), asking to
    /// recover every topic that has a position. Topics that were live on an
    /// earlier connection get their gap reported when the answer arrives
    /// ([`subscribed`](Self::subscribed)).
    ///
    /// Topics go in messages of at most about [`RESUBSCRIBE_BYTES`] of
    /// names and positions: the server refuses a message over its
    /// `max_message_size` (64 KiB by default) as a whole, which would lose
    /// every subscription of a client that holds many long topic names.
    pub fn on_connected(&mut self, mut next_id: impl FnMut() -> u64) -> Vec<(u64, String)> {
        for t in self.topics.values_mut() {
            t.gap |= t.was_live;
            t.was_live = true;
        }
        let mut topics: Vec<_> = self.topics.iter().collect();
        topics.sort_by(|a, b| a.0.cmp(b.0));
        let mut out = Vec::new();
        let size = |(k, t): &(&Arc<str>, &Topic)| {
            crate::protocol::resubscribe_size(k, t.position.as_ref())
        };
        for chunk in chunks(&topics, size, RESUBSCRIBE_BYTES) {
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

    fn pos(offset: u64, epoch: &str) -> Option<Position> {
        Some(Position {
            offset,
            epoch: epoch.into(),
        })
    }

    fn stream(offset: u64, epoch: &str, recovered: Option<bool>) -> HashMap<String, Stream> {
        let s = Stream {
            offset,
            epoch: epoch.into(),
            recovered,
        };
        HashMap::from([("b".to_owned(), s)])
    }

    fn to(subscribers: usize) -> Delivered {
        Delivered::To {
            subscribers,
            skipped: 0,
        }
    }

    fn data(ev: Event) -> String {
        match ev {
            Event::Message(m) => m.data.to_string(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn delivers_to_every_local_subscriber_and_forgets_the_last_one() {
        let mut r = Registry::default();
        let (_, a, mut ra, new_a) = r.add("t", false);
        let (_, b, mut rb, new_b) = r.add("t", false);
        assert!(new_a && !new_b);
        assert_eq!(r.deliver("t", "1", None), to(2));
        assert!(matches!(ra.try_recv(), Ok(Event::Message(m)) if &*m.data == "1"));
        assert!(matches!(rb.try_recv(), Ok(Event::Message(m)) if &*m.data == "1"));
        assert!(!r.remove("t", a));
        assert!(r.remove("t", b));
        assert_eq!(r.deliver("t", "2", None), to(0));
    }

    #[test]
    fn a_reconnect_resubscribes_everything_and_reports_the_gap_with_the_answer() {
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
        r.subscribed(&["a".into(), "b".into()], Some(&stream(3, "e", None)));
        assert!(rx.try_recv().is_err(), "no gap on the first connection");
        assert_eq!(r.position("b"), pos(3, "e"), "taken from the answer");
        assert_eq!(r.deliver("b", "x", pos(4, "e")), to(1));
        assert_eq!(data(rx.try_recv().unwrap()), "x");
        // Resubscribed from the last message's position.
        assert_eq!(
            r.on_connected(|| 2),
            [(
                2,
                r#"{"type":"subscribe","topics":["a","b"],"recover":{"b":{"offset":4,"epoch":"e"}},"id":2}"#
                    .to_owned()
            )]
        );
        assert!(rx.try_recv().is_err(), "the gap waits for the answer");
        // A connection lost before the answer: still one gap.
        let _ = r.on_connected(|| 3);
        r.subscribed(&["b".into()], Some(&stream(6, "e", Some(true))));
        assert_eq!(
            rx.try_recv().unwrap(),
            Event::Gap {
                recovered: true,
                last: pos(4, "e"),
                position: pos(6, "e"),
            }
        );
        assert!(rx.try_recv().is_err(), "one gap");
        // The replayed messages follow and advance the position.
        assert_eq!(r.position("b"), pos(4, "e"));
        assert_eq!(r.deliver("b", "5", pos(5, "e")), to(1));
        assert_eq!(r.deliver("b", "6", pos(6, "e")), to(1));
        assert_eq!(data(rx.try_recv().unwrap()), "5");
        assert_eq!(data(rx.try_recv().unwrap()), "6");
        assert!(Registry::default().on_connected(|| 4).is_empty());
    }

    #[test]
    fn an_unrecovered_gap_restarts_from_the_position_given() {
        let mut r = Registry::default();
        let (_, _, mut rx, _) = r.add("b", true);
        r.subscribed(&["b".into()], Some(&stream(0, "e", None)));
        assert_eq!(r.deliver("b", "1", pos(1, "e")), to(1));
        let _ = rx.try_recv();
        let _ = r.on_connected(|| 1);
        r.subscribed(&["b".into()], Some(&stream(9, "f", Some(false))));
        assert_eq!(
            rx.try_recv().unwrap(),
            Event::Gap {
                recovered: false,
                last: pos(1, "e"),
                position: pos(9, "f"),
            }
        );
        assert_eq!(r.position("b"), pos(9, "f"));
        assert_eq!(r.deliver("b", "10", pos(10, "f")), to(1));
        // A topic without history: a gap without positions.
        let (_, _, mut plain, _) = r.add("plain", true);
        let _ = r.on_connected(|| 2);
        r.subscribed(&["plain".into()], None);
        assert_eq!(
            plain.try_recv().unwrap(),
            Event::Gap {
                recovered: false,
                last: None,
                position: None,
            }
        );
    }

    #[test]
    fn duplicates_are_dropped_and_other_epochs_taken() {
        let mut r = Registry::default();
        let (_, _, mut rx, _) = r.add("b", true);
        assert_eq!(r.deliver("b", "1", pos(1, "e")), to(1));
        assert_eq!(r.deliver("b", "1", pos(1, "e")), Delivered::Duplicate);
        assert_eq!(r.deliver("b", "0", pos(0, "e")), Delivered::Duplicate);
        assert_eq!(r.deliver("b", "1'", pos(1, "f")), to(1));
        // Offsets missing on the open connection are counted.
        assert_eq!(
            r.deliver("b", "4", pos(4, "f")),
            Delivered::To {
                subscribers: 1,
                skipped: 2
            }
        );
        assert_eq!(data(rx.try_recv().unwrap()), "1");
        assert_eq!(data(rx.try_recv().unwrap()), "1'");
        assert_eq!(data(rx.try_recv().unwrap()), "4");
        assert!(rx.try_recv().is_err());
        // A subscribe answered again on the same connection does not move
        // the position back.
        r.subscribed(&["b".into()], Some(&stream(0, "f", None)));
        assert_eq!(r.position("b"), pos(4, "f"));
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
