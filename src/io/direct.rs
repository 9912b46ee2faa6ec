//! The direct data path's driver: one task per core dispatches the socket rings' completions (accepts, receives, sends) by user data to per-connection state, with no task per connection.
//!
//! A connection's read state (decoder, partial frame, inflater, where its
//! handshake is) lives in a vector indexed by its slab key; the bytes of a
//! receive are decoded straight from the provided buffer the kernel filled,
//! which goes back to the ring at once (a partial frame is copied out, as
//! on the readiness path). Everything else — the handshake's answer,
//! dispatch to the handler, the outbox, timers — is the code the readiness
//! path runs.

use std::cell::RefCell;
use std::rc::Rc;

use super::accept::{admit, answer, release, Answer};
use super::dispatch::{self, Step};
use super::task::{partial_cap, report_partial, Mode};
use crate::api::{CoreOf, Handler};
use crate::conn::State;
use crate::proto::deflate::{DeflateParams, Inflater};
use crate::proto::handshake::HandshakeLimits;
use crate::proto::Decoder;
use crate::uring::{parse_user_data, same_gen, Completion, DirectIo, Op};

/// Where a direct connection is in its life.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Reading its HTTP request.
    Handshake,
    /// Upgraded: frames.
    Frames,
    /// Answered or refused: reading and discarding until the peer's FIN
    /// or the close timeout.
    Linger,
}

/// A direct connection's read state, kept small: what most connections
/// never need (a partial request or frame, an inflater) is boxed in
/// [`More`], absent while there is none.
struct Reader {
    dec: Decoder,
    more: Option<Box<More>>,
    phase: Phase,
    mode: Mode,
    /// The table tracks a partial message of this connection.
    tracked: bool,
    /// `100 Continue` was sent for the request being read.
    continued: bool,
    /// Its receive was cancelled while its async session had no room.
    recv_stopped: bool,
}

/// What a connection holds beyond its decoder, while it holds any of it.
#[derive(Default)]
struct More {
    /// A request or a frame that has not completely arrived.
    rbuf: Vec<u8>,
    /// Bytes the decoder wants in all for the frame in `rbuf`.
    needed: usize,
    /// permessage-deflate was negotiated.
    inflater: Option<Box<Inflater>>,
}

impl Reader {
    /// Takes out what [`More`] holds, for a pass of reading.
    fn unpack(&mut self) -> More {
        match &mut self.more {
            Some(m) => More {
                rbuf: std::mem::take(&mut m.rbuf),
                needed: m.needed,
                inflater: m.inflater.take(),
            },
            None => More::default(),
        }
    }

    /// Puts it back; a connection left holding nothing drops the box.
    fn pack(&mut self, w: More) {
        if w.rbuf.capacity() == 0 && w.inflater.is_none() {
            self.more = None;
            return;
        }
        **self.more.get_or_insert_with(Default::default) = w;
    }

    fn new(phase: Phase) -> Self {
        Self {
            dec: Decoder::new(crate::proto::Role::Server),
            more: None,
            phase,
            mode: Mode::Reading,
            tracked: false,
            continued: false,
            recv_stopped: false,
        }
    }
}

/// A core's direct path: its rings and its connections' read state.
pub(crate) struct Direct {
    io: Rc<DirectIo>,
    readers: RefCell<Vec<Option<Reader>>>,
}

impl Direct {
    fn take(&self, key: u32) -> Option<Reader> {
        self.readers
            .borrow_mut()
            .get_mut(key as usize)
            .and_then(Option::take)
    }

    fn put(&self, key: u32, r: Reader) {
        let mut v = self.readers.borrow_mut();
        let i = key as usize;
        if v.len() <= i {
            crate::conn::reserve_gently(&mut v, i + 1);
            v.resize_with(i + 1, || None);
        }
        v[i] = Some(r);
    }

