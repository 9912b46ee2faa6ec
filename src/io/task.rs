//! A connection's task: readiness → read into the core's scratch buffer → the handshake, then frames decoded in place and dispatched.

use std::io::ErrorKind;
use std::os::fd::AsRawFd;
use std::rc::Rc;

use monoio::net::TcpStream;

use super::accept::{admit, answer, release, Answer};
use super::dispatch::{self, Step};
use crate::api::{CoreOf, Handler};
use crate::conn::State;
use crate::proto::deflate::{DeflateParams, Inflater};
use crate::proto::handshake::HandshakeLimits;
use crate::proto::{Decoder, MAX_HEADER_LEN};
use crate::sys;

/// Reads per readiness before yielding to other connections.
const READS_PER_WAKE: usize = 4;

/// Serves one accepted connection until it is gone.
///
/// Takes the stream already in an `Rc`: every argument is stored in the
/// task for its whole life, so it gets nothing it does not keep.
pub(crate) async fn serve<H: Handler>(core: Rc<CoreOf<H>>, stream: Rc<TcpStream>) {
    let fd = stream.as_raw_fd();
    sys::set_nodelay(fd);
    let key = core.conns().insert(stream.clone(), fd);
    if !admit(&core, key) {
        linger(&core, &stream, key).await;
        return dispatch::finish(&core, key);
    }
    match handshake(&core, &stream, key).await {
        // Its slot goes when the WebSocket closes (`finish`).
        Some((leftover, deflate)) => {
            // Boxed: the task of a connection without compression carries
            // one null pointer for it, not the inflater.
            let inflater = deflate.map(|d| {
                Box::new(Inflater::new(
                    d.client_max_window_bits,
                    d.client_no_context_takeover,
                ))
            });
            frames(&core, &stream, key, leftover, inflater).await
        }
        None => {
            // Answered or abandoned: the slot is free at once, not after
            // the lingering read that protects the answer.
            release(&core, key);
            linger(&core, &stream, key).await;
        }
    }
    dispatch::finish(&core, key);
}

/// The most a partial frame may make a connection buffer.
pub(super) fn partial_cap<H: Handler>(core: &CoreOf<H>) -> usize {
    core.config().max_frame_size.max(4096) + MAX_HEADER_LEN
}

/// Reads the HTTP request and answers it. Returns the bytes that followed
/// the request head and the negotiated permessage-deflate, when the
/// connection was upgraded.
///
/// The request is read into the core's scratch buffer and answered from
/// there; only a request that arrives in pieces is copied into a buffer of
/// its own, so a burst of handshakes does not hold a buffer per connection.
async fn handshake<H: Handler>(
    core: &Rc<CoreOf<H>>,
    stream: &TcpStream,
    key: u32,
) -> Option<(Vec<u8>, Option<DeflateParams>)> {
    let fd = stream.as_raw_fd();
    let limits = HandshakeLimits {
        max_header_bytes: core.config().max_header_bytes,
        ..Default::default()
    };
    let mut buf: Vec<u8> = Vec::new();
    let mut continued = false;
    // A client sends its request as soon as it is connected, so by the
    // time the accepted socket is served the request has usually arrived:
    // read it at once, and wait for readiness only if it has not (a poll
    // submission and a wake-up saved per connection).
    let mut wait = false;
    loop {
        if wait {
            stream.readable(false).await.ok()?;
        }
        wait = true;
        let answer = if buf.is_empty() {
            let mut scratch = core.scratch();
            let n = match sys::recv(fd, &mut scratch) {
                Ok(0) => return None,
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => continue,
                Err(_) => return None,
            };
            core.stats().bytes_in.bump(n as u64);
            let data = &scratch[..n];
            match answer(core, key, data, &limits, &mut continued) {
                Answer::NeedMore(want) => {
                    buf.reserve_exact(want.max(n + 512));
                    buf.extend_from_slice(data);
                    continue;
                }
                Answer::Upgraded(consumed, deflate) => {
                    return Some((data[consumed..].to_vec(), deflate))
                }
                Answer::Closed => return None,
            }
        } else {
            if buf.len() == buf.capacity() {
                buf.reserve(buf.capacity());
            }
            match sys::recv_into_vec(fd, &mut buf) {
                Ok(0) => return None,
                Ok(n) => core.stats().bytes_in.bump(n as u64),
                Err(e) if e.kind() == ErrorKind::WouldBlock => continue,
                Err(_) => return None,
            }
            answer(core, key, &buf, &limits, &mut continued)
        };
        match answer {
            Answer::NeedMore(want) => buf.reserve(want.saturating_sub(buf.len())),
            Answer::Upgraded(consumed, deflate) => {
                buf.drain(..consumed);
                return Some((buf, deflate));
            }
            Answer::Closed => return None,
        }
    }
}

