//! One core's topics: its registry and the interest bits it holds for them in the shared table (no I/O).

use std::sync::Arc;

use rustc_hash::FxHashMap;

use super::registry::{
    sparse, Registry, RegistryCapacity, Subscribed, SubscriberKey, Unsubscribed,
};
use super::InterestTable;
use crate::config::NodeLink;

/// A core's registry plus the reference counts that keep its bit in the
/// interest table right: the bit of a bucket is set while at least one
/// local topic of that bucket has a subscriber.
pub(crate) struct CoreTopics {
    core: usize,
    interest: Arc<InterestTable>,
    registry: Registry,
    /// Local topics per interest bucket.
    bucket_refs: FxHashMap<usize, u32>,
    /// Told when a topic gains its first or loses its last local
    /// subscriber, for interest beyond this node.
    link: Option<Arc<dyn NodeLink>>,
}

impl CoreTopics {
    /// Core `core`'s (empty) topics.
    pub(crate) fn new(
        core: usize,
        interest: Arc<InterestTable>,
        link: Option<Arc<dyn NodeLink>>,
    ) -> Self {
        Self {
            core,
            interest,
            registry: Registry::new(),
            bucket_refs: FxHashMap::default(),
            link,
        }
    }

    /// The local subscribers of `topic`.
    pub(crate) fn subscribers(&self, topic: &str) -> &[SubscriberKey] {
        self.registry.subscribers(topic)
    }

    /// The registry, read-only.
    pub(crate) fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Subscribes `sub` to `topic`; false if it already was.
    pub(crate) fn subscribe(&mut self, sub: SubscriberKey, topic: &str) -> bool {
        match self.registry.subscribe(sub, topic) {
            Subscribed::Added { first } => {
                if first {
                    let b = self.interest.bucket(topic);
                    let n = self.bucket_refs.entry(b).or_insert(0);
                    *n += 1;
                    if *n == 1 {
                        self.interest.set(b, self.core);
                    }
                    if let Some(link) = &self.link {
                        link.interest(self.core, topic, true);
                    }
                }
                true
            }
            Subscribed::AlreadySubscribed => false,
        }
    }

    /// Unsubscribes `sub` from `topic`; false if it was not subscribed.
    pub(crate) fn unsubscribe(&mut self, sub: SubscriberKey, topic: &str) -> bool {
        match self.registry.unsubscribe(sub, topic) {
            Unsubscribed::Removed { last } => {
                if last {
                    self.topic_emptied(topic);
                }
                true
            }
            Unsubscribed::NotSubscribed => false,
        }
    }

    /// Removes every subscription of `sub` (it closed).
    pub(crate) fn remove_subscriber(&mut self, sub: SubscriberKey) {
        let mut emptied = Vec::new();
        self.registry
            .remove_subscriber(sub, |t| emptied.push(t.to_owned()));
        for t in emptied {
            self.topic_emptied(&t);
        }
    }

    fn topic_emptied(&mut self, topic: &str) {
        if let Some(link) = &self.link {
            link.interest(self.core, topic, false);
        }
        let b = self.interest.bucket(topic);
        if let Some(n) = self.bucket_refs.get_mut(&b) {
            *n -= 1;
            if *n == 0 {
                self.bucket_refs.remove(&b);
                self.interest.clear(b, self.core);
            }
        }
    }

    /// Holds this core's interest bit for `topic`'s bucket without a
    /// subscriber (a join waiting for its home core's answer), so every
    /// publication of `topic` reaches this core meanwhile. Undone by
    /// [`CoreTopics::unpin`].
    pub(crate) fn pin(&mut self, topic: &str) {
        // Beyond this node too; balanced by the `false` that unpin's
        // `topic_emptied` tells the link.
        if let Some(link) = &self.link {
            link.interest(self.core, topic, true);
        }
        let b = self.interest.bucket(topic);
        let n = self.bucket_refs.entry(b).or_insert(0);
        *n += 1;
        if *n == 1 {
            self.interest.set(b, self.core);
        }
    }

    /// Releases a [`CoreTopics::pin`].
    pub(crate) fn unpin(&mut self, topic: &str) {
        self.topic_emptied(topic);
    }

    /// Gives back the memory of tables that emptied or are mostly empty.
    pub(crate) fn shrink(&mut self) {
        self.registry.shrink();
        let refs = &mut self.bucket_refs;
        if refs.is_empty() || sparse(refs.len(), refs.capacity()) {
            refs.shrink_to_fit();
        }
    }

    /// The registry's table capacities.
    pub(crate) fn capacity(&self) -> RegistryCapacity {
        self.registry.capacity()
    }

    /// Entries the interest reference counts can hold without growing.
    pub(crate) fn refs_capacity(&self) -> usize {
        self.bucket_refs.capacity()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use bytes::Bytes;

    use super::*;

    /// Records what a core tells the link.
    #[derive(Debug, Default)]
    struct Recorder(Mutex<Vec<(usize, String, bool)>>);

    impl NodeLink for Recorder {
        fn interest(&self, core: usize, topic: &str, interested: bool) {
            self.0
                .lock()
                .unwrap()
                .push((core, topic.to_owned(), interested));
        }
        fn publish(&self, _topic: &str, _frame: &Bytes) {}
    }

    #[test]
    fn the_link_hears_of_first_and_last_subscribers_only() {
        let rec = Arc::new(Recorder::default());
        let mut t = CoreTopics::new(3, Arc::new(InterestTable::new(4, 16)), Some(rec.clone()));
        assert!(t.subscribe(1, "a b"));
        assert!(t.subscribe(2, "a b"));
        assert!(!t.subscribe(2, "a b"));
        assert!(t.subscribe(2, "c"));
        assert!(t.unsubscribe(1, "a b"));
        t.remove_subscriber(2);
        // A join's pin counts as interest, and its unpin takes it back.
        t.pin("d");
        t.unpin("d");
        let mut got = rec.0.lock().unwrap().clone();
        // Subscriber 2's two topics in the registry's order.
        got[2..4].sort();
        assert_eq!(
            got,
            vec![
                (3, "a b".to_owned(), true),
                (3, "c".to_owned(), true),
                (3, "a b".to_owned(), false),
                (3, "c".to_owned(), false),
                (3, "d".to_owned(), true),
                (3, "d".to_owned(), false),
            ]
        );
    }
}
