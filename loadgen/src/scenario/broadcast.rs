//! `broadcast`: the websocket-shootout benchmark.
//!
//! Clients step up by `--step`. At each step `--in-flight` broadcasts are
//! kept in flight, each sent by a random client as
//! `{"type":"broadcast","payload":P}`; its round trip ends when that client
//! receives its own `{"type":"broadcastResult",...}`. After `--samples` round
//! trips every client must have received every broadcast of the step; a
//! broadcast's fanout completion is the time from its sending until the
//! last client received it. The
//! run stops when a step's p95 round trip exceeds `--limit-ms`, a check
//! fails, or `--max-clients` is reached; the result is the last step under
//! the limit.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::os::fd::RawFd;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shardcast::proto::Limits;

use crate::cli::BroadcastArgs;
use crate::client::{self, source_for, Flow, Outbox, Target};
use crate::report::{Progress, Report};
use crate::runtime::{core_wait, main_wait, spawn_cores};
use crate::scenario::{open, pool, share, spawn_flusher, wind_down, FirstError};
use crate::stamp::{Finder, Stamp};
use crate::sys::{self, now_ns, Usage};

const IDLE: u64 = 0;
const OPEN: u64 = 1;
const SAMPLE: u64 = 2;
const DONE: u64 = 3;

#[derive(Default)]
struct BShared {
    /// (generation << 8) | command: a new generation is a new order.
    order: AtomicU64,
    clients: AtomicUsize,
    in_flight: usize,
    samples: u64,
    opened: AtomicU64,
    failed: AtomicU64,
    started: AtomicU64,
    done: AtomicU64,
    sent: AtomicU64,
    received: AtomicU64,
    lost_conns: AtomicU64,
    rtts: Mutex<Vec<u64>>,
    /// This step's broadcasts by id, as the cores last flushed them.
    arrivals: Mutex<HashMap<u64, Arrivals>>,
    errors: FirstError,
}

/// Who has received one broadcast so far.
#[derive(Debug, Clone, Copy, Default)]
struct Arrivals {
    /// Clients that received it.
    count: u64,
    /// When it was sent (ns).
    sent_ns: u64,
    /// When the latest of them received it (ns).
    last_ns: u64,
}

impl Arrivals {
    fn add(&mut self, o: Arrivals) {
        self.count += o.count;
        self.sent_ns = o.sent_ns;
        self.last_ns = self.last_ns.max(o.last_ns);
    }
}

/// A broadcast's id in its stamp's sequence field: the step in the high
/// half, the step's broadcast number in the low half.
fn broadcast_id(step: u64, n: u64) -> u64 {
    (step << 32) | (n & 0xffff_ffff)
}

impl BShared {
    fn order(&self, cmd: u64) {
        let g = self.order.load(Ordering::Acquire) >> 8;
        self.order.store(((g + 1) << 8) | cmd, Ordering::Release);
    }
}

struct Client {
    id: usize,
    outbox: Outbox,
}

struct CoreB {
    shared: Arc<BShared>,
    clients: RefCell<Vec<Rc<Client>>>,
    pending: Cell<u64>,
    /// Arrivals not yet merged into `BShared::arrivals` (flushed every ms).
    arrivals: RefCell<HashMap<u64, Arrivals>>,
    step: Cell<u64>,
}

/// Sends one broadcast from a random client of this core, if the step's
/// samples are not all started.
fn fire(core: &Rc<CoreB>) {
    let sh = &core.shared;
    let n = sh.started.fetch_add(1, Ordering::Relaxed);
    if n >= sh.samples {
        return;
    }
    let c = {
        let list = core.clients.borrow();
        if list.is_empty() {
            return;
        }
        list[fastrand::usize(..list.len())].clone()
    };
    c.outbox.push_text_with(|b| {
        b.extend_from_slice(b"{\"type\":\"broadcast\",\"payload\":\"");
        Stamp {
            kind: b'B',
            sender: c.id as u32,
            seq: broadcast_id(core.step.get(), n),
            sent_ns: now_ns(),
        }
        .write(b, 0);
        b.extend_from_slice(b"\"}");
    });
    sh.sent.fetch_add(1, Ordering::Relaxed);
    monoio::spawn(async move {
        let _ = c.outbox.flush().await;
    });
}