/// After our side closed: read and discard until the peer closes too (or
/// the close timeout shuts the socket), so unread bytes never turn our FIN
/// into a reset that would destroy the response.
async fn linger<H: Handler>(core: &Rc<CoreOf<H>>, stream: &TcpStream, key: u32) {
    if core.conns().state(key) != Some(State::Closing) {
        return; // the peer left during the handshake
    }
    let fd = stream.as_raw_fd();
    loop {
        if stream.readable(false).await.is_err() {
            return;
        }
        match sys::recv(fd, &mut core.scratch()) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(_) => return,
        }
    }
}

/// What the message loop of a connection does next.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    /// Reads and decodes.
    Reading,
    /// `rbuf` holds whole frames its async session has no room for yet:
    /// waits for room, hands them over, then reads again.
    Held,
    /// The input violated the protocol: reads and discards until the
    /// peer's FIN or the close timeout.
    Failed,
}

impl Step {
    pub(super) fn mode(&self) -> Mode {
        if self.failed {
            Mode::Failed
        } else if self.paused {
            Mode::Held
        } else {
            Mode::Reading
        }
    }
}

/// The message loop of an upgraded connection.
///
/// `inflater` is there when permessage-deflate was negotiated: RSV1 is then
/// allowed on a message's first frame, and such messages are inflated.
async fn frames<H: Handler>(
    core: &Rc<CoreOf<H>>,
    stream: &TcpStream,
    key: u32,
    mut rbuf: Vec<u8>,
    mut inflater: Option<Box<Inflater>>,
) {
    let fd = stream.as_raw_fd();
    let mut dec = Decoder::new(crate::proto::Role::Server);
    dispatch::open(core, key);
    let mut mode = Mode::Reading;
    let mut needed = 0usize;
    if !rbuf.is_empty() {
        let step = dispatch::process(core, key, &mut dec, &mut inflater, &mut rbuf);
        if step.done {
            return;
        }
        rbuf.drain(..step.consumed);
        needed = step.needed;
        mode = step.mode();
    }
    if rbuf.is_empty() {
        rbuf = Vec::new();
    }
    // Whether the table tracks a partial message of ours.
    let mut tracked = false;
    if mode == Mode::Reading && !report_partial(core, key, &dec, &mut rbuf, &mut tracked) {
        mode = Mode::Failed;
        dec = Decoder::new(crate::proto::Role::Server);
    }
    loop {
        if mode == Mode::Held {
            // Frames read earlier wait for the async session, whose queue
            // is full: once it has room, hand them over before reading
            // more. Boxed: only a connection whose application stopped
            // reading pays for the wait.
            if let Some(link) = core.session(key) {
                Box::pin(await_room(core, key, link)).await;
            }
            let step = dispatch::process(core, key, &mut dec, &mut inflater, &mut rbuf);
            if step.done {
                return;
            }
            rbuf.drain(..step.consumed);
            if rbuf.is_empty() {
                rbuf = Vec::new();
            }
            needed = step.needed;
            mode = step.mode();
            if mode == Mode::Reading && !report_partial(core, key, &dec, &mut rbuf, &mut tracked) {
                mode = Mode::Failed;
                dec = Decoder::new(crate::proto::Role::Server);
            }
            continue;
        }
        if stream.readable(false).await.is_err() {
            return;
        }
        for _ in 0..READS_PER_WAKE {
            if mode == Mode::Failed {
                // After a protocol error nothing can be decoded: read and
                // discard until the peer's FIN or the close timeout.
                match sys::recv(fd, &mut core.scratch()) {
                    Ok(0) => return,
                    Ok(_) => continue,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(_) => return,
                }
            }
            let full;
            let step: Step;
            if rbuf.is_empty() {
                // Common case: no partial frame. Read into the core's shared
                // buffer and decode in place; keep only an unfinished tail.
                let mut scratch = core.scratch();
                let n = match sys::recv(fd, &mut scratch) {
                    Ok(0) => return,
                    Ok(n) => n,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(_) => return,
                };
                full = n == scratch.len();
                core.conns().note_rx(key, n);
                step = dispatch::process(core, key, &mut dec, &mut inflater, &mut scratch[..n]);
                if !step.done && step.consumed < n {
                    let tail = &scratch[step.consumed..n];
                    rbuf.reserve_exact(tail.len().max(step.needed.min(partial_cap(core))));
                    rbuf.extend_from_slice(tail);
                }
            } else {
                // A frame is partly here: read straight behind it.
                let want = needed
                    .saturating_sub(rbuf.len())
                    .clamp(4096, partial_cap(core));
                rbuf.reserve(want);
                let n = match sys::recv_into_vec(fd, &mut rbuf) {
                    Ok(0) => return,
                    Ok(n) => n,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(_) => return,
                };
                full = rbuf.len() == rbuf.capacity();
                core.conns().note_rx(key, n);
                step = dispatch::process(core, key, &mut dec, &mut inflater, &mut rbuf);
                if !step.done {
                    rbuf.drain(..step.consumed);
                }
                if rbuf.is_empty() || step.done {
                    // Idle connections hold no buffer.
                    rbuf = Vec::new();
                }
            }
            if step.done {
                return;
            }
            needed = step.needed;
            mode = step.mode();
            if mode == Mode::Held {
                // Read no more until the session has room.
                break;
            }
            if mode == Mode::Reading && !report_partial(core, key, &dec, &mut rbuf, &mut tracked) {
                mode = Mode::Failed;
                dec = Decoder::new(crate::proto::Role::Server);
            }
            if !full {
                break;
            }
        }
    }
}

