//! A connection's task: handshake, then readiness → read into the core's scratch buffer → decode in place → callbacks.

use std::io::ErrorKind;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use monoio::net::TcpStream;

use crate::conn::{sys, Conn, State};
use crate::handler::{
    Handler, HttpCtx, HttpRequest, HttpResponse, Message, PublishDone, UpgradeRequest,
};
use crate::proto::handshake::{self, BodyError, HandshakeError, HandshakeLimits, Parsed};
use crate::proto::{CloseCode, Decoded, Decoder, PreparedFrame, Reply, Role};
use crate::shard::core::Core;

/// Reads per readiness before yielding to other connections.
const READS_PER_WAKE: usize = 4;

/// Serves one accepted connection until it is gone.
///
/// Takes the stream already in an `Rc`: every argument is stored in the
/// task for its whole life, so it gets nothing it does not keep.
pub(crate) async fn serve<H: Handler>(core: Rc<Core<H>>, stream: Rc<TcpStream>) {
    let fd = stream.as_raw_fd();
    sys::set_nodelay(fd);
    let gen = core.next_gen();
    let now = core.now();
    let key = core
        .conns
        .borrow_mut()
        .insert(Conn::new(gen, stream.clone(), fd, now)) as u32;
    core.stats().opened(&core.mesh);
    let deadline = now + secs(core.config.handshake_timeout);
    core.wheel.borrow_mut().insert(deadline, key, gen);

    match handshake(&core, &stream, key).await {
        Some(leftover) => frames(&core, &stream, key, leftover).await,
        None => linger(&core, &stream, key).await,
    }
    finish(&core, key, gen);
}

