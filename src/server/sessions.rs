//! Sessions: what a connection leaves behind for its client to resume with `?session=ID` (its subscriptions and, per history topic, the position its client's TCP acknowledged), kept for `session_ttl_secs`, bounded by `max_sessions`.
//!
//! A session's id names the connection that opened it and a secret:
//! `"<core>-<slab index><generation><128 random bits>"` in hex. While
//! that connection is open, the session has no record: the connection
//! holds its 16-byte secret, and a resume asks it there (a takeover).
//! Records exist only for sessions a connection left behind (kept for
//! the TTL) or resumed (held by a connection the id does not name), each
//! in the shard of the core the id names, behind a mutex taken when such
//! a session is left or resumed — never on the message path, nor when a
//! connection opens — so a connection on any core reaches its session
//! without a hop; that core's sweeper expires them.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;
use shardcast::ConnId;

/// A connection's side of its session.
#[derive(Debug, Clone)]
pub(crate) enum Held {
    /// Opened by this connection: its id is this connection's own and
    /// this secret ([`session_id`]); no record until it ends.
    Own([u8; SECRET]),
    /// Resumed: named by the id of the connection that opened it, and
    /// recorded as held by this one.
    Resumed(Arc<str>),
}

/// Bytes of a session's secret.
const SECRET: usize = 16;

/// How a session id names a connection: the connection types the
/// sessions are kept for (the server's [`ConnId`]; plain numbers in
/// tests).
pub(crate) trait Conn: Copy + PartialEq {
    /// Its core.
    fn home(self) -> usize;
    /// Everything but its core.
    fn rest(self) -> u64;
    /// The connection `core` and [`Conn::rest`] name.
    fn from_parts(core: usize, rest: u64) -> Option<Self>;
}

impl Conn for ConnId {
    fn home(self) -> usize {
        self.core()
    }
    fn rest(self) -> u64 {
        self.to_bits() as u64
    }
    fn from_parts(core: usize, rest: u64) -> Option<Self> {
        ConnId::from_bits((core as u128) << 64 | u128::from(rest))
    }
}

/// The id of the session connection `conn` opened with `secret`.
pub(crate) fn session_id<C: Conn>(conn: C, secret: &[u8; SECRET]) -> String {
    let mut id = String::with_capacity(6 + 16 + 2 * SECRET);
    let _ = write!(id, "{}-{:016x}", conn.home(), conn.rest());
    for b in secret {
        let _ = write!(id, "{b:02x}");
    }
    id
}

/// A fresh secret: 128 random bits from the kernel, drawn from a
/// per-thread pool refilled 256 secrets at a time (one `getrandom` call,
/// not one per connection); drawn bytes are wiped from the pool.
pub(crate) fn new_secret() -> [u8; SECRET] {
    thread_local! {
        static POOL: RefCell<([u8; 256 * SECRET], usize)> =
            const { RefCell::new(([0; 256 * SECRET], 256 * SECRET)) };
    }
    POOL.with_borrow_mut(|(pool, used)| {
        if *used == pool.len() {
            fill_random(pool);
            *used = 0;
        }
        let mut out = [0u8; SECRET];
        out.copy_from_slice(&pool[*used..*used + SECRET]);
        pool[*used..*used + SECRET].fill(0);
        *used += SECRET;
        out
    })
}

/// Fills `buf` from the kernel's random source.
fn fill_random(buf: &mut [u8]) {
    let mut got = 0;
    while got < buf.len() {
        // SAFETY: the region from `got` is writable for `len - got` bytes.
        let n = unsafe { libc::getrandom(buf[got..].as_mut_ptr().cast(), buf.len() - got, 0) };
        if n > 0 {
            got += n as usize;
        } else if std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            // No kernel randomness: never hand out a guessable id.
            panic!("getrandom failed: {}", std::io::Error::last_os_error());
        }
    }
}

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
    /// Recorded as held by connection `old`: taken over from it.
    TakeOver(C),
    /// No record: if it is a session at all, connection `origin`, which
    /// opened it, still holds it — ask there ([`Sessions::claim`]), then
    /// [`Sessions::resume_recorded`] if it does not.
    Ask(C),
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

impl<C: Conn> Sessions<C> {
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

