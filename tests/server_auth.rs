//! Verifies that JWT auth (handshake token, bearer header, auth message and its deadline), topic grants and the connection limits refuse exactly what they should, with the documented status or error code.

mod server_support;

use serde_json::json;
use server_support::*;

const SECRET: &str = "test-secret";

fn jwt_server() -> shardcast::server::Running {
    start(|s| {
        s.jwt_secret = Some(SECRET.into());
        s.auth_timeout_secs = 1;
    })
}

fn valid(sub: &str) -> String {
    token(
        SECRET,
        json!({"sub": sub, "exp": now() + 600, "subscribe": ["news", "chat.*"], "publish": ["chat.*"]}),
    )
}

#[test]
fn a_valid_token_in_the_query_grants_its_topics() {
    let running = jwt_server();
    let addr = running.local_addr();
    let mut c = connect(addr, &format!("/ws?token={}", valid("alice")));
    let v = ask(
        &mut c,
        r#"{"type":"subscribe","topics":["news","chat.room1","secret","chat"],"id":1}"#,
    );
    assert_eq!(
        v,
        json!({"type":"subscribed","topics":["news","chat.room1"],"id":1})
    );
    let e = recv(&mut c);
    assert_error(&e, "forbidden");
    assert_eq!(e["topics"], json!(["secret", "chat"]));
    assert_eq!(e["id"], 1);

    let ack = ask(
        &mut c,
        r#"{"type":"publish","topic":"chat.room1","data":"hi","id":2}"#,
    );
    // The publisher is subscribed to chat.room1: its own message comes first.
    assert_eq!(ack["type"], "message");
    assert_eq!(
        recv(&mut c),
        json!({"type":"published","id":2,"delivered":1})
    );
    let e = ask(
        &mut c,
        r#"{"type":"publish","topic":"news","data":"x","id":3}"#,
    );
    assert_error(&e, "forbidden");
    assert_eq!(e["topics"], json!(["news"]));
    assert_alive(&mut c);
    stop(running);
}

#[test]
fn a_bearer_header_works_like_the_query() {
    let running = jwt_server();
    let auth = format!("Bearer {}", valid("bob"));
    let mut c = connect_with(running.local_addr(), "/", &[("Authorization", &auth)]);
    subscribe(&mut c, &["news"]);
    stop(running);
}

#[test]
fn expired_or_badly_signed_tokens_get_401_at_the_handshake() {
    let running = jwt_server();
    let addr = running.local_addr();
    let expired = token(
        SECRET,
        json!({"sub":"x","exp": now() - 10, "subscribe":["*"]}),
    );
    assert_eq!(refused(addr, &format!("/?token={expired}"), &[]), 401);
    let forged = token("other-secret", json!({"sub":"x","exp": now() + 600}));
    assert_eq!(refused(addr, &format!("/?token={forged}"), &[]), 401);
    assert_eq!(refused(addr, "/?token=not.a.jwt", &[]), 401);
    let no_exp = token(SECRET, json!({"sub":"x"}));
    assert_eq!(refused(addr, &format!("/?token={no_exp}"), &[]), 401);
    let bearer = format!("Bearer {forged}");
    assert_eq!(refused(addr, "/", &[("Authorization", &bearer)]), 401);
    wait_until("rejections counted", || {
        running.handle().stats().rejected_with(401) == 5
    });
    stop(running);
}

