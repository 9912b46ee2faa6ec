//! `connections`: open N idle connections as fast as possible (TCP connect, then the upgrade), hold them, read the server's RSS, close them all and time the server's cleanup.
//!
//! With `--subscribe-topics T` each connection, once upgraded, subscribes
//! to topic `t{i % T}` (shardcast's JSON protocol) and waits for the
//! server's `subscribed` answer before it counts as upgraded, so the held
//! connections are idle subscribers.
//!
//! Past `--per-process` connections the work is spread over worker
//! processes of this program, each driven through its stdin/stdout one
//! stage at a time, so `--connections 40000` works where one process may
//! only have 20,000 open files.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use std::cell::RefCell;

use crate::cli::ConnectionsArgs;
use crate::client::{self, source_for, Target};
use crate::report::{bar, Progress, Report};
use crate::runtime::{core_wait, main_wait, spawn_cores};
use crate::scenario::{pool, share, FirstError};
use crate::sys;

use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::TcpStream;
use shardcast::proto::deflate::Inflater;
use shardcast::proto::encode::{encode_frame, random_mask};
use shardcast::proto::{Decoded, Decoder, Incoming, Limits, OpCode, Role};

// Phase 0: connecting.
const UPGRADE: u8 = 1;
const CLOSE: u8 = 2;

#[derive(Debug, Default)]
struct Counters {
    phase: AtomicU8,
    connected: AtomicU64,
    connect_failed: AtomicU64,
    upgraded: AtomicU64,
    upgrade_failed: AtomicU64,
    error: FirstError,
}

/// What one stage achieved, over every process.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stage {
    /// Connections that made it through the stage.
    pub ok: u64,
    /// Connections that failed in it.
    pub failed: u64,
    /// CPU time the loadgen processes have used so far (ns).
    pub cpu_ns: u64,
    /// The first error.
    pub error: Option<String>,
}

impl Stage {
    fn to_line(&self) -> String {
        serde_json::json!({
            "ok": self.ok, "failed": self.failed, "cpu_ns": self.cpu_ns, "error": self.error
        })
        .to_string()
    }

    fn from_line(l: &str) -> Option<Stage> {
        let v: serde_json::Value = serde_json::from_str(l).ok()?;
        Some(Stage {
            ok: v["ok"].as_u64()?,
            failed: v["failed"].as_u64()?,
            cpu_ns: v["cpu_ns"].as_u64()?,
            error: v["error"].as_str().map(str::to_owned),
        })
    }

    fn add(&mut self, o: Stage) {
        self.ok += o.ok;
        self.failed += o.failed;
        self.cpu_ns += o.cpu_ns;
        if self.error.is_none() {
            self.error = o.error;
        }
    }
}

/// This process's connections, on its cores.
struct Local {
    c: Arc<Counters>,
    threads: Vec<JoinHandle<()>>,
    n: u64,
    progress: Progress,
}

