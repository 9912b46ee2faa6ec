//! A subscriber core's joins in progress: subscriptions to history topics waiting for their home cores' answers, and the live publications that arrive meanwhile.

use std::sync::Arc;

use bytes::Bytes;
use rustc_hash::FxHashMap;

use super::{Catchup, StreamJoin};

struct TopicJoin {
    topic: Arc<str>,
    /// Live publications for it are held back (dropped before the answer,
    /// kept after it) until the join completes. Not for a topic the
    /// connection already subscribed to when it asked for its position.
    gated: bool,
    answer: Option<Catchup>,
    /// Live publications that arrived after the answer.
    live: Vec<Bytes>,
}

struct PendingJoin {
    seq: u64,
    key: u32,
    gen: u32,
    token: u64,
    topics: Vec<TopicJoin>,
    remaining: usize,
    /// Bytes held in `live` over the topics.
    held: usize,
}

/// A join whose every topic was answered, ready to be completed.
pub(crate) struct Completed {
    pub(crate) key: u32,
    pub(crate) gen: u32,
    pub(crate) token: u64,
    /// Per topic, in the order asked: whether it was gated (to subscribe
    /// now) and how it started.
    pub(crate) topics: Vec<(bool, StreamJoin)>,
    /// Per topic: the history to send, then the live publications held.
    pub(crate) frames: Vec<Vec<Bytes>>,
}

/// What happened to a live publication offered to the joins.
pub(crate) struct Overflowed {
    pub(crate) key: u32,
    pub(crate) gen: u32,
}

/// The joins in progress on one core.
#[derive(Default)]
pub(crate) struct Joins {
    pending: Vec<PendingJoin>,
    /// Gated topics of the pending joins, counted.
    watched: FxHashMap<Arc<str>, u32>,
    next_seq: u64,
}

