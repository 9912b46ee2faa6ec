//! Sessions: what a connection leaves behind for its client to resume with `?session=ID` (its subscriptions and, per history topic, the position its client's TCP acknowledged), kept for `session_ttl_secs`, bounded by `max_sessions`.
//!
//! A session's id names its home: the core that accepted its first
//! connection (`"<core>-<32 hex digits>"`, 128 random bits from the
//! kernel). Each home keeps its sessions in a shard of its own behind a
//! mutex, taken once when a connection opens, once when it closes and
//! once per resume — never on the message path, like the per-address
//! counts — so a connection on any core reaches its session without a
//! hop; the home core's sweeper expires them.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;
use shardcast::ConnId;

/// What a closed connection leaves for its session's next connection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Saved {
    /// Every topic it subscribed to.
    pub(crate) topics: Vec<String>,
    /// Per history topic: the last offset its client is known to have,
    /// and the epoch.
    pub(crate) positions: Vec<(String, u64, Arc<str>)>,
}

impl Saved {
    /// What a session kept with this costs, estimated: the record, its id
    /// (twice: the map and the expiry order) and their tables' slack, then
    /// each topic and position with their allocations. Calibrated on
    /// `memory_per_kept_session` (three topics: 732 bytes measured).
    fn cost(&self) -> usize {
        400 + self.topics.iter().map(|t| t.len() + 40).sum::<usize>()
            + self
                .positions
                .iter()
                .map(|(t, _, _)| t.len() + 80)
                .sum::<usize>()
    }
}

enum Owner<C> {
    /// A connection holds the session.
    Live(C),
    /// Its connection ended at `since`: kept until the TTL.
    Kept { since: Instant, saved: Saved },
}

struct Record<C> {
    /// The identity that opened it; only that identity may resume it.
    client: Option<Box<str>>,
    owner: Owner<C>,
}

struct Shard<C> {
    map: FxHashMap<Box<str>, Record<C>>,
    /// Kept sessions, oldest first: (when it was kept, id). An entry whose
    /// record was resumed or kept again since is skipped.
    order: VecDeque<(Instant, Box<str>)>,
    /// Records that are [`Owner::Kept`].
    kept: usize,
}

/// What a `?session=ID` finds.
pub(crate) enum Resume<C = ConnId> {
    /// No such session (unknown, expired, or another identity's): a
    /// fresh one.
    Fresh,
    /// Kept: resumed with what its last connection left.
    Kept(Saved),
    /// Still held by connection `old`: taken over from it.
    TakeOver(C),
}

/// What closing a session's connection did.
pub(crate) enum Leave<C = ConnId> {
    /// The session is kept (or gone: the connection no longer held it).
    Done,
    /// Connection `to` took the session over meanwhile: hand it what this
    /// one leaves.
    HandOff(C),
}

/// The server's sessions, one shard per core; `C` names a connection.
pub(crate) struct Sessions<C = ConnId> {
    shards: Box<[Mutex<Shard<C>>]>,
    ttl: Duration,
    /// Most kept sessions per shard.
    per_shard: usize,
    /// Sessions kept now (gauge).
    pub(crate) kept: AtomicI64,
    /// What they cost, estimated ([`Saved::cost`]).
    bytes: AtomicI64,
    /// Sessions resumed (kept or taken over).
    pub(crate) resumed: AtomicU64,
    /// Kept sessions dropped at their TTL (or found expired on resume).
    pub(crate) expired: AtomicU64,
    /// Kept sessions dropped to stay within `max_sessions`.
    pub(crate) evicted: AtomicU64,
}

