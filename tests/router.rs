//! Verifies the router by message type over real sockets, with the `router_chat` example's app: each message type, each error path and its counter, and a configured error reply.

mod common;
use common::*;

#[path = "../examples/router_chat.rs"]
#[allow(dead_code)]
mod router_chat;

use router_chat::ChatApp;
use serde_json::{json, Value};
use shardcast::router::{Ctx, RouteErrorKind, Router, RouterStats};
use shardcast::{Handler, Message, Rejection, Server, ServerHandle, UpgradeRequest, Ws};

fn start_app(cores: usize, app: ChatApp) -> ServerHandle {
    Server::new(config(cores).listen("127.0.0.1:0".parse().unwrap()), app)
        .start()
        .expect("server starts")
}

fn ask(c: &mut Client, msg: Value) -> Value {
    send_text(c, &msg.to_string());
    read_json(c)
}

fn read_json(c: &mut Client) -> Value {
    let text = read_text(c);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{text:?} is not JSON: {e}"))
}

/// Waits (bounded) until `topic` has `n` subscribers over all cores.
fn await_subscribers(h: &ServerHandle, topic: &str, n: usize) {
    let deadline = std::time::Instant::now() + TIMEOUT;
    while h.subscriber_count(topic).unwrap() != n {
        assert!(
            std::time::Instant::now() < deadline,
            "{topic} never had {n}"
        );
        std::thread::yield_now();
    }
}