    /// Gives back the vector's memory once most of it is empty. Returns
    /// whether it shrank.
    fn trim(&self, live: usize) -> bool {
        let mut v = self.readers.borrow_mut();
        let before = v.capacity();
        if live == 0 && v.capacity() > 0 {
            *v = Vec::new();
        } else if v.capacity() > 1024 && live * 4 < v.capacity() {
            while v.last().is_some_and(Option::is_none) {
                v.pop();
            }
            v.shrink_to_fit();
        }
        v.capacity() < before
    }
}

/// The connection a completion is for: its core, the core's direct path,
/// its key and generation.
struct Cx<'a, H: Handler> {
    core: &'a Rc<CoreOf<H>>,
    st: &'a Rc<Direct>,
    key: u32,
    gen: u32,
}

impl<H: Handler> Clone for Cx<'_, H> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<H: Handler> Copy for Cx<'_, H> {}

/// Runs the core's direct path until the core stops: arms the accepts,
/// then waits for the rings' eventfd and dispatches their completions.
pub(crate) async fn drive<H: Handler>(core: Rc<CoreOf<H>>, io: Rc<DirectIo>) {
    let wake = match lend_eventfd(io.eventfd()) {
        Ok(w) => w,
        Err(e) => {
            tracing::error!(core = core.id(), error = %e, "cannot register the socket rings' eventfd");
            return;
        }
    };
    let st = Rc::new(Direct {
        io,
        readers: RefCell::new(Vec::new()),
    });
    st.io.arm_accepts();
    st.io.submit();
    // Once a second, the read states' memory and idle rings' buffers go
    // back when most of them are unused (after a wave of closes); then the
    // thread's heap is collected, since this can run after the ticker's
    // collection of the same second.
    let trimmer = (core.clone(), st.clone());
    monoio::spawn(async move {
        let (core, st) = trimmer;
        loop {
            monoio::time::sleep(std::time::Duration::from_secs(1)).await;
            let readers = st.trim(core.conns().len());
            let rings = st.io.trim();
            if readers || rings {
                crate::alloc::core_emptied();
            }
        }
    });
    let mut batch = Vec::new();
    loop {
        if wake.readable(false).await.is_err() {
            return;
        }
        st.io.reap(&mut batch);
        let mut accepted = false;
        for c in batch.drain(..) {
            accepted |= on_completion(&core, &st, &c);
        }
        if batch.capacity() > 4096 {
            batch = Vec::new();
        }
        if accepted {
            if st.io.backing_off() {
                // Out of descriptors or memory: the queue stays full until
                // something closes, so wait instead of spinning.
                let io = st.io.clone();
                monoio::spawn(async move {
                    monoio::time::sleep(std::time::Duration::from_millis(50)).await;
                    io.resume_accepts();
                });
            } else {
                st.io.arm_accepts();
            }
        }
        st.io.submit();
    }
}

/// The eventfd lent to the runtime as a stream on which only readiness is
/// ever awaited (monoio has no wrapper for a bare descriptor).
fn lend_eventfd(fd: std::os::fd::RawFd) -> std::io::Result<monoio::net::UnixStream> {
    use std::os::fd::FromRawFd;
    // SAFETY: F_DUPFD_CLOEXEC on a valid descriptor has no memory effects.
    let dup = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
    if dup < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `dup` is a fresh descriptor owned by nobody else; the
    // stream only polls it for readability and closes it on drop (no
    // socket call is made on it: it is an eventfd).
    let s = unsafe { std::os::unix::net::UnixStream::from_raw_fd(dup) };
    monoio::net::UnixStream::from_std(s)
}