/// A fresh session id homed on `core`: the core, then 128 random bits
/// from the kernel, in hex.
fn new_id(core: usize) -> Box<str> {
    let mut bytes = [0u8; 16];
    let mut got = 0;
    while got < bytes.len() {
        // SAFETY: the region from `got` is writable for `len - got` bytes.
        let n = unsafe { libc::getrandom(bytes[got..].as_mut_ptr().cast(), bytes.len() - got, 0) };
        if n > 0 {
            got += n as usize;
        } else if std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            // No kernel randomness: never hand out a guessable id.
            panic!("getrandom failed: {}", std::io::Error::last_os_error());
        }
    }
    let mut id = format!("{core}-");
    for b in bytes {
        id.push_str(&format!("{b:02x}"));
    }
    id.into_boxed_str()
}

impl<C: Copy + PartialEq> Sessions<C> {
    /// Sessions for `cores` cores, kept `ttl`, at most `max` over all.
    pub(crate) fn new(cores: usize, ttl: Duration, max: usize) -> Self {
        let cores = cores.max(1);
        Self {
            shards: (0..cores)
                .map(|_| {
                    Mutex::new(Shard {
                        map: FxHashMap::default(),
                        order: VecDeque::new(),
                        kept: 0,
                    })
                })
                .collect(),
            ttl,
            per_shard: max.div_ceil(cores).max(1),
            kept: AtomicI64::new(0),
            bytes: AtomicI64::new(0),
            resumed: AtomicU64::new(0),
            expired: AtomicU64::new(0),
            evicted: AtomicU64::new(0),
        }
    }

    fn shard(&self, i: usize) -> MutexGuard<'_, Shard<C>> {
        self.shards[i.min(self.shards.len() - 1)]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// The home shard an id names, if it names one.
    fn home(&self, id: &str) -> Option<usize> {
        let (core, rest) = id.split_once('-')?;
        let core: usize = core.parse().ok()?;
        (core < self.shards.len() && rest.len() == 32).then_some(core)
    }

    /// A fresh session held by `conn` of identity `client`, homed on
    /// `core` (the connection's). Returns its id.
    pub(crate) fn create(&self, core: usize, conn: C, client: Option<&str>) -> Arc<str> {
        let id = new_id(core);
        self.shard(core).map.insert(
            id.clone(),
            Record {
                client: client.map(Into::into),
                owner: Owner::Live(conn),
            },
        );
        Arc::from(id)
    }

    /// Connection `conn` of identity `client` asks for session `id`.
    /// Resuming is a capability: a session opened by an identity answers
    /// only that identity, and to any other it is as if it did not exist.
    pub(crate) fn resume(&self, id: &str, client: Option<&str>, conn: C) -> Resume<C> {
        let Some(home) = self.home(id) else {
            return Resume::Fresh;
        };
        let mut shard = self.shard(home);
        let Some(rec) = shard.map.get_mut(id) else {
            return Resume::Fresh;
        };
        if rec.client.is_some() && rec.client.as_deref() != client {
            return Resume::Fresh;
        }
        let was = std::mem::replace(&mut rec.owner, Owner::Live(conn));
        match was {
            Owner::Live(old) => {
                self.resumed.fetch_add(1, Ordering::Relaxed);
                Resume::TakeOver(old)
            }
            Owner::Kept { since, saved } => {
                shard.kept -= 1;
                self.kept.fetch_sub(1, Ordering::Relaxed);
                self.bytes.fetch_sub(saved.cost() as i64, Ordering::Relaxed);
                if since.elapsed() > self.ttl {
                    // Not swept yet, but past its time.
                    shard.map.remove(id);
                    self.expired.fetch_add(1, Ordering::Relaxed);
                    return Resume::Fresh;
                }
                self.resumed.fetch_add(1, Ordering::Relaxed);
                Resume::Kept(saved)
            }
        }
    }

