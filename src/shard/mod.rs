//! One pinned thread per core, each with its own monoio runtime, listener, connections, topics and timers.

pub(crate) mod core;
pub mod mesh;
mod runtime;
pub mod stats;
pub mod timer;

use std::cell::Cell;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::conn::{sys, ConnId, State};
use crate::handler::Handler;
use crate::proto::{CloseCode, PreparedFrame};
use crate::pubsub::InterestTable;

use self::core::Core;
pub use self::core::CoreView;
use self::mesh::{CoreMsg, Inbox, Mailbox, Tally};
pub use self::runtime::DriverKind;
pub use self::stats::{CoreStats, MemoryGauges, StatsSnapshot};

thread_local! {
    /// Set on shard threads: blocking calls on the handle would deadlock there.
    static ON_SHARD: Cell<bool> = const { Cell::new(false) };
}

/// What every core shares: the interest table, the mailboxes and the
/// counters. Nothing here is locked.
pub struct Mesh {
    pub(crate) interest: InterestTable,
    pub(crate) mailboxes: Box<[Mailbox]>,
    pub(crate) stats: Box<[CoreStats]>,
    pub(crate) upgraded: stats::Gauge,
}

struct HandleInner {
    mesh: Arc<Mesh>,
    local_addr: SocketAddr,
    drivers: Mutex<Vec<DriverKind>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

/// A handle to a running server, usable from any thread: publish, send to
/// a connection, read stats, shut down.
#[derive(Clone)]
pub struct ServerHandle {
    inner: Arc<HandleInner>,
}

/// What a counted publish reached over all cores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PublishReport {
    /// Subscribers the frame was queued for.
    pub delivered: usize,
    /// Subscribers skipped by the slow-consumer policy.
    pub dropped: usize,
}

/// Errors of the handle's blocking calls.
#[derive(Debug, thiserror::Error)]
pub enum HandleError {
    /// Called on a shard thread, where waiting would stop the core that
    /// must answer.
    #[error("blocking server call made on a shard thread")]
    OnShard,
    /// The server has stopped.
    #[error("server stopped")]
    Stopped,
}

