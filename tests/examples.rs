//! Verifies that the examples a user copies from do what their documentation says, each run as a server on real sockets: `chat_rooms` (async sessions, rooms), `live_orders` (`POST /api/publish` and a feed thread) and `game` (1 MiB snapshots, pings after 5 s of silence), and `room_chat`, the shardcast side of the migration guide.

mod common;
use common::*;

#[path = "../examples/chat_rooms.rs"]
#[allow(dead_code)]
mod chat_rooms;
#[path = "../examples/game.rs"]
#[allow(dead_code)]
mod game;
#[path = "../examples/live_orders.rs"]
#[allow(dead_code)]
mod live_orders;
#[path = "../examples/room_chat.rs"]
#[allow(dead_code)]
mod room_chat;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Instant;

use serde_json::{json, Value};
use shardcast::{Handler, Server, ServerHandle};

fn start<H: Handler>(
    cores: usize,
    app: H,
    tune: impl FnOnce(shardcast::Config) -> shardcast::Config,
) -> ServerHandle {
    Server::new(
        tune(config(cores)).listen("127.0.0.1:0".parse().unwrap()),
        app,
    )
    .start()
    .expect("server starts")
}

fn read_json(c: &mut Client) -> Value {
    let text = read_text(c);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{text:?} is not JSON: {e}"))
}

fn send_json(c: &mut Client, v: Value) {
    send_text(c, &v.to_string());
}

/// Waits (bounded) until `topic` has `n` subscribers over all cores.
fn await_subscribers(h: &ServerHandle, topic: &str, n: usize) {
    let deadline = Instant::now() + TIMEOUT;
    while h.subscriber_count(topic).unwrap() != n {
        assert!(Instant::now() < deadline, "{topic} never had {n}");
        std::thread::yield_now();
    }
}

/// A plain HTTP request; returns (status, body).
fn http(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out[9..12].parse().unwrap();
    let body = out.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_owned();
    (status, body)
}

#[test]
fn chat_rooms_joins_says_and_leaves() {
    let h = start(2, chat_rooms::ChatRooms, |c| c);
    let addr = h.local_addr();
    let mut alice = connect(addr, "/chat?nick=alice");
    let mut bob = connect(addr, "/chat?nick=bob");
    let mut carol = connect(addr, "/chat?nick=carol");

    send_json(&mut alice, json!({"type": "join", "room": "lobby"}));
    assert_eq!(
        read_json(&mut alice),
        json!({"type": "joined", "room": "lobby"})
    );
    send_json(&mut bob, json!({"type": "join", "room": "lobby"}));
    assert_eq!(
        read_json(&mut bob),
        json!({"type": "joined", "room": "lobby"})
    );
    assert_eq!(
        read_json(&mut alice),
        json!({"type": "presence", "room": "lobby", "nick": "bob", "present": true})
    );
    await_subscribers(&h, "room:lobby", 2);

    // Every member, the sender included, in one order.
    send_json(
        &mut alice,
        json!({"type": "say", "room": "lobby", "text": "hi"}),
    );
    send_json(
        &mut bob,
        json!({"type": "say", "room": "lobby", "text": "yo"}),
    );
    let a: Vec<Value> = (0..2).map(|_| read_json(&mut alice)).collect();
    let b: Vec<Value> = (0..2).map(|_| read_json(&mut bob)).collect();
    assert!(a.contains(&json!({"type": "said", "room": "lobby", "from": "alice", "text": "hi"})));
    assert!(a.contains(&json!({"type": "said", "room": "lobby", "from": "bob", "text": "yo"})));
    assert_eq!(a.len(), b.len());

    // Not a member; not a command.
    send_json(
        &mut carol,
        json!({"type": "say", "room": "lobby", "text": "x"}),
    );
    let r = read_json(&mut carol);
    assert_eq!(r["type"], "error");
    assert_eq!(r["error"], "not in room lobby");
    send_text(&mut carol, "{\"type\":\"dance\"}");
    let r = read_json(&mut carol);
    assert_eq!(r["type"], "error");
    assert!(r["error"].as_str().unwrap().contains("dance"), "{r}");

    send_json(&mut bob, json!({"type": "leave", "room": "lobby"}));
    assert_eq!(
        read_json(&mut bob),
        json!({"type": "left", "room": "lobby"})
    );
    assert_eq!(
        read_json(&mut alice),
        json!({"type": "presence", "room": "lobby", "nick": "bob", "present": false})
    );
    await_subscribers(&h, "room:lobby", 1);

    // No nickname: refused at the handshake.
    let err = tungstenite::connect(format!("ws://{addr}/chat")).unwrap_err();
    assert!(err.to_string().contains("400"), "{err}");
}