    /// Connection `conn`, holder of session `id`, ended leaving `saved`:
    /// the session is kept for the TTL, the oldest kept one of its home
    /// dropped if that one is full.
    pub(crate) fn leave(&self, id: &str, conn: C, saved: Saved) -> Leave<C> {
        let Some(home) = self.home(id) else {
            return Leave::Done;
        };
        let mut shard = self.shard(home);
        let now = Instant::now();
        let Some(rec) = shard.map.get_mut(id) else {
            return Leave::Done;
        };
        match rec.owner {
            Owner::Live(c) if c == conn => {}
            Owner::Live(other) => return Leave::HandOff(other),
            // Kept already (a handoff that found its taker gone).
            Owner::Kept { .. } => return Leave::Done,
        }
        self.bytes.fetch_add(saved.cost() as i64, Ordering::Relaxed);
        rec.owner = Owner::Kept { since: now, saved };
        shard.kept += 1;
        shard.order.push_back((now, id.into()));
        self.kept.fetch_add(1, Ordering::Relaxed);
        while shard.kept > self.per_shard {
            if self.drop_oldest(&mut shard) {
                self.evicted.fetch_add(1, Ordering::Relaxed);
            }
        }
        Leave::Done
    }

    /// Connection `conn`, holder of session `id`, authenticated as
    /// `client`: only that identity may resume the session from now on.
    pub(crate) fn identify(&self, id: &str, conn: C, client: &str) {
        let Some(home) = self.home(id) else {
            return;
        };
        let mut shard = self.shard(home);
        if let Some(rec) = shard.map.get_mut(id) {
            if matches!(rec.owner, Owner::Live(c) if c == conn) {
                rec.client = Some(client.into());
            }
        }
    }

    /// Removes the oldest kept session of `shard`; false for a stale
    /// entry of the order (resumed or kept again since).
    fn drop_oldest(&self, shard: &mut Shard<C>) -> bool {
        let Some((at, id)) = shard.order.pop_front() else {
            return false;
        };
        let cost = match shard.map.get(&id) {
            Some(Record {
                owner: Owner::Kept { since, saved },
                ..
            }) if *since == at => saved.cost(),
            _ => return false,
        };
        shard.map.remove(&id);
        shard.kept -= 1;
        self.kept.fetch_sub(1, Ordering::Relaxed);
        self.bytes.fetch_sub(cost as i64, Ordering::Relaxed);
        true
    }

