//! Verifies typed JSON messages: a reply with `send_json`, a parse error reported for bad input, and `publish_json` from a callback and from `ServerHandle` reaching subscribers on every core.

mod common;
use common::*;

use serde::{Deserialize, Serialize};
use shardcast::{Handler, Message, Rejection, Server, UpgradeRequest, Ws};

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Point {
    x: i32,
    y: i32,
}

/// `{"x":..,"y":..}` is answered with the point doubled; `"sub:T"` (a JSON
/// string) subscribes; `{"pub":T,"x":..,"y":..}` publishes the point to T;
/// `core` (not JSON) is answered with the core's index; anything else is
/// answered with the parse error.
struct JsonHandler;

#[derive(Deserialize)]
#[serde(untagged)]
enum Input {
    Publish { r#pub: String, x: i32, y: i32 },
    Point(Point),
    Subscribe(String),
}

impl Handler for JsonHandler {
    type Data = ();
    type Local = ();

    fn upgrade(&self, _req: &mut UpgradeRequest<'_>) -> Result<(), Rejection> {
        Ok(())
    }

    fn message(&self, ws: &mut Ws<'_, Self>, msg: Message<'_>) {
        if msg == Message::Text("core") {
            // What `one_per_core` asks.
            ws.send_text(&ws.core().to_string());
            return;
        }
        match msg.json::<Input>() {
            Ok(Input::Point(p)) => {
                ws.send_json(&Point {
                    x: p.x * 2,
                    y: p.y * 2,
                })
                .unwrap();
            }
            Ok(Input::Subscribe(t)) => {
                let t = t.strip_prefix("sub:").unwrap_or(&t).to_owned();
                let _ = ws.subscribe(&t);
                ws.send_json(&format!("subscribed:{t}:{}", ws.core()))
                    .unwrap();
            }
            Ok(Input::Publish { r#pub, x, y }) => {
                let r = ws.publish_json(&r#pub, &Point { x, y }).unwrap();
                ws.send_json(&r.delivered).unwrap();
            }
            Err(e) => {
                ws.send_json(&format!("error: {e}")).unwrap();
            }
        }
    }
}

fn start_json(cores: usize) -> shardcast::ServerHandle {
    Server::new(
        config(cores).listen("127.0.0.1:0".parse().unwrap()),
        JsonHandler,
    )
    .start()
    .expect("server starts")
}

#[test]
fn send_json_and_message_json_round_trip() {
    let h = start_json(1);
    let mut c = connect(h.local_addr(), "/");
    send_text(&mut c, r#"{"x":1,"y":-2}"#);
    let p: Point = serde_json::from_str(&read_text(&mut c)).unwrap();
    assert_eq!(p, Point { x: 2, y: -4 });
    // A binary message holding JSON parses too.
    c.send(tungstenite::Message::binary(br#"{"x":3,"y":4}"#.to_vec()))
        .unwrap();
    let p: Point = serde_json::from_str(&read_text(&mut c)).unwrap();
    assert_eq!(p, Point { x: 6, y: 8 });
    stop(h);
}

#[test]
fn bad_input_is_an_error_not_a_panic() {
    let h = start_json(1);
    let mut c = connect(h.local_addr(), "/");
    for bad in ["{not json", "[1,2,3]", r#"{"x":"one","y":2}"#, ""] {
        send_text(&mut c, bad);
        let reply: String = serde_json::from_str(&read_text(&mut c)).unwrap();
        assert!(
            reply.starts_with("error: invalid JSON message:"),
            "{bad:?} gave {reply:?}"
        );
    }
    c.send(tungstenite::Message::binary(vec![0xff, 0xfe]))
        .unwrap();
    let reply: String = serde_json::from_str(&read_text(&mut c)).unwrap();
    assert!(reply.starts_with("error: invalid JSON message:"), "{reply}");
    // The connection still works.
    send_text(&mut c, r#"{"x":0,"y":1}"#);
    let p: Point = serde_json::from_str(&read_text(&mut c)).unwrap();
    assert_eq!(p, Point { x: 0, y: 2 });
    stop(h);
}

#[test]
fn publish_json_reaches_subscribers_on_every_core() {
    let cores = 2;
    let h = start_json(cores);
    let addr = h.local_addr();
    let mut subs = one_per_core(addr, cores);
    for (core, c) in subs.iter_mut() {
        send_text(c, r#""sub:points""#);
        let reply: String = serde_json::from_str(&read_text(c)).unwrap();
        assert_eq!(reply, format!("subscribed:points:{core}"));
    }
    let mut publisher = connect(addr, "/");
    send_text(&mut publisher, r#"{"pub":"points","x":5,"y":6}"#);
    for (_, c) in subs.iter_mut() {
        let p: Point = serde_json::from_str(&read_text(c)).unwrap();
        assert_eq!(p, Point { x: 5, y: 6 });
    }
    read_text(&mut publisher);
    // From any thread, through the handle.
    assert_eq!(
        h.publish_json("points", &Point { x: 7, y: 8 }).unwrap(),
        cores
    );
    for (_, c) in subs.iter_mut() {
        let p: Point = serde_json::from_str(&read_text(c)).unwrap();
        assert_eq!(p, Point { x: 7, y: 8 });
    }
    // A value serde_json cannot serialise is refused before anything is sent.
    let mut bad = std::collections::HashMap::new();
    bad.insert(vec![1u8], 1);
    assert!(matches!(
        h.publish_json("points", &bad),
        Err(shardcast::JsonError::Serialize(_))
    ));
    stop(h);
}