    /// The connection an id names as its opener (its home shard is that
    /// connection's core), if it has the shape of a session id.
    fn origin(&self, id: &str) -> Option<C> {
        let (core, rest) = id.split_once('-')?;
        let core: usize = core.parse().ok()?;
        if core >= self.shards.len()
            || rest.len() != 16 + 2 * SECRET
            || !rest.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return None;
        }
        C::from_parts(core, u64::from_str_radix(&rest[..16], 16).ok()?)
    }

    /// Connection `conn` of identity `client` asks for session `id`.
    /// Resuming is a capability: a session opened by an identity answers
    /// only that identity, and to any other it is as if it did not exist.
    pub(crate) fn resume(&self, id: &str, client: Option<&str>, conn: C) -> Resume<C> {
        let Some(origin) = self.origin(id) else {
            return Resume::Fresh;
        };
        match self.resume_in(id, origin.home(), client, conn) {
            None => Resume::Ask(origin),
            Some(found) => found,
        }
    }

    /// As [`Sessions::resume`], from the records alone: after the
    /// connection the id names was asked and did not hold it.
    pub(crate) fn resume_recorded(&self, id: &str, client: Option<&str>, conn: C) -> Resume<C> {
        let Some(origin) = self.origin(id) else {
            return Resume::Fresh;
        };
        self.resume_in(id, origin.home(), client, conn)
            .unwrap_or(Resume::Fresh)
    }

    /// What session `id`'s record in shard `home` gives `conn`; `None`
    /// when it has none.
    fn resume_in(&self, id: &str, home: usize, client: Option<&str>, conn: C) -> Option<Resume<C>> {
        let mut shard = self.shard(home);
        let rec = shard.map.get_mut(id)?;
        if rec.client.is_some() && rec.client.as_deref() != client {
            return Some(Resume::Fresh);
        }
        let was = std::mem::replace(&mut rec.owner, Owner::Live(conn));
        Some(match was {
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
                    return Some(Resume::Fresh);
                }
                self.resumed.fetch_add(1, Ordering::Relaxed);
                Resume::Kept(saved)
            }
        })
    }

    /// On the core of the connection that opened session `id` and holds
    /// it still, of identity `client`: connection `to` takes it over, and
    /// it is recorded as `to`'s. False if it was recorded already (which
    /// a session its opener still holds never is).
    pub(crate) fn claim(&self, id: &str, client: Option<&str>, to: C) -> bool {
        let Some(origin) = self.origin(id) else {
            return false;
        };
        let mut shard = self.shard(origin.home());
        if shard.map.contains_key(id) {
            return false;
        }
        shard.map.insert(
            id.into(),
            Record {
                client: client.map(Into::into),
                owner: Owner::Live(to),
            },
        );
        self.resumed.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// Connection `conn` of identity `client`, holder of session `id`,
    /// ended leaving `saved`: the session is kept for the TTL, the oldest
    /// kept one of its home dropped if that one is full.
    pub(crate) fn leave(&self, id: &str, conn: C, client: Option<&str>, saved: Saved) -> Leave<C> {
        let Some(origin) = self.origin(id) else {
            return Leave::Done;
        };
        let mut shard = self.shard(origin.home());
        let now = Instant::now();
        let cost = saved.cost();
        let kept = Owner::Kept { since: now, saved };
        match shard.map.get_mut(id) {
            // Its opener leaves it: the first record.
            None => {
                shard.map.insert(
                    id.into(),
                    Record {
                        client: client.map(Into::into),
                        owner: kept,
                    },
                );
            }
            Some(rec) => match rec.owner {
                Owner::Live(c) if c == conn => {
                    rec.owner = kept;
                    if client.is_some() {
                        rec.client = client.map(Into::into);
                    }
                }
                Owner::Live(other) => return Leave::HandOff(other),
                // Kept already (a handoff that found its taker gone).
                Owner::Kept { .. } => return Leave::Done,
            },
        }
        self.bytes.fetch_add(cost as i64, Ordering::Relaxed);
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

    /// Connection `conn`, holder of resumed session `id`, authenticated
    /// as `client`: only that identity may resume the session from now
    /// on. (A session its opener holds takes the identity from that
    /// connection when it ends or is taken over.)
    pub(crate) fn identify(&self, id: &str, conn: C, client: &str) {
        let Some(origin) = self.origin(id) else {
            return;
        };
        let mut shard = self.shard(origin.home());
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
        if shard.map.is_empty() && shard.map.capacity() > 0 {
            shard.map = FxHashMap::default();
            shard.order = VecDeque::new();
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

    /// The records of home `core` held by a connection now (resumed
    /// sessions; one its opener holds has none).
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
    impl Conn for u32 {
        fn home(self) -> usize {
            0
        }
        fn rest(self) -> u64 {
            u64::from(self)
        }
        fn from_parts(_core: usize, rest: u64) -> Option<Self> {
            u32::try_from(rest).ok()
        }
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
            let id = session_id(i, &new_secret());
            let saved = Saved {
                topics: vec!["chat.room-1".into(), "chat.room-2".into(), "news".into()],
                positions: vec![
                    ("chat.room-1".into(), 41, Arc::from("x3f9a01c")),
                    ("chat.room-2".into(), 7, Arc::from("x3f9a01c")),
                ],
            };
            let _ = s.leave(&id, i, Some("device-12345"), saved);
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
    fn ids_name_their_opener_and_are_unguessable() {
        let c = ConnId::from_bits(3 << 64 | 7 << 32 | 12).unwrap();
        let a = session_id(c, &new_secret());
        let b = session_id(c, &new_secret());
        assert_ne!(a, b);
        assert!(
            a.starts_with("3-000000070000000c") && a.len() == 2 + 16 + 32,
            "{a}"
        );
        // Secrets differ across refills of the pool too.
        let many: std::collections::HashSet<_> = (0..1000).map(|_| new_secret()).collect();
        assert_eq!(many.len(), 1000);
        assert!(!many.contains(&[0; SECRET]));
        let s: Sessions = Sessions::new(4, Duration::from_secs(60), 10);
        assert_eq!(s.origin(&a), Some(c));
        let zeros = "0".repeat(48);
        assert_eq!(s.origin(&format!("9-{zeros}")), None, "no such core");
        assert_eq!(
            s.origin(&format!("1-{}", "0".repeat(32))),
            None,
            "too short"
        );
        assert_eq!(s.origin(&format!("1-{}", "g".repeat(48))), None, "not hex");
        assert_eq!(s.origin("x"), None);
    }

    #[test]
    fn kept_resumed_taken_over_expired_and_evicted() {
        let s: Sessions<u32> = Sessions::new(1, Duration::from_secs(60), 2);
        let id = session_id(1u32, &new_secret());
        // Open on connection 1: no record; a resume asks connection 1.
        assert!(matches!(s.resume(&id, Some("alice"), 2), Resume::Ask(1)));
        assert!(matches!(
            s.resume_recorded(&id, Some("alice"), 2),
            Resume::Fresh
        ));
        // Connection 1 (alice) holds it: 2 claims it, once.
        assert!(s.claim(&id, Some("alice"), 2));
        assert!(!s.claim(&id, Some("alice"), 3));
        // Another identity, or none, finds nothing.
        assert!(matches!(s.resume(&id, Some("bob"), 3), Resume::Fresh));
        assert!(matches!(s.resume(&id, None, 3), Resume::Fresh));
        // Held by 2: taken over by 3.
        assert!(matches!(
            s.resume(&id, Some("alice"), 3),
            Resume::TakeOver(2)
        ));
        // 2's close hands off to 3.
        assert!(matches!(
            s.leave(&id, 2, Some("alice"), Saved::default()),
            Leave::HandOff(3)
        ));
        let saved = Saved {
            topics: vec!["t".into()],
            positions: vec![("t".into(), 4, Arc::from("e"))],
        };
        assert!(matches!(
            s.leave(&id, 3, Some("alice"), saved.clone()),
            Leave::Done
        ));
        assert_eq!(s.kept.load(Ordering::Relaxed), 1);
        assert!(matches!(s.resume(&id, Some("alice"), 4), Resume::Kept(x) if x == saved));
        assert_eq!(s.resumed.load(Ordering::Relaxed), 3);
        assert_eq!(s.live(0), 1);
        // Left by its opener: recorded then, with the opener's identity.
        let b = session_id(5u32, &new_secret());
        s.leave(&b, 5, Some("carol"), Saved::default());
        assert!(matches!(s.resume(&b, None, 6), Resume::Fresh));
        // Three kept where two fit: the oldest is evicted.
        s.leave(&id, 4, None, Saved::default());
        let c = session_id(7u32, &new_secret());
        s.leave(&c, 7, None, Saved::default());
        assert_eq!(s.evicted.load(Ordering::Relaxed), 1);
        assert_eq!(s.kept.load(Ordering::Relaxed), 2);
        assert_eq!(s.kept_bytes(), 2 * Saved::default().cost());
        assert!(matches!(
            s.resume_recorded(&b, Some("carol"), 8),
            Resume::Fresh
        ));
        // Past the TTL.
        let s: Sessions<u32> = Sessions::new(1, Duration::ZERO, 10);
        let d = session_id(1u32, &new_secret());
        s.leave(&d, 1, None, Saved::default());
        std::thread::sleep(Duration::from_millis(2));
        s.sweep(0);
        assert_eq!(s.expired.load(Ordering::Relaxed), 1);
        assert_eq!(s.kept.load(Ordering::Relaxed), 0);
        assert_eq!(s.kept_bytes(), 0);
        assert!(matches!(s.resume_recorded(&d, None, 2), Resume::Fresh));
    }
}
