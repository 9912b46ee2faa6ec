//! The node's interest in topics (summed over its cores, with a linger before letting go), the sequence numbers it stamps on its publications, and the gaps it counts in other nodes' (no I/O).

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Which topics this node wants from the broker.
///
/// Each core reports its first and last local subscriber of a topic; the
/// node wants a topic while any core does. When the last core lets go the
/// topic lingers (default 1 s) before the broker is told, so a client that
/// leaves and comes back costs the broker nothing.
#[derive(Debug, Default)]
pub(crate) struct NodeInterest {
    topics: HashMap<Box<str>, Topic>,
}

#[derive(Debug)]
struct Topic {
    /// Cores with a local subscriber.
    cores: u32,
    /// When the last core let go (lingering), else `None`.
    empty_since: Option<Instant>,
}

/// What a change of a core's interest asks of the broker.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Change {
    /// The node did not want the topic and now does: subscribe.
    Subscribe,
    /// Nothing to tell the broker (or not yet: lingering).
    None,
}

impl NodeInterest {
    /// A core gained (`on`) or lost its interest in `topic`.
    pub(crate) fn change(&mut self, topic: &str, on: bool, now: Instant) -> Change {
        match (self.topics.get_mut(topic), on) {
            (Some(t), true) => {
                t.cores += 1;
                t.empty_since = None;
                Change::None
            }
            (None, true) => {
                self.topics.insert(
                    topic.into(),
                    Topic {
                        cores: 1,
                        empty_since: None,
                    },
                );
                Change::Subscribe
            }
            (Some(t), false) => {
                t.cores = t.cores.saturating_sub(1);
                if t.cores == 0 && t.empty_since.is_none() {
                    t.empty_since = Some(now);
                }
                Change::None
            }
            // A loss without a gain cannot happen (each core reports in
            // order); nothing to undo.
            (None, false) => Change::None,
        }
    }

    /// Topics that lingered at least `linger` without a core: forgotten,
    /// and returned so the broker can be told.
    pub(crate) fn expired(&mut self, now: Instant, linger: Duration) -> Vec<Box<str>> {
        let mut gone = Vec::new();
        self.topics.retain(|name, t| match t.empty_since {
            Some(since) if now.duration_since(since) >= linger => {
                gone.push(name.clone());
                false
            }
            _ => true,
        });
        gone
    }

    /// Whether the node holds (or lingers on) a subscription to `topic`.
    pub(crate) fn wants(&self, topic: &str) -> bool {
        self.topics.contains_key(topic)
    }

    /// Every topic the node holds a subscription to, lingering ones too
    /// (what to subscribe again after a reconnect).
    pub(crate) fn topics(&self) -> impl Iterator<Item = &str> {
        self.topics.keys().map(|k| &**k)
    }

    /// Number of topics held.
    pub(crate) fn len(&self) -> usize {
        self.topics.len()
    }
}

/// Per-topic sequence numbers this node stamps on its publications,
/// counting from one. A topic not published for `idle` is forgotten (and
/// starts again at one), which receivers read as a restart, not a gap.
#[derive(Debug)]
pub(crate) struct Sequencer {
    next: HashMap<Box<str>, (u64, Instant)>,
    idle: Duration,
    swept: Instant,
}

impl Sequencer {
    pub(crate) fn new(idle: Duration, now: Instant) -> Self {
        Self {
            next: HashMap::new(),
            idle,
            swept: now,
        }
    }

    /// The next sequence number of `topic`.
    pub(crate) fn next(&mut self, topic: &str, now: Instant) -> u64 {
        if now.duration_since(self.swept) >= self.idle {
            let idle = self.idle;
            self.next
                .retain(|_, (_, at)| now.duration_since(*at) < idle);
            self.swept = now;
        }
        match self.next.get_mut(topic) {
            Some((n, at)) => {
                *n += 1;
                *at = now;
                *n
            }
            None => {
                self.next.insert(topic.into(), (1, now));
                1
            }
        }
    }
}

/// The last sequence number seen per (origin, topic), to count the
/// publications that never arrived.
#[derive(Debug)]
pub(crate) struct Gaps {
    /// Topic, then origin: the last sequence number and when it came.
    last: HashMap<Box<str>, HashMap<u64, (u64, Instant)>>,
    idle: Duration,
    swept: Instant,
}