#[test]
fn the_auth_message_authenticates_a_connection_opened_without_token() {
    let running = jwt_server();
    let mut c = connect(running.local_addr(), "/");
    // Before auth: pings work, everything else is unauthorized.
    assert_alive(&mut c);
    let e = ask(&mut c, r#"{"type":"subscribe","topics":["news"],"id":1}"#);
    assert_error(&e, "unauthorized");
    let v = ask(
        &mut c,
        &format!(r#"{{"type":"auth","token":"{}","id":"a"}}"#, valid("carol")),
    );
    assert_eq!(v, json!({"type":"authenticated","sub":"carol","id":"a"}));
    subscribe(&mut c, &["news"]);
    stop(running);
}

#[test]
fn a_bad_token_in_the_auth_message_closes_1008() {
    let running = jwt_server();
    for bad in [
        token(SECRET, json!({"sub":"x","exp": now() - 10})),
        token("wrong", json!({"sub":"x","exp": now() + 600})),
    ] {
        let mut c = connect(running.local_addr(), "/");
        let e = ask(&mut c, &format!(r#"{{"type":"auth","token":"{bad}"}}"#));
        assert_error(&e, "unauthorized");
        assert_eq!(expect_close(&mut c), 1008);
    }
    stop(running);
}

#[test]
fn a_silent_unauthenticated_client_is_closed_after_the_deadline() {
    let running = jwt_server();
    let mut c = connect(running.local_addr(), "/");
    let e = recv(&mut c);
    assert_error(&e, "unauthorized");
    assert_eq!(expect_close(&mut c), 1008);
    // An authenticated one stays.
    let mut ok = connect(running.local_addr(), "/");
    ask(
        &mut ok,
        &format!(r#"{{"type":"auth","token":"{}"}}"#, valid("d")),
    );
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert_alive(&mut ok);
    stop(running);
}

#[test]
fn connections_per_ip_over_the_limit_get_429() {
    let running = start(|s| s.max_connections_per_ip = 2);
    let addr = running.local_addr();
    let a = connect(addr, "/");
    let mut b = connect(addr, "/");
    assert_eq!(refused(addr, "/", &[]), 429);
    drop(a);
    // The slot frees once the server has seen the first one go.
    wait_until("slot freed", || running.handle().stats().active == 1);
    let _c = connect(addr, "/");
    assert_alive(&mut b);
    stop(running);
}

#[test]
fn a_foreign_origin_gets_403_and_a_listed_one_connects() {
    let running = start(|s| s.allowed_origins = vec!["https://app.example".into()]);
    let addr = running.local_addr();
    assert_eq!(
        refused(addr, "/", &[("Origin", "https://evil.example")]),
        403
    );
    let mut c = connect_with(addr, "/", &[("Origin", "https://app.example")]);
    assert_alive(&mut c);
    stop(running);
}

#[test]
fn a_full_server_answers_503() {
    let running = start(|s| s.max_connections = 1);
    let addr = running.local_addr();
    let _a = connect(addr, "/");
    assert_eq!(refused(addr, "/", &[]), 503);
    stop(running);
}

#[test]
fn the_http_api_needs_a_valid_key_when_keys_are_set() {
    let running = start(|s| s.api_keys = vec!["k1".into(), "k2".into()]);
    let addr = running.local_addr();
    let body = r#"{"topic":"t","data":1}"#;
    let (st, b) = http(addr, "POST", "/api/publish", &[], body);
    assert_eq!(st, 401, "{b}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&b).unwrap()["error"]["code"],
        "unauthorized"
    );
    let (st, _) = http(
        addr,
        "POST",
        "/api/publish",
        &[("Authorization", "Bearer nope")],
        body,
    );
    assert_eq!(st, 401);
    let (st, _) = http(
        addr,
        "POST",
        "/api/publish",
        &[("Authorization", "Bearer k2")],
        body,
    );
    assert_eq!(st, 200);
    let (st, _) = http(addr, "POST", "/api/publish", &[("X-API-Key", "k1")], body);
    assert_eq!(st, 200);
    stop(running);
}

#[test]
fn with_jwt_and_no_api_key_the_http_api_is_closed() {
    let running = jwt_server();
    let (st, _) = http(
        running.local_addr(),
        "POST",
        "/api/publish",
        &[],
        r#"{"topic":"t","data":1}"#,
    );
    assert_eq!(st, 401);
    stop(running);
}

#[test]
fn a_token_that_expires_while_connected_is_refused_and_closed() {
    let running = jwt_server();
    let exp = now() + 1;
    let t = token(SECRET, json!({"sub":"e","exp": exp, "subscribe":["*"]}));
    let mut c = connect(running.local_addr(), &format!("/?token={t}"));
    subscribe(&mut c, &["a"]);
    // Let the clock pass the expiry (bounded: about two seconds).
    wait_until("token expiry", || now() > exp);
    // Whichever comes first, the expiry sweep or this message's check,
    // the answer is `unauthorized` and a 1008 close.
    let e = ask(&mut c, r#"{"type":"subscribe","topics":["b"],"id":4}"#);
    assert_error(&e, "unauthorized");
    assert_eq!(expect_close(&mut c), 1008);
    stop(running);
}

#[test]
fn an_empty_api_key_is_refused_at_start_and_an_empty_presented_key_never_passes() {
    let mut s = shardcast::server::Settings::default();
    s.listen = "127.0.0.1:0".parse().unwrap();
    s.api_keys = vec!["k1".into(), String::new()];
    let err = match shardcast::server::start(s) {
        Ok(_) => panic!("a server with an empty API key started"),
        Err(e) => e,
    };
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    assert!(err.to_string().contains("empty"), "{err}");

    let running = start(|s| s.api_keys = vec!["k1".into()]);
    let body = r#"{"topic":"t","data":1}"#;
    let addr = running.local_addr();
    for key in ["", "k", "k1x"] {
        let (status, _) = http(addr, "POST", "/api/publish", &[("X-API-Key", key)], body);
        assert_eq!(status, 401, "key {key:?}");
    }
    let (status, _) = http(addr, "POST", "/api/publish", &[("X-API-Key", "k1")], body);
    assert_eq!(status, 200, "the real key still works");
    stop(running);
}

fn expiring(secs: u64) -> String {
    token(
        SECRET,
        serde_json::json!({"sub": "eve", "exp": now() + secs, "subscribe": ["*"], "publish": ["*"]}),
    )
}

#[test]
fn a_connection_that_only_listens_is_closed_when_its_token_expires() {
    let running = jwt_server();
    let mut c = connect(running.local_addr(), &format!("/ws?token={}", expiring(2)));
    subscribe(&mut c, &["news"]);
    let t = std::time::Instant::now();
    let v = recv(&mut c);
    assert_error(&v, "unauthorized");
    assert_eq!(v["message"], "token expired");
    assert_eq!(expect_close(&mut c), 1008);
    assert!(
        t.elapsed() < std::time::Duration::from_secs(4),
        "{:?}",
        t.elapsed()
    );
    stop(running);
}

#[test]
fn a_fresh_token_sent_before_expiry_keeps_the_connection() {
    let running = jwt_server();
    let mut c = connect(running.local_addr(), &format!("/ws?token={}", expiring(2)));
    let v = ask(
        &mut c,
        &format!(r#"{{"type":"auth","token":"{}"}}"#, expiring(60)),
    );
    assert_eq!(v["type"], "authenticated");
    std::thread::sleep(std::time::Duration::from_secs(3));
    // Past the first token's expiry: still served.
    let v = ask(&mut c, r#"{"type":"ping","id":1}"#);
    assert_eq!(v["type"], "pong");
    stop(running);
}

#[test]
fn with_protect_status_metrics_health_and_the_status_page_need_a_key() {
    let running = start(|s| {
        s.api_keys = vec!["k1".into()];
        s.protect_status = true;
    });
    let addr = running.local_addr();
    for path in ["/metrics", "/healthz", "/"] {
        assert_eq!(
            http(addr, "GET", path, &[], "").0,
            401,
            "{path} without a key"
        );
        assert_eq!(
            http(addr, "GET", path, &[("X-API-Key", "k2")], "").0,
            401,
            "{path} with a wrong key"
        );
        assert_eq!(
            http(addr, "GET", path, &[("X-API-Key", "k1")], "").0,
            200,
            "{path} with the key"
        );
    }
    stop(running);
    // Without a key to check, the option cannot start.
    let mut s = shardcast::server::Settings::default();
    s.listen = "127.0.0.1:0".parse().unwrap();
    s.protect_status = true;
    assert!(shardcast::server::start(s).is_err());
}

#[test]
fn behind_a_trusted_proxy_the_per_address_limit_counts_the_forwarded_client() {
    let running = start(|s| {
        s.max_connections_per_ip = 1;
        s.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
    });
    let addr = running.local_addr();
    let _a = connect_with(addr, "/", &[("X-Forwarded-For", "203.0.113.7")]);
    let _b = connect_with(addr, "/", &[("X-Forwarded-For", "203.0.113.8")]);
    assert_eq!(
        refused(addr, "/", &[("X-Forwarded-For", "203.0.113.7")]),
        429,
        "the same client through the proxy"
    );
    // IPv6 clients count per /64.
    let _c = connect_with(addr, "/", &[("X-Forwarded-For", "2001:db8:1:2::1")]);
    assert_eq!(
        refused(addr, "/", &[("X-Forwarded-For", "2001:db8:1:2::99")]),
        429
    );
    stop(running);
}

#[test]
fn an_anonymous_server_accepts_browser_pages_from_this_machine_only() {
    let running = start(|_| {});
    let addr = running.local_addr();
    assert_eq!(
        refused(addr, "/", &[("Origin", "https://evil.example")]),
        403
    );
    let _local = connect_with(addr, "/", &[("Origin", "http://localhost:3000")]);
    let _no_origin = connect(addr, "/");
    stop(running);
    // With an allowlist of its own, the allowlist decides.
    let running = start(|s| s.allowed_origins = vec!["https://app.example".into()]);
    let _app = connect_with(
        running.local_addr(),
        "/",
        &[("Origin", "https://app.example")],
    );
    stop(running);
}

#[test]
fn an_anonymous_server_refuses_host_names_a_rebinding_page_could_use() {
    let running = start(|_| {});
    let addr = running.local_addr();
    let port = addr.port();
    // A page whose own name now resolves to this machine sends its name.
    let evil = format!("evil.example:{port}");
    assert_eq!(refused(addr, "/", &[("Host", evil.as_str())]), 403);
    let (st, body) = http(addr, "GET", "/metrics", &[("Host", &evil)], "");
    assert_eq!(st, 403, "{body}");
    assert!(body.contains("allowed-host"), "{body}");
    let one = r#"{"topic":"t","data":1}"#;
    assert_eq!(
        http(addr, "POST", "/api/publish", &[("Host", &evil)], one).0,
        403
    );
    // Loopback names and addresses with the port pass.
    for host in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        format!("[::1]:{port}"),
    ] {
        let _ws = connect_with(addr, "/", &[("Host", host.as_str())]);
        assert_eq!(http(addr, "GET", "/healthz", &[("Host", &host)], "").0, 200);
    }
    let (_, metrics) = http(addr, "GET", "/metrics", &[], "");
    assert!(
        metrics.contains("shardcast_http_refusals_total{core=\"0\",status=\"403\"}")
            && sum_metric(&metrics, "shardcast_http_refusals_total{", "status=\"403\"") == 2,
        "{metrics}"
    );
    assert_eq!(
        sum_metric(
            &metrics,
            "shardcast_handshake_rejections_total{",
            "status=\"403\""
        ),
        1
    );
    stop(running);
    // An allowlist adds names, and is checked with auth on too.
    let running = start(|s| {
        s.jwt_secret = Some(SECRET.into());
        s.allowed_hosts = vec!["app.example".into()];
    });
    let addr = running.local_addr();
    let ok = format!("app.example:{}", addr.port());
    assert_eq!(http(addr, "GET", "/healthz", &[("Host", &ok)], "").0, 200);
    let bad = format!("other.example:{}", addr.port());
    assert_eq!(http(addr, "GET", "/healthz", &[("Host", &bad)], "").0, 403);
    stop(running);
}

#[test]
fn the_publish_api_takes_json_only() {
    let running = start(|_| {});
    let addr = running.local_addr();
    let mut sub = connect(addr, "/");
    subscribe(&mut sub, &["t"]);
    let body = r#"{"topic":"t","data":1}"#;
    // A page elsewhere can make a browser send these without asking.
    for ct in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "",
    ] {
        let (st, b) = http(addr, "POST", "/api/publish", &[("Content-Type", ct)], body);
        assert_eq!(st, 415, "{ct}: {b}");
        let v: serde_json::Value = serde_json::from_str(&b).unwrap();
        assert_eq!(v["error"]["code"], "unsupported_media_type", "{b}");
    }
    for ct in ["application/json", "Application/JSON; charset=utf-8"] {
        let (st, b) = http(addr, "POST", "/api/publish", &[("Content-Type", ct)], body);
        assert_eq!(st, 200, "{ct}: {b}");
        assert_eq!(recv(&mut sub)["data"], 1);
    }
    let (_, metrics) = http(addr, "GET", "/metrics", &[], "");
    assert_eq!(
        sum_metric(&metrics, "shardcast_http_refusals_total{", "status=\"415\""),
        4
    );
    stop(running);
}

/// Sums the samples of the series starting with `prefix` whose labels
/// contain `label`.
fn sum_metric(metrics: &str, prefix: &str, label: &str) -> u64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(prefix) && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}
