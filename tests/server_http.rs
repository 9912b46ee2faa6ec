//! Verifies that HTTP on the WebSocket port works: `POST /api/publish` (single and batch) reaches WebSocket subscribers on every core and reports how many, `/metrics` counters move with traffic, `/healthz` and `/` answer, and mistakes get JSON errors.

mod server_support;

use std::io::{Read, Write};

use serde_json::{json, Value};
use server_support::*;

fn parse(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{body}: {e}"))
}

#[test]
fn http_publish_reaches_subscribers_on_every_core() {
    let running = start(|_| {});
    let addr = running.local_addr();
    let mut subs = clients_on_every_core(&running);
    for s in subs.iter_mut() {
        subscribe(s, &["alerts"]);
    }
    let data = r#"{ "level" : "high", "n": 1.0 }"#;
    let (st, body) = http(
        addr,
        "POST",
        "/api/publish",
        &[("Content-Type", "application/json")],
        &format!(r#"{{"topic":"alerts","data":{data}}}"#),
    );
    assert_eq!(st, 200, "{body}");
    assert_eq!(parse(&body), json!({"delivered": subs.len()}));
    for s in subs.iter_mut() {
        assert_eq!(
            recv_raw(s),
            format!(r#"{{"type":"message","topic":"alerts","data":{data}}}"#)
        );
    }
    stop(running);
}

#[test]
fn a_batch_publishes_in_order_and_counts_each_message() {
    let running = start(|_| {});
    let addr = running.local_addr();
    let mut a = connect(addr, "/");
    subscribe(&mut a, &["x", "y"]);
    let mut b = connect(addr, "/");
    subscribe(&mut b, &["y"]);
    let (st, body) = http(
        addr,
        "POST",
        "/api/publish",
        &[],
        r#"[{"topic":"x","data":1},{"topic":"y","data":2},{"topic":"none","data":3}]"#,
    );
    assert_eq!(st, 200, "{body}");
    assert_eq!(parse(&body), json!({"delivered":3,"results":[1,2,0]}));
    assert_eq!(recv(&mut a)["data"], 1);
    assert_eq!(recv(&mut a)["data"], 2);
    assert_eq!(recv(&mut b)["data"], 2);
    let (st, body) = http(addr, "POST", "/api/publish", &[], "[]");
    assert_eq!(
        (st, parse(&body)),
        (200, json!({"delivered":0,"results":[]}))
    );
    stop(running);
}

#[test]
fn bad_publish_requests_get_400_with_a_code() {
    let running = start(|_| {});
    let addr = running.local_addr();
    for body in [
        "{nope",
        "42",
        r#"{"data":1}"#,
        r#"{"topic":"a"}"#,
        r#"{"topic":"","data":1}"#,
        r#"{"topic":"$sys.stats","data":1}"#,
        r#"[{"topic":"a","data":1},{"topic":7,"data":1}]"#,
    ] {
        let (st, resp) = http(addr, "POST", "/api/publish", &[], body);
        assert_eq!(st, 400, "{body} -> {resp}");
        assert_eq!(parse(&resp)["error"]["code"], "bad_request");
    }
    let (st, _) = http(addr, "GET", "/api/publish", &[], "");
    assert_eq!(st, 405);
    let (st, resp) = http(addr, "GET", "/nowhere", &[], "");
    assert_eq!(st, 404);
    assert_eq!(parse(&resp)["error"]["code"], "not_found");
    stop(running);
}

#[test]
fn a_chunked_body_gets_411_and_nothing_is_published() {
    let running = start(|_| {});
    let addr = running.local_addr();
    let mut sub = connect(addr, "/");
    subscribe(&mut sub, &["news"]);
    // The chunk holds a complete publish body: read as if it had no body,
    // or by guessing its length, it would publish or be misparsed.
    let chunk = r#"{"topic":"news","data":1}"#;
    let req = format!(
        "POST /api/publish HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{chunk}\r\n0\r\n\r\n",
        chunk.len()
    );
    let (st, resp) = server_support::common::http(addr, &req);
    assert_eq!(st, 411, "{resp}");
    assert!(resp.contains("Content-Length"), "{resp}");
    // With Content-Length as well: still refused, never framed two ways.
    let req = format!(
        "POST /api/publish HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: {}\r\n\r\n{chunk}",
        chunk.len()
    );
    assert_eq!(server_support::common::http(addr, &req).0, 411);
    // Nothing reached the subscriber: a publish sent after arrives first.
    let (st, _) = http(
        addr,
        "POST",
        "/api/publish",
        &[],
        r#"{"topic":"news","data":2}"#,
    );
    assert_eq!(st, 200);
    assert_eq!(recv(&mut sub)["data"], 2);
    stop(running);
}

#[test]
fn healthz_and_the_status_page_answer() {
    let running = start(|_| {});
    let addr = running.local_addr();
    let (st, body) = http(addr, "GET", "/healthz", &[], "");
    assert_eq!(st, 200);
    assert_eq!(parse(&body)["status"], "ok");
    let (st, body) = http(addr, "GET", "/", &[], "");
    assert_eq!(st, 200);
    assert!(body.contains("<title>shardcast</title>") && body.contains("new WebSocket"));
    stop(running);
}

/// The value of `name{labels}` summed over its series.
fn metric(text: &str, name: &str, label: Option<&str>) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.split(['{', ' ']).next() == Some(name) && label.is_none_or(|lb| l.contains(lb))
        })
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum()
}

