//! `fanout`: S subscribers over T topics, P publishers, shardcast's JSON protocol.
//!
//! Subscriber i subscribes to topic `t{i % T}`. Publishes flow in
//! max(P, T) *lanes*: lane l carries publisher `l % P`'s publishes to topic
//! `t{l % T}`, and each publisher takes its lanes in turn, so every topic is
//! published to however many publishers there are (with P = T, publisher j
//! publishes to `t{j}` only). Every published `data` is a [`Stamp`](crate::stamp::Stamp): lane,
//! sequence number in the lane and send time, so each subscriber measures
//! end-to-end latency on its own core and tracks, per lane of its topic,
//! lost, duplicated and reordered deliveries. Closed loop (the default):
//! publishers keep at most `--max-outstanding` deliveries sent and not yet
//! received, sending batches of up to 16 publishes per write, or with
//! `--min-free N` one publish per write once N deliveries' room (and room
//! for that publish) is free; `--rate` sends a fixed number of publishes per
//! second instead, each publisher's schedule offset from the others'.
//!
//! `--stall N` makes N subscribers stop reading (their sockets stay open)
//! `--stall-after` into the measurement, as a slow consumer would; when
//! publishing stops they read again, to learn how the server treated them
//! (closed, with which code, or how many messages it dropped). They are
//! reported apart: the delivery checks and latency cover the others. With
//! `--server-pid` the server's RSS is sampled over the whole run.

use std::cell::{Cell, RefCell};
use std::os::fd::RawFd;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use shardcast::proto::Limits;

use crate::cli::FanoutArgs;
use crate::client::{self, source_for, End, Flow, Outbox, Reader, Target};
use crate::report::{bar, histogram, Progress, Report};
use crate::runtime::{core_wait, main_wait, phase, spawn_cores, Shared};
use crate::scenario::{open_with_rcvbuf, pool, share, spawn_flusher, wind_down, FirstError};
use crate::stamp::{Finder, STAMP_LEN};
use crate::sys::{self, now_ns, Usage};
use crate::track::{Arrival, SeqTrack, Tally};

mod publisher;
mod stall;
use publisher::publisher;
pub use stall::stalled_ids;
use stall::{report_stalled, stalled_settled, stalled_subscriber, Slot, Stall};

/// Publishes queued per write when the window allows (without `--min-free`).
const BATCH: u64 = 16;

/// The plan every core follows.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The server.
    pub target: Target,
    /// Where publishers connect, when not `target` (a cluster's other
    /// node).
    pub publish_target: Option<Target>,
    /// Subscribers.
    pub subscribers: usize,
    /// Topics.
    pub topics: usize,
    /// Publishers.
    pub publishers: usize,
    /// Lanes: max(publishers, topics); lane l is publisher l % P on topic l % T.
    pub lanes: usize,
    /// Bytes of `data`.
    pub payload: usize,
    /// Publishes per second over all publishers; 0 = closed loop.
    pub rate: u64,
    /// Closed loop: the bound on deliveries in flight.
    pub max_outstanding: u64,
    /// Closed loop: send one publish per write, only when at least this
    /// many deliveries' room is free; None: batches of up to `BATCH` (16).
    pub min_free: Option<u64>,
    /// Concurrent opens per core.
    pub concurrency: usize,
    /// Ids of the subscribers that stall, ascending.
    pub stalled: Vec<usize>,
    /// SO_RCVBUF for the stalled subscribers' sockets.
    pub stall_rcvbuf: Option<usize>,
}

impl Plan {
    /// Connections on topic `t` among `n` connections assigned round robin.
    fn on_topic(&self, n: usize, t: usize) -> u64 {
        (n / self.topics + usize::from(t < n % self.topics)) as u64
    }

    /// Stalled subscribers on topic `t`.
    fn stalled_on_topic(&self, t: usize) -> u64 {
        self.stalled
            .iter()
            .filter(|&&i| i % self.topics == t)
            .count() as u64
    }
}

/// What a core measured.
#[derive(Debug)]
struct CoreResult {
    hist: Histogram<u64>,
    tally: Tally,
    other: u64,
    misrouted: u64,
    reached: u64,
}