pub(crate) fn secs(d: std::time::Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// Reads the HTTP request and answers it. Returns the bytes that followed
/// the request head when the connection was upgraded.
///
/// The request is read into the core's scratch buffer and answered from
/// there; only a request that arrives in pieces is copied into a buffer of
/// its own, so a burst of handshakes does not hold a buffer per connection.
async fn handshake<H: Handler>(
    core: &Rc<Core<H>>,
    stream: &TcpStream,
    key: u32,
) -> Option<Vec<u8>> {
    let fd = stream.as_raw_fd();
    let limits = HandshakeLimits {
        max_header_bytes: core.config.max_header_bytes,
        ..Default::default()
    };
    let mut buf: Vec<u8> = Vec::new();
    let mut continued = false;
    loop {
        stream.readable(false).await.ok()?;
        let answer = if buf.is_empty() {
            let mut scratch = core.scratch.borrow_mut();
            let n = match sys::recv(fd, &mut scratch) {
                Ok(0) => return None,
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => continue,
                Err(_) => return None,
            };
            core.stats().bytes_in.bump(n as u64);
            let data = &scratch[..n];
            match answer(core, stream, key, data, &limits, &mut continued) {
                Answer::NeedMore(want) => {
                    buf.reserve_exact(want.max(n + 512));
                    buf.extend_from_slice(data);
                    continue;
                }
                Answer::Upgraded(consumed) => return Some(data[consumed..].to_vec()),
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
            answer(core, stream, key, &buf, &limits, &mut continued)
        };
        match answer {
            Answer::NeedMore(want) => buf.reserve(want.saturating_sub(buf.len())),
            Answer::Upgraded(consumed) => {
                buf.drain(..consumed);
                return Some(buf);
            }
            Answer::Closed => return None,
        }
    }
}

/// What one look at the request bytes decided.
enum Answer {
    /// The request (or its body) is incomplete; the bytes wanted in all, if known.
    NeedMore(usize),
    /// Answered (HTTP response or rejection); the connection is closing.
    Closed,
    /// Upgraded; the request head was this long.
    Upgraded(usize),
}

/// Parses `data` and, once the request is complete, answers it: plain HTTP,
/// a rejection, or the upgrade.
fn answer<H: Handler>(
    core: &Rc<Core<H>>,
    stream: &TcpStream,
    key: u32,
    data: &[u8],
    limits: &HandshakeLimits,
    continued: &mut bool,
) -> Answer {
    let fd = stream.as_raw_fd();
    let parsed = match handshake::parse_request(data, limits) {
        Ok(p) => p,
        Err(e) => {
            let mut out = Vec::new();
            e.write_response(&mut out);
            reject(core, key, &out, e.status());
            return Answer::Closed;
        }
    };
    let Parsed::Complete {
        value: req,
        consumed,
    } = parsed
    else {
        return Answer::NeedMore(0);
    };

    if !req.is_websocket_upgrade() {
        // Plain HTTP on the WebSocket port: wait for the body, answer, close.
        let end = match req.body_end(consumed, core.config.max_http_body) {
            Ok(end) => end,
            Err(BodyError::InvalidLength) => {
                let e = HandshakeError::InvalidContentLength;
                let mut out = Vec::new();
                e.write_response(&mut out);
                reject(core, key, &out, e.status());
                return Answer::Closed;
            }
            Err(BodyError::TooLarge) => {
                reject_with(core, key, 413, "request body too large\n");
                return Answer::Closed;
            }
            Err(BodyError::TransferCoding) => {
                let msg = "send the body with Content-Length; Transfer-Encoding is not supported\n";
                reject_with(core, key, 411, msg);
                return Answer::Closed;
            }
        };
        if data.len() < end {
            // RFC 9110 §10.1.1: a client that sent "Expect: 100-continue"
            // may wait for this before sending the body (curl does for
            // bodies over 1 KiB, for a second).
            let expects = req
                .header_str("expect")
                .is_some_and(|e| e.eq_ignore_ascii_case("100-continue"));
            if expects && !*continued && req.version() == 1 {
                *continued = true;
                let _ = sys::send_parts(fd, &[b"HTTP/1.1 100 Continue\r\n\r\n"]);
            }
            return Answer::NeedMore(end);
        }
        let handle = core.handle.clone();
        let publish = |topic: &str, frame: Bytes, done: Option<PublishDone>| match done {
            Some(done) => core.publish_then(topic, frame, None, done),
            None => core.publish(topic, frame, None, None),
        };
        let gen = core.conns.borrow()[key as usize].gen;
        let mut ctx = HttpCtx {
            publish: &publish,
            handle: &handle,
            conn: core.conn_id(key, gen),
            deferred: false,
        };
        let hreq = HttpRequest {
            request: &req,
            body: &data[consumed..end],
            peer: crate::conn::peer_of(stream),
        };
        let resp = core.handler.http(&hreq, &mut ctx);
        core.stats().http_requests.bump(1);
        if ctx.deferred {
            // The answer comes later through the inbox (CoreMsg::HttpReply);
            // meanwhile the connection lingers, bounded by the close timeout.
            let mut conns = core.conns.borrow_mut();
            let c = &mut conns[key as usize];
            c.state = State::Closing;
            c.closing_since = core.now();
            core.wheel.borrow_mut().insert(
                core.now() + secs(core.config.close_timeout),
                key,
                c.gen,
            );
            return Answer::Closed;
        }
        let out = http_response_bytes(&resp);
        send_and_close(core, key, &out);
        return Answer::Closed;
    }

    let upgrade_key = match req.validate_upgrade() {
        Ok(k) => k,
        Err(e) => {
            let mut out = Vec::new();
            e.write_response(&mut out);
            reject(core, key, &out, e.status());
            return Answer::Closed;
        }
    };
    let cfg = &core.config;
    if !cfg.allowed_origins.is_empty() {
        let ok = req.origin().is_some_and(|o| {
            cfg.allowed_origins
                .iter()
                .any(|a| a.eq_ignore_ascii_case(o))
        });
        if !ok {
            reject_with(core, key, 403, "origin not allowed\n");
            return Answer::Closed;
        }
    }
    if core.shutting_down.get() {
        reject_with(core, key, 503, "server shutting down\n");
        return Answer::Closed;
    }
    // Reserve the slot before the application's hook runs: cores accept at
    // the same time, and a check-then-count would let each of them take
    // the last slot.
    if core.mesh.upgraded.fetch_add(1, Ordering::AcqRel) >= cfg.max_connections {
        core.mesh.upgraded.fetch_sub(1, Ordering::AcqRel);
        reject_with(core, key, 503, "server full\n");
        return Answer::Closed;
    }
    let supported: Vec<&str> = cfg.subprotocols.iter().map(String::as_str).collect();
    let mut ureq = UpgradeRequest {
        request: &req,
        peer: crate::conn::peer_of(stream),
        protocol: req.select_protocol(&supported).map(str::to_owned),
    };
    let data = match core.handler.upgrade(&mut ureq) {
        Ok(d) => d,
        Err(rej) => {
            core.mesh.upgraded.fetch_sub(1, Ordering::AcqRel);
            reject_with(core, key, rej.status, &rej.reason);
            return Answer::Closed;
        }
    };
    // Only a protocol the client offered may be selected (RFC 6455 §4.2.2).
    let protocol = ureq
        .protocol
        .filter(|p| req.protocols().any(|o| o == p.as_str()));
    let mut out = Vec::with_capacity(160);
    handshake::write_switching_protocols(&mut out, &upgrade_key, protocol.as_deref(), &[]);
    {
        let mut conns = core.conns.borrow_mut();
        let c = &mut conns[key as usize];
        c.queued += out.len();
        c.outbox.push_back(Bytes::from(out));
        c.state = State::Open;
        c.data = Some(data);
        c.last_rx = core.now();
    }
    core.flush_conn(key);
    core.stats().upgraded(&core.mesh);
    // From now on the idle and ping timers apply.
    let ping = secs(cfg.ping_interval);
    let first = if ping > 0 {
        ping.min(secs(cfg.idle_timeout))
    } else {
        secs(cfg.idle_timeout)
    };
    let gen = core.conns.borrow()[key as usize].gen;
    core.wheel.borrow_mut().insert(core.now() + first, key, gen);
    Answer::Upgraded(consumed)
}

/// Serialises a plain HTTP response, with `Connection: close`.
pub(crate) fn http_response_bytes(resp: &HttpResponse) -> Vec<u8> {
    // The writer refuses (panics on) values that would split the response;
    // an application's bad response becomes a 500, not a dead core.
    let field_ok = |v: &str| !v.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0));
    let name_ok = |n: &str| {
        !n.is_empty() && field_ok(n) && !n.bytes().any(|b| b == b':' || b.is_ascii_whitespace())
    };
    let valid = (100..=999).contains(&resp.status)
        && field_ok(&resp.content_type)
        && resp.headers.iter().all(|(k, v)| name_ok(k) && field_ok(v));
    if !valid {
        tracing::error!(
            status = resp.status,
            "invalid HTTP response from the handler; answering 500"
        );
        return http_response_bytes(&HttpResponse::text(500, "invalid response\n"));
    }
    let headers: Vec<(&str, &str)> = resp
        .headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .chain([("Connection", "close")])
        .collect();
    let mut out = Vec::with_capacity(128 + resp.body.len());
    let body: &[u8] = if resp.status < 200 || resp.status == 204 || resp.status == 304 {
        &[]
    } else {
        &resp.body
    };
    handshake::write_http_response(&mut out, resp.status, &resp.content_type, &headers, body);
    out
}

