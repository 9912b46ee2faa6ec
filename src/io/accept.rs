//! The answer to a connection's HTTP request: a plain HTTP response, a rejection, or the upgrade, each decided by policy and the application's hooks.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;

use crate::api::{
    callback_panicked, CoreOf, Handler, HttpCtx, HttpRequest, HttpResponse, UpgradeRequest,
};
use crate::config::Compression;
use crate::conn::ConnDeflate;
use crate::proto::deflate::{self, DeflateParams};
use crate::proto::handshake::{self, BodyError, HandshakeError, HandshakeLimits, Parsed};

/// What one look at the request bytes decided.
pub(super) enum Answer {
    /// The request (or its body) is incomplete; the bytes wanted in all, if known.
    NeedMore(usize),
    /// Answered (HTTP response or rejection); the connection is closing.
    Closed,
    /// Upgraded; the request head was this long, and permessage-deflate
    /// was negotiated with these parameters.
    Upgraded(usize, Option<DeflateParams>),
}

/// Parses `data` and, once the request is complete, answers it: plain HTTP,
/// a rejection, or the upgrade.
pub(super) fn answer<H: Handler>(
    core: &Rc<CoreOf<H>>,
    key: u32,
    data: &[u8],
    limits: &HandshakeLimits,
    continued: &mut bool,
) -> Answer {
    let parsed = match handshake::parse_request(data, limits) {
        Ok(p) => p,
        Err(e) => {
            reject_invalid(core, key, &e);
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
        let end = match req.body_end(consumed, core.config().max_http_body) {
            Ok(end) => end,
            Err(BodyError::InvalidLength) => {
                reject_invalid(core, key, &HandshakeError::InvalidContentLength);
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
                core.conns()
                    .write_interim(key, b"HTTP/1.1 100 Continue\r\n\r\n");
            }
            return Answer::NeedMore(end);
        }
        let conn = core.conns().id(key);
        let mut ctx = HttpCtx::new(core, conn);
        let hreq = HttpRequest::new(&req, &data[consumed..end], core.conns().peer(key));
        let resp = catch_unwind(AssertUnwindSafe(|| core.handler().http(&hreq, &mut ctx)));
        core.stats().http_requests.bump(1);
        let resp = resp.unwrap_or_else(|panic| {
            callback_panicked(core, &*panic, "its HTTP request is closed");
            HttpResponse::text(500, "internal error\n")
        });
        if ctx.is_deferred() {
            // A responder dropped by a panic answers 500 itself.
            // The answer comes later through the inbox; meanwhile the
            // connection lingers, bounded by the close timeout.
            core.conns().defer_http(key);
            return Answer::Closed;
        }
        core.conns().answer_http(key, &resp.to_bytes());
        return Answer::Closed;
    }

    let upgrade_key = match req.validate_upgrade() {
        Ok(k) => k,
        Err(e) => {
            reject_invalid(core, key, &e);
            return Answer::Closed;
        }
    };
    let cfg = core.config();
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
    if core.is_shutting_down() {
        reject_with(core, key, 503, "server shutting down\n");
        return Answer::Closed;
    }
    // The connection holds its slot since `admit`; a refusal below gives
    // it back when the task sees `Closed`.
    let supported: Vec<&str> = cfg.subprotocols.iter().map(String::as_str).collect();
    let deflate = match cfg.compression {
        Compression::Off => None,
        // Shared: one compressed frame for every subscriber needs every
        // message compressed on its own.
        Compression::Shared => deflate::negotiate(
            req.extensions(),
            &cfg.deflate.with_server_no_context_takeover(true),
        ),
        // Dedicated: each connection keeps its own window, unless the
        // client asks for none (or for an 8-bit one).
        Compression::Dedicated => deflate::negotiate(
            req.extensions(),
            &cfg.deflate.with_server_no_context_takeover(false),
        ),
    };
    let mut ureq = UpgradeRequest::new(
        &req,
        core.conns().peer(key),
        core.id(),
        req.select_protocol(&supported).map(str::to_owned),
        deflate,
    );
    let decided = catch_unwind(AssertUnwindSafe(|| core.handler().upgrade(&mut ureq)));
    let data = match decided {
        Ok(Ok(d)) => d,
        Ok(Err(rej)) => {
            reject_with(core, key, rej.status, &rej.reason);
            return Answer::Closed;
        }
        Err(panic) => {
            callback_panicked(core, &*panic, "its handshake is closed");
            reject_with(core, key, 500, "internal error\n");
            return Answer::Closed;
        }
    };
    let (protocol, deflate) = ureq.into_choices();
    // Only a protocol the client offered may be selected (RFC 6455 §4.2.2).
    let protocol = protocol.filter(|p| req.protocols().any(|o| o == p.as_str()));
    let mut out = Vec::with_capacity(160);
    match deflate {
        None => {
            handshake::write_switching_protocols(&mut out, &upgrade_key, protocol.as_deref(), &[])
        }
        Some(d) => {
            let ext = d.response();
            let headers = [("Sec-WebSocket-Extensions", ext.as_str())];
            handshake::write_switching_protocols(
                &mut out,
                &upgrade_key,
                protocol.as_deref(),
                &headers,
            );
        }
    }
    core.conns().upgrade(key, out, data);
    if let Some(d) = &deflate {
        core.conns().set_deflate(
            key,
            ConnDeflate::new(d.server_max_window_bits, !d.server_no_context_takeover),
        );
    }
    super::dispatch::flush_one(core, key);
    Answer::Upgraded(consumed, deflate)
}

/// Counts a just-accepted socket toward the connection limits: one of
/// `max_connections` over all cores, then the application's
/// [`Handler::connect`]. Refused, it is answered at once (503 when the
/// server is full) without reading its request; returns whether it was
/// admitted. Idle sockets and plain-HTTP requests count as much as
/// WebSockets, so they cannot exhaust descriptors below the limit.
pub(super) fn admit<H: Handler>(core: &CoreOf<H>, key: u32) -> bool {
    // Reserved before the hook runs: cores accept at the same time, and a
    // check-then-count would let each of them take the last slot.
    if !core.mesh().reserve_slot(core.config().max_connections) {
        reject_with(core, key, 503, "server full\n");
        return false;
    }
    let peer = core.conns().peer(key);
    match catch_unwind(AssertUnwindSafe(|| core.handler().connect(peer, core.id()))) {
        Ok(Ok(())) => true,
        Ok(Err(rej)) => {
            core.mesh().release_slot();
            reject_with(core, key, rej.status, &rej.reason);
            false
        }
        Err(panic) => {
            core.mesh().release_slot();
            callback_panicked(core, &*panic, "its connection is closed");
            reject_with(core, key, 500, "internal error\n");
            false
        }
    }
}

/// Gives back what [`admit`] took: the slot and, through
/// [`Handler::disconnect`], the application's count. Called once per
/// admitted socket: when its request was answered or abandoned, or after
/// its WebSocket closed.
pub(crate) fn release<H: Handler>(core: &CoreOf<H>, key: u32) {
    core.mesh().release_slot();
    let peer = core.conns().peer(key);
    let r = catch_unwind(AssertUnwindSafe(|| {
        core.handler().disconnect(peer, core.id())
    }));
    if let Err(panic) = r {
        callback_panicked(
            core,
            &*panic,
            "nothing is closed (its connection had ended)",
        );
    }
}

/// Answers a refused handshake with `status` and a short body.
fn reject_with<H: Handler>(core: &CoreOf<H>, key: u32, status: u16, reason: &str) {
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

/// Answers an invalid request with the status and body its error names.
fn reject_invalid<H: Handler>(core: &CoreOf<H>, key: u32, e: &HandshakeError) {
    let mut out = Vec::new();
    e.write_response(&mut out);
    reject(core, key, &out, e.status());
}

fn reject<H: Handler>(core: &CoreOf<H>, key: u32, response: &[u8], status: u16) {
    core.stats().rejected(status);
    core.conns().answer_http(key, response);
}
