//! The per-core topic registry: which local connections subscribe to which topics (no I/O).

use std::sync::Arc;

use rustc_hash::FxHashMap;
use slab::Slab;

/// A subscriber's key inside one core (the slab index of its connection).
pub type SubscriberKey = u32;

/// What a subscribe changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subscribed {
    /// The subscriber was added; `first` is true when it is the topic's first
    /// subscriber on this core (the core must now announce its interest).
    Added {
        /// The topic had no subscriber on this core before.
        first: bool,
    },
    /// The subscriber already had this topic.
    AlreadySubscribed,
}

/// What an unsubscribe changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unsubscribed {
    /// The subscriber was removed; `last` is true when no subscriber is left
    /// on this core (the core must withdraw its interest).
    Removed {
        /// The topic has no subscriber left on this core.
        last: bool,
    },
    /// The subscriber did not have this topic.
    NotSubscribed,
}

struct Topic {
    name: Arc<str>,
    subscribers: Vec<SubscriberKey>,
}

/// Subscribers with more topics than this get an index of their list;
/// below it a scan of at most this many contiguous pairs is as fast as a
/// hash lookup, and most connections hold a few topics, so they pay
/// nothing for the index.
const INDEXED_ABOVE: usize = 8;

/// One core's topics and their subscribers.
///
/// Subscribe, unsubscribe, membership checks and the removal of a closed
/// subscriber are O(1), in the number of the topic's subscribers
/// (swap-remove with back-pointers) and in the number of the subscriber's
/// topics (a scan of at most 8 pairs, or its index), so a
/// topic with 100k subscribers does not make churn quadratic and a
/// connection with 1,000 topics does not make each check cost 1,000.
/// Publishing borrows the subscriber list as a slice.
#[derive(Default)]
pub struct Registry {
    by_name: FxHashMap<Arc<str>, u32>,
    topics: Slab<Topic>,
    /// For each subscriber key: (topic index, position in that topic's list).
    /// Why here and not in the connection: the registry stays self-contained
    /// and testable without connections.
    subscriptions: Vec<Vec<(u32, u32)>>,
    /// For each subscriber with more than [`INDEXED_ABOVE`] topics: topic
    /// index → position in its list. Kept apart so that the many
    /// subscribers with few topics cost nothing more.
    index: FxHashMap<SubscriberKey, FxHashMap<u32, u32>>,
    /// (subscriber, topic) pairs, kept so reading it is O(1).
    pairs: usize,
}

/// The capacities of a registry's tables: what it holds in memory whatever
/// its current contents.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RegistryCapacity {
    /// Entries the topic-name index can hold without growing.
    pub names: usize,
    /// Slots of the topic table.
    pub topics: usize,
    /// Slots of the per-subscriber lists (indexed by subscriber key).
    pub subscribers: usize,
}