/// Dispatches one completion; returns whether it was an accept (the
/// accepts are re-armed after the batch).
fn on_completion<H: Handler>(core: &Rc<CoreOf<H>>, st: &Rc<Direct>, c: &Completion) -> bool {
    match parse_user_data(c.user_data) {
        Some((Op::Accept, _, _)) => {
            accepted(core, st, c);
            true
        }
        Some((Op::Recv, key, gen)) => {
            received(core, st, key, gen, c);
            false
        }
        Some((Op::Send, key, _)) => {
            let drained = core.conns().send_done(c.user_data, c.result);
            if drained {
                dispatch::drain(core, key);
            }
            false
        }
        Some((Op::Shutdown, _, _)) => {
            st.io.shutdown_done(c);
            false
        }
        // Installs are taken by their caller, or closed by the reap.
        Some((Op::Quiet | Op::Install, _, _)) | None => false,
    }
}

/// A socket was accepted into a ring's table: its entry, its admission,
/// its receive.
fn accepted<H: Handler>(core: &Rc<CoreOf<H>>, st: &Direct, c: &Completion) {
    let Some((slot, peer)) = st.io.accepted(c) else {
        if c.result < 0 && c.result != -libc::ENFILE {
            tracing::debug!(core = core.id(), error = c.result, "accept failed");
        }
        return;
    };
    let key = core.conns().insert_direct(slot, peer);
    let Some(gen) = core.conns().gen(key) else {
        return;
    };
    // Refused: answered at once; the connection lingers until the peer
    // reads the answer and leaves.
    let phase = if admit(core, key) {
        Phase::Handshake
    } else {
        Phase::Linger
    };
    st.put(key, Reader::new(phase));
    st.io.arm_recv(slot, key, gen);
}

/// A receive of connection `key` completed.
fn received<H: Handler>(core: &Rc<CoreOf<H>>, st: &Rc<Direct>, key: u32, low: u32, c: &Completion) {
    let bid = c.buffer();
    let live = core.conns().gen(key).filter(|&g| same_gen(g, low));
    let reader = live.and_then(|_| st.take(key));
    let (Some(gen), Some(mut r)) = (live, reader) else {
        // A connection since closed (its last receive ending).
        if let Some(b) = bid {
            st.io.recycle(c.ring, b);
        }
        return;
    };
    if c.result <= 0 {
        if c.result == -libc::ENOBUFS {
            // Every buffer was in use: they are back by the time this
            // batch is submitted. Not when the receive was stopped (an
            // async session with no room) earlier in this batch: its
            // cancel found this receive already ended, and a new one
            // would read on without bound; it restarts when the session
            // has room.
            core.stats().recv_no_buffers.bump(1);
            let stopped = r.recv_stopped;
            st.put(key, r);
            if !stopped {
                rearm(core, st, key, gen);
            }
            return;
        }
        if c.result == -libc::ECANCELED && r.recv_stopped {
            st.put(key, r);
            return;
        }
        return end(core, key, r);
    }
    let Some(b) = bid else {
        st.put(key, r);
        return;
    };
    // SAFETY: the buffer was just handed over by this completion, with
    // `result` bytes, and is recycled below after the slice's last use.
    let data = unsafe { st.io.data(c.ring, b, c.result as usize) };
    let mut w = r.unpack();
    let keep = feed(Cx { core, st, key, gen }, &mut r, &mut w, data);
    r.pack(w);
    st.io.recycle(c.ring, b);
    if !keep {
        return end(core, key, r);
    }
    let stopped = r.recv_stopped;
    st.put(key, r);
    if !c.more() && !stopped {
        rearm(core, st, key, gen);
    }
}

/// Arms `key`'s receive again (a multishot receive that ended, or the
/// single-shot receive of a kernel without multishot).
fn rearm<H: Handler>(core: &CoreOf<H>, st: &Direct, key: u32, gen: u32) {
    if let Some(slot) = core.conns().slot(key) {
        st.io.arm_recv(slot, key, gen);
    }
}

/// The connection's input ended (FIN, reset, or our own shutdown): it is
/// cleaned up as on the readiness path.
fn end<H: Handler>(core: &Rc<CoreOf<H>>, key: u32, r: Reader) {
    if r.phase == Phase::Handshake {
        // Admitted and not upgraded: its slot goes back now.
        release(core, key);
    }
    drop(r);
    dispatch::finish(core, key);
}

