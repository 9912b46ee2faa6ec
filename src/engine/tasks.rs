//! A core's tasks: the accept loop, the inbox, the flusher and the once-a-second ticker, and the core's graceful shutdown.

use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::time::{Duration, Instant};

use super::settle::{settle_driver_tables, SETTLE_MIN_PEAK};
use crate::api::{CoreOf, Handler};
use crate::conn::yield_now;
use crate::io::{self, flush, flush_some};
use crate::mesh::{CoreMsg, Inbox};
use crate::sys;

/// A core's life: accept until told to stop, then close gracefully.
pub(super) async fn run_core<H: Handler>(
    core: Rc<CoreOf<H>>,
    listener: std::net::TcpListener,
    inbox: Inbox,
    direct: Option<crate::uring::DirectIo>,
) {
    monoio::spawn(flusher(core.clone()));
    monoio::spawn(ticker(core.clone()));
    monoio::spawn(inbox_loop(core.clone(), inbox));
    if let Some(direct) = direct {
        return run_direct(core, listener, Rc::new(direct)).await;
    }
    let listener = match monoio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(core = core.id(), error = %e, "cannot register listener");
            return;
        }
    };
    monoio::select! {
        _ = accept_loop(core.clone(), &listener) => {},
        _ = core.stop_signal().notified() => {},
    }
    // Stop listening now: the runtime may end before an asynchronous close
    // of the socket would run, and new clients must be refused, not queued.
    sys::shutdown(listener.as_raw_fd(), libc::SHUT_RDWR);
    drop(listener);
    close_gracefully(&core).await;
}

/// Graceful shutdown: close 1001 to every open connection, drop
/// handshakes in progress, wait for close handshakes or the deadline.
async fn close_gracefully<H: Handler>(core: &Rc<CoreOf<H>>) {
    core.begin_shutdown();
    core.conns().close_all();
    flush(core);
    if !core.conns().is_empty() {
        monoio::select! {
            _ = core.drained_signal().notified() => {},
            _ = monoio::time::sleep(core.config().shutdown_timeout) => {
                tracing::warn!(core = core.id(), left = core.conns().len(), "shutdown deadline: dropping connections");
            },
        }
    }
}

/// [`run_core`] on the direct path: the rings' driver accepts and serves
/// every connection; this waits for the stop, then stops accepting and
/// closes gracefully (the driver goes on serving the closes).
async fn run_direct<H: Handler>(
    core: Rc<CoreOf<H>>,
    listener: std::net::TcpListener,
    direct: Rc<crate::uring::DirectIo>,
) {
    core.conns().set_direct(direct.clone());
    monoio::spawn(io::drive(core.clone(), direct.clone()));
    core.stop_signal().notified().await;
    direct.stop_accepting();
    sys::shutdown(listener.as_raw_fd(), libc::SHUT_RDWR);
    close_gracefully(&core).await;
    drop(listener);
}

async fn accept_loop<H: Handler>(core: Rc<CoreOf<H>>, listener: &monoio::net::TcpListener) {
    let mut log = RateLimitedLog::default();
    loop {
        match listener.accept().await {
            Ok((stream, _peer)) => {
                monoio::spawn(io::serve(core.clone(), Rc::new(stream)));
            }
            Err(e) if out_of_resources(&e) => {
                // Out of descriptors or memory: the queue stays full until
                // something closes, so back off instead of spinning.
                log.warn(core.id(), &e);
                monoio::time::sleep(Duration::from_millis(50)).await;
            }
            // A connection that failed between SYN and accept (reset,
            // aborted, unreachable) costs only itself: take the next one.
            Err(e) => log.warn(core.id(), &e),
        }
    }
}

/// Errors after which `accept` will fail again until resources free up.
fn out_of_resources(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// One warning per second at most, with the count of what it summarises:
/// a flood of failing accepts must not become a flood of log lines.
#[derive(Default)]
struct RateLimitedLog {
    last: Option<Instant>,
    suppressed: u64,
}

impl RateLimitedLog {
    fn warn(&mut self, core: usize, e: &std::io::Error) {
        let now = Instant::now();
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(1))
        {
            self.suppressed += 1;
            return;
        }
        tracing::warn!(core, error = %e, suppressed = self.suppressed, "accept failed");
        self.last = Some(now);
        self.suppressed = 0;
    }
}