async fn core_main(core: usize, cores: usize, target: Arc<Target>, sh: Arc<BShared>, conc: usize) {
    let me = Rc::new(CoreB {
        shared: sh.clone(),
        clients: RefCell::new(Vec::new()),
        pending: Cell::new(0),
        arrivals: RefCell::new(HashMap::new()),
        step: Cell::new(0),
    });
    let sources = Rc::new(target.sources(
        sh.clients.load(Ordering::Relaxed).max(20_000),
        client::source_base(),
    ));
    let mut fds: Vec<RawFd> = Vec::new();
    let mut tasks = Vec::new();
    let mut upto = 0usize;
    let mut seen = 0u64;
    let flush = {
        let (sh, me) = (sh.clone(), me.clone());
        move || {
            // Arrivals first: once `received` is complete, so are they.
            let local = std::mem::take(&mut *me.arrivals.borrow_mut());
            if !local.is_empty() {
                let mut all = sh.arrivals.lock().unwrap_or_else(|p| p.into_inner());
                for (id, a) in local {
                    all.entry(id).or_default().add(a);
                }
            }
            sh.received
                .fetch_add(me.pending.replace(0), Ordering::Relaxed);
        }
    };
    let flusher = spawn_flusher(flush.clone(), {
        let sh = sh.clone();
        move || sh.order.load(Ordering::Acquire) & 0xff == DONE
    });
    loop {
        core_wait(|| sh.order.load(Ordering::Acquire) != seen).await;
        seen = sh.order.load(Ordering::Acquire);
        match seen & 0xff {
            OPEN => {
                let n = sh.clients.load(Ordering::Relaxed);
                let ids: Vec<usize> = share(n, core, cores)
                    .into_iter()
                    .filter(|&i| i >= upto)
                    .collect();
                upto = n;
                let opened = pool(ids.len(), conc, {
                    let (target, ids, sources) = (target.clone(), ids.clone(), sources.clone());
                    move |k| {
                        let (target, src) = (target.clone(), source_for(&sources, ids[k]));
                        async move { open(&target, src).await }
                    }
                })
                .await;
                for (k, o) in opened.into_iter().enumerate() {
                    let (stream, rest) = match o {
                        Ok(v) => v,
                        Err(e) => {
                            sh.errors.set(e);
                            sh.failed.fetch_add(1, Ordering::Relaxed);
                            continue;
                        }
                    };
                    let (mut reader, outbox, fd) = client::split(stream, rest, target.deflate);
                    fds.push(fd);
                    let c = Rc::new(Client { id: ids[k], outbox });
                    me.clients.borrow_mut().push(c.clone());
                    let me = me.clone();
                    tasks.push(monoio::spawn(async move {
                        let finder = Finder::new(b'B');
                        let end = reader
                            .run(&c.outbox, &Limits::default(), |_, msg, now| {
                                if memchr::memmem::find(msg, b"\"broadcastResult\"").is_some() {
                                    if let Some(s) = finder.find(msg) {
                                        if s.sender as usize == c.id && s.seq >> 32 == me.step.get()
                                        {
                                            let sh = &me.shared;
                                            sh.rtts
                                                .lock()
                                                .unwrap_or_else(|p| p.into_inner())
                                                .push(now.saturating_sub(s.sent_ns));
                                            sh.done.fetch_add(1, Ordering::Relaxed);
                                            fire(&me);
                                        }
                                    }
                                } else if memchr::memmem::find(msg, b"\"broadcast\"").is_some() {
                                    me.pending.set(me.pending.get() + 1);
                                    if let Some(s) = finder.find(msg) {
                                        if s.seq >> 32 == me.step.get() {
                                            let mut map = me.arrivals.borrow_mut();
                                            let a = map.entry(s.seq).or_default();
                                            a.count += 1;
                                            a.sent_ns = s.sent_ns;
                                            a.last_ns = a.last_ns.max(now);
                                        }
                                    }
                                }
                                Flow::Continue
                            })
                            .await;
                        if me.shared.order.load(Ordering::Acquire) & 0xff != DONE {
                            me.shared.lost_conns.fetch_add(1, Ordering::Relaxed);
                            me.shared.errors.set(format!("client {}: {end:?}", c.id));
                        }
                    }));
                    sh.opened.fetch_add(1, Ordering::Relaxed);
                }
            }
            SAMPLE => {
                me.step.set(seen >> 8);
                let slots = sh.in_flight / cores + usize::from(core < sh.in_flight % cores);
                for _ in 0..slots {
                    fire(&me);
                }
            }
            DONE => break,
            _ => {}
        }
    }
    wind_down(&fds, tasks, flusher, flush).await;
}