/// Handles `data` received on `key`. Returns false when the connection is
/// done.
fn feed<H: Handler>(cx: Cx<'_, H>, r: &mut Reader, w: &mut More, data: &mut [u8]) -> bool {
    let Cx { core, key, .. } = cx;
    match r.phase {
        Phase::Linger => {
            core.conns().note_rx(key, data.len());
            true
        }
        Phase::Handshake => handshake(cx, r, w, data),
        Phase::Frames => frames(cx, r, w, data),
    }
}

/// Request bytes: answered once complete, as on the readiness path.
fn handshake<H: Handler>(cx: Cx<'_, H>, r: &mut Reader, w: &mut More, data: &mut [u8]) -> bool {
    let Cx { core, key, .. } = cx;
    let limits = HandshakeLimits {
        max_header_bytes: core.config().max_header_bytes,
        ..Default::default()
    };
    let n = data.len();
    core.stats().bytes_in.bump(n as u64);
    let outcome = if w.rbuf.is_empty() {
        match answer(core, key, data, &limits, &mut r.continued) {
            Answer::NeedMore(want) => {
                w.rbuf.reserve_exact(want.max(n + 512));
                w.rbuf.extend_from_slice(data);
                return true;
            }
            Answer::Upgraded(consumed, deflate) => {
                let rest = data[consumed..].to_vec();
                return upgraded(cx, r, w, rest, deflate);
            }
            Answer::Closed => Answer::Closed,
        }
    } else {
        w.rbuf.extend_from_slice(data);
        answer(core, key, &w.rbuf, &limits, &mut r.continued)
    };
    match outcome {
        Answer::NeedMore(want) => {
            w.rbuf.reserve(want.saturating_sub(w.rbuf.len()));
            true
        }
        Answer::Upgraded(consumed, deflate) => {
            let mut rest = std::mem::take(&mut w.rbuf);
            rest.drain(..consumed);
            upgraded(cx, r, w, rest, deflate)
        }
        Answer::Closed => {
            // Answered or refused: the slot is free at once; the socket
            // lingers until the peer leaves or the close timeout.
            release(core, key);
            r.phase = Phase::Linger;
            w.rbuf = Vec::new();
            core.conns().state(key) == Some(State::Closing)
        }
    }
}

/// The connection was upgraded; `rest` followed the request.
fn upgraded<H: Handler>(
    cx: Cx<'_, H>,
    r: &mut Reader,
    w: &mut More,
    mut rest: Vec<u8>,
    deflate: Option<DeflateParams>,
) -> bool {
    let Cx { core, key, .. } = cx;
    r.phase = Phase::Frames;
    w.inflater = deflate.map(|d| {
        Box::new(Inflater::new(
            d.client_max_window_bits,
            d.client_no_context_takeover,
        ))
    });
    w.rbuf = Vec::new();
    dispatch::open(core, key);
    r.mode = Mode::Reading;
    if !rest.is_empty() {
        let step = dispatch::process(core, key, &mut r.dec, &mut w.inflater, &mut rest);
        if step.done {
            return false;
        }
        rest.drain(..step.consumed);
        w.needed = step.needed;
        r.mode = step.mode();
        if !rest.is_empty() {
            w.rbuf = rest;
        }
    }
    after_step(cx, r, w);
    true
}

