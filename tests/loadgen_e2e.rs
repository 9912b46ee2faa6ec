//! Verifies that the loadgen's scenarios run end to end against the engine (small counts, a few seconds): idle connections with the server's cleanup, echo, and fanout through the pubsub example.

use shardcast::{Handler, Message, Rejection, Server, UpgradeRequest, Ws};

#[allow(dead_code)]
#[path = "../examples/pubsub.rs"]
mod pubsub_example;

#[path = "loadgen_support.rs"]
mod support;
use support::*;

struct Echo;

impl Handler for Echo {
    type Data = ();
    type Local = ();

    fn upgrade(&self, _req: &mut UpgradeRequest<'_>) -> Result<(), Rejection> {
        Ok(())
    }

    fn message(&self, ws: &mut Ws<'_, Self>, msg: Message<'_>) {
        if let Message::Text(t) = msg {
            ws.send_text(t);
        }
    }
}

#[test]
fn connections_are_opened_held_and_cleaned_up() {
    let h = Server::new(small_config(), Echo).start().unwrap();
    let url = format!("ws://{}/", h.local_addr());
    let pid = std::process::id().to_string();
    let r = loadgen(&[
        "connections",
        "--url",
        &url,
        "-n",
        "300",
        "--hold",
        "0",
        "--cores",
        "1",
        "--no-pin",
        "--server-pid",
        &pid,
        "--cleanup-timeout",
        "10",
        "-q",
    ])
    .unwrap();
    h.shutdown();
    h.join();
    assert_eq!(u(&r, "upgraded"), 300, "{}", r.to_json());
    // /proc/net/tcp is read in pages while other tests open and close
    // sockets, so an entry can be missed or counted twice (306 seen once
    // under a full CI run): a tolerance of 2 %.
    let held = u(&r, "server_sockets_held");
    assert!((294..=312).contains(&held), "{}", r.to_json());
    assert!(
        r.get_f64("server_cleanup_secs").is_some(),
        "{}",
        r.to_json()
    );
    assert!(r.get_f64("handshakes_per_sec").unwrap() > 0.0);
}

#[test]
fn echo_round_trips_are_counted_and_checked() {
    let h = Server::new(small_config(), Echo).start().unwrap();
    let url = format!("ws://{}/", h.local_addr());
    let r = loadgen(&[
        "echo",
        "--url",
        &url,
        "-n",
        "20",
        "--window",
        "2",
        "--warmup",
        "0.1",
        "--duration",
        "0.5",
        "--cores",
        "1",
        "--no-pin",
        "-q",
    ])
    .unwrap();
    h.shutdown();
    h.join();
    assert_eq!(r.map["correct"], true, "{}", r.to_json());
    assert!(u(&r, "rtt_samples") > 0);
    assert!(r.get_f64("messages_per_sec").unwrap() > 0.0);
}

#[test]
fn fanout_on_two_loadgen_cores_is_correct() {
    let h = Server::new(small_config().cores(2), pubsub_example::PubSub)
        .start()
        .unwrap();
    let url = format!("ws://{}/", h.local_addr());
    let r = loadgen(&[
        "fanout",
        "--url",
        &url,
        "-s",
        "200",
        "-t",
        "4",
        "--warmup",
        "0.1",
        "--duration",
        "0.5",
        "--cores",
        "2",
        "--no-pin",
        "-q",
        "--json",
    ])
    .unwrap();
    h.shutdown();
    h.join();
    assert_eq!(r.map["correct"], true, "{}", r.to_json());
    assert_eq!(u(&r, "publishers"), 4);
    assert!(u(&r, "deliveries_received") > 0);
}

#[test]
fn refused_connections_are_reported() {
    // A port nothing listens on: bind, note the port, close.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("ws://127.0.0.1:{port}/");
    let err = loadgen(&["echo", "--url", &url, "-n", "2", "--cores", "1", "-q"]).unwrap_err();
    assert!(err.contains("only 0 of 2"), "{err}");
}

/// The websocket-shootout protocol, as examples/shootout.rs speaks it.
struct Shootout;

impl Handler for Shootout {
    type Data = ();
    type Local = ();

    fn upgrade(&self, _req: &mut UpgradeRequest<'_>) -> Result<(), Rejection> {
        Ok(())
    }

    fn open(&self, ws: &mut Ws<'_, Self>) {
        let _ = ws.subscribe("all");
    }

    fn message(&self, ws: &mut Ws<'_, Self>, msg: Message<'_>) {
        let Message::Text(t) = msg else { return };
        if let Some(p) = pubsub_example::raw_member(t.as_bytes(), b"payload") {
            let p = std::str::from_utf8(p).unwrap();
            if t.contains("\"broadcast\"") {
                let out = format!("{{\"type\":\"broadcast\",\"payload\":{p}}}");
                ws.publish("all", &shardcast::PreparedFrame::text(&out), true);
                ws.send_text(&format!("{{\"type\":\"broadcastResult\",\"payload\":{p}}}"));
            } else {
                ws.send_text(t);
            }
        }
    }
}