impl Local {
    fn start(a: &ConnectionsArgs, target: Target, n: usize, progress: bool) -> Local {
        let c = Arc::new(Counters::default());
        let cores = a.common.cores();
        let total = a.total.unwrap_or(n);
        let sources = Arc::new(target.sources(total, a.source_base.unwrap_or(0)));
        let offset = a.index_offset;
        let conc = a.common.concurrency;
        let (topics, timeout) = (a.subscribe_topics, a.common.connect_timeout);
        let target = Arc::new(target);
        let cc = c.clone();
        let threads = spawn_cores(cores, !a.common.no_pin, move |core| {
            let (c, target, sources) = (cc.clone(), target.clone(), sources.clone());
            async move {
                let mine = share(n, core, cores);
                let streams = pool(mine.len(), conc, {
                    let (c, target, sources, mine) =
                        (c.clone(), target.clone(), sources.clone(), mine.clone());
                    move |k| {
                        let (c, target, sources) = (c.clone(), target.clone(), sources.clone());
                        let gi = offset + mine[k];
                        async move {
                            match client::connect(target.addr, source_for(&sources, gi)).await {
                                Ok(s) => {
                                    c.connected.fetch_add(1, Ordering::Relaxed);
                                    Some(s)
                                }
                                Err(e) => {
                                    c.error.set(format!("connect {}: {e}", target.addr));
                                    c.connect_failed.fetch_add(1, Ordering::Relaxed);
                                    None
                                }
                            }
                        }
                    }
                })
                .await;
                core_wait(|| c.phase.load(Ordering::Acquire) >= UPGRADE).await;
                let slots = Rc::new(RefCell::new(streams));
                let len = slots.borrow().len();
                let upgraded = pool(len, conc, {
                    let (c, slots, target) = (c.clone(), slots.clone(), target.clone());
                    move |k| {
                        let (c, slots, target) = (c.clone(), slots.clone(), target.clone());
                        let gi = offset + mine[k];
                        async move {
                            let mut s = slots.borrow_mut()[k].take()?;
                            let r = match client::handshake(&mut s, &target).await {
                                Ok(rest) if topics > 0 => monoio::time::timeout(
                                    timeout,
                                    subscribe(&mut s, rest, gi % topics, target.deflate),
                                )
                                .await
                                .unwrap_or_else(|_| Err("no subscribe answer in time".into())),
                                Ok(_) => Ok(()),
                                Err(e) => Err(format!("handshake: {e}")),
                            };
                            match r {
                                Ok(()) => {
                                    c.upgraded.fetch_add(1, Ordering::Relaxed);
                                    Some(s)
                                }
                                Err(e) => {
                                    c.error.set(e);
                                    c.upgrade_failed.fetch_add(1, Ordering::Relaxed);
                                    None
                                }
                            }
                        }
                    }
                })
                .await;
                core_wait(|| c.phase.load(Ordering::Acquire) >= CLOSE).await;
                for s in upgraded.iter().flatten() {
                    // Sends the FIN now, whenever the runtime gets to close the fd.
                    client::shutdown(std::os::fd::AsRawFd::as_raw_fd(s));
                }
                drop(upgraded);
                monoio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .expect("spawning core threads");
        Local {
            c,
            threads,
            n: n as u64,
            progress: Progress::new(progress),
        }
    }

    fn wait(
        &mut self,
        timeout: Duration,
        label: &str,
        ok: &AtomicU64,
        failed: &AtomicU64,
        of: u64,
    ) -> Stage {
        let progress = &mut self.progress;
        main_wait(
            timeout,
            || ok.load(Ordering::Relaxed) + failed.load(Ordering::Relaxed) >= of,
            || {
                let d = ok.load(Ordering::Relaxed) + failed.load(Ordering::Relaxed);
                progress.show(&format!("{label:<10} {} {d}/{of}", bar(d, of)));
            },
        );
        let done = ok.load(Ordering::Relaxed);
        progress.done(&format!("{label:<10} {} {done}/{of}", bar(done, of)));
        Stage {
            ok: done,
            failed: of.saturating_sub(done),
            cpu_ns: sys::self_cpu().as_nanos() as u64,
            error: self.c.error.get(),
        }
    }

    fn connected(&mut self, timeout: Duration) -> Stage {
        let c = self.c.clone();
        self.wait(timeout, "connect", &c.connected, &c.connect_failed, self.n)
    }

    fn upgraded(&mut self, timeout: Duration) -> Stage {
        let c = self.c.clone();
        c.phase.store(UPGRADE, Ordering::Release);
        let of = c.connected.load(Ordering::Relaxed);
        self.wait(timeout, "handshake", &c.upgraded, &c.upgrade_failed, of)
    }

    fn close(self) -> Stage {
        self.c.phase.store(CLOSE, Ordering::Release);
        for t in self.threads {
            let _ = t.join();
        }
        Stage {
            cpu_ns: sys::self_cpu().as_nanos() as u64,
            ..Stage::default()
        }
    }
}

/// Worker processes, each a [`Local`] behind a pipe.
struct Workers {
    kids: Vec<(Child, ChildStdin, BufReader<ChildStdout>)>,
}

impl Workers {
    fn start(a: &ConnectionsArgs) -> std::io::Result<Workers> {
        let k = a.connections.div_ceil(a.per_process.max(1));
        let exe = std::env::current_exe()?;
        let mut kids = Vec::new();
        let mut offset = 0;
        for w in 0..k {
            let n = a.connections / k + usize::from(w < a.connections % k);
            let mut cmd = Command::new(&exe);
            cmd.args([
                "connections",
                "--worker",
                "--url",
                &a.common.url,
                "--connections",
                &n.to_string(),
                "--index-offset",
                &offset.to_string(),
                "--total",
                &a.connections.to_string(),
                "--source-base",
                &a.source_base.unwrap_or(0).to_string(),
                "--concurrency",
                &a.common.concurrency.to_string(),
                "--per-process",
                &usize::MAX.to_string(),
                "--subscribe-topics",
                &a.subscribe_topics.to_string(),
                "--connect-timeout",
                &a.common.connect_timeout.as_secs_f64().to_string(),
                "--quiet",
            ]);
            if let Some(c) = a.common.cores {
                cmd.args(["--cores", &c.to_string()]);
            }
            if a.common.no_pin {
                cmd.arg("--no-pin");
            }
            let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).spawn()?;
            let stdin = child.stdin.take().expect("piped stdin");
            let stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
            kids.push((child, stdin, stdout));
            offset += n;
        }
        Ok(Workers { kids })
    }

    fn stage(&mut self, command: Option<&str>) -> Stage {
        let mut total = Stage::default();
        for (_, stdin, _) in &mut self.kids {
            if let Some(cmd) = command {
                let _ = writeln!(stdin, "{cmd}");
                let _ = stdin.flush();
            }
        }
        for (_, _, out) in &mut self.kids {
            let mut line = String::new();
            let s = match out.read_line(&mut line) {
                Ok(n) if n > 0 => Stage::from_line(&line).unwrap_or_else(|| Stage {
                    error: Some(format!("worker said: {}", line.trim())),
                    ..Stage::default()
                }),
                _ => Stage {
                    error: Some("a worker exited early".into()),
                    ..Stage::default()
                },
            };
            total.add(s);
        }
        total
    }

    fn finish(mut self) -> Stage {
        let s = self.stage(Some("close"));
        for (mut child, stdin, _) in self.kids {
            drop(stdin);
            let _ = child.wait();
        }
        s
    }
}

enum Group {
    Local(Local),
    Workers(Workers),
}

impl Group {
    fn connected(&mut self, t: Duration) -> Stage {
        match self {
            Group::Local(l) => l.connected(t),
            Group::Workers(w) => w.stage(None),
        }
    }
    fn upgraded(&mut self, t: Duration) -> Stage {
        match self {
            Group::Local(l) => l.upgraded(t),
            Group::Workers(w) => w.stage(Some("upgrade")),
        }
    }
    fn close(self) -> Stage {
        match self {
            Group::Local(l) => l.close(),
            Group::Workers(w) => w.finish(),
        }
    }
}

/// Runs as a worker: each stage's result is one JSON line on stdout; the
/// parent's `upgrade` and `close` lines on stdin start the next stages.
pub fn worker(a: &ConnectionsArgs) -> Result<(), String> {
    let target = a.common.target()?;
    let mut l = Local::start(a, target, a.connections, false);
    println!("{}", l.connected(a.common.connect_timeout).to_line());
    let stdin = std::io::stdin();
    let mut line = String::new();
    let next = |line: &mut String| {
        line.clear();
        let _ = stdin.lock().read_line(line);
    };
    next(&mut line);
    println!("{}", l.upgraded(a.common.connect_timeout).to_line());
    next(&mut line);
    println!("{}", l.close().to_line());
    Ok(())
}

/// Runs the scenario.
///
/// # Errors
/// A bad URL, or workers that cannot be started.
pub fn run(a: &ConnectionsArgs) -> Result<Report, String> {
    let mut a = a.clone();
    a.source_base = Some(a.source_base.unwrap_or_else(client::source_base));
    let a = &a;
    let target = a.common.target()?;
    sys::raise_fd_limit();
    let n = a.connections;
    let pid = a.common.server_pid;
    let mut r = Report::new("connections");
    r.set("target", a.common.url.as_str());
    r.set("connections", n);
    let base_rss = pid.and_then(sys::rss_bytes);
    let local = target.addr.ip().is_loopback();
    let server_addr = target.addr;
    let processes = n.div_ceil(a.per_process.max(1)).max(1);
    r.set("loadgen_processes", processes);
    r.set("loadgen_cores_per_process", a.common.cores());
    r.set("source_addresses", target.sources(n, 0).len());
    r.set("subscribe_topics", a.subscribe_topics);
    r.set("driver", crate::runtime::driver_name());

    let t0 = Instant::now();
    let u0 = sys::Usage::now(pid);
    let cpu0 = sys::self_cpu().as_nanos() as u64;
    let mut g = if processes > 1 {
        if !a.common.quiet {
            eprintln!("connections: {n} over {processes} worker processes");
        }
        Group::Workers(Workers::start(a).map_err(|e| format!("starting workers: {e}"))?)
    } else {
        Group::Local(Local::start(a, target, n, !a.common.quiet && !a.worker))
    };
    let connected = g.connected(a.common.connect_timeout);
    let t_connect = t0.elapsed();
    let t1 = Instant::now();
    let upgraded = g.upgraded(a.common.connect_timeout);
    let t_upgrade = t1.elapsed();
    let u1 = sys::Usage::now(pid);
    let cpu_open = upgraded
        .cpu_ns
        .saturating_sub(if processes > 1 { 0 } else { cpu0 });
    r.set("connected", connected.ok);
    r.set("connect_failed", connected.failed);
    r.num("connect_secs", t_connect.as_secs_f64(), 3);
    r.num(
        "connects_per_sec",
        connected.ok as f64 / t_connect.as_secs_f64().max(1e-9),
        0,
    );
    r.set("upgraded", upgraded.ok);
    r.set("upgrade_failed", upgraded.failed);
    r.num("handshake_secs", t_upgrade.as_secs_f64(), 3);
    r.num(
        "handshakes_per_sec",
        upgraded.ok as f64 / t_upgrade.as_secs_f64().max(1e-9),
        0,
    );
    r.cpu(
        t_connect + t_upgrade,
        Duration::from_nanos(cpu_open),
        a.common.cores() * processes,
        u0.until(&u1).2,
    );
    if processes == 1 {
        r.others(t_connect + t_upgrade, u0.others_until(&u1), pid.is_some());
    }
    if let Some(e) = upgraded.error.clone().or(connected.error.clone()) {
        r.set("first_error", e);
    }
    std::thread::sleep(a.hold);
    if let (Some(pid), Some(base)) = (pid, base_rss) {
        let held = sys::rss_bytes(pid).unwrap_or(base);
        r.set("server_rss_before_kib", base / 1024);
        r.set("server_rss_held_kib", held / 1024);
        if upgraded.ok > 0 {
            r.num(
                "server_rss_per_conn_bytes",
                (held as f64 - base as f64) / upgraded.ok as f64,
                0,
            );
        }
    }
    let port = Some(server_addr).filter(|_| local);
    if let Some(p) = port {
        if let Some(held) = sys::server_sockets(p) {
            r.set("server_sockets_held", held);
        }
    }
    let t2 = Instant::now();
    g.close();
    r.num("client_close_secs", t2.elapsed().as_secs_f64(), 3);
    if let Some(p) = port {
        // The server has cleaned up once none of its sockets on the port is
        // established or waiting in CLOSE_WAIT for it to close. Reading
        // /proc/net/tcp is not an atomic snapshot while sockets come and go,
        // so it takes two empty reads in a row.
        let mut empty = 0;
        let done = main_wait(
            a.cleanup_timeout,
            || {
                if sys::server_sockets(p).is_none_or(|n| n == 0) {
                    empty += 1;
                } else {
                    empty = 0;
                }
                empty >= 2
            },
            || {},
        );
        if done {
            r.num("server_cleanup_secs", t2.elapsed().as_secs_f64(), 3);
        } else {
            r.warn(format!(
                "the server still held {:?} connections {:.0} s after the close",
                sys::server_sockets(p),
                a.cleanup_timeout.as_secs_f64()
            ));
        }
    }
    if let Some(pid) = pid {
        if let Some(rss) = sys::rss_bytes(pid) {
            r.set("server_rss_after_kib", rss / 1024);
        }
    }
    if upgraded.ok < n as u64 {
        r.warn(format!(
            "only {} of {n} connections were upgraded{}",
            upgraded.ok,
            upgraded
                .error
                .or(connected.error)
                .map(|e| format!(" (first error: {e})"))
                .unwrap_or_default()
        ));
    }
    Ok(r)
}

/// Subscribes an upgraded connection to topic `t{topic}` and reads until
/// the server's `subscribed` answer (`leftover`: bytes read after the
/// handshake).
async fn subscribe(
    s: &mut TcpStream,
    leftover: Vec<u8>,
    topic: usize,
    deflate: bool,
) -> Result<(), String> {
    let mut frame = Vec::with_capacity(64);
    encode_frame(
        &mut frame,
        true,
        OpCode::Text,
        format!("{{\"type\":\"subscribe\",\"topics\":[\"t{topic}\"]}}").as_bytes(),
        Some(random_mask()),
    );
    let (r, _) = s.write_all(frame).await;
    r.map_err(|e| format!("subscribe: {e}"))?;
    let limits = Limits::default().with_allow_rsv1(deflate);
    let (mut decoder, mut buf) = (Decoder::new(Role::Client), leftover);
    let mut inflated = Vec::new();
    loop {
        let mut off = 0;
        loop {
            match decoder.decode(&mut buf[off..], &limits) {
                Ok(Decoded::Message {
                    consumed, message, ..
                }) => {
                    off += consumed;
                    let subscribed = |m: &[u8]| m.windows(12).any(|w| w == b"\"subscribed\"");
                    match message {
                        Incoming::Text(t) if subscribed(t.as_bytes()) => return Ok(()),
                        Incoming::Compressed { payload, .. } => {
                            Inflater::new(15, true)
                                .inflate(payload, limits.max_message_size, false, &mut inflated)
                                .map_err(|e| format!("inflate: {e}"))?;
                            if subscribed(&inflated) {
                                return Ok(());
                            }
                        }
                        Incoming::Close(_) => return Err("the server closed".into()),
                        _ => {}
                    }
                }
                Ok(Decoded::Incomplete { consumed, .. }) => {
                    off += consumed;
                    break;
                }
                Err(e) => return Err(format!("protocol error: {e}")),
            }
        }
        buf.drain(..off);
        buf.reserve(1024);
        let len = buf.len();
        let (r, slice) = s.read(buf.slice_mut(len..)).await;
        buf = slice.into_inner();
        match r {
            Ok(0) => return Err("the server closed the connection".into()),
            Ok(_) => {}
            Err(e) => return Err(format!("read: {e}")),
        }
    }
}