struct CoreState {
    hist: RefCell<Histogram<u64>>,
    tally: Cell<Tally>,
    other: Cell<u64>,
    misrouted: Cell<u64>,
    /// Subscribers that received at least one delivery.
    reached: Cell<u64>,
    /// Deliveries not yet added to the shared counter (flushed every ms).
    pending: Cell<u64>,
    fds: RefCell<Vec<RawFd>>,
}

/// Runs the scenario.
///
/// # Errors
/// A bad URL or plan, or connections that could not be opened.
pub fn run(a: &FanoutArgs) -> Result<Report, String> {
    let target = a.common.target()?;
    sys::raise_fd_limit();
    let topics = a.topics.max(1);
    let publishers = a.publishers.unwrap_or(topics.min(100)).max(1);
    let per_topic = a.subscribers.div_ceil(topics) as u64;
    let publish_target = match a.publish_url.as_deref() {
        Some(u) => {
            let mut t = Target::parse(u)?;
            // Publishers offer what subscribers offer.
            t.deflate = target.deflate;
            Some(t)
        }
        None => None,
    };
    let plan = Plan {
        target,
        publish_target,
        subscribers: a.subscribers,
        topics,
        publishers,
        lanes: publishers.max(topics),
        payload: a.payload.max(STAMP_LEN),
        rate: a.rate,
        max_outstanding: a.max_outstanding.unwrap_or((8 * per_topic).max(20_000)),
        min_free: a.min_free,
        concurrency: a.common.concurrency,
        stalled: stalled_ids(a.stall, a.subscribers),
        stall_rcvbuf: (a.stall_rcvbuf > 0).then_some(a.stall_rcvbuf),
    };
    if a.stall > 0 && (a.stall > a.subscribers || a.stall_after > a.timing.duration) {
        return Err(format!(
            "--stall {} needs at most --subscribers ({}) and --stall-after within --duration",
            a.stall, a.subscribers
        ));
    }
    let stall = Arc::new(Stall {
        now: AtomicBool::new(false),
        sent: if plan.stalled.is_empty() {
            Vec::new()
        } else {
            (0..topics).map(|_| AtomicU64::new(0)).collect()
        },
        slots: plan.stalled.iter().map(|_| Slot::default()).collect(),
    });
    let conns = plan.subscribers + plan.publishers;
    let limit = sys::fd_limit().saturating_sub(64) as usize;
    if conns > limit {
        return Err(format!(
            "fanout runs in one process: {conns} connections exceed its {limit} usable open files"
        ));
    }
    let cores = a.common.cores();
    let pid = a.common.server_pid;
    let mut syscalls = syscall_counter(&a.common)?;
    let mut rss = pid.map(|p| crate::rss::Sampler::start(p, a.rss_interval));
    let mut mark = |name: &str| {
        if let Some(s) = rss.as_mut() {
            s.mark(name);
        }
    };
    let shared = Arc::new(Shared::default());
    let errors = Arc::new(FirstError::default());
    let (p, sh, er, sl) = (
        Arc::new(plan.clone()),
        shared.clone(),
        errors.clone(),
        stall.clone(),
    );
    let threads = spawn_cores(cores, !a.common.no_pin, move |core| {
        core_main(core, cores, p.clone(), sh.clone(), er.clone(), sl.clone())
    })
    .map_err(|e| format!("starting cores: {e}"))?;

    let mut prog = Progress::new(!a.common.quiet);
    let total = conns as u64;
    let ok = main_wait(
        a.common.connect_timeout,
        || shared.ready.load(Ordering::Relaxed) + shared.failed.load(Ordering::Relaxed) >= total,
        || {
            let d = shared.ready.load(Ordering::Relaxed);
            prog.show(&format!("subscribing {} {d}/{total}", bar(d, total)));
        },
    );
    let ready = shared.ready.load(Ordering::Relaxed);
    prog.done(&format!(
        "subscribing {} {ready}/{total}",
        bar(ready, total)
    ));
    if !ok || ready < total {
        shared.set_phase(phase::DONE);
        for t in threads {
            let _ = t.join();
        }
        return Err(format!(
            "only {ready} of {total} connections opened and subscribed{}",
            errors
                .get()
                .map(|e| format!(" (first error: {e})"))
                .unwrap_or_default()
        ));
    }
    if plan.publish_target.is_some() {
        // The subscribers' node learned of them when it acknowledged them;
        // its broker subscriptions follow on its bridge thread.
        prog.show("letting the subscribing node's broker subscriptions settle");
        std::thread::sleep(Duration::from_secs(1));
    }
    mark("warmup");
    shared.set_phase(phase::WARMUP);
    timed(&mut prog, "warm-up", a.timing.warmup);
    counting(&mut syscalls, true)?;
    let watched0: Vec<Option<Duration>> = a
        .watch_pid
        .iter()
        .map(|(_, p)| crate::sys::proc_cpu(*p))
        .collect();
    let u0 = Usage::now(pid);
    let (r0, s0) = (
        shared.received.load(Ordering::Relaxed),
        shared.sent.load(Ordering::Relaxed),
    );
    let wire0 = client::rx_bytes();
    mark("measure");
    shared.set_phase(phase::MEASURE);
    if plan.stalled.is_empty() {
        timed(&mut prog, "measuring", a.timing.duration);
    } else {
        timed(&mut prog, "measuring", a.stall_after);
        mark("stall");
        stall.now.store(true, Ordering::Relaxed);
        timed(
            &mut prog,
            "stalled",
            a.timing.duration.saturating_sub(a.stall_after),
        );
    }
    let u1 = Usage::now(pid);
    let watched1: Vec<Option<Duration>> = a
        .watch_pid
        .iter()
        .map(|(_, p)| crate::sys::proc_cpu(*p))
        .collect();
    let (r1, s1) = (
        shared.received.load(Ordering::Relaxed),
        shared.sent.load(Ordering::Relaxed),
    );
    let wire = client::rx_bytes() - wire0;
    counting(&mut syscalls, false)?;
    mark("drain");
    shared.set_phase(phase::DRAIN);
    let t_drain = Instant::now();
    let drain_ns = now_ns();
    let drained = main_wait(
        a.drain_timeout,
        || {
            shared.received.load(Ordering::Relaxed) >= shared.expected.load(Ordering::Relaxed)
                && shared.lost_conns.load(Ordering::Relaxed) == 0
                && stalled_settled(&stall, drain_ns)
        },
        || prog.show("draining"),
    );
    let drain_secs = t_drain.elapsed().as_secs_f64();
    mark("done");
    shared.set_phase(phase::DONE);
    prog.done("done");
    let mut hist = histogram();
    let mut tally = Tally::default();
    let (mut other, mut misrouted, mut reached) = (0, 0, 0);
    for t in threads {
        let c = t.join().map_err(|_| "a core panicked".to_string())?;
        hist.add(&c.hist).map_err(|e| e.to_string())?;
        tally.add(&c.tally);
        other += c.other;
        misrouted += c.misrouted;
        reached += c.reached;
    }
    let expected = shared.expected.load(Ordering::Relaxed);
    let (wall, cpu, server_cpu) = u0.until(&u1);
    let secs = wall.as_secs_f64();
    let deliveries = (r1 - r0) as f64;

    let mut r = Report::new("fanout");
    r.set("target", a.common.url.as_str());
    if let Some(u) = &a.publish_url {
        r.set("publish_target", u.as_str());
    }
    r.set("subscribers", plan.subscribers);
    r.set("topics", plan.topics);
    r.set("publishers", plan.publishers);
    r.set("payload_bytes", plan.payload);
    r.set(
        "mode",
        if plan.rate == 0 {
            format!(
                "closed loop, <= {} deliveries outstanding, {}",
                plan.max_outstanding,
                match plan.min_free {
                    Some(n) => format!("one publish per write when >= {n} free"),
                    None => format!("up to {BATCH} publishes per write"),
                }
            )
        } else {
            format!("{} publishes/s", plan.rate)
        },
    );
    r.set("loadgen_cores", cores);
    r.set("driver", crate::runtime::driver_name());
    if crate::runtime::driver_name() == "epoll" && plan.publishers > cores {
        // Measured: with p publishers on one core, subscribers_reached is
        // 1/p of the subscribers under epoll (all of them on io_uring).
        r.warn(format!(
            "EPOLL DRIVER: with more than one publisher per loadgen core only one of them publishes \
             (a known limitation of this load generator on epoll; {} publishers on {cores} core(s)); \
             use io_uring or --publishers <= --cores",
            plan.publishers
        ));
    }
    r.num("measured_secs", secs, 2);
    r.num("publishes_per_sec", (s1 - s0) as f64 / secs, 0);
    r.num("deliveries_per_sec", deliveries / secs, 0);
    r.latency("latency", &hist);
    r.set("deliveries_expected", expected);
    r.set("deliveries_received", tally.unique + tally.duplicated);
    r.set("lost", expected.saturating_sub(tally.unique));
    r.set("duplicated", tally.duplicated);
    r.set("reordered", tally.reordered);
    r.set("misrouted", misrouted);
    r.set("subscribers_reached", reached);
    r.set("other_messages", other);
    r.set(
        "connections_lost",
        shared.lost_conns.load(Ordering::Relaxed),
    );
    r.num("drain_secs", drain_secs, 3);
    r.cpu(wall, cpu, cores, server_cpu);
    r.others(wall, u0.others_until(&u1), server_cpu.is_some());
    if let Some(s) = server_cpu {
        if deliveries > 0.0 {
            r.num(
                "server_cpu_ns_per_delivery",
                s.as_nanos() as f64 / deliveries,
                0,
            );
        }
    }
    if let Some(c) = syscalls {
        crate::syscalls::report(&mut r, &c.finish()?, "delivery", deliveries);
    }
    for (((name, _), c0), c1) in a.watch_pid.iter().zip(&watched0).zip(&watched1) {
        if let (Some(c0), Some(c1)) = (c0, c1) {
            let used = c1.saturating_sub(*c0);
            r.num(
                &format!("{name}_cpu_percent"),
                100.0 * used.as_secs_f64() / secs.max(1e-9),
                1,
            );
            if deliveries > 0.0 {
                r.num(
                    &format!("{name}_cpu_ns_per_delivery"),
                    used.as_nanos() as f64 / deliveries,
                    0,
                );
            }
        }
    }
    r.set("deflate", plan.target.deflate);
    if deliveries > 0.0 {
        // What subscribers (and publishers: acks, which are few) read,
        // per delivery: the frame as sent, compressed or not.
        r.num("wire_bytes_per_delivery", wire as f64 / deliveries, 0);
        r.num(
            "loadgen_cpu_ns_per_delivery",
            cpu.as_nanos() as f64 / deliveries,
            0,
        );
    }
    if !plan.stalled.is_empty() {
        report_stalled(&mut r, &plan, &stall, a);
    }
    if let Some(s) = rss.take() {
        let (samples, marks) = s.finish();
        crate::rss::report(&mut r, &samples, &marks, a.rss_interval);
    }
    let bad =
        expected.saturating_sub(tally.unique) + tally.duplicated + tally.reordered + misrouted;
    r.set("correct", bad == 0 && drained);
    if let Some(e) = errors.get() {
        r.set("first_error", e);
    }
    if bad != 0 || !drained {
        r.warn(format!(
            "DELIVERY CHECK FAILED: {} lost, {} duplicated, {} reordered, {} misrouted{}",
            expected.saturating_sub(tally.unique),
            tally.duplicated,
            tally.reordered,
            misrouted,
            if drained { "" } else { " (drain timed out)" }
        ));
    }
    Ok(r)
}

