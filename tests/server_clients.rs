//! Verifies client identities: connections of one identity (JWT `sub`, or an anonymous client's `client_id`) are counted over every core, limited by `max_connections_per_client`, and reached together by `ServerHandle::send_to_client` and `POST /api/send`.

mod server_support;

use serde_json::json;
use server_support::*;

const SECRET: &str = "clients-secret";

#[test]
fn a_client_is_reached_on_every_core_and_limited() {
    let running = start(|s| {
        s.jwt_secret = Some(SECRET.into());
        s.api_keys = vec!["k".into()];
        s.max_connections_per_client = 3;
    });
    let addr = running.local_addr();
    let tok = |sub: &str| token(SECRET, json!({"sub": sub, "exp": now() + 600}));
    // Three connections of alice, on whatever cores; one of bob.
    let mut alice: Vec<Client> = (0..3)
        .map(|_| connect(addr, &format!("/ws?token={}", tok("alice"))))
        .collect();
    let mut bob = connect(addr, &format!("/ws?token={}", tok("bob")));
    for ws in alice.iter_mut().chain([&mut bob]) {
        assert_alive(ws);
    }
    let per_core = running.handle().core_stats();
    assert_eq!(per_core.iter().map(|s| s.active).sum::<u64>(), 4);
    assert_eq!(running.handle().client_connections("alice"), 3);
    // A fourth is refused and closed.
    let mut extra = connect(addr, &format!("/ws?token={}", tok("alice")));
    assert_error(&recv(&mut extra), "too_many_connections");
    assert_eq!(expect_close(&mut extra), 1008);
    assert_eq!(running.handle().client_connections("alice"), 3);
    // Every connection of alice, none of bob's.
    let frame = shardcast::PreparedFrame::text(r#"{"type":"direct","data":1}"#);
    assert_eq!(running.handle().send_to_client("alice", &frame), 3);
    for ws in &mut alice {
        assert_eq!(recv(ws), json!({"type":"direct","data":1}));
    }
    // Over HTTP, data byte for byte.
    let key = [("Authorization", "Bearer k")];
    let (status, body) = http(
        addr,
        "POST",
        "/api/send",
        &key,
        r#"{"client":"alice","data":{"x": [1, 2]}}"#,
    );
    assert_eq!((status, body.trim()), (200, r#"{"sent":3}"#));
    for ws in &mut alice {
        assert_eq!(recv_raw(ws), r#"{"type":"direct","data":{"x": [1, 2]}}"#);
    }
    assert_eq!(
        http(
            addr,
            "POST",
            "/api/send",
            &key,
            r#"{"client":"nobody","data":1}"#
        )
        .1
        .trim(),
        r#"{"sent":0}"#
    );
    assert_eq!(
        http(addr, "POST", "/api/send", &key, r#"{"data":1}"#).0,
        400
    );
    assert_eq!(
        http(
            addr,
            "POST",
            "/api/send",
            &[],
            r#"{"client":"alice","data":1}"#
        )
        .0,
        401
    );
    assert_alive(&mut bob);
    // A closed connection leaves the count: another one fits.
    drop(alice.pop());
    wait_until("alice's count drops", || {
        running.handle().client_connections("alice") == 2
    });
    let mut again = connect(addr, &format!("/ws?token={}", tok("alice")));
    assert_alive(&mut again);
    assert_eq!(running.handle().client_connections("alice"), 3);
    stop(running);
}

#[test]
fn an_anonymous_client_names_itself_with_client_id_and_an_auth_message_identifies_too() {
    let running = start(|s| s.max_connections_per_client = 1);
    let addr = running.local_addr();
    let mut a = connect(addr, "/ws?client_id=dev%201");
    assert_alive(&mut a);
    assert_eq!(running.handle().client_connections("dev 1"), 1);
    let mut b = connect(addr, "/ws?client_id=dev%201");
    assert_error(&recv(&mut b), "too_many_connections");
    assert_eq!(refused(addr, "/ws?client_id=", &[]), 400);
    stop(running);
    // With JWT auth by message.
    let running = start(|s| {
        s.jwt_secret = Some(SECRET.into());
        s.max_connections_per_client = 1;
    });
    let addr = running.local_addr();
    let tok = token(SECRET, json!({"sub": "carol", "exp": now() + 600}));
    let mut c = connect(addr, "/ws");
    let v = ask(&mut c, &format!(r#"{{"type":"auth","token":"{tok}"}}"#));
    assert_eq!(v["type"], "authenticated");
    assert_eq!(running.handle().client_connections("carol"), 1);
    let mut d = connect(addr, "/ws");
    send(&mut d, &format!(r#"{{"type":"auth","token":"{tok}"}}"#));
    assert_error(&recv(&mut d), "too_many_connections");
    assert_eq!(expect_close(&mut d), 1008);
    stop(running);
}