#[test]
fn metrics_counters_move_with_traffic() {
    let running = start(|_| {});
    let addr = running.local_addr();
    let (st, before) = http(addr, "GET", "/metrics", &[], "");
    assert_eq!(st, 200);
    for line in before
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, value) = line.rsplit_once(' ').expect(line);
        assert!(value.parse::<f64>().is_ok(), "bad sample {line}");
        assert!(series.starts_with("shardcast_"), "{line}");
    }
    assert_eq!(metric(&before, "shardcast_connections_active", None), 0.0);
    // One info line per core: its driver and io_uring completion mode.
    let drivers: Vec<&str> = before
        .lines()
        .filter(|l| l.starts_with("shardcast_core_driver{"))
        .collect();
    assert_eq!(drivers.len(), running.handle().cores(), "{drivers:?}");
    for (i, (d, t)) in running
        .handle()
        .drivers()
        .iter()
        .zip(running.handle().task_runs())
        .enumerate()
    {
        let run = t.map_or("none".to_string(), |t| t.to_string());
        let line =
            format!("shardcast_core_driver{{core=\"{i}\",driver=\"{d}\",task_run=\"{run}\"}} 1");
        assert!(drivers.contains(&line.as_str()), "{line} in {drivers:?}");
    }

    let mut sub = connect(addr, "/");
    subscribe(&mut sub, &["m"]);
    let mut p = connect(addr, "/");
    for i in 0..3 {
        let ack = ask(
            &mut p,
            &format!(r#"{{"type":"publish","topic":"m","data":{i},"id":{i}}}"#),
        );
        assert_eq!(ack["delivered"], 1);
    }
    let e = ask(&mut p, "{bad");
    assert_error(&e, "bad_request");
    assert_eq!(refused(addr, "/", &[("Sec-WebSocket-Version", "8")]), 426);

    let (_, after) = http(addr, "GET", "/metrics", &[], "");
    assert_eq!(metric(&after, "shardcast_connections_active", None), 2.0);
    assert_eq!(metric(&after, "shardcast_ws_publishes_total", None), 3.0);
    assert_eq!(metric(&after, "shardcast_deliveries_total", None), 3.0);
    assert_eq!(metric(&after, "shardcast_subscriptions", None), 1.0);
    assert_eq!(
        metric(&after, "shardcast_fanout_latency_seconds_count", None),
        3.0
    );
    assert_eq!(
        metric(
            &after,
            "shardcast_fanout_latency_seconds_bucket",
            Some("le=\"+Inf\"")
        ),
        3.0
    );
    assert!(metric(&after, "shardcast_messages_in_total", None) >= 5.0);
    assert_eq!(
        metric(
            &after,
            "shardcast_client_errors_total",
            Some("code=\"bad_request\"")
        ),
        1.0
    );
    assert_eq!(
        metric(
            &after,
            "shardcast_handshake_rejections_total",
            Some("status=\"426\"")
        ),
        1.0
    );
    assert!(
        metric(&after, "shardcast_http_requests_total", None)
            > metric(&before, "shardcast_http_requests_total", None)
    );
    stop(running);
}

#[test]
fn a_large_metrics_page_arrives_whole() {
    // Many cores make a page larger than a socket's default send buffer
    // (16 KiB); what the first write does not take goes through the outbox.
    let running = start(|s| s.cores = Some(48));
    let mut s = std::net::TcpStream::connect(running.local_addr()).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(body.len(), len);
    assert!(body.len() > 64 << 10, "only {} bytes", body.len());
    assert!(body.ends_with("\n") && body.contains("shardcast_uptime_seconds "));
    assert!(body.contains("shardcast_client_errors_total{core=\"47\",code=\"internal\"} 0"));
    stop(running);
}

#[test]
fn a_client_expecting_100_continue_gets_it_before_sending_the_body() {
    let running = start(|_| {});
    let body = r#"{"topic":"c","data":1}"#;
    let mut s = std::net::TcpStream::connect(running.local_addr()).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    write!(
        s,
        "POST /api/publish HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
        body.len()
    )
    .unwrap();
    let mut interim = [0u8; 25];
    s.read_exact(&mut interim).unwrap();
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    s.write_all(body.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.ends_with("{\"delivered\":0}\n"), "{out}");
    stop(running);
}

