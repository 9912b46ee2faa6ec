//! Verifies that a callback can learn how many subscribers a publish reached over all cores without blocking its core (`Ws::publish_counted`, `HttpCtx::publish_counted`), and that an HTTP response can be deferred and answered from another thread (`HttpCtx::defer`).

mod common;
use common::*;

use shardcast::{
    Handler, HttpCtx, HttpRequest, HttpResponse, Message, PreparedFrame, Rejection, Server,
    UpgradeRequest, Ws,
};

/// `sub:T` subscribes; `count:T:PAYLOAD` publishes and answers
/// `counted:<delivered>` once every core has counted. `POST /T` publishes
/// the body and answers the count; `GET /later` answers from a thread.
struct Counting;

impl Handler for Counting {
    type Data = ();
    type Local = ();

    fn upgrade(&self, _req: &mut UpgradeRequest<'_>) -> Result<(), Rejection> {
        Ok(())
    }

    fn message(&self, ws: &mut Ws<'_, Self>, msg: Message<'_>) {
        let Message::Text(text) = msg else { return };
        if text == "core" {
            let s = ws.core().to_string();
            ws.send_text(&s);
        } else if let Some(t) = text.strip_prefix("sub:") {
            let _ = ws.subscribe(t);
            ws.send_text("subscribed");
        } else if let Some(rest) = text.strip_prefix("count:") {
            let (topic, payload) = rest.split_once(':').unwrap();
            let (handle, me) = (ws.handle().clone(), ws.id());
            ws.publish_counted(topic, &PreparedFrame::text(payload), false, move |r| {
                handle.send(
                    me,
                    &PreparedFrame::text(&format!("counted:{}", r.delivered)),
                );
            });
        }
    }

    fn http(&self, req: &HttpRequest<'_>, ctx: &mut HttpCtx<'_, Self>) -> HttpResponse {
        let path = req.request().path().trim_start_matches('/').to_owned();
        if path == "later" {
            let responder = ctx.defer();
            std::thread::spawn(move || responder.respond(HttpResponse::text(200, "later\n")));
        } else {
            let responder = ctx.defer();
            let frame = PreparedFrame::binary(req.body());
            ctx.publish_counted(&path, &frame, move |r| {
                responder.respond(HttpResponse::text(200, format!("{}\n", r.delivered)));
            });
        }
        HttpResponse::text(500, "ignored\n")
    }
}

#[test]
fn a_callback_learns_the_count_over_every_core() {
    let handle = Server::new(config(2).listen("127.0.0.1:0".parse().unwrap()), Counting)
        .start()
        .unwrap();
    let addr = handle.local_addr();
    let mut subs = one_per_core(addr, 2);
    for (_, c) in subs.iter_mut() {
        send_text(c, "sub:t");
        assert_eq!(read_text(c), "subscribed");
    }
    let mut p = connect(addr, "/");
    send_text(&mut p, "count:t:hello");
    assert_eq!(read_text(&mut p), "counted:2");
    for (_, c) in subs.iter_mut() {
        assert_eq!(read_text(c), "hello");
    }
    send_text(&mut p, "count:nobody:x");
    assert_eq!(read_text(&mut p), "counted:0");

    let body = "payload";
    let (status, resp) = http(
        addr,
        &format!(
            "POST /t HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    );
    assert_eq!(status, 200, "{resp}");
    assert!(resp.ends_with("\r\n\r\n2\n"), "{resp}");
    let (status, resp) = http(addr, "GET /later HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(status, 200);
    assert!(resp.ends_with("later\n"), "{resp}");
    stop(handle);
}