impl ServerHandle {
    /// The address every core listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr
    }

    /// Number of cores.
    pub fn cores(&self) -> usize {
        self.inner.mesh.mailboxes.len()
    }

    /// The io driver each core runs.
    pub fn drivers(&self) -> Vec<DriverKind> {
        self.inner
            .drivers
            .lock()
            .map(|d| d.clone())
            .unwrap_or_default()
    }

    /// Publishes `frame` to every subscriber of `topic` on every core, from
    /// any thread. Messages published from one thread to one topic arrive in
    /// order. Returns the number of cores it was sent to.
    pub fn publish(&self, topic: &str, frame: &PreparedFrame) -> usize {
        self.publish_inner(topic, frame, None)
    }

    /// Publishes a text message; see [`ServerHandle::publish`].
    pub fn publish_text(&self, topic: &str, text: &str) -> usize {
        self.publish(topic, &PreparedFrame::text(text))
    }

    /// Publishes a binary message; see [`ServerHandle::publish`].
    pub fn publish_binary(&self, topic: &str, data: &[u8]) -> usize {
        self.publish(topic, &PreparedFrame::binary(data))
    }

    /// Publishes and waits until every core has queued it, returning how
    /// many subscribers it reached.
    ///
    /// # Errors
    /// [`HandleError::OnShard`] on a shard thread (use the callback's
    /// `publish` there); [`HandleError::Stopped`] if the server stopped.
    pub fn publish_counted(
        &self,
        topic: &str,
        frame: &PreparedFrame,
    ) -> Result<PublishReport, HandleError> {
        if ON_SHARD.with(Cell::get) {
            return Err(HandleError::OnShard);
        }
        let mesh = &self.inner.mesh;
        let bucket = mesh.interest.bucket(topic);
        let mut cores = Vec::new();
        mesh.interest.for_each_core(bucket, |c| cores.push(c));
        if cores.is_empty() {
            return Ok(PublishReport::default());
        }
        let (tx, rx) = std::sync::mpsc::channel();
        let tally = Tally::new(cores.len(), tx);
        let t: Arc<str> = Arc::from(topic);
        for c in cores {
            mesh.mailboxes[c].send(CoreMsg::Publish {
                topic: t.clone(),
                frame: frame.as_bytes().clone(),
                exclude: None,
                tally: Some(tally.clone()),
            });
        }
        rx.recv_timeout(Duration::from_secs(30))
            .map_err(|_| HandleError::Stopped)?;
        Ok(PublishReport {
            delivered: tally.delivered.load(Ordering::Relaxed),
            dropped: tally.dropped.load(Ordering::Relaxed),
        })
    }

    fn publish_inner(&self, topic: &str, frame: &PreparedFrame, exclude: Option<ConnId>) -> usize {
        let mesh = &self.inner.mesh;
        let bucket = mesh.interest.bucket(topic);
        let mut shared: Option<Arc<str>> = None;
        let mut n = 0;
        mesh.interest.for_each_core(bucket, |c| {
            n += 1;
            let t = shared.get_or_insert_with(|| Arc::from(topic)).clone();
            mesh.mailboxes[c].send(CoreMsg::Publish {
                topic: t,
                frame: frame.as_bytes().clone(),
                exclude,
                tally: None,
            });
        });
        n
    }

    /// Sends a frame to one connection, from any thread. A stale id (the
    /// connection closed) is ignored.
    pub fn send(&self, to: ConnId, frame: &PreparedFrame) {
        if let Some(mb) = self.inner.mesh.mailboxes.get(to.shard()) {
            mb.send(CoreMsg::Send {
                to,
                frame: frame.as_bytes().clone(),
            });
        }
    }

    /// Answers a deferred HTTP request and half-closes its connection.
    pub(crate) fn http_reply(&self, to: ConnId, resp: &crate::handler::HttpResponse) {
        if let Some(mb) = self.inner.mesh.mailboxes.get(to.shard()) {
            mb.send(CoreMsg::HttpReply {
                to,
                response: crate::conn::read::http_response_bytes(resp).into(),
            });
        }
    }

    /// Closes one connection with `code` and `reason`, from any thread.
    pub fn close(&self, to: ConnId, code: CloseCode, reason: &str) {
        if let Some(mb) = self.inner.mesh.mailboxes.get(to.shard()) {
            mb.send(CoreMsg::Close {
                to,
                code,
                reason: reason.to_owned(),
            });
        }
    }

    /// Runs `f` on every core and collects the results, in core order.
    ///
    /// # Errors
    /// [`HandleError::OnShard`] on a shard thread; [`HandleError::Stopped`]
    /// if a core did not answer within 10 s.
    pub fn query<R: Send + 'static>(
        &self,
        f: impl Fn(&dyn CoreView) -> R + Send + Sync + 'static,
    ) -> Result<Vec<R>, HandleError> {
        if ON_SHARD.with(Cell::get) {
            return Err(HandleError::OnShard);
        }
        let f = Arc::new(f);
        let (tx, rx) = std::sync::mpsc::channel();
        let n = self.cores();
        for (i, mb) in self.inner.mesh.mailboxes.iter().enumerate() {
            let f = f.clone();
            let tx = tx.clone();
            mb.send(CoreMsg::Run(Box::new(move |core: &dyn CoreView| {
                let _ = tx.send((i, f(core)));
            })));
        }
        let mut out: Vec<Option<R>> = (0..n).map(|_| None).collect();
        for _ in 0..n {
            let (i, r) = rx
                .recv_timeout(Duration::from_secs(10))
                .map_err(|_| HandleError::Stopped)?;
            out[i] = Some(r);
        }
        Ok(out
            .into_iter()
            .map(|r| r.expect("every core answered"))
            .collect())
    }

    /// Subscribers of `topic` over all cores.
    ///
    /// # Errors
    /// As [`ServerHandle::query`].
    pub fn subscriber_count(&self, topic: &str) -> Result<usize, HandleError> {
        let t = topic.to_owned();
        Ok(self
            .query(move |c| c.subscriber_count(&t))?
            .into_iter()
            .sum())
    }

    /// Messages waiting in each core's inbox (a core that falls behind its
    /// peers shows here first).
    pub fn inbox_depths(&self) -> Vec<usize> {
        self.inner.mesh.mailboxes.iter().map(Mailbox::len).collect()
    }

    /// Counters of each core.
    pub fn core_stats(&self) -> Vec<StatsSnapshot> {
        self.inner
            .mesh
            .stats
            .iter()
            .map(CoreStats::snapshot)
            .collect()
    }

    /// Counters summed over all cores.
    pub fn stats(&self) -> StatsSnapshot {
        let mut total = StatsSnapshot::default();
        for s in self.core_stats() {
            total.add(&s);
        }
        total
    }

    /// Starts a graceful shutdown: every core stops accepting, sends close
    /// 1001 to its connections, waits for their close handshakes (at most
    /// [`Config::shutdown_timeout`]) and stops. Returns at once; see
    /// [`ServerHandle::join`].
    pub fn shutdown(&self) {
        for mb in self.inner.mesh.mailboxes.iter() {
            mb.send(CoreMsg::Shutdown);
        }
    }

    /// Waits until every core has stopped.
    pub fn join(&self) {
        let threads = std::mem::take(&mut *self.inner.threads.lock().expect("thread list"));
        for t in threads {
            let _ = t.join();
        }
    }
}

