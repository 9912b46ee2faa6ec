//! `echo`: C connections each keep `--window` stamped messages in flight and send the next one when an echo returns: messages/s and round-trip latency, with every echo checked (lost, duplicated, reordered).
//!
//! Messages carry the short stamp (sender and sequence number); each
//! connection keeps the send times of its last `--window` messages, so a
//! payload can be as short as 26 bytes (the websocket-shootout sends 32).

use std::cell::{Cell, RefCell};
use std::os::fd::RawFd;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use hdrhistogram::Histogram;
use shardcast::proto::Limits;

use crate::cli::{EchoArgs, EchoProtocol};
use crate::client::{self, source_for, Flow, Outbox};
use crate::report::{bar, histogram, Progress, Report};
use crate::runtime::{core_wait, main_wait, phase, spawn_cores, Shared};
use crate::scenario::{open, pool, share, spawn_flusher, wind_down, FirstError};
use crate::stamp::{Finder, Stamp, SHORT_LEN};
use crate::sys::{self, now_ns, Usage};
use crate::track::{Arrival, SeqTrack, Tally};

struct CoreState {
    hist: RefCell<Histogram<u64>>,
    tally: Cell<Tally>,
    other: Cell<u64>,
    pending: Cell<u64>,
    fds: RefCell<Vec<RawFd>>,
}

fn write_msg(b: &mut Vec<u8>, proto: EchoProtocol, id: usize, seq: u64, payload: usize) {
    if proto == EchoProtocol::Shootout {
        b.extend_from_slice(b"{\"type\":\"echo\",\"payload\":\"");
    } else {
        b.push(b'"');
    }
    Stamp {
        kind: b'E',
        sender: id as u32,
        seq,
        sent_ns: 0,
    }
    .write_short(b, payload);
    b.extend_from_slice(if proto == EchoProtocol::Shootout {
        b"\"}"
    } else {
        b"\""
    });
}