/// The `--server-syscalls` counter, attached now (disabled), if asked for.
pub(crate) fn syscall_counter(
    c: &crate::cli::Common,
) -> Result<Option<crate::syscalls::Counter>, String> {
    match (c.server_syscalls, c.server_pid) {
        (true, Some(pid)) => crate::syscalls::Counter::attach(pid)
            .map(Some)
            .map_err(|e| format!("--server-syscalls: {e}")),
        _ => Ok(None),
    }
}

/// Switches the `--server-syscalls` counter on or off at a window's edge.
pub(crate) fn counting(c: &mut Option<crate::syscalls::Counter>, on: bool) -> Result<(), String> {
    match c {
        Some(c) if on => c.enable(),
        Some(c) => c.disable(),
        None => Ok(()),
    }
    .map_err(|e| format!("--server-syscalls: {e}"))
}

pub(crate) fn timed(prog: &mut Progress, label: &str, d: Duration) {
    let start = Instant::now();
    main_wait(
        d,
        || false,
        || {
            let e = start.elapsed().as_secs_f64();
            prog.show(&format!(
                "{label:<10} {} {e:.1}/{:.1} s",
                bar((e * 10.0) as u64, (d.as_secs_f64() * 10.0) as u64),
                d.as_secs_f64()
            ));
        },
    );
}