/// Answers a refused handshake with `status` and a short body.
fn reject_with<H: Handler>(core: &Rc<Core<H>>, key: u32, status: u16, reason: &str) {
    // A rejection is an error status; anything else from an application's
    // `upgrade` hook must not take the core down.
    let status = if (400..=599).contains(&status) {
        status
    } else {
        tracing::error!(
            status,
            "upgrade rejected with a non-error status; answering 500"
        );
        500
    };
    let mut out = Vec::new();
    handshake::write_rejection(&mut out, status, reason);
    reject(core, key, &out, status);
}

fn reject<H: Handler>(core: &Rc<Core<H>>, key: u32, response: &[u8], status: u16) {
    core.stats().rejected(status);
    send_and_close(core, key, response);
}

/// Answers a plain request and half-closes so the client reads the answer
/// before the FIN (see [`Core::write_and_finish`]); the close timeout
/// bounds the rest.
fn send_and_close<H: Handler>(core: &Rc<Core<H>>, key: u32, response: &[u8]) {
    core.write_and_finish(key, response);
    let mut conns = core.conns.borrow_mut();
    let c = &mut conns[key as usize];
    c.state = State::Closing;
    c.closing_since = core.now();
    core.wheel
        .borrow_mut()
        .insert(core.now() + secs(core.config.close_timeout), key, c.gen);
}