/// Connections the flusher writes before it lets the core read again.
const FLUSH_STEP: usize = 512;

/// Writes every connection that got frames since the last turn.
///
/// A long flush (a publish to thousands of local subscribers) goes in
/// steps of [`FLUSH_STEP`] connections, and between two steps the core
/// reads whatever input has arrived (a zero wait on the timer makes the
/// runtime collect completions, which a yield would not on a ring in
/// deferred mode): the next publish then reaches the connections not yet
/// written in the same write as this one, and a flush of 10,000
/// connections does not keep input waiting until it ends.
///
/// Under load — at least [`Config::flush_gather_min`](crate::Config::flush_gather_min)
/// connections still to write — the wait before a step is
/// [`Config::flush_gather`](crate::Config::flush_gather) instead of zero:
/// the publishes that arrive meanwhile leave in the same writes. A write
/// on loopback costs the kernel about the same whatever it carries, so a
/// busy core that writes each connection as soon as it can spends its
/// time on writes of one or two frames; pausing a little between steps
/// lets every write carry more.
async fn flusher<H: Handler>(core: Rc<CoreOf<H>>) {
    let gather = core.config().flush_gather;
    let gather_min = core.config().flush_gather_min;
    let timer = match GatherTimer::new() {
        Ok(t) => Some(t),
        Err(e) => {
            tracing::warn!(core = core.id(), error = %e, "no flush timer: writes are neither gathered nor stepped");
            None
        }
    };
    loop {
        core.schedule().wake().notified().await;
        let Some(t) = &timer else {
            flush(&core);
            continue;
        };
        let gather_now = || !gather.is_zero() && core.conns().dirty_len() >= gather_min;
        if gather_now() {
            t.wait(gather).await;
            core.stats().gathers.bump(1);
        }
        while flush_some(&core, FLUSH_STEP) {
            if gather_now() {
                t.wait(gather).await;
                core.stats().gathers.bump(1);
            } else {
                t.wait(Duration::ZERO).await;
            }
        }
    }
}

/// A [`sys::ShortTimer`] registered with the core's driver.
struct GatherTimer {
    timer: sys::ShortTimer,
    ready: monoio::net::UnixStream,
}

impl GatherTimer {
    fn new() -> std::io::Result<Self> {
        use std::os::fd::FromRawFd;
        let timer = sys::ShortTimer::new()?;
        // The driver only waits for readiness of this descriptor (a poll on
        // io_uring, a registration on epoll): monoio has no wrapper for a
        // bare descriptor, so it is lent as a stream on which no stream
        // operation is ever made.
        let dup = dup_cloexec(timer.fd())?;
        // SAFETY: `dup` is a fresh descriptor owned by nobody else; the
        // stream only polls it for readability and closes it on drop (no
        // socket call is made on it: it is a timerfd).
        let std_stream = unsafe { std::os::unix::net::UnixStream::from_raw_fd(dup) };
        let ready = monoio::net::UnixStream::from_std(std_stream)?;
        Ok(Self { timer, ready })
    }

    /// Returns once `d` has passed (zero: after one wait through the
    /// driver); the core serves its other tasks meanwhile.
    async fn wait(&self, d: Duration) {
        if self.timer.arm(d).is_err() {
            return;
        }
        // Always through the driver, even when the timer has already
        // expired: that is what lets the core collect its other
        // completions (a zero wait exists for that).
        loop {
            if self.ready.readable(false).await.is_err() {
                return;
            }
            if self.timer.consume() {
                return;
            }
        }
    }
}

/// `dup(fd)` with close-on-exec.
fn dup_cloexec(fd: std::os::fd::RawFd) -> std::io::Result<std::os::fd::RawFd> {
    // SAFETY: F_DUPFD_CLOEXEC on a valid descriptor has no memory effects.
    let d = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
    if d < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(d)
}