async fn core_main(
    core: usize,
    cores: usize,
    plan: Arc<Plan>,
    shared: Arc<Shared>,
    errors: Arc<FirstError>,
    stall: Arc<Stall>,
) -> CoreResult {
    let st = Rc::new(CoreState {
        hist: RefCell::new(histogram()),
        tally: Cell::new(Tally::default()),
        other: Cell::new(0),
        misrouted: Cell::new(0),
        reached: Cell::new(0),
        pending: Cell::new(0),
        fds: RefCell::new(Vec::new()),
    });
    // Subscribers first (global ids 0..S), then publishers (S..S+P).
    let mut ids = share(plan.subscribers, core, cores);
    ids.extend(
        share(plan.publishers, core, cores)
            .into_iter()
            .map(|j| plan.subscribers + j),
    );
    let total = plan.subscribers + plan.publishers;
    let sources = Rc::new(plan.target.sources(total, client::source_base()));
    let opened = pool(ids.len(), plan.concurrency, {
        let (plan, ids, sources) = (plan.clone(), ids.clone(), sources.clone());
        move |k| {
            let (plan, src, id) = (plan.clone(), source_for(&sources, ids[k]), ids[k]);
            async move {
                // Only the subscribers that will stall get the fixed buffer.
                let rcvbuf = plan
                    .stall_rcvbuf
                    .filter(|_| plan.stalled.binary_search(&id).is_ok());
                let target = match &plan.publish_target {
                    Some(t) if id >= plan.subscribers => t,
                    _ => &plan.target,
                };
                open_with_rcvbuf(target, src, rcvbuf).await
            }
        }
    })
    .await;
    let mut tasks = Vec::new();
    for (k, o) in opened.into_iter().enumerate() {
        let (stream, rest) = match o {
            Ok(v) => v,
            Err(e) => {
                errors.set(e);
                shared.failed.fetch_add(1, Ordering::Relaxed);
                continue;
            }
        };
        let (reader, outbox, fd) = client::split(stream, rest, plan.target.deflate);
        st.fds.borrow_mut().push(fd);
        let id = ids[k];
        let (plan, shared, errors, st) = (plan.clone(), shared.clone(), errors.clone(), st.clone());
        let slot = plan.stalled.binary_search(&id).ok();
        tasks.push(if let Some(k) = slot {
            monoio::spawn(stalled_subscriber(
                id,
                reader,
                outbox,
                plan,
                shared,
                stall.clone(),
                k,
            ))
        } else if id < plan.subscribers {
            monoio::spawn(subscriber(id, reader, outbox, plan, shared, errors, st))
        } else {
            monoio::spawn(publisher(
                id - plan.subscribers,
                reader,
                outbox,
                plan,
                shared,
                errors,
                stall.clone(),
            ))
        });
    }
    let flush = {
        let (shared, st) = (shared.clone(), st.clone());
        move || {
            shared
                .received
                .fetch_add(st.pending.replace(0), Ordering::Relaxed);
        }
    };
    let flusher = spawn_flusher(flush.clone(), {
        let shared = shared.clone();
        move || shared.phase() == phase::DONE
    });
    core_wait(|| shared.phase() == phase::DONE).await;
    let fds = st.fds.borrow().clone();
    wind_down(&fds, tasks, flusher, flush).await;
    let hist = st.hist.replace(histogram());
    CoreResult {
        hist,
        tally: st.tally.get(),
        other: st.other.get(),
        misrouted: st.misrouted.get(),
        reached: st.reached.get(),
    }
}