#[test]
fn broadcast_steps_up_and_checks_every_delivery() {
    let h = Server::new(small_config(), Shootout).start().unwrap();
    let url = format!("ws://{}/", h.local_addr());
    let r = loadgen(&[
        "broadcast",
        "--url",
        &url,
        "--initial-clients",
        "20",
        "--step",
        "20",
        "--max-clients",
        "60",
        "--samples",
        "20",
        "--cores",
        "1",
        "--no-pin",
        "-q",
    ])
    .unwrap();
    let e = loadgen(&[
        "echo",
        "--url",
        &url,
        "-n",
        "4",
        "--protocol",
        "shootout",
        "--warmup",
        "0",
        "--duration",
        "0.3",
        "--cores",
        "1",
        "--no-pin",
        "-q",
    ])
    .unwrap();
    h.shutdown();
    h.join();
    assert_eq!(u(&r, "result_clients"), 60, "{}", r.to_json());
    assert_eq!(r.map["steps"].as_array().unwrap().len(), 3);
    // (A CPU warning may appear: the server runs inside the loadgen's process here.)
    assert_eq!(
        r.map["stopped"],
        "reached --max-clients 60",
        "{}",
        r.to_json()
    );
    assert_eq!(e.map["correct"], true, "{}", e.to_json());
}

#[test]
fn compare_fanout_and_idle_subscribed_shapes_are_checked() {
    let h = Server::new(small_config(), pubsub_example::PubSub)
        .start()
        .unwrap();
    let url = format!("ws://{}/", h.local_addr());
    // Two publishers take six topics in turn, one publish per write.
    let f = loadgen(&[
        "fanout",
        "--url",
        &url,
        "-s",
        "60",
        "-t",
        "6",
        "-p",
        "2",
        "--max-outstanding",
        "200",
        "--min-free",
        "10",
        "--warmup",
        "0.1",
        "--duration",
        "0.5",
        "--cores",
        "1",
        "--no-pin",
        "-q",
    ])
    .unwrap();
    let c = loadgen(&[
        "connections",
        "--url",
        &url,
        "-n",
        "50",
        "--subscribe-topics",
        "5",
        "--hold",
        "0",
        "--cores",
        "1",
        "--no-pin",
        "-q",
    ])
    .unwrap();
    h.shutdown();
    h.join();
    assert_eq!(f.map["correct"], true, "{}", f.to_json());
    if f.map["driver"] == "io_uring" {
        assert_eq!(u(&f, "subscribers_reached"), 60, "{}", f.to_json());
    } else {
        // On epoll the load generator runs one publisher per core (a known
        // limitation it reports): the two publishers' topics are not all
        // reached, and the report must say why.
        assert!(u(&f, "subscribers_reached") > 0, "{}", f.to_json());
        assert!(
            f.warnings.iter().any(|w| w.starts_with("EPOLL DRIVER")),
            "{}",
            f.to_json()
        );
    }
    assert_eq!(u(&c, "upgraded"), 50, "{}", c.to_json());
    assert_eq!(u(&c, "subscribe_topics"), 5);
}

#[test]
fn broadcast_steps_report_fanout_completion_and_echo_fits_32_bytes() {
    let h = Server::new(small_config(), Shootout).start().unwrap();
    let url = format!("ws://{}/", h.local_addr());
    let r = loadgen(&[
        "broadcast",
        "--url",
        &url,
        "--steps",
        "10,30",
        "--samples",
        "10",
        "--cores",
        "1",
        "--no-pin",
        "-q",
    ])
    .unwrap();
    let e = loadgen(&[
        "echo",
        "--url",
        &url,
        "-n",
        "4",
        "--protocol",
        "shootout",
        "--payload",
        "32",
        "--warmup",
        "0",
        "--duration",
        "0.3",
        "--cores",
        "1",
        "--no-pin",
        "-q",
    ])
    .unwrap();
    h.shutdown();
    h.join();
    assert_eq!(
        r.map["stopped"],
        "reached the last step, 30 clients",
        "{}",
        r.to_json()
    );
    let steps = r.map["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 2);
    for s in steps {
        assert_eq!(s["completed_broadcasts"], 10, "{s}");
        assert!(s["completion_p95_ms"].as_f64().unwrap() > 0.0, "{s}");
    }
    assert_eq!(e.map["correct"], true, "{}", e.to_json());
    assert_eq!(u(&e, "payload_bytes"), 32);
    assert!(u(&e, "rtt_samples") > 0);
}