#[test]
fn every_message_type_does_what_the_example_says() {
    let h = start_app(2, ChatApp::new());
    let addr = h.local_addr();
    let mut a = connect(addr, "/");
    let mut b = connect(addr, "/");
    let mut c = connect(addr, "/");
    await_subscribers(&h, "everyone", 3);

    // join_room
    for x in [&mut a, &mut b] {
        let r = ask(x, json!({"type": "join_room", "data": {"room": "lobby"}}));
        assert_eq!(r["type"], "joined");
        assert_eq!(r["data"]["room"], "lobby");
        assert!(r["data"]["core"].as_u64().unwrap() < 2);
    }
    assert_eq!(h.subscriber_count("room:lobby").unwrap(), 2);

    // chat: the other member gets it, the sender an acknowledgement.
    let r = ask(
        &mut a,
        json!({"type": "chat", "data": {"room": "lobby", "text": "hi"}}),
    );
    assert_eq!(r, json!({"type": "sent", "data": {"room": "lobby"}}));
    let got = read_json(&mut b);
    assert_eq!(got["type"], "chat");
    assert_eq!(got["data"]["room"], "lobby");
    assert_eq!(got["data"]["text"], "hi");

    // chat to a room not joined is the app's own error.
    let r = ask(
        &mut c,
        json!({"type": "chat", "data": {"room": "lobby", "text": "x"}}),
    );
    assert_eq!(r["type"], "error");
    assert_eq!(r["error"], "not_in_room");

    // leave_room, twice.
    let r = ask(
        &mut b,
        json!({"type": "leave_room", "data": {"room": "lobby"}}),
    );
    assert_eq!(
        r,
        json!({"type": "left", "data": {"room": "lobby", "was_member": true}})
    );
    assert_eq!(h.subscriber_count("room:lobby").unwrap(), 1);
    let r = ask(
        &mut b,
        json!({"type": "leave_room", "data": {"room": "lobby"}}),
    );
    assert_eq!(r["data"]["was_member"], false);

    // broadcast: every other connection, on every core.
    let r = ask(
        &mut c,
        json!({"type": "broadcast", "data": {"text": "all"}}),
    );
    assert_eq!(r["type"], "sent");
    for x in [&mut a, &mut b] {
        let got = read_json(x);
        assert_eq!(got["type"], "broadcast");
        assert_eq!(got["data"]["text"], "all");
    }

    // echo: any JSON comes back as it was.
    let payload = json!([1, {"x": "two"}, null, "\u{e9}"]);
    let r = ask(&mut a, json!({"type": "echo", "data": payload}));
    assert_eq!(r, json!({"type": "echo", "data": payload}));

    // status: with and without a `data`.
    let r = ask(&mut a, json!({"type": "status"}));
    assert_eq!(r["type"], "status");
    assert_eq!(r["data"]["rooms"], json!(["lobby"]));
    let r = ask(&mut b, json!({"type": "status", "data": null}));
    assert_eq!(r["data"]["rooms"], json!([]));

    // A type spelled with an escape is the same type.
    let r = ask_raw(&mut a, r#"{"type":"ech\u006f","data":1}"#);
    assert_eq!(r, json!({"type": "echo", "data": 1}));
    stop(h);
}

fn ask_raw(c: &mut Client, text: &str) -> Value {
    send_text(c, text);
    read_json(c)
}

#[test]
fn error_paths_get_the_default_reply_and_are_counted() {
    let app = ChatApp::new();
    let router = app.router();
    let h = start_app(1, app);
    let mut c = connect(h.local_addr(), "/");

    let r = ask(&mut c, json!({"type": "nope", "data": {}}));
    assert_eq!(r["type"], "error");
    assert_eq!(r["error"], "unknown_type");
    assert_eq!(r["for"], "nope");
    assert!(r["detail"].as_str().unwrap().contains("nope"));

    // Payloads that do not deserialize into the handler's type.
    for bad in [
        json!({"type": "join_room", "data": 5}),
        json!({"type": "join_room", "data": {"name": "lobby"}}),
        json!({"type": "chat", "data": {"room": "lobby"}}),
        json!({"type": "join_room"}),
        json!({"type": "status", "data": {"x": 1}}),
    ] {
        let r = ask(&mut c, bad.clone());
        assert_eq!(r["error"], "bad_payload", "{bad}");
        assert_eq!(r["for"], bad["type"]);
        assert!(!r["detail"].as_str().unwrap().is_empty());
    }

    // Not JSON, not an object, no type, a type that is not a string.
    for bad in [
        "{not json",
        "[1,2]",
        "42",
        "",
        r#"{"data":{}}"#,
        r#"{"type":7}"#,
    ] {
        let r = ask_raw(&mut c, bad);
        assert_eq!(r["error"], "bad_message", "{bad:?}");
        assert!(r.get("for").is_none());
    }
    // Binary: JSON is routed, anything not UTF-8 refused.
    c.send(tungstenite::Message::binary(
        br#"{"type":"echo","data":"bin"}"#.to_vec(),
    ))
    .unwrap();
    assert_eq!(read_json(&mut c), json!({"type": "echo", "data": "bin"}));
    c.send(tungstenite::Message::binary(vec![0xff, 0x00, 0xfe]))
        .unwrap();
    assert_eq!(read_json(&mut c)["error"], "bad_message");

    assert_eq!(
        router.stats(),
        RouterStats {
            bad_message: 7,
            unknown_type: 1,
            bad_payload: 5,
        }
    );
    // The connection is still served.
    let r = ask(&mut c, json!({"type": "echo", "data": "still here"}));
    assert_eq!(r["data"], "still here");
    stop(h);
}

/// A router whose error reply is configured: unknown types get a custom
/// shape, bad payloads no reply at all.
struct Custom {
    router: Router<Custom>,
}

impl Handler for Custom {
    type Data = ();
    type Local = ();
    fn upgrade(&self, _req: &mut UpgradeRequest<'_>) -> Result<(), Rejection> {
        Ok(())
    }
    fn message(&self, ws: &mut Ws<'_, Self>, msg: Message<'_>) {
        self.router.dispatch(ws, msg);
    }
}

#[test]
fn the_error_reply_is_configurable() {
    let router = Router::new()
        .on("ping", |ctx: &mut Ctx<'_, '_, Custom>, n: u32| {
            assert_eq!(ctx.message_type(), "ping");
            let _ = ctx.reply("pong", &n);
        })
        .error_reply(|e| match e.kind {
            RouteErrorKind::BadPayload => None,
            kind => Some(
                json!({"kind": "err", "code": kind.code(), "about": e.message_type}).to_string(),
            ),
        });
    let h = Server::new(
        config(1).listen("127.0.0.1:0".parse().unwrap()),
        Custom { router },
    )
    .start()
    .expect("server starts");
    let mut c = connect(h.local_addr(), "/");
    let r = ask(&mut c, json!({"type": "nope"}));
    assert_eq!(
        r,
        json!({"kind": "err", "code": "unknown_type", "about": "nope"})
    );
    // No reply for the bad payload: the next message read is the pong.
    send_text(&mut c, &json!({"type": "ping", "data": "NaN"}).to_string());
    let r = ask(&mut c, json!({"type": "ping", "data": 3}));
    assert_eq!(r, json!({"type": "pong", "data": 3}));
    stop(h);
}

#[test]
fn join_room_past_max_subscribers_per_topic_is_refused() {
    let h = Server::new(
        config(1)
            .max_subscribers_per_topic(1)
            .listen("127.0.0.1:0".parse().unwrap()),
        ChatApp::new(),
    )
    .start()
    .expect("server starts");
    let mut a = connect(h.local_addr(), "/");
    let mut b = connect(h.local_addr(), "/");
    let r = ask(
        &mut a,
        json!({"type": "join_room", "data": {"room": "small"}}),
    );
    assert_eq!(r["type"], "joined");
    let r = ask(
        &mut b,
        json!({"type": "join_room", "data": {"room": "small"}}),
    );
    assert_eq!(r["type"], "error");
    assert_eq!(r["error"], "room_full");
    assert_eq!(r["for"], "join_room");
    let r = ask(&mut b, json!({"type": "status"}));
    assert_eq!(r["data"]["rooms"], json!([]));
    stop(h);
}
