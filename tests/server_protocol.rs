//! Verifies that the server's JSON protocol answers every message with its reply or an error code, passes `data` through byte for byte across cores, and keeps a connection alive after its mistakes.

mod server_support;

use serde_json::json;
use server_support::*;
use tungstenite::Message;

#[test]
fn publish_reaches_subscribers_on_every_core_byte_for_byte() {
    let running = start(|_| {});
    let mut subs = clients_on_every_core(&running);
    for s in subs.iter_mut() {
        subscribe(s, &["news"]);
    }
    let mut publisher = connect(running.local_addr(), "/");
    // Odd spacing, escapes and number forms must arrive exactly as sent.
    let data = r#"{"b" : [1, 2.50, "x\u0041\n"], "e":{}}"#;
    send(
        &mut publisher,
        &format!(r#"{{"type":"publish","topic":"news","data":{data},"id":42}}"#),
    );
    let ack = recv(&mut publisher);
    assert_eq!(
        ack,
        json!({"type":"published","id":42,"delivered":subs.len()})
    );
    for s in subs.iter_mut() {
        assert_eq!(
            recv_raw(s),
            format!(r#"{{"type":"message","topic":"news","data":{data}}}"#)
        );
    }
    // Without an id there is no ack; the message still arrives.
    send(
        &mut publisher,
        r#"{"type":"publish","topic":"news","data":"plain"}"#,
    );
    for s in subs.iter_mut() {
        assert_eq!(
            recv(s),
            json!({"type":"message","topic":"news","data":"plain"})
        );
    }
    assert_alive(&mut publisher);
    stop(running);
}

#[test]
fn a_subscribed_publisher_receives_its_own_message_and_is_counted() {
    let running = start(|_| {});
    let mut c = connect(running.local_addr(), "/");
    subscribe(&mut c, &["me"]);
    send(
        &mut c,
        r#"{"type":"publish","topic":"me","data":[1],"id":"p1"}"#,
    );
    // The message is queued before the ack, which comes once all cores counted.
    assert_eq!(
        recv(&mut c),
        json!({"type":"message","topic":"me","data":[1]})
    );
    assert_eq!(
        recv(&mut c),
        json!({"type":"published","id":"p1","delivered":1})
    );
    stop(running);
}

#[test]
fn unsubscribe_stops_delivery() {
    let running = start(|_| {});
    let mut sub = connect(running.local_addr(), "/");
    subscribe(&mut sub, &["a", "b"]);
    let v = ask(
        &mut sub,
        r#"{"type":"unsubscribe","topics":["a","zzz"],"id":3}"#,
    );
    assert_eq!(
        v,
        json!({"type":"unsubscribed","topics":["a","zzz"],"id":3})
    );
    let mut p = connect(running.local_addr(), "/");
    let ack = ask(&mut p, r#"{"type":"publish","topic":"a","data":1,"id":1}"#);
    assert_eq!(ack["delivered"], 0);
    let ack = ask(&mut p, r#"{"type":"publish","topic":"b","data":2,"id":2}"#);
    assert_eq!(ack["delivered"], 1);
    assert_eq!(
        recv(&mut sub),
        json!({"type":"message","topic":"b","data":2})
    );
    stop(running);
}

#[test]
fn ping_answers_pong_with_the_id_as_sent() {
    let running = start(|_| {});
    let mut c = connect(running.local_addr(), "/");
    send(&mut c, r#"{"type":"ping","id":{"n":[1,2]}}"#);
    assert_eq!(recv_raw(&mut c), r#"{"type":"pong","id":{"n":[1,2]}}"#);
    assert_eq!(ask(&mut c, r#"{"type":"ping"}"#), json!({"type":"pong"}));
    stop(running);
}

#[test]
fn malformed_messages_get_bad_request_and_the_connection_survives() {
    let running = start(|_| {});
    let mut c = connect(running.local_addr(), "/");
    let mut other = connect(running.local_addr(), "/");
    let cases = [
        "{not json",
        "[1,2]",
        "\"text\"",
        r#"{"id":1}"#,
        r#"{"type":5}"#,
        r#"{"type":"dance","id":9}"#,
        r#"{"type":"subscribe","topics":"a"}"#,
        r#"{"type":"subscribe","topics":[1]}"#,
        r#"{"type":"subscribe"}"#,
        r#"{"type":"unsubscribe","topics":{}}"#,
        r#"{"type":"publish","topic":"a"}"#,
        r#"{"type":"publish","data":1}"#,
        r#"{"type":"publish","topic":"","data":1}"#,
        r#"{"type":"auth"}"#,
    ];
    for case in cases {
        let v = ask(&mut c, case);
        assert_error(&v, "bad_request");
    }
    let v = ask(&mut c, r#"{"type":"dance","id":9}"#);
    assert_eq!(v["id"], 9, "the id is echoed in errors");
    c.send(Message::binary(vec![1, 2, 3])).unwrap();
    assert_error(&recv(&mut c), "bad_request");
    assert_alive(&mut c);
    assert_alive(&mut other);
    stop(running);
}

#[test]
fn invalid_topic_names_are_refused_by_name() {
    let running = start(|s| s.max_topic_length = 8);
    let mut c = connect(running.local_addr(), "/");
    let v = ask(
        &mut c,
        r#"{"type":"subscribe","topics":["ok","much-too-long","","a\u0001"],"id":1}"#,
    );
    assert_eq!(v, json!({"type":"subscribed","topics":["ok"],"id":1}));
    let e = recv(&mut c);
    assert_error(&e, "bad_request");
    assert_eq!(e["topics"], json!(["much-too-long", "", "a\u{1}"]));
    let e = ask(
        &mut c,
        r#"{"type":"publish","topic":"much-too-long","data":1}"#,
    );
    assert_error(&e, "bad_request");
    stop(running);
}

#[test]
fn messages_over_the_limit_close_1009_before_they_are_buffered() {
    let running = start(|s| s.max_message_size = 1024);
    let mut c = connect(running.local_addr(), "/");
    let fits = format!(
        r#"{{"type":"publish","topic":"a","data":"{}","id":1}}"#,
        "x".repeat(900)
    );
    assert_eq!(ask(&mut c, &fits)["type"], "published");
    let big = format!(
        r#"{{"type":"publish","topic":"a","data":"{}"}}"#,
        "x".repeat(2000)
    );
    c.send(Message::text(big)).unwrap();
    assert_eq!(expect_close(&mut c), 1009);
    stop(running);
}

#[test]
fn subscriptions_over_the_limit_get_too_many_subscriptions() {
    let running = start(|s| s.max_subscriptions = 2);
    let mut c = connect(running.local_addr(), "/");
    let v = ask(
        &mut c,
        r#"{"type":"subscribe","topics":["a","b","c"],"id":1}"#,
    );
    assert_eq!(v, json!({"type":"subscribed","topics":["a","b"],"id":1}));
    let e = recv(&mut c);
    assert_error(&e, "too_many_subscriptions");
    assert_eq!(e["topics"], json!(["c"]));
    // Re-subscribing to a held topic is not a new subscription.
    let v = ask(&mut c, r#"{"type":"subscribe","topics":["a"]}"#);
    assert_eq!(v["type"], "subscribed");
    ask(&mut c, r#"{"type":"unsubscribe","topics":["a"]}"#);
    let v = ask(&mut c, r#"{"type":"subscribe","topics":["c"]}"#);
    assert_eq!(v["topics"], json!(["c"]));
    stop(running);
}

#[test]
fn a_publish_flood_gets_rate_limited_without_hurting_others() {
    let running = start(|s| {
        // Slow enough that no token comes back during the test.
        s.publish_rate = 0.001;
        s.publish_burst = 5;
    });
    let mut flooder = connect(running.local_addr(), "/");
    let mut sub = connect(running.local_addr(), "/");
    subscribe(&mut sub, &["f"]);
    let mut limited = 0;
    for i in 0..20 {
        let v = ask(
            &mut flooder,
            &format!(r#"{{"type":"publish","topic":"f","data":{i},"id":{i}}}"#),
        );
        match v["type"].as_str() {
            Some("published") => {}
            Some("error") => {
                assert_error(&v, "rate_limited");
                assert_eq!(v["id"], i);
                limited += 1;
            }
            _ => panic!("{v}"),
        }
    }
    assert_eq!(limited, 15, "burst 5 of 20");
    // The subscriber got exactly the accepted ones, in order.
    for i in 0..(20 - limited) {
        assert_eq!(recv(&mut sub)["data"], json!(i));
    }
    assert_alive(&mut flooder);
    assert_alive(&mut sub);
    stop(running);
}

#[test]
fn clients_may_not_publish_to_server_topics() {
    let running = start(|_| {});
    let mut c = connect(running.local_addr(), "/");
    let e = ask(
        &mut c,
        r#"{"type":"publish","topic":"$sys.stats","data":1,"id":1}"#,
    );
    assert_error(&e, "forbidden");
    assert_eq!(e["topics"], json!(["$sys.stats"]));
    stop(running);
}

#[test]
fn the_stats_topic_ticks_with_per_core_numbers() {
    let running = start(|s| s.stats_interval_ms = 50);
    let mut c = connect(running.local_addr(), "/");
    subscribe(&mut c, &["$sys.stats"]);
    let m = recv(&mut c);
    assert_eq!(m["type"], "message");
    assert_eq!(m["topic"], "$sys.stats");
    assert_eq!(m["data"]["cores"].as_array().unwrap().len(), 2);
    assert!(m["data"]["connections"].as_u64().unwrap() >= 1, "{m}");
    stop(running);
}

#[test]
fn shutdown_closes_clients_with_1001() {
    let running = start(|_| {});
    let mut c = connect(running.local_addr(), "/");
    subscribe(&mut c, &["x"]);
    let mut running = running;
    running.shutdown();
    assert_eq!(expect_close(&mut c), 1001);
    running.join();
}

#[test]
fn a_data_key_written_with_escapes_still_publishes() {
    let running = start(|_| {});
    let mut c = connect(running.local_addr(), "/");
    subscribe(&mut c, &["esc"]);
    // The raw scanner does not decode keys; the parsed value is re-encoded.
    send(
        &mut c,
        r#"{"type":"publish","topic":"esc","d\u0061ta":{"k":[true,null]}}"#,
    );
    assert_eq!(
        recv(&mut c),
        json!({"type":"message","topic":"esc","data":{"k":[true,null]}})
    );
    stop(running);
}

#[test]
fn a_subscriber_that_stops_reading_is_closed_as_a_slow_consumer() {
    let running = start(|s| {
        s.outbox_limit = 64 << 10;
        s.slow_consumer = shardcast::server::SlowConsumer::Close;
    });
    let addr = running.local_addr();
    let mut slow = connect(addr, "/");
    subscribe(&mut slow, &["firehose"]);
    let mut fast = connect(addr, "/");
    subscribe(&mut fast, &["other"]);
    // Far more than the slow client's socket buffers and outbox can hold.
    let chunk = "x".repeat(60 << 10);
    let body = format!(r#"{{"topic":"firehose","data":"{chunk}"}}"#);
    for _ in 0..200 {
        let (st, _) = http(addr, "POST", "/api/publish", &[], &body);
        assert_eq!(st, 200);
        if running.handle().stats().slow_closes > 0 {
            break;
        }
    }
    // Over the limit for the grace period (2 s): a slow consumer.
    wait_until("the slow consumer is closed", || {
        running.handle().stats().slow_closes > 0
    });
    assert_eq!(running.handle().stats().slow_closes, 1);
    assert_eq!(expect_close(&mut slow), 1013);
    assert_alive(&mut fast);
    let (_, m) = http(addr, "GET", "/metrics", &[], "");
    assert!(m
        .lines()
        .any(|l| l.starts_with("shardcast_slow_consumer_closes_total") && l.ends_with(" 1")));
    stop(running);
}

#[test]
fn a_topic_listed_many_times_in_one_subscribe_is_handled_once() {
    let running = start(|_| {});
    let mut c = connect(running.local_addr(), "/");
    let topics: Vec<&str> = std::iter::repeat_n("dup", 5000).chain(["other"]).collect();
    let msg = json!({"type": "subscribe", "topics": topics, "id": 1}).to_string();
    let v = ask(&mut c, &msg);
    assert_eq!(v["type"], "subscribed");
    assert_eq!(v["topics"], json!(["dup", "other"]));
    assert_alive(&mut c);
    stop(running);
}

/// Subscribes `c` to `topics`; returns the topics subscribed and those
/// refused with `too_many_subscriptions` (with the error's message).
fn try_subscribe(c: &mut Client, topics: &[&str]) -> (Vec<String>, Vec<String>, String) {
    let msg = json!({"type": "subscribe", "topics": topics, "id": 1}).to_string();
    send(c, &msg);
    let (mut ok, mut refused, mut why) = (Vec::new(), Vec::new(), String::new());
    let mut seen = 0;
    while seen < topics.len() {
        let v = recv(c);
        let list: Vec<String> = v["topics"]
            .as_array()
            .unwrap_or_else(|| panic!("{v}"))
            .iter()
            .map(|t| t.as_str().unwrap().to_owned())
            .collect();
        seen += list.len();
        if v["type"] == "subscribed" {
            ok = list;
        } else {
            assert_error(&v, "too_many_subscriptions");
            why = v["message"].as_str().unwrap().to_owned();
            refused = list;
        }
    }
    (ok, refused, why)
}

fn refused_metric(running: &shardcast::server::Running, limit: &str) -> u64 {
    let (_, m) = http(running.local_addr(), "GET", "/metrics", &[], "");
    m.lines()
        .filter(|l| {
            l.starts_with("shardcast_subscriptions_refused_total{")
                && l.contains(&format!("limit=\"{limit}\""))
        })
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum()
}

#[test]
fn subscriptions_are_capped_per_address_and_over_the_server() {
    // Per address: two connections from 127.0.0.1 share 3.
    let running = start(|s| s.max_subscriptions_per_ip = 3);
    let addr = running.local_addr();
    let mut a = connect(addr, "/");
    let mut b = connect(addr, "/");
    assert_eq!(try_subscribe(&mut a, &["p", "q"]).0, ["p", "q"]);
    let (ok, refused, why) = try_subscribe(&mut b, &["r", "s"]);
    assert_eq!((ok, refused), (vec!["r".to_owned()], vec!["s".to_owned()]));
    assert!(why.contains("per address"), "{why}");
    assert_eq!(refused_metric(&running, "address"), 1);
    // What a connection gives back, by unsubscribing or closing, is free
    // again.
    ask(&mut a, r#"{"type":"unsubscribe","topics":["p"]}"#);
    assert_eq!(try_subscribe(&mut b, &["s"]).0, ["s"]);
    a.close(None).unwrap();
    wait_until("the closed connection's subscription is given back", || {
        let (ok, _, _) = try_subscribe(&mut b, &["t"]);
        !ok.is_empty()
    });
    stop(running);

    // Over the server: every address together.
    let running = start(|s| {
        s.max_total_subscriptions = 3;
        s.max_subscriptions_per_ip = 0;
    });
    let addr = running.local_addr();
    let mut a = connect(addr, "/");
    let mut b = connect(addr, "/");
    assert_eq!(try_subscribe(&mut a, &["p", "q"]).0, ["p", "q"]);
    let (ok, refused, why) = try_subscribe(&mut b, &["p", "r"]);
    assert_eq!((ok, refused), (vec!["p".to_owned()], vec!["r".to_owned()]));
    assert!(why.contains("3 subscriptions"), "{why}");
    assert_eq!(refused_metric(&running, "server"), 1);
    ask(&mut a, r#"{"type":"unsubscribe","topics":["q"]}"#);
    assert_eq!(try_subscribe(&mut b, &["r"]).0, ["r"]);
    assert_alive(&mut a);
    assert_alive(&mut b);
    stop(running);
}

#[test]
fn topics_are_capped_over_the_server() {
    // One core, so that every topic is counted once.
    let running = start(|s| {
        s.cores = Some(1);
        s.max_topics = 2;
    });
    let addr = running.local_addr();
    let mut a = connect(addr, "/");
    let mut b = connect(addr, "/");
    let (ok, refused, why) = try_subscribe(&mut a, &["x", "y", "z"]);
    assert_eq!(ok, ["x", "y"]);
    assert_eq!(refused, ["z"]);
    assert!(why.contains("2 topics"), "{why}");
    // Joining a topic that exists creates nothing.
    assert_eq!(try_subscribe(&mut b, &["x"]).0, ["x"]);
    assert_eq!(try_subscribe(&mut b, &["z"]).1, ["z"]);
    // A topic whose last subscriber leaves is free again; one that still
    // has a subscriber is not.
    ask(&mut a, r#"{"type":"unsubscribe","topics":["x","y"]}"#);
    assert_eq!(try_subscribe(&mut b, &["z"]).0, ["z"]);
    assert_eq!(try_subscribe(&mut a, &["w"]).1, ["w"]);
    b.close(None).unwrap();
    wait_until("the closed connection's topics are given back", || {
        let (ok, _, _) = try_subscribe(&mut a, &["w"]);
        !ok.is_empty()
    });
    assert!(refused_metric(&running, "topics") >= 3);
    stop(running);
}

/// Publishes with an id; returns the reply's `type` and `message`.
fn try_publish(c: &mut Client) -> (String, String) {
    let v = ask(c, r#"{"type":"publish","topic":"rl","data":1,"id":9}"#);
    let kind = v["type"].as_str().unwrap_or_default().to_owned();
    if kind == "error" {
        assert_error(&v, "rate_limited");
    }
    (kind, v["message"].as_str().unwrap_or_default().to_owned())
}

fn publish_refusals(running: &shardcast::server::Running, limit: &str) -> u64 {
    let (_, m) = http(running.local_addr(), "GET", "/metrics", &[], "");
    m.lines()
        .filter(|l| {
            l.starts_with("shardcast_publishes_refused_total{")
                && l.contains(&format!("limit=\"{limit}\""))
        })
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum()
}

#[test]
fn a_server_wide_publish_rate_covers_websocket_and_http_publishers_together() {
    // One core holds the whole rate; one token every 10 s, so none comes
    // back during the test.
    let running = start(|s| {
        s.cores = Some(1);
        s.publish_rate = 0.0;
        s.server_publish_rate = 0.1;
        s.server_publish_burst = 4;
    });
    let addr = running.local_addr();
    let mut a = connect(addr, "/");
    let mut b = connect(addr, "/");
    assert_eq!(try_publish(&mut a).0, "published");
    assert_eq!(try_publish(&mut b).0, "published");
    let one = r#"{"topic":"rl","data":2}"#;
    let (st, body) = http(addr, "POST", "/api/publish", &[], one);
    assert_eq!(st, 200, "{body}");
    assert_eq!(try_publish(&mut a).0, "published");
    // The fourth took the last token: every publisher is refused now.
    let (kind, why) = try_publish(&mut b);
    assert_eq!(kind, "error");
    assert!(why.contains("server"), "{why}");
    assert_eq!(try_publish(&mut a).0, "error");
    let (st, body) = http(addr, "POST", "/api/publish", &[], one);
    assert_eq!(st, 429, "{body}");
    assert!(
        body.contains("rate_limited") && body.contains("server"),
        "{body}"
    );
    assert_eq!(publish_refusals(&running, "server"), 3);
    assert_alive(&mut a);
    stop(running);
}

#[test]
fn the_connections_of_one_address_share_its_publish_rate() {
    let running = start(|s| {
        s.publish_rate = 0.0;
        s.publish_rate_per_ip = 0.1;
        s.publish_burst_per_ip = 3;
    });
    let addr = running.local_addr();
    // Connections on every core, all from 127.0.0.1.
    let mut conns = clients_on_every_core(&running);
    let n = conns.len();
    for i in 0..3 {
        assert_eq!(try_publish(&mut conns[i % n]).0, "published", "publish {i}");
    }
    for c in conns.iter_mut() {
        let (kind, why) = try_publish(c);
        assert_eq!(kind, "error");
        assert!(why.contains("address"), "{why}");
    }
    assert_eq!(publish_refusals(&running, "address"), n as u64);
    // HTTP publishers are limited per key or address on their own.
    let (st, body) = http(
        addr,
        "POST",
        "/api/publish",
        &[],
        r#"{"topic":"rl","data":3}"#,
    );
    assert_eq!(st, 200, "{body}");
    stop(running);
}