/// Waits until `link`'s queue has room or the connection stops being
/// open (closing: nothing more is handed over, so reading resumes and
/// sees the close through).
///
/// The session's `recv` wakes it; a close decided elsewhere (a timeout, a
/// server shutdown, `close` from another task) does not, so the state is
/// also looked at once a second while the wait lasts.
pub(super) async fn await_room<H: Handler>(
    core: &CoreOf<H>,
    key: u32,
    link: Rc<crate::conn::SessionLink>,
) {
    while link.is_full() && !link.is_ended() && core.conns().state(key) == Some(State::Open) {
        let _ = monoio::time::timeout(std::time::Duration::from_secs(1), link.room()).await;
    }
}

/// Tells the connection table what this task holds for a message not yet
/// complete: its read buffer and the decoder's reassembly buffer. Only
/// called while a message is in progress, or once when it ends, so a
/// connection between messages pays nothing. Returns false when the
/// table refused the bytes (the core's budget for partial messages): the
/// connection is closing and the buffer is dropped.
pub(super) fn report_partial<H: Handler>(
    core: &CoreOf<H>,
    key: u32,
    dec: &Decoder,
    rbuf: &mut Vec<u8>,
    tracked: &mut bool,
) -> bool {
    let pending = !rbuf.is_empty() || dec.in_fragmented_message();
    if !pending && !*tracked {
        return true;
    }
    *tracked = pending;
    let held = rbuf.capacity() + dec.reassembly_capacity();
    if core.conns().note_partial(key, pending, held) {
        return true;
    }
    *tracked = false;
    *rbuf = Vec::new();
    false
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::api::{Rejection, UpgradeRequest};
    use crate::config::Config;
    use crate::handle::ServerHandle;
    use crate::mesh::{mailbox, Mesh};
    use crate::pubsub::InterestTable;
    use crate::state::Core;

    /// One core without threads.
    fn test_core<H: Handler>(handler: H) -> Rc<CoreOf<H>> {
        let (mb, _inbox) = mailbox(16).unwrap();
        let mesh = Arc::new(Mesh::new(Arc::new(InterestTable::new(1, 16)), vec![mb]));
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
        let handle = ServerHandle::new(mesh.clone(), addr, None, Default::default());
        let local = handler.local(0);
        let config = Arc::new(Config::default());
        Rc::new(Core::new(0, mesh, handle, Arc::new(handler), config, local))
    }

    struct Nop;
    impl Handler for Nop {
        type Data = ();
        type Local = ();
        fn upgrade(&self, _: &mut UpgradeRequest<'_>) -> Result<(), Rejection> {
            Ok(())
        }
    }

    /// The connection task's future is allocated once per connection and
    /// lives as long as it: an idle connection's user-space cost is this
    /// plus its slab entry.
    #[test]
    fn connection_task_stays_small() {
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .unwrap();
        rt.block_on(async {
            let core = test_core(Nop);
            let listener = monoio::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let stream = monoio::net::TcpStream::connect(addr).await.unwrap();
            let fut = serve(core, Rc::new(stream));
            let size = std::mem::size_of_val(&fut);
            eprintln!("connection task future: {size} bytes");
            // The task's allocation (future plus monoio's header) is per
            // idle connection: past 320 bytes the future moves up a
            // mimalloc size class and every connection pays 64 B more.
            assert!(size <= 320, "connection task future is {size} bytes");
        });
    }
}
