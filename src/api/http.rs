//! Plain HTTP on the WebSocket port: the response type, what the `http` hook can do on its core, and deferred answers.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;

use super::{CoreOf, Handler};
use crate::conn::{yield_now, ConnId};
use crate::fanout::PublishResult;
use crate::handle::ServerHandle;
use crate::mesh::PublishReport;
use crate::proto::{handshake, PreparedFrame};

/// A plain HTTP response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// `Content-Type`.
    pub content_type: String,
    /// Further headers.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// A response with `status`, content type and body.
    pub fn new(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> Self {
        Self {
            status,
            content_type: content_type.to_owned(),
            headers: Vec::new(),
            body: body.into(),
        }
    }

    /// A `text/plain` response.
    pub fn text(status: u16, body: impl Into<Vec<u8>>) -> Self {
        Self::new(status, "text/plain; charset=utf-8", body)
    }

    /// The response on the wire, with `Connection: close`. An invalid
    /// response (a status outside 100–999, a header name or value the
    /// writer refuses) becomes a 500: an application's mistake must not
    /// take the core down.
    pub(crate) fn to_bytes(&self) -> Vec<u8> {
        let valid = (100..=999).contains(&self.status)
            && handshake::valid_header_value(&self.content_type)
            && self
                .headers
                .iter()
                .all(|(k, v)| handshake::valid_header_name(k) && handshake::valid_header_value(v));
        if !valid {
            tracing::error!(
                status = self.status,
                "invalid HTTP response from the handler; answering 500"
            );
            return HttpResponse::text(500, "invalid response\n").to_bytes();
        }
        let headers: Vec<(&str, &str)> = self
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .chain([("Connection", "close")])
            .collect();
        let mut out = Vec::with_capacity(128 + self.body.len());
        let body: &[u8] = if self.status < 200 || self.status == 204 || self.status == 304 {
            &[]
        } else {
            &self.body
        };
        handshake::write_http_response(&mut out, self.status, &self.content_type, &headers, body);
        out
    }
}

/// What an HTTP handler can do on its core.
pub struct HttpCtx<'a, H: Handler> {
    core: &'a Rc<CoreOf<H>>,
    conn: ConnId,
    deferred: bool,
}

impl<'a, H: Handler> HttpCtx<'a, H> {
    pub(crate) fn new(core: &'a Rc<CoreOf<H>>, conn: ConnId) -> Self {
        Self {
            core,
            conn,
            deferred: false,
        }
    }

    /// Whether [`HttpCtx::defer`] was called.
    pub(crate) fn is_deferred(&self) -> bool {
        self.deferred
    }

    /// The core serving this request.
    pub fn core(&self) -> usize {
        self.core.id()
    }

    /// This core's application state ([`Handler::Local`]).
    pub fn local(&self) -> &'a H::Local {
        self.core.local()
    }

    /// Publishes a prepared frame to `topic` on every core.
    pub fn publish(&mut self, topic: &str, frame: &PreparedFrame) -> PublishResult {
        self.core
            .publish(topic, frame.as_bytes().clone(), None, None)
    }

    /// Publishes like [`HttpCtx::publish`] and calls `done` with the totals
    /// over all cores once every core has queued the frame. `done` runs on
    /// the thread of the last core to finish (possibly this one, before
    /// this returns) and must not block.
    pub fn publish_counted(
        &mut self,
        topic: &str,
        frame: &PreparedFrame,
        done: impl FnOnce(PublishReport) + Send + 'static,
    ) -> PublishResult {
        self.core
            .publish(topic, frame.as_bytes().clone(), None, Some(Box::new(done)))
    }

    /// Answers this request later, from any thread, with the returned
    /// [`HttpResponder`]; the response [`Handler::http`] returns is then
    /// ignored. The connection waits at most
    /// [`Config::close_timeout`](crate::Config::close_timeout) for it.
    pub fn defer(&mut self) -> HttpResponder {
        self.deferred = true;
        HttpResponder {
            handle: self.core.handle().clone(),
            to: self.conn,
            sent: false,
        }
    }

    /// The server's handle.
    pub fn handle(&self) -> &'a ServerHandle {
        self.core.handle()
    }

    /// Runs `f` on this core in a later turn of its event loop: after
    /// `delay`, or, for a zero delay, once every task already woken has
    /// run (the writes of connections with frames queued among them).
    /// Work too long for one turn, such as a large batch published in
    /// parts, goes in steps, so the frames of one step reach the sockets
    /// before the next step queues more. `f` gets a context for the same
    /// request; call [`HttpCtx::defer`] first (the answer then waits for
    /// the last step, at most
    /// [`Config::http_reply_timeout`](crate::Config::http_reply_timeout)).
    /// A panic in `f` is caught, logged and counted like any callback's; a
    /// responder it drops answers 500.
    pub fn later(&self, delay: Duration, f: impl FnOnce(&mut HttpCtx<'_, H>) + 'static) {
        let core = self.core.clone();
        let conn = self.conn;
        monoio::spawn(async move {
            if delay.is_zero() {
                yield_now().await;
            } else {
                monoio::time::sleep(delay).await;
            }
            let mut ctx = HttpCtx::new(&core, conn);
            ctx.deferred = true;
            if let Err(panic) = catch_unwind(AssertUnwindSafe(|| f(&mut ctx))) {
                super::callback_panicked(&core, &*panic, "its HTTP request is answered 500");
            }
        });
    }
}

/// Answers a deferred HTTP request (see [`HttpCtx::defer`]) from any
/// thread. Dropped without answering, it answers 500.
pub struct HttpResponder {
    handle: ServerHandle,
    to: ConnId,
    sent: bool,
}

impl HttpResponder {
    /// Sends `response` and closes the connection.
    pub fn respond(mut self, response: HttpResponse) {
        self.sent = true;
        self.handle
            .http_reply(self.to, Bytes::from(response.to_bytes()));
    }
}

impl Drop for HttpResponder {
    fn drop(&mut self) {
        if !self.sent {
            let resp = HttpResponse::text(500, "no response\n");
            self.handle
                .http_reply(self.to, Bytes::from(resp.to_bytes()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every response an application can build serialises without a
    /// panic: what the writer would refuse is answered as a 500.
    #[test]
    fn invalid_responses_become_500_instead_of_panicking() {
        let bad: [(&str, &str); 5] = [
            ("X-Tab\tName", "v"),
            ("X-\u{7f}", "v"),
            ("X-Ünï", "v"),
            ("X-Colon:", "v"),
            ("X-Ok", "line\r\nbreak"),
        ];
        for (k, v) in bad {
            let mut r = HttpResponse::text(200, "body");
            r.headers.push((k.into(), v.into()));
            let out = String::from_utf8(r.to_bytes()).unwrap();
            assert!(out.starts_with("HTTP/1.1 500"), "{k:?}: {out}");
        }
        let mut ok = HttpResponse::text(200, "body");
        ok.headers
            .push(("X-Fine".into(), "value with spaces".into()));
        assert!(String::from_utf8(ok.to_bytes())
            .unwrap()
            .starts_with("HTTP/1.1 200"));
    }
}