/// A shardcast server: a handler and a configuration, ready to start.
pub struct Server<H: Handler> {
    config: Config,
    handler: H,
}

impl<H: Handler> Server<H> {
    /// A server running `handler` with `config`.
    pub fn new(config: Config, handler: H) -> Self {
        Self { config, handler }
    }

    /// Binds every core's listener, starts the cores and returns once all of
    /// them run.
    ///
    /// # Errors
    /// Binding fails, or a core cannot build its runtime.
    pub fn start(self) -> io::Result<ServerHandle> {
        let config = Arc::new(self.config);
        let handler = Arc::new(self.handler);
        let n = config.effective_cores();
        let cpus = core_affinity::get_core_ids().unwrap_or_default();

        // Bind all listeners up front: errors reach the caller, and port 0
        // resolves to one port that every core then shares.
        let first = runtime::bind_reuseport(config.listen, config.backlog)?;
        let local_addr = first.local_addr()?;
        let mut listeners = vec![first];
        for _ in 1..n {
            listeners.push(runtime::bind_reuseport(local_addr, config.backlog)?);
        }

        let mut mailboxes = Vec::with_capacity(n);
        let mut inboxes = Vec::with_capacity(n);
        for _ in 0..n {
            let (mb, ib) = mesh::mailbox()?;
            mailboxes.push(mb);
            inboxes.push(ib);
        }
        let mesh = Arc::new(Mesh {
            interest: InterestTable::new(n, config.interest_buckets),
            mailboxes: mailboxes.into_boxed_slice(),
            stats: (0..n).map(|_| CoreStats::default()).collect(),
            upgraded: Default::default(),
        });
        let handle = ServerHandle {
            inner: Arc::new(HandleInner {
                mesh: mesh.clone(),
                local_addr,
                drivers: Mutex::new(vec![DriverKind::Legacy; n]),
                threads: Mutex::new(Vec::new()),
            }),
        };

        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<io::Result<(usize, DriverKind)>>();
        let mut threads = Vec::with_capacity(n);
        for (i, (listener, inbox)) in listeners.into_iter().zip(inboxes).enumerate() {
            let cpu = if config.pin && !cpus.is_empty() {
                Some(cpus[i % cpus.len()])
            } else {
                None
            };
            let (mesh, handle, handler, config, ready) = (
                mesh.clone(),
                handle.clone(),
                handler.clone(),
                config.clone(),
                ready_tx.clone(),
            );
            let t = std::thread::Builder::new()
                .name(format!("shardcast-core-{i}"))
                .spawn(move || {
                    if let Some(cpu) = cpu {
                        core_affinity::set_for_current(cpu);
                    }
                    ON_SHARD.with(|s| s.set(true));
                    let (mut rt, driver) = match runtime::build() {
                        Ok(r) => r,
                        Err(e) => {
                            let _ = ready.send(Err(e));
                            return;
                        }
                    };
                    tracing::info!(core = i, cpu = ?cpu.map(|c| c.id), driver = %driver, "core started");
                    let _ = ready.send(Ok((i, driver)));
                    drop(ready);
                    rt.block_on(async move {
                        let core = Rc::new(Core::new(i, mesh, handle, handler, config));
                        run_core(core, listener, inbox).await;
                    });
                })?;
            threads.push(t);
        }
        drop(ready_tx);
        *handle.inner.threads.lock().expect("thread list") = threads;
        for _ in 0..n {
            match ready_rx.recv() {
                Ok(Ok((i, d))) => handle.inner.drivers.lock().expect("drivers")[i] = d,
                Ok(Err(e)) => {
                    handle.shutdown();
                    handle.join();
                    return Err(e);
                }
                Err(_) => {
                    handle.shutdown();
                    handle.join();
                    return Err(io::Error::other("a core stopped while starting"));
                }
            }
        }
        Ok(handle)
    }