fn lost(shared: &Shared, errors: &FirstError, end: End, who: &str) {
    if shared.phase() != phase::DONE {
        shared.lost_conns.fetch_add(1, Ordering::Relaxed);
        errors.set(format!("{who}: {end:?}"));
    }
}

/// What one message to a subscriber was.
enum Kind {
    /// A stamped delivery from a publisher of this topic.
    Delivery(Arrival, u64),
    /// A stamped delivery from a publisher of another topic.
    Misrouted,
    /// The answer to the subscribe request.
    Subscribed,
    /// Anything else.
    Other,
}

/// A subscriber's view of its messages: one sequence tracker per lane of
/// its topic (lane l is slot l / T).
struct Inbox {
    topic: usize,
    topics: usize,
    tracks: Vec<SeqTrack>,
    finder: Finder,
    subscribed: bool,
    /// Whether a delivery arrived.
    reached: bool,
}

impl Inbox {
    fn new(plan: &Plan, topic: usize) -> Self {
        Self {
            topic,
            topics: plan.topics,
            tracks: vec![SeqTrack::default(); plan.on_topic(plan.lanes, topic) as usize],
            finder: Finder::new(b'P'),
            subscribed: false,
            reached: false,
        }
    }

    fn classify(&mut self, msg: &[u8]) -> Kind {
        if let Some(s) = self.finder.find(msg) {
            let j = s.sender as usize;
            match self.tracks.get_mut(j / self.topics) {
                Some(t) if j % self.topics == self.topic => {
                    Kind::Delivery(t.observe(s.seq), s.sent_ns)
                }
                _ => Kind::Misrouted,
            }
        } else if !self.subscribed && memchr::memmem::find(msg, b"\"subscribed\"").is_some() {
            self.subscribed = true;
            Kind::Subscribed
        } else {
            Kind::Other
        }
    }
}

