//! Dispatch: decoded messages to the [`Handler`]'s callbacks, the replies the decoder says we owe, and the callbacks of a connection's life (open, drain, close).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;

use bytes::Bytes;

use crate::api::{callback_panicked, CoreOf, Handler, Message, Ws};
use crate::conn::{Kind, OwnedMessage, SessionLink, State};
use crate::proto::deflate::{InflateError, Inflater};
use crate::proto::{CloseCode, Decoded, Decoder, Incoming, OpCode, PreparedFrame, Reply};
use crate::streams::joins::Completed;
use crate::streams::StreamJoin;

/// What one pass of decoding left behind.
pub(super) struct Step {
    pub(super) consumed: usize,
    pub(super) needed: usize,
    /// The close handshake is complete (the peer's close arrived): stop.
    pub(super) done: bool,
    /// The input violated the protocol: nothing more can be decoded.
    pub(super) failed: bool,
    /// The connection's async session has its queue full: decoding stopped
    /// at `consumed`, and what follows waits (unread) until it has room.
    pub(super) paused: bool,
}

/// Runs `f` with a [`Ws`] for connection `key`, its data taken out of the
/// table for the duration so the callback may touch any other state.
///
/// A panic in the callback costs only its connection: it is caught here,
/// logged and counted, and the connection is closed with 1011; the core
/// and every other connection go on.
fn with_ws<H: Handler, R>(
    core: &CoreOf<H>,
    key: u32,
    f: impl FnOnce(&mut Ws<'_, H>) -> R,
) -> Option<R> {
    run_ws(core, None, key, f)
}

/// [`with_ws`], with the core's `Rc` for `open`, where the application
/// may hand the connection to an async session.
fn run_ws<H: Handler, R>(
    core: &CoreOf<H>,
    opening: Option<&Rc<CoreOf<H>>>,
    key: u32,
    f: impl FnOnce(&mut Ws<'_, H>) -> R,
) -> Option<R> {
    let (gen, mut data) = core.conns().take_data(key)?;
    let r = catch_unwind(AssertUnwindSafe(|| {
        let mut ws = Ws::new(core, key, gen, &mut data);
        if let Some(rc) = opening {
            ws.set_opening(rc);
        }
        f(&mut ws)
    }));
    core.conns().put_data(key, gen, data);
    match r {
        Ok(r) => Some(r),
        Err(panic) => {
            let id = core.conns().id(key);
            callback_panicked(core, &*panic, &format!("connection {id:?} is closed"));
            core.conns()
                .close(key, CloseCode::INTERNAL_ERROR, "internal error");
            None
        }
    }
}

/// Every topic of a join was answered: subscribes the connection to the
/// topics it was waiting for, calls `joined`, then queues each topic's
/// history and the live publications held meanwhile, in that order — so
/// the application's answer (e.g. a `subscribed` reply with the positions)
/// comes first and the live stream follows the history without a gap.
pub(crate) fn complete_join<H: Handler>(core: &CoreOf<H>, done: Completed) {
    let live = core
        .conns()
        .is_live(crate::conn::ConnId::new(core.id(), done.key, done.gen));
    {
        let mut topics = core.topics();
        for (gated, j) in &done.topics {
            if *gated {
                if live {
                    topics.subscribe(done.key, &j.topic);
                }
                topics.unpin(&j.topic);
            }
        }
    }
    if !live {
        return;
    }
    let joins: Vec<StreamJoin> = done.topics.into_iter().map(|(_, j)| j).collect();
    let handler = core.handler().clone();
    with_ws(core, done.key, |ws| handler.joined(ws, done.token, &joins));
    let mut conns = core.conns();
    let (mut n, mut bytes) = (0, 0);
    for f in done.frames.into_iter().flatten() {
        let (st, len) = conns.send(done.key, f);
        if st != crate::conn::SendStatus::Dropped {
            n += 1;
            bytes += len;
        }
    }
    conns.stats().deliveries.bump(n);
    conns.stats().bytes_out.bump(bytes as u64);
}

/// The connection is open: `open`, which may hand it to an async session.
pub(super) fn open<H: Handler>(core: &Rc<CoreOf<H>>, key: u32) {
    let handler = core.handler().clone();
    run_ws(core, Some(core), key, |ws| handler.open(ws));
}

/// Decodes and dispatches every whole message in `input`.
pub(super) fn process<H: Handler>(
    core: &CoreOf<H>,
    key: u32,
    dec: &mut Decoder,
    inflater: &mut Option<Box<Inflater>>,
    input: &mut [u8],
) -> Step {
    let handler = core.handler().clone();
    // Some when `open` handed the connection to an async session.
    let link = core.session(key);
    let link = link.as_deref();
    let mut pos = 0;
    // RSV1 means "compressed" only on a connection that negotiated
    // permessage-deflate (RFC 7692 §6); elsewhere it fails with 1002.
    let deflate_limits;
    let limits = match inflater {
        None => core.limits(),
        Some(_) => {
            deflate_limits = core.limits().clone().with_allow_rsv1(true);
            &deflate_limits
        }
    };
    // A compressed message's inflated bytes, for the callback's borrow.
    let mut inflated = Vec::new();
    loop {
        let state = core.conns().state(key);
        if state == Some(State::Open) && link.is_some_and(SessionLink::is_full) {
            // The application is not reading: neither is the connection.
            return Step {
                consumed: pos,
                needed: 0,
                done: false,
                failed: false,
                paused: true,
            };
        }
        let decoded = dec.decode(&mut input[pos..], limits);
        match decoded {
            Ok(Decoded::Incomplete { consumed, needed }) => {
                return Step {
                    consumed: pos + consumed,
                    needed,
                    done: false,
                    failed: false,
                    paused: false,
                };
            }
            Ok(Decoded::Message {
                consumed,
                message,
                reply,
            }) => {
                let msg = match message {
                    Incoming::Text(t) => Some(Message::Text(t)),
                    Incoming::Binary(b) => Some(Message::Binary(b)),
                    Incoming::Ping(_) | Incoming::Pong(_) => None,
                    Incoming::Compressed { opcode, payload } => {
                        let text = opcode == OpCode::Text;
                        // Only produced when RSV1 is allowed, i.e. with an inflater.
                        let r = inflater.as_mut().map(|inf| {
                            inf.inflate(payload, limits.max_message_size, text, &mut inflated)
                        });
                        match r {
                            Some(Ok(())) if text => {
                                // Validated while inflating.
                                match std::str::from_utf8(&inflated) {
                                    Ok(t) => Some(Message::Text(t)),
                                    Err(_) => {
                                        return fail(
                                            core,
                                            key,
                                            input.len(),
                                            InflateError::InvalidUtf8.close_code(),
                                            "invalid UTF-8",
                                        );
                                    }
                                }
                            }
                            Some(Ok(())) => Some(Message::Binary(&inflated)),
                            Some(Err(e)) => {
                                return fail(
                                    core,
                                    key,
                                    input.len(),
                                    e.close_code(),
                                    &e.to_string(),
                                );
                            }
                            None => {
                                return fail(
                                    core,
                                    key,
                                    input.len(),
                                    CloseCode::PROTOCOL_ERROR,
                                    "unexpected RSV1",
                                );
                            }
                        }
                    }
                    Incoming::Close(frame) => {
                        let (code, reason) =
                            frame.map_or((CloseCode::NO_STATUS, ""), |f| (f.code, f.reason));
                        let echo = match reply {
                            Some(Reply::Close(rc, rr)) => Some((rc, rr)),
                            _ => None,
                        };
                        core.conns().peer_closed(key, code, reason, echo);
                        flush_one(core, key);
                        return Step {
                            consumed: pos + consumed,
                            needed: 0,
                            done: true,
                            failed: false,
                            paused: false,
                        };
                    }
                };
                if let Some(msg) = msg {
                    core.stats().messages_in.bump(1);
                    if state == Some(State::Open) {
                        match link {
                            // Copied out of the read buffer: the session
                            // holds it across its awaits.
                            Some(link) => link.push(match msg {
                                Message::Text(t) => OwnedMessage::Text(t.to_owned()),
                                Message::Binary(b) => {
                                    OwnedMessage::Binary(Bytes::copy_from_slice(b))
                                }
                            }),
                            None => {
                                with_ws(core, key, |ws| handler.message(ws, msg));
                            }
                        }
                    }
                }
                if let Some(Reply::Pong(p)) = reply {
                    core.conns()
                        .push(key, PreparedFrame::pong(p).into_bytes(), Kind::Control);
                }
                pos += consumed;
            }
            Err(e) => return fail(core, key, input.len(), e.close_code(), &e.to_string()),
        }
    }
}

/// Fails the connection (RFC 6455 §7.1.7): a close with `code`, and nothing
/// more is decoded.
fn fail<H: Handler>(
    core: &CoreOf<H>,
    key: u32,
    consumed: usize,
    code: CloseCode,
    reason: &str,
) -> Step {
    core.stats().protocol_errors.bump(1);
    core.conns().close(key, code, reason);
    flush_one(core, key);
    Step {
        consumed,
        needed: 0,
        done: false,
        failed: true,
        paused: false,
    }
}

/// Writes `key`'s outbox now; `drain` if its backpressure ended.
pub(crate) fn flush_one<H: Handler>(core: &CoreOf<H>, key: u32) {
    if core.conns().flush_one(key) {
        drain(core, key);
    }
}

/// Writes every dirty connection (the flusher's turn), then runs `drain`
/// for those whose backpressure ended.
pub(crate) fn flush<H: Handler>(core: &CoreOf<H>) {
    while flush_some(core, usize::MAX) {}
}

/// Writes up to `budget` dirty connections, then runs `drain` for those
/// whose backpressure ended; returns whether some are left to write.
pub(crate) fn flush_some<H: Handler>(core: &CoreOf<H>, budget: usize) -> bool {
    let mut drained = Vec::new();
    let more = {
        let mut conns = core.conns();
        let more = conns.flush_some(budget, &mut drained);
        // The direct path's sends go to the kernel now, all in one call
        // per ring.
        conns.submit_direct();
        more
    };
    for key in drained {
        drain(core, key);
    }
    more
}

pub(super) fn drain<H: Handler>(core: &CoreOf<H>, key: u32) {
    if let Some(link) = core.session(key) {
        // An async session's senders wait for this, not a callback.
        link.wake_drained();
        return;
    }
    let handler = core.handler().clone();
    with_ws(core, key, |ws| handler.drain(ws));
}

/// The connection is gone: tell the application, drop its subscriptions
/// and its slot.
pub(super) fn finish<H: Handler>(core: &CoreOf<H>, key: u32) {
    // Whatever is still queued (e.g. our close echo) gets one last write.
    core.conns().flush_one(key);
    let end = core.conns().finish(key);
    if let Some(link) = core.detach_session(key) {
        link.end();
    }
    if end.was_open {
        let handler = core.handler().clone();
        with_ws(core, key, |ws| handler.close(ws, end.code, &end.reason));
        super::accept::release(core, key);
    }
    core.topics().remove_subscriber(key);
    core.forget_joins(key);
    let client = core.conns().take_client(key);
    if let Some(id) = client {
        let conn = core.conns().id(key);
        core.mesh().forget_client(&id, conn);
    }
    let mut conns = core.conns();
    conns.remove(key);
    if core.is_shutting_down() && conns.is_empty() {
        core.drained_signal().notify();
    }
}