/// Runs the scenario.
///
/// # Errors
/// A bad URL, or connections that could not be opened.
pub fn run(a: &EchoArgs) -> Result<Report, String> {
    let target = a.common.target()?;
    sys::raise_fd_limit();
    let n = a.connections;
    let limit = sys::fd_limit().saturating_sub(64) as usize;
    if n > limit {
        return Err(format!(
            "echo runs in one process: {n} connections exceed {limit} open files"
        ));
    }
    let cores = a.common.cores();
    let mut syscalls = super::fanout::syscall_counter(&a.common)?;
    let shared = Arc::new(Shared::default());
    let errors = Arc::new(FirstError::default());
    let payload = a.payload.max(SHORT_LEN);
    let (window, proto, conc) = (a.window.max(1) as u64, a.protocol, a.common.concurrency);
    let (t, sh, er) = (Arc::new(target), shared.clone(), errors.clone());
    let threads = spawn_cores(cores, !a.common.no_pin, move |core| {
        let (target, shared, errors) = (t.clone(), sh.clone(), er.clone());
        async move {
            let st = Rc::new(CoreState {
                hist: RefCell::new(histogram()),
                tally: Cell::new(Tally::default()),
                other: Cell::new(0),
                pending: Cell::new(0),
                fds: RefCell::new(Vec::new()),
            });
            let ids = share(n, core, cores);
            let sources = Rc::new(target.sources(n, client::source_base()));
            let opened = pool(ids.len(), conc, {
                let (target, ids, sources) = (target.clone(), ids.clone(), sources.clone());
                move |k| {
                    let (target, src) = (target.clone(), source_for(&sources, ids[k]));
                    async move { open(&target, src).await }
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
                let (mut reader, outbox, fd) = client::split(stream, rest, target.deflate);
                st.fds.borrow_mut().push(fd);
                let id = ids[k];
                let (shared, errors, st) = (shared.clone(), errors.clone(), st.clone());
                tasks.push(monoio::spawn(async move {
                    shared.ready.fetch_add(1, Ordering::Relaxed);
                    core_wait(|| shared.phase() >= phase::WARMUP).await;
                    let mut seq = 0u64;
                    // Send times of the last `window` messages, by seq % window.
                    let sent_at: Vec<Cell<u64>> = (0..window).map(|_| Cell::new(0)).collect();
                    let push = |outbox: &Outbox, seq: &mut u64| {
                        sent_at[(*seq % window) as usize].set(now_ns());
                        outbox.push_text_with(|b| write_msg(b, proto, id, *seq, payload));
                        *seq += 1;
                        shared.sent.fetch_add(1, Ordering::Relaxed);
                    };
                    for _ in 0..window {
                        push(&outbox, &mut seq);
                    }
                    if outbox.flush().await.is_err() {
                        return;
                    }
                    let finder = Finder::new(b'E');
                    let mut track = SeqTrack::default();
                    let end = reader
                        .run(&outbox, &Limits::default(), |ob, msg, now| {
                            match finder.find_short(msg) {
                                Some(s) if s.sender as usize == id => {
                                    let arrival = track.observe(s.seq);
                                    let mut tally = st.tally.get();
                                    tally.count(arrival);
                                    st.tally.set(tally);
                                    st.pending.set(st.pending.get() + 1);
                                    let ph = shared.phase();
                                    // Only an echo of one of the last `window`
                                    // messages still has its send time.
                                    let recent = s.seq < seq && seq - s.seq <= window;
                                    if ph == phase::MEASURE
                                        && recent
                                        && arrival != Arrival::Duplicate
                                    {
                                        let sent = sent_at[(s.seq % window) as usize].get();
                                        st.hist
                                            .borrow_mut()
                                            .saturating_record(now.saturating_sub(sent).max(1));
                                    }
                                    if ph < phase::DRAIN {
                                        push(ob, &mut seq);
                                    }
                                }
                                _ => st.other.set(st.other.get() + 1),
                            }
                            Flow::Continue
                        })
                        .await;
                    if shared.phase() != phase::DONE {
                        shared.lost_conns.fetch_add(1, Ordering::Relaxed);
                        errors.set(format!("connection {id}: {end:?}"));
                    }
                }));
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
            (hist, st.tally.get(), st.other.get())
        }
    })
    .map_err(|e| format!("starting cores: {e}"))?;

    let mut prog = Progress::new(!a.common.quiet);
    let total = n as u64;
    main_wait(
        a.common.connect_timeout,
        || shared.ready.load(Ordering::Relaxed) + shared.failed.load(Ordering::Relaxed) >= total,
        || {
            let d = shared.ready.load(Ordering::Relaxed);
            prog.show(&format!("connecting {} {d}/{total}", bar(d, total)));
        },
    );
    let ready = shared.ready.load(Ordering::Relaxed);
    prog.done(&format!("connecting {} {ready}/{total}", bar(ready, total)));
    if ready < total {
        shared.set_phase(phase::DONE);
        for t in threads {
            let _ = t.join();
        }
        return Err(format!(
            "only {ready} of {total} connections opened{}",
            errors
                .get()
                .map(|e| format!(" (first error: {e})"))
                .unwrap_or_default()
        ));
    }
    let pid = a.common.server_pid;
    shared.set_phase(phase::WARMUP);
    super::fanout::timed(&mut prog, "warm-up", a.timing.warmup);
    super::fanout::counting(&mut syscalls, true)?;
    let u0 = Usage::now(pid);
    let r0 = shared.received.load(Ordering::Relaxed);
    shared.set_phase(phase::MEASURE);
    super::fanout::timed(&mut prog, "measuring", a.timing.duration);
    let u1 = Usage::now(pid);
    let r1 = shared.received.load(Ordering::Relaxed);
    super::fanout::counting(&mut syscalls, false)?;
    shared.set_phase(phase::DRAIN);
    let drained = main_wait(
        Duration::from_secs(5),
        || {
            shared.received.load(Ordering::Relaxed) >= shared.sent.load(Ordering::Relaxed)
                || shared.lost_conns.load(Ordering::Relaxed) > 0
        },
        || {},
    );
    shared.set_phase(phase::DONE);
    prog.done("done");
    let mut hist = histogram();
    let mut tally = Tally::default();
    let mut other = 0;
    for t in threads {
        let (h, ta, o) = t.join().map_err(|_| "a core panicked".to_string())?;
        hist.add(&h).map_err(|e| e.to_string())?;
        tally.add(&ta);
        other += o;
    }
    let sent = shared.sent.load(Ordering::Relaxed);
    let (wall, cpu, server_cpu) = u0.until(&u1);
    let secs = wall.as_secs_f64();
    let msgs = (r1 - r0) as f64;
    let mut r = Report::new("echo");
    r.set("target", a.common.url.as_str());
    r.set("connections", n);
    r.set("window", window);
    r.set("payload_bytes", payload);
    r.set(
        "protocol",
        match proto {
            EchoProtocol::Raw => "raw",
            EchoProtocol::Shootout => "shootout",
        },
    );
    r.set("loadgen_cores", cores);
    r.set("driver", crate::runtime::driver_name());
    r.num("measured_secs", secs, 2);
    r.num("messages_per_sec", msgs / secs, 0);
    r.latency("rtt", &hist);
    r.set("sent", sent);
    r.set("lost", sent.saturating_sub(tally.unique));
    r.set("duplicated", tally.duplicated);
    r.set("reordered", tally.reordered);
    r.set("other_messages", other);
    r.set(
        "connections_lost",
        shared.lost_conns.load(Ordering::Relaxed),
    );
    r.cpu(wall, cpu, cores, server_cpu);
    r.others(wall, u0.others_until(&u1), server_cpu.is_some());
    if let (Some(s), true) = (server_cpu, msgs > 0.0) {
        r.num("server_cpu_ns_per_message", s.as_nanos() as f64 / msgs, 0);
    }
    if let Some(c) = syscalls {
        crate::syscalls::report(&mut r, &c.finish()?, "message", msgs);
    }
    let bad = sent.saturating_sub(tally.unique) + tally.duplicated + tally.reordered;
    r.set("correct", bad == 0 && drained);
    if let Some(e) = errors.get() {
        r.set("first_error", e);
    }
    if bad != 0 || !drained {
        r.warn(format!(
            "ECHO CHECK FAILED: {} lost, {} duplicated, {} reordered",
            sent.saturating_sub(tally.unique),
            tally.duplicated,
            tally.reordered
        ));
    }
    Ok(r)
}