/// Sends the subscribe request for `topic`.
async fn subscribe(outbox: &Outbox, topic: usize) -> std::io::Result<()> {
    outbox.push_text_with(|b| {
        b.extend_from_slice(b"{\"type\":\"subscribe\",\"topics\":[\"t");
        b.extend_from_slice(topic.to_string().as_bytes());
        b.extend_from_slice(b"\"]}");
    });
    outbox.flush().await
}

async fn subscriber(
    i: usize,
    mut reader: Reader,
    outbox: Outbox,
    plan: Arc<Plan>,
    shared: Arc<Shared>,
    errors: Arc<FirstError>,
    st: Rc<CoreState>,
) {
    let topic = i % plan.topics;
    if let Err(e) = subscribe(&outbox, topic).await {
        errors.set(format!("subscribe: {e}"));
        shared.failed.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let mut inbox = Inbox::new(&plan, topic);
    let limits = Limits::default();
    let end = reader
        .run(&outbox, &limits, |_, msg, now| {
            match inbox.classify(msg) {
                Kind::Delivery(arrival, sent_ns) => {
                    if !inbox.reached {
                        inbox.reached = true;
                        st.reached.set(st.reached.get() + 1);
                    }
                    let mut tally = st.tally.get();
                    tally.count(arrival);
                    st.tally.set(tally);
                    st.pending.set(st.pending.get() + 1);
                    if shared.phase() == phase::MEASURE {
                        st.hist
                            .borrow_mut()
                            .saturating_record(now.saturating_sub(sent_ns).max(1));
                    }
                }
                Kind::Misrouted => st.misrouted.set(st.misrouted.get() + 1),
                Kind::Subscribed => {
                    shared.ready.fetch_add(1, Ordering::Relaxed);
                }
                Kind::Other => st.other.set(st.other.get() + 1),
            }
            Flow::Continue
        })
        .await;
    lost(&shared, &errors, end, "subscriber");
}
