//! Which cores have subscribers for which topics, readable from any thread without a lock.

use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

/// A table of interest bitmasks, one bit per core, indexed by a hash bucket
/// of the topic name.
///
/// A core sets its bit in a bucket when its first local subscription to a
/// topic of that bucket appears, and clears it when the last goes, before it
/// acknowledges the (un)subscribe. A publisher on any thread reads the bucket
/// with one atomic load and sends to exactly the cores whose bit is set: no
/// lock, no broadcast, and a subscription is visible to every publisher as
/// soon as its acknowledgement could have been observed.
///
/// Two topics in one bucket share their bits, so a core may occasionally be
/// sent a topic it has no subscriber for (it then drops it, counted in
/// `fanout_misses`); with the default 65,536 buckets that needs thousands of
/// concurrently subscribed topics per core before it matters.
pub struct InterestTable {
    words_per_bucket: usize,
    mask: usize,
    bits: Box<[AtomicU64]>,
}

impl InterestTable {
    /// A table for `cores` cores with `buckets` buckets (rounded up to a power
    /// of two).
    pub fn new(cores: usize, buckets: usize) -> Self {
        let buckets = buckets.max(1).next_power_of_two();
        let words_per_bucket = cores.max(1).div_ceil(64);
        let bits = (0..buckets * words_per_bucket)
            .map(|_| AtomicU64::new(0))
            .collect();
        Self {
            words_per_bucket,
            mask: buckets - 1,
            bits,
        }
    }

    /// The bucket of `topic`. The hash has a fixed seed so every thread
    /// agrees on it.
    pub fn bucket(&self, topic: &str) -> usize {
        let mut h = rustc_hash::FxBuildHasher.build_hasher();
        h.write(topic.as_bytes());
        // Fx mixes poorly into the low bits; fold the high half down.
        let v = h.finish();
        ((v ^ (v >> 29) ^ (v >> 47)) as usize) & self.mask
    }

    /// Marks `core` as interested in `bucket`.
    pub fn set(&self, bucket: usize, core: usize) {
        let (w, b) = self.word(bucket, core);
        self.bits[w].fetch_or(b, Ordering::SeqCst);
    }

    /// Withdraws `core`'s interest in `bucket`.
    pub fn clear(&self, bucket: usize, core: usize) {
        let (w, b) = self.word(bucket, core);
        self.bits[w].fetch_and(!b, Ordering::SeqCst);
    }

    /// Whether `core` is marked in `bucket`.
    pub fn contains(&self, bucket: usize, core: usize) -> bool {
        let (w, b) = self.word(bucket, core);
        self.bits[w].load(Ordering::Acquire) & b != 0
    }

    /// Calls `f` for every core interested in `bucket`.
    pub fn for_each_core(&self, bucket: usize, mut f: impl FnMut(usize)) {
        let start = bucket * self.words_per_bucket;
        for (i, word) in self.bits[start..start + self.words_per_bucket]
            .iter()
            .enumerate()
        {
            let mut v = word.load(Ordering::Acquire);
            while v != 0 {
                let bit = v.trailing_zeros() as usize;
                f(i * 64 + bit);
                v &= v - 1;
            }
        }
    }

    /// The cores interested in `bucket`, read once: a publisher that must
    /// know how many cores it sends to (a counted publish) counts and sends
    /// to the same set. No allocation up to 64 cores.
    pub fn snapshot(&self, bucket: usize) -> CoreSet {
        let start = bucket * self.words_per_bucket;
        let words = &self.bits[start..start + self.words_per_bucket];
        CoreSet {
            first: words[0].load(Ordering::Acquire),
            rest: words[1..]
                .iter()
                .map(|w| w.load(Ordering::Acquire))
                .collect(),
        }
    }

    fn word(&self, bucket: usize, core: usize) -> (usize, u64) {
        (
            bucket * self.words_per_bucket + core / 64,
            1u64 << (core % 64),
        )
    }
}

/// A set of cores read from an [`InterestTable`] bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoreSet {
    first: u64,
    rest: Vec<u64>,
}

impl CoreSet {
    /// Takes `core` out of the set.
    pub fn remove(&mut self, core: usize) {
        let bit = !(1u64 << (core % 64));
        match core / 64 {
            0 => self.first &= bit,
            w => {
                if let Some(x) = self.rest.get_mut(w - 1) {
                    *x &= bit;
                }
            }
        }
    }

    /// Number of cores in the set.
    pub fn len(&self) -> usize {
        (self.first.count_ones() + self.rest.iter().map(|w| w.count_ones()).sum::<u32>()) as usize
    }

    /// Whether no core is in the set.
    pub fn is_empty(&self) -> bool {
        self.first == 0 && self.rest.iter().all(|&w| w == 0)
    }

    /// The cores, in ascending order.
    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        std::iter::once(self.first)
            .chain(self.rest.iter().copied())
            .enumerate()
            .flat_map(|(i, mut v)| {
                std::iter::from_fn(move || {
                    (v != 0).then(|| {
                        let bit = v.trailing_zeros() as usize;
                        v &= v - 1;
                        i * 64 + bit
                    })
                })
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_clear_and_iterate_past_64_cores() {
        let t = InterestTable::new(130, 1000);
        let b = t.bucket("news");
        assert!(b < 1024);
        for c in [0, 5, 63, 64, 129] {
            t.set(b, c);
        }
        t.clear(b, 5);
        let mut seen = Vec::new();
        t.for_each_core(b, |c| seen.push(c));
        assert_eq!(seen, vec![0, 63, 64, 129]);
        assert!(t.contains(b, 129));
        assert!(!t.contains(b, 5));
        let mut set = t.snapshot(b);
        assert_eq!(set.iter().collect::<Vec<_>>(), vec![0, 63, 64, 129]);
        set.remove(64);
        set.remove(0);
        assert_eq!(set.len(), 2);
        assert_eq!(set.iter().collect::<Vec<_>>(), vec![63, 129]);
        assert!(!set.is_empty());
    }

    #[test]
    fn buckets_spread_topics() {
        let t = InterestTable::new(2, 1 << 16);
        let mut used = std::collections::HashSet::new();
        for i in 0..1000 {
            used.insert(t.bucket(&format!("topic-{i}")));
        }
        // 1000 topics into 65,536 buckets: expect very few collisions.
        assert!(used.len() > 980, "only {} distinct buckets", used.len());
    }
}
