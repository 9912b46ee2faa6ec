//! Verifies that a deferred HTTP answer has its own deadline: answered in time it reaches the client, even past the close timeout; never answered, the client gets a 504 at the deadline instead of a silent close, and a late answer is dropped.

mod common;
use common::*;
use shardcast::{
    Config, Handler, HttpCtx, HttpRequest, HttpResponder, HttpResponse, Rejection, Server,
    UpgradeRequest,
};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// `/slow` is answered by a thread after 2 s; `/never` keeps its
/// responder (answered only when the test says so).
struct Deferring {
    parked: Arc<Mutex<Vec<HttpResponder>>>,
}

impl Handler for Deferring {
    type Data = ();
    type Local = ();
    fn upgrade(&self, _: &mut UpgradeRequest<'_>) -> Result<(), Rejection> {
        Ok(())
    }
    fn http(&self, req: &HttpRequest<'_>, ctx: &mut HttpCtx<'_, Self>) -> HttpResponse {
        let responder = ctx.defer();
        if req.request().path() == "/slow" {
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_secs(2));
                responder.respond(HttpResponse::text(200, "late but fine\n"));
            });
        } else {
            self.parked.lock().unwrap().push(responder);
        }
        HttpResponse::text(202, "")
    }
}

#[test]
fn deferred_answers_arrive_in_time_or_become_504_at_their_deadline() {
    let parked = Arc::new(Mutex::new(Vec::new()));
    let cfg = Config::new()
        .cores(1)
        .pin(false)
        .close_timeout(Duration::from_secs(1))
        .http_reply_timeout(Duration::from_secs(3))
        .shutdown_timeout(Duration::from_secs(1))
        .listen("127.0.0.1:0".parse().unwrap());
    let h = Server::new(
        cfg,
        Deferring {
            parked: parked.clone(),
        },
    )
    .start()
    .unwrap();
    let addr = h.local_addr();

    // Slower than the close timeout, faster than the reply deadline.
    let (status, text) = http(addr, "GET /slow HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(status, 200, "{text}");
    assert!(text.ends_with("late but fine\n"));

    // Never answered: 504 at the deadline, not a bare close.
    let t = Instant::now();
    let (status, text) = http(addr, "GET /never HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(status, 504, "{text}");
    assert!(
        t.elapsed() >= Duration::from_secs(2) && t.elapsed() < Duration::from_secs(6),
        "answered after {:?}",
        t.elapsed()
    );
    // The late answer goes nowhere (the connection was answered already).
    for r in parked.lock().unwrap().drain(..) {
        r.respond(HttpResponse::text(200, "too late\n"));
    }
    let (status, _) = http(addr, "GET /slow HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(status, 200, "the core still serves");
    stop(h);
}