impl Joins {
    pub(crate) fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Starts a join of connection (`key`, `gen`) to `topics` (each with
    /// whether it is gated); returns its sequence number.
    pub(crate) fn start(
        &mut self,
        key: u32,
        gen: u32,
        token: u64,
        topics: Vec<(Arc<str>, bool)>,
    ) -> u64 {
        self.next_seq += 1;
        let seq = self.next_seq;
        for (t, gated) in &topics {
            if *gated {
                *self.watched.entry(t.clone()).or_insert(0) += 1;
            }
        }
        let remaining = topics.len();
        self.pending.push(PendingJoin {
            seq,
            key,
            gen,
            token,
            topics: topics
                .into_iter()
                .map(|(topic, gated)| TopicJoin {
                    topic,
                    gated,
                    answer: None,
                    live: Vec::new(),
                })
                .collect(),
            remaining,
            held: 0,
        });
        seq
    }

    /// The home core answered topic `index` of join `seq`. Returns the
    /// join when that was its last topic.
    pub(crate) fn answer(&mut self, seq: u64, index: usize, c: Catchup) -> Option<Completed> {
        let i = self.pending.iter().position(|p| p.seq == seq)?;
        let p = &mut self.pending[i];
        let t = p.topics.get_mut(index)?;
        if t.answer.is_some() {
            return None;
        }
        t.answer = Some(c);
        p.remaining -= 1;
        if p.remaining > 0 {
            return None;
        }
        let p = self.pending.swap_remove(i);
        self.unwatch(&p);
        let mut topics = Vec::with_capacity(p.topics.len());
        let mut frames = Vec::with_capacity(p.topics.len());
        for t in p.topics {
            let c = t.answer.expect("every topic answered");
            topics.push((
                t.gated,
                StreamJoin {
                    topic: t.topic.to_string(),
                    position: c.position,
                    recovered: c.recovered,
                    replayed: c.frames.len(),
                },
            ));
            let mut f = c.frames;
            f.extend(t.live);
            frames.push(f);
        }
        Some(Completed {
            key: p.key,
            gen: p.gen,
            token: p.token,
            topics,
            frames,
        })
    }

    /// A live publication of `topic` reached this core: held for the
    /// joins answered for it, dropped for the others (their answer will
    /// include it or it predates what they asked for). A join that would
    /// hold more than `limit` bytes is reported: its connection reads too
    /// slowly to catch up, and the caller closes it (and [`forget`]s it).
    ///
    /// [`forget`]: Joins::forget
    pub(crate) fn on_live(&mut self, topic: &str, frame: &Bytes, limit: usize) -> Vec<Overflowed> {
        let mut over = Vec::new();
        if !self.watched.contains_key(topic) {
            return over;
        }
        for p in &mut self.pending {
            for t in &mut p.topics {
                if t.gated && t.answer.is_some() && &*t.topic == topic {
                    t.live.push(frame.clone());
                    p.held += frame.len();
                }
            }
            if p.held > limit {
                over.push(Overflowed {
                    key: p.key,
                    gen: p.gen,
                });
            }
        }
        over
    }

    /// Connection `key` is gone: its joins go, and the gated topics they
    /// held are returned (their interest pins must be released).
    pub(crate) fn forget(&mut self, key: u32) -> Vec<Arc<str>> {
        let mut released = Vec::new();
        let mut i = 0;
        while i < self.pending.len() {
            if self.pending[i].key == key {
                let p = self.pending.swap_remove(i);
                self.unwatch(&p);
                released.extend(p.topics.into_iter().filter(|t| t.gated).map(|t| t.topic));
            } else {
                i += 1;
            }
        }
        released
    }

    fn unwatch(&mut self, p: &PendingJoin) {
        for t in p.topics.iter().filter(|t| t.gated) {
            if let Some(n) = self.watched.get_mut(&t.topic) {
                *n -= 1;
                if *n == 0 {
                    self.watched.remove(&t.topic);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::streams::StreamPosition;

    fn catchup(offset: u64, frames: &[&'static str]) -> Catchup {
        Catchup {
            position: StreamPosition {
                offset,
                epoch: Arc::from("e"),
            },
            recovered: true,
            frames: frames
                .iter()
                .map(|f| Bytes::from_static(f.as_bytes()))
                .collect(),
        }
    }

    #[test]
    fn live_publications_are_dropped_before_the_answer_and_held_after_it() {
        let mut j = Joins::default();
        let seq = j.start(
            7,
            1,
            42,
            vec![(Arc::from("a"), true), (Arc::from("b"), true)],
        );
        // Before a's answer: included in it, or older than asked.
        assert!(j
            .on_live("a", &Bytes::from_static(b"a3"), 1 << 20)
            .is_empty());
        assert!(j.answer(seq, 0, catchup(3, &["a2", "a3"])).is_none());
        j.on_live("a", &Bytes::from_static(b"a4"), 1 << 20);
        j.on_live("b", &Bytes::from_static(b"b1"), 1 << 20);
        j.on_live("other", &Bytes::from_static(b"x"), 1 << 20);
        let done = j.answer(seq, 1, catchup(1, &[])).expect("complete");
        assert_eq!((done.key, done.gen, done.token), (7, 1, 42));
        assert_eq!(done.frames, vec![vec!["a2", "a3", "a4"], vec![]]);
        assert_eq!(done.topics[0].1.replayed, 2);
        assert!(j.is_empty() && j.watched.is_empty());
    }

    #[test]
    fn a_join_holding_too_much_is_given_up_and_a_closed_one_releases_its_topics() {
        let mut j = Joins::default();
        let seq = j.start(
            1,
            1,
            0,
            vec![(Arc::from("a"), true), (Arc::from("b"), true)],
        );
        j.answer(seq, 0, catchup(0, &[]));
        let over = j.on_live("a", &Bytes::from(vec![0; 100]), 50);
        assert_eq!(over.len(), 1);
        assert_eq!(j.forget(over[0].key).len(), 2);
        assert!(j.is_empty());
        j.start(
            2,
            1,
            0,
            vec![(Arc::from("c"), true), (Arc::from("d"), false)],
        );
        assert_eq!(j.forget(2), vec![Arc::<str>::from("c")]);
        assert!(j.watched.is_empty());
    }
}