/// Frame bytes: decoded in place from the receive buffer when no frame is
/// partly here, behind the partial frame otherwise.
fn frames<H: Handler>(cx: Cx<'_, H>, r: &mut Reader, w: &mut More, data: &mut [u8]) -> bool {
    let Cx { core, st, key, gen } = cx;
    let n = data.len();
    match r.mode {
        // After a protocol error nothing can be decoded: discard until
        // the peer's FIN or the close timeout.
        Mode::Failed => return true,
        // Its async session has no room: keep the bytes; past the
        // partial-frame bound, stop receiving until it has room.
        Mode::Held => {
            core.conns().note_rx(key, n);
            w.rbuf.extend_from_slice(data);
            if w.rbuf.len() > partial_cap(core) && !r.recv_stopped {
                r.recv_stopped = true;
                st.io.cancel_recv(key, gen, core.conns().slot(key));
            }
            return true;
        }
        Mode::Reading => {}
    }
    core.conns().note_rx(key, n);
    let step: Step = if w.rbuf.is_empty() {
        let step = dispatch::process(core, key, &mut r.dec, &mut w.inflater, data);
        if !step.done && step.consumed < n {
            let tail = &data[step.consumed..];
            w.rbuf
                .reserve_exact(tail.len().max(step.needed.min(partial_cap(core))));
            w.rbuf.extend_from_slice(tail);
        }
        step
    } else {
        w.rbuf.extend_from_slice(data);
        let step = dispatch::process(core, key, &mut r.dec, &mut w.inflater, &mut w.rbuf);
        if !step.done {
            w.rbuf.drain(..step.consumed);
        }
        if w.rbuf.is_empty() || step.done {
            // Idle connections hold no buffer.
            w.rbuf = Vec::new();
        }
        step
    };
    if step.done {
        return false;
    }
    w.needed = step.needed;
    r.mode = step.mode();
    after_step(cx, r, w);
    true
}

/// After a decoding step: a held connection waits for its session's room;
/// a reading one reports what it holds of a partial message.
fn after_step<H: Handler>(cx: Cx<'_, H>, r: &mut Reader, w: &mut More) {
    let Cx { core, st, key, gen } = cx;
    match r.mode {
        Mode::Held => {
            monoio::spawn(resume(core.clone(), st.clone(), key, gen));
        }
        Mode::Reading => {
            if !report_partial(core, key, &r.dec, &mut w.rbuf, &mut r.tracked) {
                r.mode = Mode::Failed;
                r.dec = Decoder::new(crate::proto::Role::Server);
            }
        }
        Mode::Failed => {}
    }
}

/// Waits until `key`'s async session has room, then hands it the frames
/// held meanwhile and reads again. Boxed by the spawn: only a connection
/// whose application stopped reading pays for it.
async fn resume<H: Handler>(core: Rc<CoreOf<H>>, st: Rc<Direct>, key: u32, gen: u32) {
    if let Some(link) = core.session(key) {
        super::task::await_room(&core, key, link).await;
    }
    if core.conns().gen(key) != Some(gen) {
        return;
    }
    let Some(mut r) = st.take(key) else {
        return;
    };
    let mut w = r.unpack();
    let step = dispatch::process(core.as_ref(), key, &mut r.dec, &mut w.inflater, &mut w.rbuf);
    if step.done {
        end(&core, key, r);
        st.io.submit();
        return;
    }
    w.rbuf.drain(..step.consumed);
    if w.rbuf.is_empty() {
        w.rbuf = Vec::new();
    }
    w.needed = step.needed;
    r.mode = step.mode();
    let restart = r.recv_stopped && r.mode != Mode::Held;
    if restart {
        r.recv_stopped = false;
    }
    after_step(
        Cx {
            core: &core,
            st: &st,
            key,
            gen,
        },
        &mut r,
        &mut w,
    );
    r.pack(w);
    st.put(key, r);
    if restart {
        rearm(core.as_ref(), &st, key, gen);
    }
    st.io.submit();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A direct connection's read state is part of what every idle
    /// connection costs: keep it from growing unnoticed.
    #[test]
    fn the_read_state_stays_small() {
        let size = std::mem::size_of::<Option<Reader>>();
        eprintln!("Option<Reader>: {size} bytes");
        assert!(size <= 40, "Option<Reader> is {size} bytes");
    }
}
