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