    /// Starts the server and blocks until it shuts down.
    ///
    /// # Errors
    /// As [`Server::start`].
    pub fn run(self) -> io::Result<()> {
        let h = self.start()?;
        h.join();
        Ok(())
    }
}

/// A one-core setup for unit tests that need a `Core` without threads.
#[cfg(test)]
pub(crate) fn test_core<H: Handler>(handler: H) -> Rc<Core<H>> {
    let (mb, _inbox) = mesh::mailbox().unwrap();
    let mesh = Arc::new(Mesh {
        interest: InterestTable::new(1, 16),
        mailboxes: vec![mb].into_boxed_slice(),
        stats: vec![CoreStats::default()].into_boxed_slice(),
        upgraded: Default::default(),
    });
    let handle = ServerHandle {
        inner: Arc::new(HandleInner {
            mesh: mesh.clone(),
            local_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            drivers: Mutex::new(vec![DriverKind::Legacy]),
            threads: Mutex::new(Vec::new()),
        }),
    };
    Rc::new(Core::new(
        0,
        mesh,
        handle,
        Arc::new(handler),
        Arc::new(Config::default()),
    ))
}

/// A core's life: accept until told to stop, then close gracefully.
async fn run_core<H: Handler>(core: Rc<Core<H>>, listener: std::net::TcpListener, inbox: Inbox) {
    monoio::spawn(flusher(core.clone()));
    monoio::spawn(ticker(core.clone()));
    monoio::spawn(inbox_loop(core.clone(), inbox));
    let listener = match monoio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(core = core.id, error = %e, "cannot register listener");
            return;
        }
    };
    monoio::select! {
        _ = accept_loop(core.clone(), &listener) => {},
        _ = core.stop.notified() => {},
    }
    // Stop listening now: the runtime may end before an asynchronous close
    // of the socket would run, and new clients must be refused, not queued.
    sys::shutdown(listener.as_raw_fd(), libc::SHUT_RDWR);
    drop(listener);
    // Graceful shutdown: close 1001 to every open connection, drop
    // handshakes in progress, wait for close handshakes or the deadline.
    core.shutting_down.set(true);
    let keys: Vec<(u32, State, i32)> = core
        .conns
        .borrow()
        .iter()
        .map(|(k, c)| (k as u32, c.state, c.fd))
        .collect();
    for (k, state, fd) in keys {
        match state {
            State::Open => core.close(k, CloseCode::GOING_AWAY, "server shutting down"),
            State::Handshake => sys::shutdown(fd, libc::SHUT_RDWR),
            State::Closing => {}
        }
    }
    core.flush();
    if !core.conns.borrow().is_empty() {
        monoio::select! {
            _ = core.drained.notified() => {},
            _ = monoio::time::sleep(core.config.shutdown_timeout) => {
                tracing::warn!(core = core.id, left = core.conns.borrow().len(), "shutdown deadline: dropping connections");
            },
        }
    }
}