/// Drains the core's inbox; sleeps on the wake socket when it is empty.
async fn inbox_loop<H: Handler>(core: Rc<CoreOf<H>>, inbox: Inbox) {
    let wake_fd = inbox.wake_socket().as_raw_fd();
    let wake = match inbox
        .wake_socket()
        .try_clone()
        .and_then(monoio::net::UnixStream::from_std)
    {
        Ok(w) => w,
        Err(e) => {
            tracing::error!(core = core.id(), error = %e, "cannot register wake socket");
            return;
        }
    };
    let mailbox = core.mesh().mailbox(core.id());
    let mut drain = [0u8; 64];
    loop {
        let mut handled = 0usize;
        while let Some(msg) = inbox.try_recv() {
            on_core_msg(&core, msg);
            handled += 1;
            if handled.is_multiple_of(1024) {
                // Let this core's connections run between long bursts.
                yield_now().await;
            }
        }
        if handled > 0 {
            // What the messages queued on the direct path (a shutdown, a
            // close) goes to the kernel now.
            core.conns().submit_direct();
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

/// The home core answered topic `index` of this core's join `seq`.
fn stream_joined<H: Handler>(
    core: &CoreOf<H>,
    seq: u64,
    index: usize,
    catchup: crate::streams::Catchup,
) {
    let done = core.joins().answer(seq, index, catchup);
    if let Some(done) = done {
        crate::io::complete_join(core, done);
    }
}

/// Handles a message from another core (or a thread holding the handle).
fn on_core_msg<H: Handler>(core: &CoreOf<H>, msg: CoreMsg) {
    match msg {
        CoreMsg::Publish {
            topic,
            frame,
            exclude,
            tally,
        } => core.deliver_remote(&topic, frame, exclude, tally),
        CoreMsg::Broadcast { frame, exclude } => core.deliver_broadcast(frame, exclude),
        CoreMsg::Send { to, frame } => {
            let mut conns = core.conns();
            if conns.is_live(to) {
                conns.send(to.key(), frame);
            } else {
                // The connection closed before the message reached it.
                conns.stats().discarded.bump(1);
            }
        }
        CoreMsg::Close { to, code, reason } => {
            let mut conns = core.conns();
            if conns.is_live(to) {
                conns.close(to.key(), code, &reason);
            }
        }
        CoreMsg::HttpReply { to, response } => {
            let mut conns = core.conns();
            if conns.is_live(to) {
                conns.http_reply(to.key(), &response);
            }
        }
        CoreMsg::StreamPublish {
            topic,
            frame,
            exclude,
            done,
        } => match core.config().history_of(&topic) {
            Some(policy) => {
                core.publish_home(&topic, policy, frame, exclude, done);
            }
            // Not reached (the configuration is fixed); a plain publish.
            None => {
                core.publish(&topic, frame, exclude, done);
            }
        },
        CoreMsg::StreamJoin {
            from,
            seq,
            index,
            topic,
            since,
        } => {
            let catchup = core.join_home(&topic, &since);
            if from == core.id() {
                // Taken now: publications already waiting in this inbox
                // come after the position just read, and must be held for
                // the join, not dropped as if they preceded it.
                stream_joined(core, seq, index, catchup);
            } else {
                core.mesh().send(
                    from,
                    CoreMsg::StreamJoined {
                        seq,
                        index,
                        catchup,
                    },
                );
            }
        }
        CoreMsg::StreamJoined {
            seq,
            index,
            catchup,
        } => stream_joined(core, seq, index, catchup),
        CoreMsg::Run(job) => job(core),
        CoreMsg::Shutdown => core.begin_shutdown(),
    }
}

/// The core's clock and timer wheel: one tick per second.
async fn ticker<H: Handler>(core: Rc<CoreOf<H>>) {
    let start = Instant::now();
    let mut due = Vec::new();
    loop {
        monoio::time::sleep(Duration::from_secs(1)).await;
        let now = start.elapsed().as_secs();
        core.conns().advance(now, &mut due);
        let n = due.len();
        {
            let mut conns = core.conns();
            for (key, gen) in due.drain(..) {
                conns.on_timer(key, gen);
            }
            conns.enforce_lag();
        }
        if due.capacity() > 2 * n.max(64) {
            due.shrink_to(n);
        }
        flush(&core);
        if let Some(peak) = core.trim() {
            if peak >= SETTLE_MIN_PEAK {
                settle_driver_tables(peak).await;
                crate::alloc::core_emptied();
            }
        }
    }
}
