//! A home core's streams: each history topic's epoch, its last offset and the publications it keeps, bounded by count, age and bytes.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rustc_hash::FxHashMap;

use super::{new_epoch, Catchup, HistoryPolicy, Since, StreamPosition};

struct Entry {
    offset: u64,
    at: Instant,
    frame: Bytes,
}

struct Stream {
    epoch: Arc<str>,
    /// Offset of the latest publication (0: none yet).
    last: u64,
    log: VecDeque<Entry>,
    bytes: usize,
    policy: HistoryPolicy,
    /// Last publish or join: a stream unused for its TTL is forgotten.
    touched: Instant,
}

impl Stream {
    fn new(policy: HistoryPolicy, now: Instant) -> Self {
        Self {
            epoch: new_epoch(),
            last: 0,
            log: VecDeque::new(),
            bytes: 0,
            policy,
            touched: now,
        }
    }

    fn position(&self) -> StreamPosition {
        StreamPosition {
            offset: self.last,
            epoch: self.epoch.clone(),
        }
    }

    /// Drops what is past the TTL, the count or the byte bound.
    fn trim(&mut self, now: Instant) {
        while let Some(e) = self.log.front() {
            let old = now.duration_since(e.at) > self.policy.ttl;
            if old || self.log.len() > self.policy.size || self.bytes > self.policy.max_bytes {
                self.bytes -= e.frame.len();
                self.log.pop_front();
            } else {
                break;
            }
        }
    }
}

/// The streams whose home is this core.
#[derive(Default)]
pub(crate) struct Streams {
    map: FxHashMap<Arc<str>, Stream>,
    /// Bytes of frames held over all streams.
    bytes: usize,
}

impl Streams {
    fn stream(&mut self, topic: &str, policy: HistoryPolicy, now: Instant) -> &mut Stream {
        if !self.map.contains_key(topic) {
            self.map.insert(Arc::from(topic), Stream::new(policy, now));
        }
        let s = self.map.get_mut(topic).expect("inserted above");
        s.policy = policy;
        s.touched = now;
        s
    }

    /// Gives the next publication of `topic` its offset, frames it with
    /// `frame` and keeps it. Returns its position and frame.
    pub(crate) fn append(
        &mut self,
        topic: &str,
        policy: HistoryPolicy,
        now: Instant,
        frame: impl FnOnce(&StreamPosition) -> Bytes,
    ) -> (StreamPosition, Bytes) {
        let s = self.stream(topic, policy, now);
        s.last += 1;
        let pos = s.position();
        let framed = frame(&pos);
        let before = s.bytes;
        if policy.size > 0 && framed.len() <= policy.max_bytes {
            s.bytes += framed.len();
            s.log.push_back(Entry {
                offset: pos.offset,
                at: now,
                frame: framed.clone(),
            });
        } else {
            // Not kept: the history may not skip it, so what came before
            // can no longer be recovered either.
            s.log.clear();
            s.bytes = 0;
        }
        s.trim(now);
        let after = s.bytes;
        self.bytes = self.bytes + after - before;
        (pos, framed)
    }

    /// Where a subscription to `topic` starting at `since` begins, and the
    /// publications it gets from the history (at most `cap`).
    pub(crate) fn join(
        &mut self,
        topic: &str,
        policy: HistoryPolicy,
        since: &Since,
        cap: usize,
        now: Instant,
    ) -> Catchup {
        let s = self.stream(topic, policy, now);
        let before = s.bytes;
        s.trim(now);
        let after = s.bytes;
        let position = s.position();
        let (recovered, frames) = match since {
            Since::Now => (false, Vec::new()),
            Since::Latest => match s.log.back() {
                Some(e) if e.offset == s.last => (true, vec![e.frame.clone()]),
                _ => (false, Vec::new()),
            },
            Since::Offset { offset, epoch } => {
                let missed = s.last.saturating_sub(*offset);
                let first = s.log.front().map_or(s.last + 1, |e| e.offset);
                let whole = **epoch == *s.epoch
                    && *offset <= s.last
                    && missed as usize <= cap
                    // Every offset after `offset` is still held.
                    && (missed == 0 || first <= offset + 1);
                if whole {
                    let skip = s.log.len() - missed as usize;
                    (
                        true,
                        s.log.iter().skip(skip).map(|e| e.frame.clone()).collect(),
                    )
                } else {
                    (false, Vec::new())
                }
            }
        };
        self.bytes = self.bytes + after - before;
        Catchup {
            position,
            recovered,
            frames,
        }
    }

    /// The position of `topic` and its history (oldest first), if this
    /// core holds its stream.
    pub(crate) fn read(
        &mut self,
        topic: &str,
        now: Instant,
    ) -> Option<(StreamPosition, Vec<(u64, Bytes)>)> {
        let s = self.map.get_mut(topic)?;
        let before = s.bytes;
        s.trim(now);
        let after = s.bytes;
        let r = (
            s.position(),
            s.log.iter().map(|e| (e.offset, e.frame.clone())).collect(),
        );
        self.bytes = self.bytes + after - before;
        Some(r)
    }