async fn accept_loop<H: Handler>(core: Rc<Core<H>>, listener: &monoio::net::TcpListener) {
    loop {
        match listener.accept().await {
            Ok((stream, _peer)) => {
                monoio::spawn(crate::conn::read::serve(core.clone(), Rc::new(stream)));
            }
            Err(e) => {
                // Out of file descriptors or memory: back off instead of
                // spinning on a full accept queue.
                tracing::warn!(core = core.id, error = %e, "accept failed");
                monoio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Writes every connection that got frames since the last turn.
async fn flusher<H: Handler>(core: Rc<Core<H>>) {
    loop {
        core.flush_wake.notified().await;
        core.flush();
    }
}

/// Drains the core's inbox; sleeps on the wake socket when it is empty.
async fn inbox_loop<H: Handler>(core: Rc<Core<H>>, inbox: Inbox) {
    let wake_fd = inbox.wake.as_raw_fd();
    let wake = match inbox
        .wake
        .try_clone()
        .and_then(monoio::net::UnixStream::from_std)
    {
        Ok(w) => w,
        Err(e) => {
            tracing::error!(core = core.id, error = %e, "cannot register wake socket");
            return;
        }
    };
    let mailbox = &core.mesh.mailboxes[core.id];
    let mut drain = [0u8; 64];
    loop {
        let mut handled = 0usize;
        while let Ok(msg) = inbox.rx.try_recv() {
            core.on_core_msg(msg);
            handled += 1;
            if handled.is_multiple_of(1024) {
                // Let this core's connections run between long bursts.
                yield_now().await;
            }
        }
        if !mailbox.sleep(&inbox) {
            continue;
        }
        if wake.readable(false).await.is_err() {
            return;
        }
        while sys::recv(wake_fd, &mut drain).is_ok_and(|n| n > 0) {}
        mailbox.awake();
    }
}

/// The core's clock and timer wheel: one tick per second.
async fn ticker<H: Handler>(core: Rc<Core<H>>) {
    let start = Instant::now();
    let mut due = Vec::new();
    loop {
        monoio::time::sleep(Duration::from_secs(1)).await;
        let now = start.elapsed().as_secs();
        core.clock.set(now);
        core.wheel.borrow_mut().advance(now, &mut due);
        let n = due.len();
        for (key, gen) in due.drain(..) {
            check_timers(&core, key, gen, now);
        }
        if due.capacity() > 2 * n.max(64) {
            due.shrink_to(n);
        }
        core.flush();
        if let Some(peak) = core.trim() {
            if peak >= SETTLE_MIN_PEAK {
                settle_driver_tables(peak).await;
                crate::alloc::core_emptied();
            }
        }
    }
}

/// Below this many connections at peak, the driver's tables left over are
/// small (under 100 KiB) and not worth [`settle_driver_tables`].
const SETTLE_MIN_PEAK: usize = 4096;

/// Makes monoio give back the table pages a wave of connections grew.
///
/// monoio keeps in-flight operations (io_uring) or registered descriptors
/// (epoll) in a table of pages that double in size (64, 128, ... slots).
/// It frees a page only on every 2,048th removal from the table, and then
/// only the highest page, if it is empty. A core whose connections have all
/// closed makes no more removals, so the pages grown for its peak (about
/// 600 KiB for 19,000 connections) stay until connections come back: the
/// core's memory after a wave depends on where the last close fell in
/// that cycle. This issues throw-away operations, each one insertion and
/// one removal on either driver (a readiness poll of a fresh socket pair
/// that is already readable), enough for every page above the first to
/// reach its turn: 2,048 per page, about 20,000 for 19,000 connections,
/// a few tens of milliseconds, only when a core has just emptied after a
/// peak of at least [`SETTLE_MIN_PEAK`]. Returns the operations completed.
async fn settle_driver_tables(peak: usize) -> usize {
    // Page i holds 64 << i slots, so slot k is on page
    // log2((k + 64) >> 7) + 1 (0 for k < 64); the highest slot is peak - 1.
    let top = (usize::BITS - ((peak.max(1) - 1 + 64) >> 7).leading_zeros()) as usize;
    let pages = top + 1;
    let mut done = 0;
    for _ in 0..pages * 2048 {
        let Ok((a, b)) = std::os::unix::net::UnixStream::pair() else {
            break;
        };
        if (&b).write(&[0]).is_err() || a.set_nonblocking(true).is_err() {
            break;
        }
        let Ok(a) = monoio::net::UnixStream::from_std(a) else {
            break;
        };
        if a.readable(false).await.is_err() {
            break;
        }
        done += 1;
    }
    done
}

/// Acts on one connection whose timer came round: handshake timeout, idle
/// timeout, ping, close timeout. Re-schedules it otherwise.
fn check_timers<H: Handler>(core: &Rc<Core<H>>, key: u32, gen: u32, now: u64) {
    use crate::conn::read::secs;
    let cfg = &core.config;
    let mut conns = core.conns.borrow_mut();
    let Some(c) = conns.get_mut(key as usize) else {
        return;
    };
    if c.gen != gen {
        return;
    }
    let next = match c.state {
        State::Handshake => {
            let deadline = c.last_rx + secs(cfg.handshake_timeout);
            if now >= deadline {
                sys::shutdown(c.fd, libc::SHUT_RDWR);
                return;
            }
            deadline
        }
        State::Closing => {
            let deadline = c.closing_since + secs(cfg.close_timeout);
            if now >= deadline {
                sys::shutdown(c.fd, libc::SHUT_RDWR);
                return;
            }
            deadline
        }
        State::Open => {
            let idle = now.saturating_sub(c.last_rx);
            let idle_limit = secs(cfg.idle_timeout);
            let ping = secs(cfg.ping_interval);
            if idle >= idle_limit {
                core.begin_close(key, c, CloseCode::GOING_AWAY, "idle timeout", true);
                return;
            } else {
                if ping > 0 && idle >= ping && !c.ping_outstanding {
                    c.ping_outstanding = true;
                    let frame = PreparedFrame::ping(b"").into_bytes();
                    c.queued += frame.len();
                    c.outbox.push_back(frame);
                    core.mark_dirty(key, c);
                }
                let next = c.last_rx + idle_limit;
                if ping > 0 {
                    next.min(now + ping)
                } else {
                    next
                }
            }
        }
    };
    drop(conns);
    core.wheel.borrow_mut().insert(next, key, gen);
}

/// Yields once to the scheduler.
async fn yield_now() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if yielded {
            std::task::Poll::Ready(())
        } else {
            yielded = true;
            cx.waker().wake_by_ref();
            std::task::Poll::Pending
        }
    })
    .await
}

#[cfg(test)]
mod settle_tests {
    use super::*;

    fn settle_on<D: monoio::Driver>(mut rt: monoio::Runtime<D>) {
        // 4,096 slots span pages 0-6: seven pages' turns.
        assert_eq!(rt.block_on(settle_driver_tables(SETTLE_MIN_PEAK)), 7 * 2048);
        assert_eq!(rt.block_on(settle_driver_tables(19_000)), 9 * 2048);
    }

    #[test]
    fn settling_completes_every_operation_on_io_uring() {
        if !monoio::utils::detect_uring() {
            return;
        }
        settle_on(
            monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
                .build()
                .unwrap(),
        );
    }

    #[test]
    fn settling_completes_every_operation_on_epoll() {
        settle_on(
            monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
                .build()
                .unwrap(),
        );
    }
}