    /// Drops the kept sessions of home `core` past their TTL.
    pub(crate) fn sweep(&self, core: usize) {
        let mut shard = self.shard(core);
        while let Some((at, _)) = shard.order.front() {
            if at.elapsed() <= self.ttl {
                break;
            }
            if self.drop_oldest(&mut shard) {
                self.expired.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// The gauge and counters, for `/metrics`.
    pub(crate) fn counts(&self) -> super::metrics::SessionCounts {
        super::metrics::SessionCounts {
            kept: self.kept.load(Ordering::Relaxed).max(0) as u64,
            resumed: self.resumed.load(Ordering::Relaxed),
            expired: self.expired.load(Ordering::Relaxed),
            evicted: self.evicted.load(Ordering::Relaxed),
            bytes: self.kept_bytes() as u64,
        }
    }

    /// The sessions of home `core` a connection holds now.
    #[cfg(test)]
    fn live(&self, core: usize) -> usize {
        let s = self.shard(core);
        s.map.len() - s.kept
    }

    /// What the kept sessions cost, estimated.
    pub(crate) fn kept_bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed).max(0) as usize
    }
}

/// Runs the expiry of home `core`'s sessions once a second, on that core.
pub(crate) async fn sweeper(sessions: Arc<Sessions>, core: usize) {
    loop {
        monoio::time::sleep(Duration::from_secs(1)).await;
        sessions.sweep(core);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rss_kib() -> u64 {
        let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
        let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
        pages * 4
    }

    /// What a kept session costs: 100,000 kept sessions of 3 topics (two
    /// with history) each, RSS before and after. Run with `--ignored
    /// --nocapture`; the figure is in docs/design.md.
    #[test]
    #[ignore = "a measurement, not a check"]
    fn memory_per_kept_session() {
        let n = 100_000u32;
        let s: Sessions<u32> = Sessions::new(1, Duration::from_secs(60), n as usize);
        let before = rss_kib();
        for i in 0..n {
            let id = s.create(0, i, Some("device-12345"));
            let saved = Saved {
                topics: vec!["chat.room-1".into(), "chat.room-2".into(), "news".into()],
                positions: vec![
                    ("chat.room-1".into(), 41, Arc::from("x3f9a01c")),
                    ("chat.room-2".into(), 7, Arc::from("x3f9a01c")),
                ],
            };
            let _ = s.leave(&id, i, saved);
        }
        let after = rss_kib();
        eprintln!(
            "{n} kept sessions: RSS +{} KiB, {} bytes each (estimate in /metrics: {} bytes each)",
            after - before,
            (after - before) * 1024 / u64::from(n),
            s.kept_bytes() / n as usize
        );
    }

    #[test]
    fn ids_name_their_home_and_are_unguessable() {
        let a = new_id(3);
        let b = new_id(3);
        assert_ne!(a, b);
        assert!(a.starts_with("3-") && a.len() == 34, "{a}");
        let s: Sessions<u32> = Sessions::new(4, Duration::from_secs(60), 10);
        assert_eq!(s.home(&a), Some(3));
        assert_eq!(s.home("9-00000000000000000000000000000000"), None);
        assert_eq!(s.home("x"), None);
    }

    #[test]
    fn kept_resumed_taken_over_expired_and_evicted() {
        let s: Sessions<u32> = Sessions::new(1, Duration::from_secs(60), 2);
        let id = s.create(0, 1, Some("alice"));
        // Another identity, or none, finds nothing.
        assert!(matches!(s.resume(&id, Some("bob"), 2), Resume::Fresh));
        assert!(matches!(s.resume(&id, None, 2), Resume::Fresh));
        // Still open: taken over.
        assert!(matches!(s.resume(&id, Some("alice"), 2), Resume::TakeOver(c) if c == 1));
        // The old connection's close hands off to the new one.
        assert!(matches!(s.leave(&id, 1, Saved::default()), Leave::HandOff(c) if c == 2));
        let saved = Saved {
            topics: vec!["t".into()],
            positions: vec![("t".into(), 4, Arc::from("e"))],
        };
        assert!(matches!(s.leave(&id, 2, saved.clone()), Leave::Done));
        assert_eq!(s.kept.load(Ordering::Relaxed), 1);
        assert!(matches!(s.resume(&id, Some("alice"), 3), Resume::Kept(x) if x == saved));
        assert_eq!(s.resumed.load(Ordering::Relaxed), 2);
        assert_eq!(s.live(0), 1);
        // Three kept where two fit: the oldest is evicted.
        s.leave(&id, 3, Saved::default());
        let b = s.create(0, 4, None);
        let c = s.create(0, 5, None);
        s.leave(&b, 4, Saved::default());
        s.leave(&c, 5, Saved::default());
        assert_eq!(s.evicted.load(Ordering::Relaxed), 1);
        assert_eq!(s.kept.load(Ordering::Relaxed), 2);
        assert_eq!(s.kept_bytes(), 2 * Saved::default().cost());
        assert!(matches!(s.resume(&id, Some("alice"), 6), Resume::Fresh));
        // Past the TTL.
        let s: Sessions<u32> = Sessions::new(1, Duration::ZERO, 10);
        let d = s.create(0, 1, None);
        s.leave(&d, 1, Saved::default());
        std::thread::sleep(Duration::from_millis(2));
        s.sweep(0);
        assert_eq!(s.expired.load(Ordering::Relaxed), 1);
        assert_eq!(s.kept.load(Ordering::Relaxed), 0);
        assert_eq!(s.kept_bytes(), 0);
        assert!(matches!(s.resume(&d, None, 2), Resume::Fresh));
    }
}