#[test]
fn live_orders_pushes_updates_from_http_and_from_a_thread() {
    let h = start(2, live_orders::LiveOrders, |c| c);
    let addr = h.local_addr();
    let mut w42 = connect(addr, "/orders/42");
    let mut w42b = connect(addr, "/orders/42");
    let mut w7 = connect(addr, "/orders/7");
    await_subscribers(&h, "order:42", 2);
    await_subscribers(&h, "order:7", 1);

    let (status, body) = http(
        addr,
        "POST",
        "/api/publish",
        r#"{"order":42,"status":"shipped"}"#,
    );
    assert_eq!((status, body.as_str()), (200, r#"{"delivered":2}"#));
    for w in [&mut w42, &mut w42b] {
        assert_eq!(
            read_json(w),
            json!({"type": "update", "order": 42, "data": {"order": 42, "status": "shipped"}})
        );
    }

    // From another thread of the process, through ServerHandle.
    let feed = live_orders::OrderFeed::new(h.clone());
    std::thread::spawn(move || feed.update(7, &json!({"status": "packed"})))
        .join()
        .unwrap();
    // Order 7's watcher gets its own update, not order 42's.
    assert_eq!(
        read_json(&mut w7),
        json!({"type": "update", "order": 7, "data": {"status": "packed"}})
    );

    // Bad requests.
    assert_eq!(http(addr, "POST", "/api/publish", "not json").0, 400);
    assert_eq!(
        http(addr, "POST", "/api/publish", r#"{"status":"x"}"#).0,
        400
    );
    assert_eq!(http(addr, "GET", "/elsewhere", "").0, 404);
    assert!(tungstenite::connect(format!("ws://{addr}/orders/abc")).is_err());
}

#[test]
fn game_relays_1_mib_snapshots_and_moves_and_pings_silent_players() {
    let h = start(2, game::Game, game::configure);
    let addr = h.local_addr();
    let mut ann = connect(addr, "/match/7?player=ann");
    let w = read_json(&mut ann);
    assert_eq!(w["type"], "welcome");
    assert_eq!(w["match"], "7");
    let mut ben = connect(addr, "/match/7?player=ben");
    assert_eq!(read_json(&mut ben)["type"], "welcome");
    assert_eq!(
        read_json(&mut ann),
        json!({"type": "joined", "player": "ben"})
    );
    let mut cid = connect(addr, "/match/8?player=cid");
    assert_eq!(read_json(&mut cid)["type"], "welcome");
    await_subscribers(&h, "match:7", 2);

    // A 1 MiB snapshot reaches the other player of the match as it was.
    let snapshot: Vec<u8> = (0..game::MAX_MESSAGE).map(|i| (i % 253) as u8).collect();
    ann.send(tungstenite::Message::binary(snapshot.clone()))
        .unwrap();
    match ben.read().unwrap() {
        tungstenite::Message::Binary(b) => assert!(b[..] == snapshot[..], "snapshot changed"),
        other => panic!("expected the snapshot, got {other:?}"),
    }

    // A move reaches both players of match 7, not match 8.
    send_json(&mut ben, json!({"x": 3, "y": -1}));
    let moved = json!({"type": "moved", "player": "ben", "x": 3, "y": -1});
    assert_eq!(read_json(&mut ann), moved);
    assert_eq!(read_json(&mut ben), moved);
    send_text(&mut ben, "{\"x\":\"left\"}");
    assert_eq!(read_json(&mut ben)["type"], "error");

    // One byte over 1 MiB closes the sender's connection with 1009.
    let mut big = connect(addr, "/match/9?player=big");
    read_json(&mut big);
    big.send(tungstenite::Message::binary(vec![
        0u8;
        game::MAX_MESSAGE + 1
    ]))
    .unwrap();
    let code = loop {
        match big.read() {
            Ok(tungstenite::Message::Close(f)) => break f.map(|f| u16::from(f.code)),
            Ok(_) => continue,
            Err(e) => panic!("no close: {e}"),
        }
    };
    assert_eq!(code, Some(1009));

    // A player silent for 5 s is pinged (tungstenite answers the ping).
    let start = Instant::now();
    match cid.read().expect("a ping within the timeout") {
        tungstenite::Message::Ping(_) => {}
        other => panic!("expected a ping, got {other:?}"),
    }
    let waited = start.elapsed();
    assert!(
        waited >= game::PING_EVERY - std::time::Duration::from_millis(1500)
            && waited < game::PING_EVERY + std::time::Duration::from_secs(2),
        "pinged after {waited:?}"
    );
}

#[test]
fn room_chat_does_what_the_tokio_version_does() {
    let h = start(2, room_chat::RoomChat, |c| c);
    let addr = h.local_addr();
    let mut a = connect(addr, "/lobby");
    let a_addr = match a.get_ref() {
        tungstenite::stream::MaybeTlsStream::Plain(s) => s.local_addr().unwrap(),
        _ => unreachable!(),
    };
    assert_eq!(read_text(&mut a), format!("{a_addr} joined"));
    let mut b = connect(addr, "/lobby");
    let b_addr = match b.get_ref() {
        tungstenite::stream::MaybeTlsStream::Plain(s) => s.local_addr().unwrap(),
        _ => unreachable!(),
    };
    assert_eq!(read_text(&mut a), format!("{b_addr} joined"));
    assert_eq!(read_text(&mut b), format!("{b_addr} joined"));
    let mut elsewhere = connect(addr, "/other");
    read_text(&mut elsewhere);

    send_text(&mut a, "hi");
    assert_eq!(read_text(&mut a), format!("{a_addr}: hi"));
    assert_eq!(read_text(&mut b), format!("{a_addr}: hi"));

    b.close(None).unwrap();
    assert_eq!(read_text(&mut a), format!("{b_addr} left"));
    // The other room heard nothing of it.
    send_text(&mut elsewhere, "alone");
    let e_addr = match elsewhere.get_ref() {
        tungstenite::stream::MaybeTlsStream::Plain(s) => s.local_addr().unwrap(),
        _ => unreachable!(),
    };
    assert_eq!(read_text(&mut elsewhere), format!("{e_addr}: alone"));
}