#[test]
fn a_batch_larger_than_the_outbox_limit_reaches_readers_that_keep_up() {
    let running = start(|s| {
        s.max_http_body = 8 << 20;
        s.http_publish_rate = 0.0;
    });
    let addr = running.local_addr();
    let mut subs = clients_on_every_core(&running);
    for s in subs.iter_mut() {
        subscribe(s, &["burst"]);
    }
    // 5,000 messages of ~400 bytes: 2 MB per subscriber, twice the outbox
    // limit, queued in one loop turn.
    let data = "y".repeat(400);
    let items: Vec<Value> = (0..5000)
        .map(|i| json!({"topic": "burst", "data": format!("{i}:{data}")}))
        .collect();
    let body = serde_json::to_string(&items).unwrap();
    let readers: Vec<_> = subs
        .into_iter()
        .map(|mut s| {
            std::thread::spawn(move || {
                for i in 0..5000 {
                    let v = recv(&mut s);
                    let d = v["data"].as_str().unwrap().to_owned();
                    assert!(d.starts_with(&format!("{i}:")), "message {i}: {d:.20}");
                }
                assert_alive(&mut s);
            })
        })
        .collect();
    let (st, b) = http(addr, "POST", "/api/publish", &[], &body);
    assert_eq!(st, 200, "{b}");
    for r in readers {
        r.join().expect("a reader was cut off");
    }
    assert_eq!(running.handle().stats().slow_closes, 0);
    stop(running);
}

#[test]
fn batches_are_capped_and_http_publishers_rate_limited_per_key() {
    let running = start(|s| {
        s.api_keys = vec!["k1".into(), "k2".into()];
        s.max_batch_items = 10;
        s.http_publish_rate = 1.0;
        s.http_publish_burst = 3;
    });
    let addr = running.local_addr();
    let items: Vec<Value> = (0..11).map(|i| json!({"topic": "t", "data": i})).collect();
    let big = serde_json::to_string(&items).unwrap();
    let (st, b) = http(addr, "POST", "/api/publish", &[("X-API-Key", "k1")], &big);
    assert_eq!(st, 413, "{b}");
    assert_eq!(parse(&b)["error"]["code"], "too_large");
    let one = r#"{"topic":"t","data":1}"#;
    for _ in 0..3 {
        assert_eq!(
            http(addr, "POST", "/api/publish", &[("X-API-Key", "k1")], one).0,
            200
        );
    }
    let (st, b) = http(addr, "POST", "/api/publish", &[("X-API-Key", "k1")], one);
    assert_eq!(st, 429, "{b}");
    assert_eq!(parse(&b)["error"]["code"], "rate_limited");
    assert_eq!(
        http(addr, "POST", "/api/publish", &[("X-API-Key", "k2")], one).0,
        200,
        "another key has its own budget"
    );
    stop(running);
}

#[test]
fn a_batch_larger_than_the_burst_limit_reaches_readers_that_keep_up_whole_and_in_order() {
    let running = start(|s| {
        s.max_http_body = 8 << 20;
        s.http_publish_rate = 0.0;
        s.outbox_limit = 256 << 10;
        s.outbox_burst_limit = 1 << 20;
    });
    let addr = running.local_addr();
    let mut subs = clients_on_every_core(&running);
    for s in subs.iter_mut() {
        subscribe(s, &["steps"]);
    }
    // 5,000 messages of ~430 bytes: 2.1 MB per subscriber, twice the
    // burst limit. Queued in one loop turn, it would close the readers
    // on the core that takes the request at once.
    let data = "z".repeat(400);
    let items: Vec<Value> = (0..5000)
        .map(|i| json!({"topic": "steps", "data": format!("{i}:{data}")}))
        .collect();
    let body = serde_json::to_string(&items).unwrap();
    let readers: Vec<_> = subs
        .into_iter()
        .map(|mut s| {
            std::thread::spawn(move || {
                for i in 0..5000 {
                    let v = recv(&mut s);
                    let d = v["data"].as_str().unwrap().to_owned();
                    assert!(d.starts_with(&format!("{i}:")), "message {i}: {d:.20}");
                }
                assert_alive(&mut s);
            })
        })
        .collect();
    let n = readers.len();
    let (st, b) = http(addr, "POST", "/api/publish", &[], &body);
    assert_eq!(st, 200, "{b}");
    assert_eq!(parse(&b)["delivered"], 5000 * n, "{:.200}", b);
    for r in readers {
        r.join().expect("a reader was cut off");
    }
    let stats = running.handle().stats();
    assert_eq!((stats.slow_closes, stats.dropped), (0, 0));
    stop(running);
}