impl Gaps {
    /// Entries idle for `idle` are forgotten; it should be shorter than
    /// the senders' [`Sequencer`] idle time, so a sender that started a
    /// topic again at 1 meets no stale entry.
    pub(crate) fn new(idle: Duration, now: Instant) -> Self {
        Self {
            last: HashMap::new(),
            idle,
            swept: now,
        }
    }

    /// Records `seq` from `origin` on `topic`; returns how many
    /// publications were skipped since the last one seen (0 for the first
    /// seen, and for a sender that started again).
    pub(crate) fn record(&mut self, origin: u64, topic: &str, seq: u64, now: Instant) -> u64 {
        if now.duration_since(self.swept) >= self.idle {
            let idle = self.idle;
            self.last.retain(|_, origins| {
                origins.retain(|_, (_, at)| now.duration_since(*at) < idle);
                !origins.is_empty()
            });
            self.swept = now;
        }
        let origins = match self.last.get_mut(topic) {
            Some(o) => o,
            None => self.last.entry(topic.into()).or_default(),
        };
        match origins.get_mut(&origin) {
            Some((last, at)) => {
                let skipped = if seq > *last { seq - *last - 1 } else { 0 };
                *last = seq;
                *at = now;
                skipped
            }
            None => {
                origins.insert(origin, (seq, now));
                0
            }
        }
    }

    /// Forgets what was seen on `topic` (the node let go of it: what is
    /// missed while not subscribed is not a gap).
    pub(crate) fn forget(&mut self, topic: &str) {
        self.last.remove(topic);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interest_is_summed_over_cores_and_lingers() {
        let t0 = Instant::now();
        let linger = Duration::from_secs(1);
        let mut n = NodeInterest::default();
        assert_eq!(n.change("a", true, t0), Change::Subscribe);
        assert_eq!(n.change("a", true, t0), Change::None);
        assert_eq!(n.change("a", false, t0), Change::None);
        assert_eq!(n.change("a", false, t0), Change::None);
        assert!(n.wants("a"));
        assert!(n
            .expired(t0 + Duration::from_millis(999), linger)
            .is_empty());
        // Back within the linger: no new subscribe, and the clock restarts.
        assert_eq!(n.change("a", true, t0), Change::None);
        assert!(n.expired(t0 + linger * 5, linger).is_empty());
        assert_eq!(n.change("a", false, t0 + linger * 5), Change::None);
        assert_eq!(
            n.expired(t0 + linger * 6, linger),
            vec![Box::<str>::from("a")]
        );
        assert!(!n.wants("a"));
        assert_eq!(n.len(), 0);
        assert_eq!(n.change("a", false, t0), Change::None);
        assert_eq!(n.change("a", true, t0), Change::Subscribe);
    }

    #[test]
    fn sequences_and_gaps() {
        let t0 = Instant::now();
        let mut s = Sequencer::new(Duration::from_secs(300), t0);
        assert_eq!(s.next("a", t0), 1);
        assert_eq!(s.next("a", t0), 2);
        assert_eq!(s.next("b", t0), 1);
        // Forgotten after idling: starts again.
        assert_eq!(s.next("b", t0 + Duration::from_secs(301)), 1);
        assert_eq!(s.next("a", t0 + Duration::from_secs(301)), 1);

        let mut g = Gaps::new(Duration::from_secs(120), t0);
        assert_eq!(g.record(1, "a", 5, t0), 0);
        assert_eq!(g.record(1, "a", 6, t0), 0);
        assert_eq!(g.record(1, "a", 10, t0), 3);
        assert_eq!(g.record(2, "a", 10, t0), 0);
        // A sender that started again is not a gap.
        assert_eq!(g.record(1, "a", 1, t0), 0);
        assert_eq!(g.record(1, "a", 2, t0), 0);
        g.forget("a");
        assert_eq!(g.record(1, "a", 9, t0), 0);
        assert_eq!(g.record(1, "a", 11, t0 + Duration::from_secs(200)), 0);
    }
}