fn pct(sorted: &[u64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    (sorted[i] as f64 / 1e4).round() / 100.0
}

/// The client counts of the steps: `--steps` (those up to `max_clients`,
/// in increasing order), else from `--initial-clients` up by `--step` to
/// `max_clients`.
fn step_sizes(a: &BroadcastArgs, max_clients: usize) -> Vec<usize> {
    let mut v: Vec<usize> = if a.steps.is_empty() {
        let mut v = vec![a.initial_clients.max(1).min(max_clients)];
        while let Some(&c) = v.last().filter(|&&c| c < max_clients) {
            v.push((c + a.step.max(1)).min(max_clients));
        }
        v
    } else {
        a.steps.iter().map(|&c| c.clamp(1, max_clients)).collect()
    };
    v.sort_unstable();
    v.dedup();
    v
}

/// Runs the scenario.
///
/// # Errors
/// A bad URL.
pub fn run(a: &BroadcastArgs) -> Result<Report, String> {
    let target = Arc::new(a.common.target()?);
    sys::raise_fd_limit();
    let cores = a.common.cores();
    let max_clients = a
        .max_clients
        .min(sys::fd_limit().saturating_sub(64) as usize);
    let sh = Arc::new(BShared {
        in_flight: a.in_flight.max(1),
        samples: a.samples.max(1) as u64,
        ..BShared::default()
    });
    sh.clients.store(max_clients, Ordering::Relaxed);
    let conc = a.common.concurrency;
    let (t, s) = (target.clone(), sh.clone());
    let threads = spawn_cores(cores, !a.common.no_pin, move |core| {
        core_main(core, cores, t.clone(), s.clone(), conc)
    })
    .map_err(|e| format!("starting cores: {e}"))?;
    let mut prog = Progress::new(!a.common.quiet);
    let u0 = Usage::now(a.common.server_pid);
    let mut steps = Vec::new();
    let mut result: Option<(usize, f64)> = None;
    let plan = step_sizes(a, max_clients);
    let mut next = 0;
    let stopped = loop {
        let clients = plan[next];
        sh.clients.store(clients, Ordering::Relaxed);
        sh.order(OPEN);
        let opened = main_wait(
            a.common.connect_timeout,
            || {
                sh.opened.load(Ordering::Relaxed) + sh.failed.load(Ordering::Relaxed)
                    >= clients as u64
            },
            || {
                prog.show(&format!(
                    "step {clients}: connecting {}",
                    sh.opened.load(Ordering::Relaxed)
                ))
            },
        );
        if !opened || sh.failed.load(Ordering::Relaxed) > 0 {
            break format!(
                "only {} of {clients} clients connected{}",
                sh.opened.load(Ordering::Relaxed),
                sh.errors
                    .get()
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default()
            );
        }
        for c in [&sh.started, &sh.done, &sh.sent, &sh.received] {
            c.store(0, Ordering::Relaxed);
        }
        sh.rtts.lock().unwrap_or_else(|p| p.into_inner()).clear();
        sh.arrivals
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        let t = Instant::now();
        let s0 = Usage::now(a.common.server_pid);
        sh.order(SAMPLE);
        let sampled = main_wait(
            a.step_timeout,
            || sh.done.load(Ordering::Relaxed) >= sh.samples,
            || {
                prog.show(&format!(
                    "step {clients}: {} round trips",
                    sh.done.load(Ordering::Relaxed)
                ))
            },
        );
        let all = main_wait(
            Duration::from_secs(10),
            || {
                sh.received.load(Ordering::Relaxed)
                    >= sh.sent.load(Ordering::Relaxed) * clients as u64
            },
            || {},
        );
        let s1 = Usage::now(a.common.server_pid);
        sh.order(IDLE);
        let secs = t.elapsed().as_secs_f64();
        // Fanout completion of every broadcast all clients received.
        let mut completions: Vec<u64> = sh
            .arrivals
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter(|a| a.count >= clients as u64)
            .map(|a| a.last_ns.saturating_sub(a.sent_ns))
            .collect();
        completions.sort_unstable();
        let (step_wall, step_cpu, step_server) = s0.until(&s1);
        let mut rtts = sh.rtts.lock().unwrap_or_else(|p| p.into_inner()).clone();
        rtts.sort_unstable();
        let p95 = pct(&rtts, 0.95);
        let sent = sh.sent.load(Ordering::Relaxed);
        let received = sh.received.load(Ordering::Relaxed);
        prog.done(&format!("step {clients}: p95 {p95} ms"));
        steps.push(serde_json::json!({
            "clients": clients,
            "round_trips": rtts.len(),
            "p50_ms": pct(&rtts, 0.5),
            "p95_ms": p95,
            "p99_ms": pct(&rtts, 0.99),
            "max_ms": pct(&rtts, 1.0),
            "broadcasts": sent,
            "deliveries_expected": sent * clients as u64,
            "deliveries_received": received,
            "deliveries_per_sec": (received as f64 / secs).round(),
            "completed_broadcasts": completions.len(),
            "completion_p50_ms": pct(&completions, 0.5),
            "completion_p95_ms": pct(&completions, 0.95),
            "completion_max_ms": pct(&completions, 1.0),
            "loadgen_cpu_pct": (step_cpu.as_secs_f64() / step_wall.as_secs_f64().max(1e-9)
                / cores as f64 * 1000.0).round() / 10.0,
            "server_cpu_ns_per_delivery": step_server
                .filter(|_| received > 0)
                .map(|s| (s.as_nanos() as f64 / received as f64).round()),
        }));
        if !sampled {
            break format!(
                "step {clients}: round trips did not finish in {:?}",
                a.step_timeout
            );
        }
        if !all || sh.lost_conns.load(Ordering::Relaxed) > 0 {
            break format!(
                "step {clients}: not every client received every broadcast ({received} of {})",
                sent * clients as u64
            );
        }
        if p95 > a.limit_ms as f64 {
            break format!("step {clients}: p95 {p95} ms > {} ms", a.limit_ms);
        }
        result = Some((clients, p95));
        next += 1;
        if next == plan.len() {
            break if clients >= max_clients {
                format!("reached --max-clients {max_clients}")
            } else {
                format!("reached the last step, {clients} clients")
            };
        }
    };
    let u1 = Usage::now(a.common.server_pid);
    sh.order(DONE);
    for t in threads {
        let _ = t.join();
    }
    let (wall, cpu, server_cpu) = u0.until(&u1);
    let mut r = Report::new("broadcast");
    r.set("target", a.common.url.as_str());
    r.set("loadgen_cores", cores);
    r.set("in_flight", a.in_flight);
    r.set("samples_per_step", a.samples);
    r.set("limit_p95_ms", a.limit_ms);
    r.set("result_clients", result.map_or(0, |(c, _)| c));
    r.set("result_p95_ms", result.map_or(0.0, |(_, p)| p));
    r.set("stopped", stopped.clone());
    r.set("steps", steps);
    r.cpu(wall, cpu, cores, server_cpu);
    r.others(wall, u0.others_until(&u1), server_cpu.is_some());
    if stopped.contains("not every client") || stopped.contains("connected") {
        r.warn(stopped);
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Scenario};

    fn args(extra: &[&str]) -> BroadcastArgs {
        let cli = Cli::from_args(["loadgen", "broadcast"].iter().chain(extra)).unwrap();
        let Scenario::Broadcast(b) = cli.scenario else {
            panic!()
        };
        b
    }

    #[test]
    fn steps_from_a_list_or_a_stride() {
        let a = args(&["--initial-clients", "1000", "--step", "2000"]);
        assert_eq!(step_sizes(&a, 6000), [1000, 3000, 5000, 6000]);
        let a = args(&["--steps", "5000,1000,19000,2000"]);
        assert_eq!(step_sizes(&a, 10_000), [1000, 2000, 5000, 10_000]);
    }
}
