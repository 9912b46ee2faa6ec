//! Verifies the server's history topics over its JSON protocol: offsets and epochs on every message, `streams` in the subscribe reply, recovery of exactly what was missed (and `recovered: false` otherwise), latest value, and the settings that name them.

mod server_support;

use serde_json::{json, Value};
use server_support::*;
use shardcast::server::settings::Namespace;

fn with_history(s: &mut shardcast::server::settings::Settings) {
    s.namespaces = vec!["chat.*=100,300".parse::<Namespace>().unwrap()];
}

#[test]
fn messages_carry_offsets_and_a_subscriber_recovers_what_it_missed() {
    let running = start(with_history);
    let addr = running.local_addr();
    let mut a = connect(addr, "/ws");
    let v = ask(
        &mut a,
        r#"{"type":"subscribe","topics":["chat.1","plain"],"id":1}"#,
    );
    assert_eq!(v["type"], "subscribed", "{v}");
    assert_eq!(v["topics"], json!(["chat.1", "plain"]));
    // A history topic gets its position; a plain one is not listed.
    assert_eq!(v["streams"]["chat.1"]["offset"], 0, "{v}");
    assert!(v["streams"]["chat.1"].get("recovered").is_none());
    assert!(v["streams"].get("plain").is_none());
    let epoch = v["streams"]["chat.1"]["epoch"].as_str().unwrap().to_owned();
    let mut publisher = connect(addr, "/ws");
    for i in 1..=5 {
        send(
            &mut publisher,
            &format!(r#"{{"type":"publish","topic":"chat.1","data":{{"n":{i}}}}}"#),
        );
        assert_eq!(
            recv(&mut a),
            json!({"type":"message","topic":"chat.1","data":{"n":i},"offset":i,"epoch":epoch})
        );
    }
    // HTTP publishes are sequenced the same way.
    let (status, body) = http(
        addr,
        "POST",
        "/api/publish",
        &[],
        r#"{"topic":"chat.1","data":{"n":6}}"#,
    );
    assert_eq!((status, body.trim()), (200, r#"{"delivered":1}"#));
    assert_eq!(recv(&mut a)["offset"], 6);
    // Plain topics are untouched.
    send(
        &mut publisher,
        r#"{"type":"publish","topic":"plain","data":1}"#,
    );
    assert_eq!(
        recv(&mut a),
        json!({"type":"message","topic":"plain","data":1})
    );

    // A client that saw up to 2 recovers 3..6, after the reply, then live.
    let mut b = connect(addr, "/ws");
    let v = ask(
        &mut b,
        &format!(
            r#"{{"type":"subscribe","topics":["chat.1"],"recover":{{"chat.1":{{"offset":2,"epoch":"{epoch}"}}}},"id":7}}"#
        ),
    );
    assert_eq!(
        v,
        json!({"type":"subscribed","topics":["chat.1"],"id":7,"streams":{"chat.1":{"offset":6,"epoch":epoch,"recovered":true}}})
    );
    for i in 3..=6 {
        let m = recv(&mut b);
        assert_eq!(
            (m["offset"].clone(), m["data"]["n"].clone()),
            (json!(i), json!(i))
        );
    }
    send(
        &mut publisher,
        r#"{"type":"publish","topic":"chat.1","data":{"n":7}}"#,
    );
    assert_eq!(recv(&mut b)["offset"], 7);
    assert_eq!(recv(&mut a)["offset"], 7);

    // Another epoch: not recovered, nothing old follows.
    let mut c = connect(addr, "/ws");
    let v = ask(
        &mut c,
        r#"{"type":"subscribe","topics":["chat.1"],"recover":{"chat.1":{"offset":2,"epoch":"old"}},"id":8}"#,
    );
    assert_eq!(
        v["streams"]["chat.1"],
        json!({"offset":7,"epoch":epoch,"recovered":false})
    );
    // Latest value: the last publication follows the reply.
    let v = ask(
        &mut c,
        r#"{"type":"subscribe","topics":["chat.2","chat.1"],"recover":{"chat.1":{"latest":true}},"id":9}"#,
    );
    assert_eq!(v["topics"], json!(["chat.2", "chat.1"]));
    assert_eq!(v["streams"]["chat.1"]["recovered"], true, "{v}");
    assert_eq!(v["streams"]["chat.2"]["offset"], 0);
    assert_eq!(recv(&mut c)["data"]["n"], 7);
    send(
        &mut publisher,
        r#"{"type":"publish","topic":"chat.1","data":{"n":8}}"#,
    );
    for ws in [&mut a, &mut b, &mut c] {
        assert_eq!(recv(ws)["offset"], 8);
    }
    assert_alive(&mut c);
    stop(running);
}

#[test]
fn a_bad_recover_is_a_bad_request_and_counts_stay_right() {
    let running = start(|s| {
        with_history(s);
        s.max_subscriptions = 2;
    });
    let addr = running.local_addr();
    let mut a = connect(addr, "/ws");
    for bad in [
        r#"{"type":"subscribe","topics":["chat.1"],"recover":[1],"id":1}"#,
        r#"{"type":"subscribe","topics":["chat.1"],"recover":{"chat.1":{"offset":-1,"epoch":"e"}},"id":1}"#,
        r#"{"type":"subscribe","topics":["chat.1"],"recover":{"chat.1":{"offset":1}},"id":1}"#,
    ] {
        assert_error(&ask(&mut a, bad), "bad_request");
    }
    // Recovering subscriptions count against the per-connection limit.
    let v = ask(
        &mut a,
        r#"{"type":"subscribe","topics":["chat.1","chat.2","chat.3"],"recover":{"chat.1":{"latest":true},"chat.2":{"latest":true}},"id":2}"#,
    );
    assert_eq!(v["type"], "subscribed", "{v}");
    assert_eq!(v["topics"], json!(["chat.1", "chat.2"]));
    assert_error(&recv(&mut a), "too_many_subscriptions");
    // Re-joining a subscribed topic from a position does not count twice.
    let v = ask(
        &mut a,
        r#"{"type":"subscribe","topics":["chat.1"],"recover":{"chat.1":{"latest":true}},"id":3}"#,
    );
    assert_eq!(v["topics"], json!(["chat.1"]));
    drop(a);
    wait_until("the subscriptions are released", || {
        let (_, m) = http(addr, "GET", "/metrics", &[], "");
        m.lines()
            .filter(|l| l.starts_with("shardcast_subscriptions{"))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
            .sum::<f64>()
            == 0.0
    });
    stop(running);
}

#[test]
fn namespaces_parse_from_toml_and_flags() {
    let s = shardcast::server::settings::Settings::from_toml(
        "[[namespace]]\npattern = \"chat.*\"\nhistory_size = 100\nhistory_ttl_secs = 300\n\n[[namespace]]\npattern = \"*.prices\"\nhistory_size = 1\n",
    )
    .unwrap();
    assert_eq!(s.namespaces.len(), 2);
    let p = s.history_policy("chat.x").unwrap();
    assert_eq!((p.size, p.ttl.as_secs()), (100, 300));
    assert_eq!(s.history_policy("eu.prices").unwrap().size, 1);
    assert!(s.history_policy("chat").is_none());
    assert!(s.history_policy("other").is_none());
    for bad in ["chat.*", "=1,2", "x=1", "x=a,2", "x=1,b"] {
        assert!(bad.parse::<Namespace>().is_err(), "{bad}");
    }
    let n: Namespace = "a*b=5,60".parse().unwrap();
    assert!(n.matches("ab") && n.matches("axxb") && !n.matches("abx"));
    let _: Value = json!(null);
}

#[test]
fn the_history_api_returns_what_the_home_core_keeps() {
    let running = start(|s| {
        s.namespaces = vec!["chat.*=3,300".parse::<Namespace>().unwrap()];
        s.api_keys = vec!["k".into()];
    });
    let addr = running.local_addr();
    for i in 1..=5 {
        let (status, _) = http(
            addr,
            "POST",
            "/api/publish",
            &[("Authorization", "Bearer k")],
            &format!(r#"{{"topic":"chat.a b","data":{i}}}"#),
        );
        assert_eq!(status, 200);
    }
    let key = [("Authorization", "Bearer k")];
    let (status, body) = http(addr, "GET", "/api/history?topic=chat.a%20b", &key, "");
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["topic"], "chat.a b");
    assert_eq!(v["offset"], 5);
    let msgs = v["messages"].as_array().unwrap();
    assert_eq!(
        msgs.iter().map(|m| m["data"].clone()).collect::<Vec<_>>(),
        [json!(3), json!(4), json!(5)],
        "the last 3"
    );
    assert_eq!(msgs[0]["epoch"], v["epoch"]);
    assert_eq!(
        http(addr, "GET", "/api/history?topic=chat.a%20b", &[], "").0,
        401
    );
    assert_eq!(
        http(addr, "GET", "/api/history?topic=plain", &key, "").0,
        404
    );
    assert_eq!(http(addr, "GET", "/api/history", &key, "").0, 400);
    let (status, body) = http(addr, "GET", "/api/history?topic=chat.none", &key, "");
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["messages"],
        json!([])
    );
    stop(running);
}

/// A subscriber whose connection is cut at random points of a sustained
/// stream from publishers on every core — closed, reset (RST) or silently
/// dropped — reconnects with its last position each time and ends up with
/// every publication exactly once, in offset order.
#[test]
fn a_subscriber_cut_again_and_again_misses_nothing() {
    use std::io::Write as _;
    use std::net::TcpStream;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    let running = start(|s| {
        let mut n = "chat.*=1000000,300".parse::<Namespace>().unwrap();
        n.history_max_bytes = 256 << 20;
        s.namespaces = vec![n];
        s.max_recovery = 1_000_000;
        s.publish_rate = 0.0;
        // The client tracks its own offsets here; the third of the cuts
        // that walk away leave their connections subscribed and unread,
        // and with sessions on each would also log its every message
        // until its TCP acknowledged it (tests/server_sessions.rs covers
        // that), which slowed the cuts past the test's budget on a
        // loaded machine.
        s.session_ttl_secs = 0;
    });
    let addr = running.local_addr();
    let stop_flag = Arc::new(AtomicBool::new(false));
    // Two publishers on the protocol, whichever cores they land on.
    let mut publishers = Vec::new();
    for p in 0..2 {
        let stop_flag = stop_flag.clone();
        publishers.push(std::thread::spawn(move || {
            let mut ws = connect(addr, "/ws");
            let mut i = 0u64;
            while !stop_flag.load(Ordering::Relaxed) {
                send(
                    &mut ws,
                    &format!(r#"{{"type":"publish","topic":"chat.cut","data":"p{p}-{i}"}}"#),
                );
                i += 1;
                if i.is_multiple_of(8) {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            i
        }));
    }
    let mut last: Option<(u64, String)> = None;
    let mut per_publisher = [None::<u64>; 2];
    let (mut cuts, mut received) = (0u32, 0u64);
    let deadline = Instant::now() + Duration::from_secs(15);
    while cuts < 1000 && Instant::now() < deadline {
        let mut ws = connect(addr, "/ws");
        let msg = match &last {
            None => r#"{"type":"subscribe","topics":["chat.cut"],"id":1}"#.to_owned(),
            Some((o, e)) => format!(
                r#"{{"type":"subscribe","topics":["chat.cut"],"recover":{{"chat.cut":{{"offset":{o},"epoch":"{e}"}}}},"id":1}}"#
            ),
        };
        let v = ask(&mut ws, &msg);
        assert_eq!(v["type"], "subscribed", "cut {cuts}: {v}");
        let stream = &v["streams"]["chat.cut"];
        let epoch = stream["epoch"].as_str().unwrap().to_owned();
        if last.is_some() {
            assert_eq!(stream["recovered"], true, "cut {cuts}: {v}");
        }
        let mut next = last
            .as_ref()
            .map_or(stream["offset"].as_u64().unwrap() + 1, |(o, _)| o + 1);
        // Everything replayed, then a random stretch of the live stream:
        // the cut falls anywhere in it, and the subscriber keeps up.
        let replayed = (stream["offset"].as_u64().unwrap() + 1).saturating_sub(next);
        for _ in 0..replayed as usize + fastrand::usize(1..40) {
            let m = recv(&mut ws);
            assert_eq!(m["epoch"], epoch.as_str());
            assert_eq!(m["offset"], next, "cut {cuts}: no gap, no duplicate");
            // Per publisher, in the order published.
            let data = m["data"].as_str().unwrap();
            let (p, i) = data[1..].split_once('-').unwrap();
            let (p, i): (usize, u64) = (p.parse().unwrap(), i.parse().unwrap());
            if let Some(prev) = per_publisher[p] {
                assert_eq!(i, prev + 1, "publisher {p} in order");
            }
            per_publisher[p] = Some(i);
            next += 1;
            received += 1;
        }
        last = Some((next - 1, epoch));
        // Cut it: a close, a reset, or just walking away.
        match cuts % 3 {
            0 => drop(ws),
            1 => {
                if let tungstenite::stream::MaybeTlsStream::Plain(s) = ws.get_ref() {
                    let s: &TcpStream = s;
                    socket2::SockRef::from(s)
                        .set_linger(Some(Duration::ZERO))
                        .unwrap();
                }
                drop(ws);
            }
            _ => {
                // Silent: the socket stays open, unread, until the test ends.
                let _ = ws.get_mut().flush();
                std::mem::forget(ws);
            }
        }
        cuts += 1;
    }
    stop_flag.store(true, Ordering::Relaxed);
    for p in publishers {
        p.join().unwrap();
    }
    assert!(cuts >= 300, "only {cuts} cuts in 15 s");
    assert!(received > 3_000, "{received} received");
    stop(running);
}