    /// Once a second: drops expired publications, and forgets streams
    /// that have kept nothing and seen no publish or join for their TTL
    /// (their next publication starts a new epoch).
    pub(crate) fn expire(&mut self, now: Instant) {
        let mut freed = 0;
        self.map.retain(|_, s| {
            let before = s.bytes;
            s.trim(now);
            freed += before - s.bytes;
            !(s.log.is_empty()
                && now.duration_since(s.touched) > s.policy.ttl.max(Duration::from_secs(1)))
        });
        self.bytes -= freed;
        if self.map.capacity() > 64 && self.map.len() * 4 < self.map.capacity() {
            self.map.shrink_to_fit();
        }
    }

    /// Streams held.
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// Bytes of framed publications held.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(size: usize, ttl_ms: u64) -> HistoryPolicy {
        HistoryPolicy::new(size, Duration::from_millis(ttl_ms))
    }

    fn push(s: &mut Streams, t: &str, p: HistoryPolicy, now: Instant) -> StreamPosition {
        s.append(t, p, now, |pos| Bytes::from(format!("m{}", pos.offset)))
            .0
    }

    fn since(offset: u64, epoch: &str) -> Since {
        Since::Offset {
            offset,
            epoch: epoch.to_owned(),
        }
    }

    #[test]
    fn offsets_start_at_one_without_gaps_and_recovery_returns_what_was_missed() {
        let (mut s, now, p) = (Streams::default(), Instant::now(), policy(10, 60_000));
        let first = s.join("t", p, &Since::Now, 100, now);
        assert_eq!(first.position.offset, 0);
        for i in 1..=5 {
            assert_eq!(push(&mut s, "t", p, now).offset, i);
        }
        let e = first.position.epoch.to_string();
        let c = s.join("t", p, &since(2, &e), 100, now);
        assert!(c.recovered);
        assert_eq!(c.position.offset, 5);
        assert_eq!(c.frames, vec!["m3", "m4", "m5"]);
        // Up to date: recovered, nothing to send.
        let c = s.join("t", p, &since(5, &e), 100, now);
        assert!(c.recovered && c.frames.is_empty());
        // Another epoch, an offset from the future, or more than the cap:
        // not recovered and nothing sent.
        for (since, cap) in [
            (since(2, "other"), 100),
            (since(9, &e), 100),
            (since(2, &e), 2),
        ] {
            let c = s.join("t", p, &since, cap, now);
            assert!(!c.recovered && c.frames.is_empty());
        }
        // Latest value.
        let c = s.join("t", p, &Since::Latest, 100, now);
        assert!(c.recovered);
        assert_eq!(c.frames, vec!["m5"]);
    }

    #[test]
    fn size_ttl_and_bytes_bound_the_history_and_a_partial_one_is_not_recovered() {
        let (mut s, now) = (Streams::default(), Instant::now());
        let p = policy(3, 60_000);
        let e = s
            .join("t", p, &Since::Now, 100, now)
            .position
            .epoch
            .to_string();
        for _ in 0..6 {
            push(&mut s, "t", p, now);
        }
        let (_, log) = s.read("t", now).unwrap();
        assert_eq!(log.iter().map(|e| e.0).collect::<Vec<_>>(), [4, 5, 6]);
        assert!(s.join("t", p, &since(3, &e), 100, now).recovered);
        assert!(
            !s.join("t", p, &since(2, &e), 100, now).recovered,
            "4..6 held, 3 lost"
        );
        // TTL.
        let later = now + Duration::from_secs(61);
        assert!(!s.join("t", p, &since(3, &e), 100, later).recovered);
        assert!(s.read("t", later).unwrap().1.is_empty());
        assert_eq!(s.bytes(), 0);
        // Bytes: 2-byte frames, at most 5 bytes kept.
        let p = policy(100, 60_000).with_max_bytes(5);
        for _ in 0..4 {
            push(&mut s, "b", p, now);
        }
        assert_eq!(s.read("b", now).unwrap().1.len(), 2);
        assert_eq!(s.bytes(), 4);
    }

    #[test]
    fn a_forgotten_stream_comes_back_with_a_new_epoch() {
        let (mut s, now, p) = (Streams::default(), Instant::now(), policy(10, 1_000));
        push(&mut s, "t", p, now);
        let e1 = s.read("t", now).unwrap().0.epoch;
        s.expire(now + Duration::from_secs(5));
        assert_eq!(s.len(), 0);
        let pos = push(&mut s, "t", p, now + Duration::from_secs(5));
        assert_eq!(pos.offset, 1);
        assert_ne!(pos.epoch, e1);
        let c = s.join("t", p, &since(1, &e1), 100, now + Duration::from_secs(5));
        assert!(!c.recovered);
    }
}