/// After our side closed: read and discard until the peer closes too (or
/// the close timeout shuts the socket), so unread bytes never turn our FIN
/// into a reset that would destroy the response.
async fn linger<H: Handler>(core: &Rc<Core<H>>, stream: &TcpStream, key: u32) {
    let fd = stream.as_raw_fd();
    {
        let conns = core.conns.borrow();
        if conns[key as usize].state != State::Closing {
            return; // the peer left during the handshake
        }
    }
    loop {
        if stream.readable(false).await.is_err() {
            return;
        }
        let mut scratch = core.scratch.borrow_mut();
        match sys::recv(fd, &mut scratch) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(_) => return,
        }
    }
}

/// What one pass of decoding left behind.
struct Step {
    consumed: usize,
    needed: usize,
    /// The close handshake is complete (the peer's close arrived): stop.
    done: bool,
    /// The input violated the protocol: nothing more can be decoded.
    failed: bool,
}

/// The message loop of an upgraded connection.
async fn frames<H: Handler>(core: &Rc<Core<H>>, stream: &TcpStream, key: u32, mut rbuf: Vec<u8>) {
    let fd = stream.as_raw_fd();
    let mut dec = Decoder::new(Role::Server);
    let handler = core.handler.clone();
    core.with_ws(key, |ws| handler.open(ws));
    let mut failed = false;
    let mut needed = 0usize;
    if !rbuf.is_empty() {
        let step = process(core, key, &mut dec, &mut rbuf);
        if step.done {
            return;
        }
        rbuf.drain(..step.consumed);
        needed = step.needed;
        failed = step.failed;
    }
    if rbuf.is_empty() {
        rbuf = Vec::new();
    }
    loop {
        if stream.readable(false).await.is_err() {
            return;
        }
        for _ in 0..READS_PER_WAKE {
            if failed {
                // After a protocol error nothing can be decoded: read and
                // discard until the peer's FIN or the close timeout.
                let mut scratch = core.scratch.borrow_mut();
                match sys::recv(fd, &mut scratch) {
                    Ok(0) => return,
                    Ok(_) => continue,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(_) => return,
                }
            }
            let full;
            let step;
            if rbuf.is_empty() {
                // Common case: no partial frame. Read into the core's shared
                // buffer and decode in place; keep only an unfinished tail.
                let mut scratch = core.scratch.borrow_mut();
                let n = match sys::recv(fd, &mut scratch) {
                    Ok(0) => return,
                    Ok(n) => n,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(_) => return,
                };
                full = n == scratch.len();
                core.note_rx(key, n);
                step = process(core, key, &mut dec, &mut scratch[..n]);
                if !step.done && step.consumed < n {
                    let tail = &scratch[step.consumed..n];
                    rbuf.reserve_exact(tail.len().max(step.needed.min(core.limits_cap())));
                    rbuf.extend_from_slice(tail);
                }
            } else {
                // A frame is partly here: read straight behind it.
                let want = needed
                    .saturating_sub(rbuf.len())
                    .clamp(4096, core.limits_cap());
                rbuf.reserve(want);
                let n = match sys::recv_into_vec(fd, &mut rbuf) {
                    Ok(0) => return,
                    Ok(n) => n,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(_) => return,
                };
                full = rbuf.len() == rbuf.capacity();
                core.note_rx(key, n);
                step = process(core, key, &mut dec, &mut rbuf);
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
            failed = step.failed;
            if !full {
                break;
            }
        }
    }
}

/// Decodes and dispatches every whole message in `input`.
fn process<H: Handler>(core: &Rc<Core<H>>, key: u32, dec: &mut Decoder, input: &mut [u8]) -> Step {
    let handler = core.handler.clone();
    let mut pos = 0;
    loop {
        let state = core.conns.borrow()[key as usize].state;
        let decoded = dec.decode(&mut input[pos..], &core.limits);
        match decoded {
            Ok(Decoded::Incomplete { consumed, needed }) => {
                return Step {
                    consumed: pos + consumed,
                    needed,
                    done: false,
                    failed: false,
                };
            }
            Ok(Decoded::Message {
                consumed,
                message,
                reply,
            }) => {
                let st = core.stats();
                match message {
                    crate::proto::Message::Text(t) => {
                        st.messages_in.bump(1);
                        if state == State::Open {
                            core.with_ws(key, |ws| handler.message(ws, Message::Text(t)));
                        }
                    }
                    crate::proto::Message::Binary(b) => {
                        st.messages_in.bump(1);
                        if state == State::Open {
                            core.with_ws(key, |ws| handler.message(ws, Message::Binary(b)));
                        }
                    }
                    crate::proto::Message::Ping(_) | crate::proto::Message::Pong(_) => {}
                    // Only produced when RSV1 is allowed, which needs a
                    // negotiated permessage-deflate; never offered yet.
                    crate::proto::Message::Compressed { .. } => {}
                    crate::proto::Message::Close(frame) => {
                        let (code, reason) =
                            frame.map_or((CloseCode::NO_STATUS, ""), |f| (f.code, f.reason));
                        let mut conns = core.conns.borrow_mut();
                        let c = &mut conns[key as usize];
                        c.close_code
                            .get_or_insert_with(|| Box::new((code, reason.into())));
                        if c.state == State::Open {
                            if let Some(Reply::Close(rc, rr)) = reply {
                                core.begin_close(key, c, rc, rr, false);
                            }
                            drop(conns);
                            core.flush_conn(key);
                        }
                        return Step {
                            consumed: pos + consumed,
                            needed: 0,
                            done: true,
                            failed: false,
                        };
                    }
                }
                if let Some(Reply::Pong(p)) = reply {
                    core.send_pong(key, PreparedFrame::pong(p).into_bytes());
                }
                pos += consumed;
            }
            Err(e) => {
                core.stats().protocol_errors.bump(1);
                let code = e.close_code();
                let reason = e.to_string();
                let mut conns = core.conns.borrow_mut();
                let c = &mut conns[key as usize];
                if c.state == State::Open {
                    core.begin_close(key, c, code, &reason, false);
                    drop(conns);
                    core.flush_conn(key);
                }
                return Step {
                    consumed: input.len(),
                    needed: 0,
                    done: false,
                    failed: true,
                };
            }
        }
    }
}

/// The connection is gone: tell the application, drop its subscriptions
/// and its slab entry.
fn finish<H: Handler>(core: &Rc<Core<H>>, key: u32, gen: u32) {
    // Whatever is still queued (e.g. our close echo) gets one last write.
    core.flush_conn(key);
    let (was_open, code, reason) = {
        let mut conns = core.conns.borrow_mut();
        let c = &mut conns[key as usize];
        debug_assert_eq!(c.gen, gen);
        let was_open = c.data.is_some() && !c.close_notified;
        c.close_notified = true;
        let (code, reason) = c
            .close_code
            .take()
            .map_or((CloseCode::ABNORMAL, "".into()), |b| *b);
        c.state = State::Closing;
        c.outbox.clear();
        c.queued = 0;
        (was_open, code, reason)
    };
    if was_open {
        let handler = core.handler.clone();
        core.with_ws(key, |ws| handler.close(ws, code, &reason));
        core.stats().closed_upgraded(&core.mesh);
    }
    core.remove_subscriptions(key);
    let c = core.conns.borrow_mut().remove(key as usize);
    sys::shutdown(c.fd, libc::SHUT_RDWR);
    core.stats().closed();
    if core.shutting_down.get() && core.conns.borrow().is_empty() {
        core.drained.notify();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handler::{Rejection, UpgradeRequest};
    use crate::shard::test_core;

    struct Nop;
    impl Handler for Nop {
        type Data = ();
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
            assert!(size <= 400, "connection task future is {size} bytes");
        });
    }
}