/// Whether a table of `len` entries with room for `cap` is worth shrinking:
/// a quarter full or less, so a table hovering around one size is not
/// reallocated over and over.
pub(crate) fn sparse(len: usize, cap: usize) -> bool {
    cap > 16 && len < cap / 4
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `sub` to `topic`.
    pub fn subscribe(&mut self, sub: SubscriberKey, topic: &str) -> Subscribed {
        let t = match self.by_name.get(topic) {
            Some(&t) => t,
            None => {
                let name: Arc<str> = Arc::from(topic);
                let t = self.topics.insert(Topic {
                    name: name.clone(),
                    subscribers: Vec::new(),
                }) as u32;
                self.by_name.insert(name, t);
                t
            }
        };
        self.list_mut(sub);
        if self.find(sub, t).is_some() {
            return Subscribed::AlreadySubscribed;
        }
        let subs = &mut self.topics[t as usize].subscribers;
        let pos = subs.len() as u32;
        subs.push(sub);
        let first = pos == 0;
        let list = &mut self.subscriptions[sub as usize];
        list.push((t, pos));
        let n = list.len();
        if n > INDEXED_ABOVE {
            let index = self.index.entry(sub).or_default();
            if index.is_empty() {
                index.extend(list.iter().enumerate().map(|(i, &(tt, _))| (tt, i as u32)));
            } else {
                index.insert(t, (n - 1) as u32);
            }
        }
        self.pairs += 1;
        Subscribed::Added { first }
    }

    /// Removes `sub` from `topic`.
    pub fn unsubscribe(&mut self, sub: SubscriberKey, topic: &str) -> Unsubscribed {
        let Some(&t) = self.by_name.get(topic) else {
            return Unsubscribed::NotSubscribed;
        };
        let Some(i) = self.find(sub, t) else {
            return Unsubscribed::NotSubscribed;
        };
        let list = &mut self.subscriptions[sub as usize];
        let (_, pos) = list.swap_remove(i);
        if list.len() <= INDEXED_ABOVE {
            self.index.remove(&sub);
        } else if let Some(index) = self.index.get_mut(&sub) {
            index.remove(&t);
            if let Some(&(moved, _)) = list.get(i) {
                index.insert(moved, i as u32);
            }
        }
        if list.is_empty() {
            // Give the memory back: most connections hold few topics.
            *list = Vec::new();
        } else if sparse(list.len(), list.capacity()) {
            list.shrink_to(list.len() * 2);
        }
        let last = self.detach(t, pos);
        Unsubscribed::Removed { last }
    }

    /// Removes every subscription of `sub` (its connection closed), calling
    /// `emptied` with each topic that has no local subscriber left.
    pub fn remove_subscriber(&mut self, sub: SubscriberKey, mut emptied: impl FnMut(&str)) {
        let Some(list) = self.subscriptions.get_mut(sub as usize) else {
            return;
        };
        let list = std::mem::take(list);
        self.index.remove(&sub);
        for (t, pos) in list {
            let name = self.topics[t as usize].name.clone();
            if self.detach(t, pos) {
                emptied(&name);
            }
        }
    }

    /// The local subscribers of `topic` (empty when none).
    pub fn subscribers(&self, topic: &str) -> &[SubscriberKey] {
        match self.by_name.get(topic) {
            Some(&t) => &self.topics[t as usize].subscribers,
            None => &[],
        }
    }

    /// Whether `sub` subscribes to `topic`.
    pub fn is_subscribed(&self, sub: SubscriberKey, topic: &str) -> bool {
        self.by_name
            .get(topic)
            .is_some_and(|&t| self.find(sub, t).is_some())
    }

    /// The topics `sub` subscribes to.
    pub fn topics_of(&self, sub: SubscriberKey) -> impl Iterator<Item = &str> + '_ {
        self.subscriptions
            .get(sub as usize)
            .into_iter()
            .flatten()
            .map(|&(t, _)| &*self.topics[t as usize].name)
    }

    /// How many topics `sub` subscribes to.
    pub fn subscription_count(&self, sub: SubscriberKey) -> usize {
        self.subscriptions.get(sub as usize).map_or(0, Vec::len)
    }

    /// Up to `n` topics with the most local subscribers, most first (ties by
    /// name). One pass over the topics with a bounded selection: O(topics).
    pub fn busiest(&self, n: usize) -> Vec<(Arc<str>, usize)> {
        if n == 0 {
            return Vec::new();
        }
        let mut all: Vec<(&Arc<str>, usize)> = self
            .topics
            .iter()
            .map(|(_, t)| (&t.name, t.subscribers.len()))
            .collect();
        let order = |a: &(&Arc<str>, usize), b: &(&Arc<str>, usize)| {
            b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0))
        };
        if all.len() > n {
            all.select_nth_unstable_by(n - 1, order);
            all.truncate(n);
        }
        all.sort_unstable_by(order);
        all.into_iter().map(|(name, c)| (name.clone(), c)).collect()
    }

    /// Number of topics with at least one local subscriber.
    pub fn topic_count(&self) -> usize {
        self.topics.len()
    }

    /// Total number of (subscriber, topic) pairs.
    pub fn subscription_total(&self) -> usize {
        self.pairs
    }

    /// The capacities of the registry's tables.
    pub fn capacity(&self) -> RegistryCapacity {
        RegistryCapacity {
            names: self.by_name.capacity(),
            topics: self.topics.capacity(),
            subscribers: self.subscriptions.capacity(),
        }
    }

    /// Gives back the memory of tables that emptied or are at most a
    /// quarter full, without moving any topic or subscriber key. Called
    /// periodically (once a second per core), not per operation: after a
    /// wave of connections closes, the registry returns to the size of
    /// what it still holds.
    pub fn shrink(&mut self) {
        if self.topics.is_empty() {
            if self.topics.capacity() > 0 {
                self.topics = Slab::new();
            }
        } else if sparse(self.topics.len(), self.topics.capacity()) {
            // Drops vacant slots past the last topic only: keys stay valid.
            self.topics.shrink_to_fit();
        }
        if sparse(self.by_name.len(), self.by_name.capacity()) || self.by_name.is_empty() {
            self.by_name.shrink_to_fit();
        }
        // Subscriber lists are indexed by connection key; trailing ones of
        // closed connections are empty and unallocated.
        while self.subscriptions.last().is_some_and(|l| l.capacity() == 0) {
            self.subscriptions.pop();
        }
        if self.subscriptions.is_empty()
            || sparse(self.subscriptions.len(), self.subscriptions.capacity())
        {
            self.subscriptions.shrink_to_fit();
        }
        if self.index.is_empty() || sparse(self.index.len(), self.index.capacity()) {
            self.index.shrink_to_fit();
        }
    }

    /// The position of topic `t` in `sub`'s list: a short scan, or the
    /// subscriber's index when it holds many topics.
    fn find(&self, sub: SubscriberKey, t: u32) -> Option<usize> {
        let list = self.subscriptions.get(sub as usize)?;
        if list.len() > INDEXED_ABOVE {
            self.index
                .get(&sub)
                .and_then(|m| m.get(&t))
                .map(|&i| i as usize)
        } else {
            list.iter().position(|&(tt, _)| tt == t)
        }
    }

    fn list_mut(&mut self, sub: SubscriberKey) -> &mut Vec<(u32, u32)> {
        let i = sub as usize;
        if self.subscriptions.len() <= i {
            self.subscriptions.resize_with(i + 1, Vec::new);
        }
        &mut self.subscriptions[i]
    }

    /// Removes the entry at `pos` of topic `t`, fixing the back-pointer of
    /// the subscriber moved into its place. Returns whether `t` is now empty
    /// (and was dropped).
    fn detach(&mut self, t: u32, pos: u32) -> bool {
        let topic = &mut self.topics[t as usize];
        topic.subscribers.swap_remove(pos as usize);
        self.pairs -= 1;
        if sparse(topic.subscribers.len(), topic.subscribers.capacity()) {
            // A topic that once had many subscribers and now has few.
            topic.subscribers.shrink_to(topic.subscribers.len() * 2);
        }
        let moved = topic.subscribers.get(pos as usize).copied();
        let empty = topic.subscribers.is_empty();
        if let Some(moved) = moved {
            let i = self
                .find(moved, t)
                .expect("registry back-pointer for a moved subscriber");
            self.subscriptions[moved as usize][i].1 = pos;
        }
        if empty {
            let topic = self.topics.remove(t as usize);
            self.by_name.remove(&topic.name);
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busiest_ranks_by_subscribers_then_name_and_stops_at_n() {
        let mut r = Registry::new();
        for (topic, subs) in [("b", 3), ("a", 3), ("c", 5), ("d", 1), ("e", 2)] {
            for s in 0..subs {
                r.subscribe(s, topic);
            }
        }
        let names = |v: Vec<(Arc<str>, usize)>| {
            v.into_iter()
                .map(|(t, c)| format!("{t}{c}"))
                .collect::<Vec<_>>()
        };
        assert_eq!(names(r.busiest(3)), ["c5", "a3", "b3"]);
        assert_eq!(names(r.busiest(10)), ["c5", "a3", "b3", "e2", "d1"]);
        assert!(r.busiest(0).is_empty());
        r.remove_subscriber(0, |_| {});
        r.remove_subscriber(1, |_| {});
        assert_eq!(names(r.busiest(2)), ["c3", "a1"]);
    }

    #[test]
    fn first_and_last_subscriber_are_reported() {
        let mut r = Registry::new();
        assert_eq!(r.subscribe(1, "a"), Subscribed::Added { first: true });
        assert_eq!(r.subscribe(2, "a"), Subscribed::Added { first: false });
        assert_eq!(r.subscribe(2, "a"), Subscribed::AlreadySubscribed);
        assert_eq!(r.unsubscribe(1, "a"), Unsubscribed::Removed { last: false });
        assert_eq!(r.unsubscribe(1, "a"), Unsubscribed::NotSubscribed);
        assert_eq!(r.unsubscribe(2, "a"), Unsubscribed::Removed { last: true });
        assert_eq!(r.topic_count(), 0);
        assert!(r.subscribers("a").is_empty());
    }

    #[test]
    fn swap_remove_keeps_back_pointers_right() {
        let mut r = Registry::new();
        for s in 0..100 {
            r.subscribe(s, "t");
            r.subscribe(s, &format!("own{s}"));
        }
        // Remove from the middle repeatedly; every remaining subscriber must
        // still be removable, which needs correct positions.
        for s in (0..100).step_by(3) {
            assert_eq!(r.unsubscribe(s, "t"), Unsubscribed::Removed { last: false });
        }
        let mut left: Vec<u32> = r.subscribers("t").to_vec();
        left.sort();
        let expect: Vec<u32> = (0..100).filter(|s| s % 3 != 0).collect();
        assert_eq!(left, expect);
        for s in expect {
            assert!(r.is_subscribed(s, "t"));
            r.remove_subscriber(s, |_| {});
        }
        assert!(r.subscribers("t").is_empty());
        assert_eq!(r.subscription_total(), 34); // the own* topics of 0,3,..,99
    }

    #[test]
    fn remove_subscriber_reports_emptied_topics() {
        let mut r = Registry::new();
        r.subscribe(7, "x");
        r.subscribe(7, "y");
        r.subscribe(8, "y");
        let mut emptied = Vec::new();
        r.remove_subscriber(7, |t| emptied.push(t.to_string()));
        assert_eq!(emptied, vec!["x".to_string()]);
        assert_eq!(r.subscribers("y"), &[8]);
        assert_eq!(r.subscription_count(7), 0);
        assert_eq!(r.topics_of(8).collect::<Vec<_>>(), vec!["y"]);
    }

    #[test]
    fn shrinks_back_after_many_topics_come_and_go() {
        let mut r = Registry::new();
        r.shrink();
        let empty = r.capacity();
        for s in 0..2_000u32 {
            for k in 0..4 {
                r.subscribe(s, &format!("t{}", (s * 7 + k * 131) % 5_000));
            }
        }
        let full = r.capacity();
        assert!(full.names >= r.topic_count() && full.subscribers >= 2_000);
        r.shrink(); // nothing to give back while full
        assert_eq!(r.capacity(), full);
        for s in 0..2_000u32 {
            if s % 2 == 0 {
                r.remove_subscriber(s, |_| {});
            } else {
                let topics: Vec<String> = r.topics_of(s).map(str::to_owned).collect();
                for t in topics {
                    r.unsubscribe(s, &t);
                }
            }
        }
        assert_eq!((r.topic_count(), r.subscription_total()), (0, 0));
        r.shrink();
        assert_eq!(r.capacity(), empty);
    }

    #[test]
    fn shrinking_keeps_every_remaining_subscription_reachable() {
        let mut r = Registry::new();
        for s in 0..1_000u32 {
            r.subscribe(s, &format!("t{s}"));
            r.subscribe(s, "all");
        }
        // Keep a few subscribers spread over the key space, one at the top.
        let keep = [3u32, 500, 999];
        for s in 0..1_000u32 {
            if !keep.contains(&s) {
                r.remove_subscriber(s, |_| {});
            }
        }
        let before = r.capacity();
        r.shrink();
        let after = r.capacity();
        assert!(after.names < before.names, "{before:?} -> {after:?}");
        assert_eq!(r.subscription_total(), 6);
        let mut all = r.subscribers("all").to_vec();
        all.sort();
        assert_eq!(all, keep);
        for s in keep {
            assert_eq!(r.subscribers(&format!("t{s}")), &[s]);
            assert!(r.is_subscribed(s, "all"));
            assert_eq!(
                r.unsubscribe(s, &format!("t{s}")),
                Unsubscribed::Removed { last: true }
            );
        }
        // New topics after a shrink get fresh, distinct slots.
        assert_eq!(r.subscribe(7, "new"), Subscribed::Added { first: true });
        assert_eq!(r.subscribers("new"), &[7]);
        assert_eq!(r.subscribers("all").len(), 3);
    }

    /// Subscribers crossing the index threshold both ways, with topics
    /// shared among them so that removals move entries in other
    /// subscribers' lists: every answer matches a plain model.
    #[test]
    fn membership_stays_right_across_the_index_threshold() {
        use std::collections::BTreeSet;
        let mut r = Registry::new();
        let mut model: Vec<BTreeSet<u32>> = vec![BTreeSet::new(); 6];
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for step in 0..20_000u32 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let sub = (x % 6) as u32;
            let topic = ((x >> 8) % 24) as u32;
            let name = format!("t{topic}");
            if (x >> 20).is_multiple_of(3) {
                let removed = r.unsubscribe(sub, &name) != Unsubscribed::NotSubscribed;
                assert_eq!(removed, model[sub as usize].remove(&topic), "step {step}");
            } else {
                let added = r.subscribe(sub, &name) != Subscribed::AlreadySubscribed;
                assert_eq!(added, model[sub as usize].insert(topic), "step {step}");
            }
            if step.is_multiple_of(997) {
                r.remove_subscriber(5, |_| {});
                model[5].clear();
            }
            for (s, topics) in model.iter().enumerate() {
                assert_eq!(r.subscription_count(s as u32), topics.len());
                for t in 0..24 {
                    assert_eq!(
                        r.is_subscribed(s as u32, &format!("t{t}")),
                        topics.contains(&t),
                        "step {step}: subscriber {s}, topic {t}"
                    );
                }
            }
        }
        for (s, topics) in model.iter().enumerate() {
            let mut held: Vec<&str> = r.topics_of(s as u32).collect();
            held.sort_unstable();
            let mut want: Vec<String> = topics.iter().map(|t| format!("t{t}")).collect();
            want.sort_unstable();
            assert_eq!(held, want);
        }
    }

    /// Only subscribers with many topics get an index, and it goes when
    /// they drop back: a connection with a few topics costs what it did.
    #[test]
    fn only_subscribers_with_many_topics_are_indexed() {
        let mut r = Registry::new();
        for t in 0..4 {
            r.subscribe(1, &format!("t{t}"));
        }
        for t in 0..1_000 {
            r.subscribe(2, &format!("t{t}"));
        }
        assert_eq!(r.index.len(), 1);
        assert_eq!(r.index[&2].len(), 1_000);
        assert!(r.is_subscribed(2, "t0") && r.is_subscribed(2, "t999"));
        for t in 0..1_000 - INDEXED_ABOVE {
            r.unsubscribe(2, &format!("t{t}"));
        }
        assert!(r.index.is_empty());
        assert!(r.is_subscribed(2, "t999") && !r.is_subscribed(2, "t0"));
        r.remove_subscriber(2, |_| {});
        r.remove_subscriber(1, |_| {});
        r.shrink();
        assert_eq!(r.index.capacity(), 0);
    }

    #[test]
    fn a_topic_that_lost_most_subscribers_gives_back_its_list() {
        let mut r = Registry::new();
        for s in 0..1_000 {
            r.subscribe(s, "big");
        }
        for s in 10..1_000 {
            r.unsubscribe(s, "big");
        }
        let t = r.by_name["big"];
        assert!(r.topics[t as usize].subscribers.capacity() < 100);
        let mut left = r.subscribers("big").to_vec();
        left.sort();
        assert_eq!(left, (0..10).collect::<Vec<_>>());
    }
}
