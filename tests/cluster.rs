//! Verifies that `shardcast` nodes sharing a real NATS or Redis broker deliver every publication to every subscriber on every node exactly once, in order per publisher, whatever the topic's name; that a node's broker subscriptions follow its local subscribers; that a broker restarted mid-stream loses only what the receiving node counts as a gap; and that the other nodes keep serving when one is killed.
//!
//! The brokers are the real `nats-server` and `redis-server`, started on
//! free loopback ports and stopped by PID; the nodes are the `shardcast`
//! binary. A node whose broker is absent must still serve its own
//! clients and stop cleanly. Without a broker's binary its tests say so
//! and pass, unless `CI` or `SHARDCAST_REQUIRE_BROKERS` is set: CI
//! installs both (`.ci/run`), so there they must run.

mod cluster_support;
mod server_support;

#[allow(dead_code)]
#[path = "loadgen_support.rs"]
mod loadgen_support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use shardcast::cluster::subject;
use tungstenite::stream::MaybeTlsStream;

use cluster_support::*;
use server_support::{ask, connect, subscribe, Client, TIMEOUT};

fn three_nodes_deliver_exactly_once_in_order(kind: Kind) {
    let Some(broker) = Broker::start(kind) else {
        return;
    };
    let prefix = "once";
    let mut nodes: Vec<Node> = (0..3).map(|_| Node::start(&broker, prefix)).collect();
    let topics = awkward_topics();
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    let mut subs: Vec<(usize, Client)> = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        for _ in 0..2 {
            let mut c = connect(n.addr, "/ws");
            subscribe(&mut c, &names);
            subs.push((i, c));
        }
    }
    for t in &topics {
        let s = subject(prefix, t);
        wait_for(&format!("3 subscriptions to {s}"), TIMEOUT, || {
            broker.subscribers(&s) == 3
        });
    }

    const N: u64 = 40;
    let mut publishers: Vec<Client> = nodes.iter().map(|n| connect(n.addr, "/ws")).collect();
    for i in 0..N {
        for (p, ws) in publishers.iter_mut().enumerate() {
            for t in &topics {
                publish(ws, t, json!({"p": p, "i": i}));
            }
        }
    }

    let per_sub = 3 * N as usize * topics.len();
    for (node, ws) in subs.iter_mut() {
        let mut next: HashMap<(String, u64), u64> = HashMap::new();
        for _ in 0..per_sub {
            let m = next_message(ws);
            let topic = m["topic"].as_str().unwrap().to_owned();
            assert!(topics.contains(&topic), "unknown topic {topic:?}");
            let (p, i) = (
                m["data"]["p"].as_u64().unwrap(),
                m["data"]["i"].as_u64().unwrap(),
            );
            let want = next.entry((topic.clone(), p)).or_insert(0);
            assert_eq!(
                i, *want,
                "node {node}: publisher {p} on {topic:?} out of order or duplicated"
            );
            *want += 1;
        }
        assert_eq!(next.len(), 3 * topics.len());
        assert!(next.values().all(|&n| n == N));
        assert!(
            silent_for(ws, Duration::from_millis(300)),
            "node {node}: more than once"
        );
    }
    let per_node = N * topics.len() as u64;
    for n in &nodes {
        assert_eq!(n.metric("shardcast_broker_published_total"), per_node);
        assert_eq!(n.metric("shardcast_broker_received_total"), 2 * per_node);
        assert_eq!(n.metric("shardcast_broker_gaps_total"), 0);
        assert_eq!(n.metric("shardcast_broker_publish_dropped_total"), 0);
        assert_eq!(n.metric("shardcast_broker_connected"), 1);
        assert_eq!(n.health()["status"], "ok");
    }

    // A node killed: the others keep serving each other.
    drop(nodes.pop());
    subs.retain(|(n, _)| *n < 2);
    let s = subject(prefix, "plain");
    wait_for("the killed node's subscription to go", TIMEOUT, || {
        broker.subscribers(&s) == 2
    });
    for i in 0..10 {
        publish(&mut publishers[0], "plain", json!({"after": i}));
    }
    for (node, ws) in subs.iter_mut() {
        // Fresh read timeouts after the silence check.
        if let MaybeTlsStream::Plain(s) = ws.get_ref() {
            s.set_read_timeout(Some(TIMEOUT)).unwrap();
        }
        for i in 0..10 {
            let m = next_message(ws);
            assert_eq!(m["data"]["after"], i, "node {node}: {m}");
        }
    }
}

fn interest_follows_subscriptions(kind: Kind) {
    let Some(broker) = Broker::start(kind) else {
        return;
    };
    let prefix = "interest";
    let (a, b) = (Node::start(&broker, prefix), Node::start(&broker, prefix));
    let topic = "room 1.*";
    let s = subject(prefix, topic);
    assert_eq!(broker.subscribers(&s), 0);

    let mut a1 = connect(a.addr, "/ws");
    subscribe(&mut a1, &[topic]);
    wait_for("node A's subscription", TIMEOUT, || {
        broker.subscribers(&s) == 1
    });
    // A second local subscriber costs the broker nothing more.
    let mut a2 = connect(a.addr, "/ws");
    subscribe(&mut a2, &[topic]);
    let mut b1 = connect(b.addr, "/ws");
    subscribe(&mut b1, &[topic]);
    wait_for("node B's subscription", TIMEOUT, || {
        broker.subscribers(&s) == 2
    });
    assert_eq!(broker.subscribers(&s), 2);
    assert_eq!(a.metric("shardcast_broker_subscriptions"), 1);

    // The last local subscriber leaves: the node lets go after its linger.
    let v = ask(
        &mut a1,
        &json!({"type":"unsubscribe","topics":[topic],"id":2}).to_string(),
    );
    assert_eq!(v["type"], "unsubscribed", "{v}");
    drop(a2);
    let left = Instant::now();
    wait_for("node A to let go", TIMEOUT, || broker.subscribers(&s) == 1);
    assert!(
        left.elapsed() >= Duration::from_millis(700),
        "unsubscribed after {:?}, before the linger",
        left.elapsed()
    );
    wait_for("node A's gauge", TIMEOUT, || {
        a.metric("shardcast_broker_subscriptions") == 0
    });

    // Back: subscribed again, and publications flow both ways.
    subscribe(&mut a1, &[topic]);
    wait_for("node A's subscription again", TIMEOUT, || {
        broker.subscribers(&s) == 2
    });
    publish(&mut b1, topic, json!("from b"));
    assert_eq!(next_message(&mut a1)["data"], "from b");
    assert_eq!(next_message(&mut b1)["data"], "from b");
    publish(&mut a1, topic, json!("from a"));
    assert_eq!(next_message(&mut b1)["data"], "from a");
    assert_eq!(next_message(&mut a1)["data"], "from a");
}

fn broker_restart_mid_stream(kind: Kind) {
    let Some(mut broker) = Broker::start(kind) else {
        return;
    };
    let prefix = "restart";
    let (a, b) = (Node::start(&broker, prefix), Node::start(&broker, prefix));
    let topic = "stream";
    let s = subject(prefix, topic);
    let mut sa = connect(a.addr, "/ws");
    subscribe(&mut sa, &[topic]);
    let mut sb = connect(b.addr, "/ws");
    subscribe(&mut sb, &[topic]);
    wait_for("both nodes' subscriptions", TIMEOUT, || {
        broker.subscribers(&s) == 2
    });
    let (on_a, on_b) = (collect(sa), collect(sb));

    // One publisher on A, one message every 2 ms until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let mut p = connect(a.addr, "/ws");
    let publisher = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                publish(&mut p, topic, json!({ "i": i }));
                i += 1;
                std::thread::sleep(Duration::from_millis(2));
            }
            publish(&mut p, topic, json!({"end": true}));
            // Kept open until the end marker is surely read.
            std::thread::sleep(Duration::from_millis(200));
            i
        })
    };

    let limit = Duration::from_secs(20);
    wait_for("B to receive before the restart", limit, || {
        b.metric("shardcast_broker_received_total") >= 100
    });
    broker.kill();
    wait_for("A to see the broker gone", limit, || {
        a.broker_state() != "connected"
    });
    wait_for("A to drop publications while it is gone", limit, || {
        a.metric("shardcast_broker_publish_dropped_total") >= 20
    });
    assert_eq!(a.health()["status"], "degraded");
    broker.spawn();
    wait_for("both nodes to reconnect", limit, || {
        a.broker_state() == "connected" && b.broker_state() == "connected"
    });
    wait_for("B to resubscribe", limit, || broker.subscribers(&s) == 2);
    let before = b.metric("shardcast_broker_received_total");
    wait_for("B to receive after the restart", limit, || {
        b.metric("shardcast_broker_received_total") >= before + 100
    });
    stop.store(true, Ordering::Relaxed);
    let published = publisher.join().unwrap();

    // Local fanout went on throughout: A's subscriber has everything.
    let seen_a = on_a.join().unwrap();
    assert_eq!(seen_a, (0..published).collect::<Vec<_>>());
    // B has every message in order, once, but for a gap it counted.
    let seen_b = on_b.join().unwrap();
    assert!(
        seen_b.windows(2).all(|w| w[0] < w[1]),
        "B: out of order or duplicated"
    );
    let gaps = b.metric("shardcast_broker_gaps_total");
    assert!(gaps > 0, "a broker restart with no gap counted");
    assert_eq!(
        seen_b.len() as u64 + gaps,
        published,
        "B received {} and counted {gaps} missing of {published}",
        seen_b.len()
    );
    assert!(a.metric("shardcast_broker_reconnects_total") >= 1);
    assert!(b.metric("shardcast_broker_reconnects_total") >= 1);
    assert_eq!(b.health()["status"], "ok");
}

/// The loadgen's cluster scenario at toy size: subscribers on one node,
/// publishers on the other, every delivery across the broker; with
/// `deflate`, the nodes compress (shared) and the subscribers require it,
/// so what crosses the broker is compressed on the receiving node.
fn loadgen_across_nodes(kind: Kind, deflate: bool) {
    let Some(broker) = Broker::start(kind) else {
        return;
    };
    let extra: &[&str] = if deflate {
        &["--compression", "shared", "--compression-threshold", "0"]
    } else {
        &[]
    };
    let a = Node::start_url(&broker.url(), "lg", extra);
    let b = Node::start_url(&broker.url(), "lg", extra);
    let (sub_url, pub_url) = (format!("ws://{}/ws", b.addr), format!("ws://{}/ws", a.addr));
    let mut args = vec![
        "fanout",
        "--url",
        &sub_url,
        "--publish-url",
        &pub_url,
        "-s",
        "40",
        "-t",
        "4",
        "--warmup",
        "0.2",
        "--duration",
        "0.5",
        "--rate",
        "400",
        "--cores",
        "1",
        "--no-pin",
        "-q",
        "--json",
    ];
    if deflate {
        args.push("--deflate");
    }
    let r = loadgen_support::loadgen(&args).unwrap();
    assert_eq!(r.map["correct"], true, "{}", r.to_json());
    assert_eq!(r.map["publish_target"], pub_url.as_str());
    assert_eq!(r.map["deflate"], deflate);
    assert!(loadgen_support::u(&r, "deliveries_received") > 0);
    assert!(b.metric("shardcast_broker_received_total") > 0);
    assert_eq!(b.metric("shardcast_broker_gaps_total"), 0);
}

/// A node whose broker is not there: degraded, serving its own clients,
/// dropping (and counting) what it cannot forward, and stopping cleanly.
fn alone_without_the_broker(scheme: &str) {
    let url = format!("{scheme}://127.0.0.1:{}", free_port());
    let mut node = Node::start_url(&url, "alone", &[]);
    let h = node.health();
    assert_eq!(h["status"], "degraded", "{h}");
    assert_eq!(h["broker"]["state"], "connecting", "{h}");
    let mut s = connect(node.addr, "/ws");
    subscribe(&mut s, &["news"]);
    let mut p = connect(node.addr, "/ws");
    let v = ask(
        &mut p,
        &json!({"type":"publish","topic":"news","data":1,"id":7}).to_string(),
    );
    assert_eq!(v["delivered"], 1, "{v}");
    assert_eq!(next_message(&mut s)["data"], 1);
    wait_for("the publication counted as dropped", TIMEOUT, || {
        node.metric("shardcast_broker_publish_dropped_total") == 1
    });
    assert_eq!(node.metric("shardcast_broker_connected"), 0);
    drop((s, p));

    // SAFETY: kill(2) with the pid of a child this test spawned.
    unsafe { libc::kill(node.child.id() as i32, libc::SIGTERM) };
    let start = Instant::now();
    let status = loop {
        if let Some(st) = node.child.try_wait().unwrap() {
            break st;
        }
        assert!(start.elapsed() < TIMEOUT, "did not exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status:?}");
}

#[test]
fn nats_node_without_its_broker_serves_locally_and_stops() {
    alone_without_the_broker("nats");
}

#[test]
fn redis_node_without_its_broker_serves_locally_and_stops() {
    alone_without_the_broker("redis");
}

/// A Redis that stops answering without closing its connections
/// (SIGSTOP) is noticed by a node that only listens, and the node comes
/// back when Redis does.
#[test]
fn redis_that_hangs_is_noticed_and_rejoined() {
    let Some(broker) = Broker::start(Kind::Redis) else {
        return;
    };
    let node = Node::start(&broker, "hang");
    let mut s = connect(node.addr, "/ws");
    subscribe(&mut s, &["t"]);
    wait_for("the subscription", TIMEOUT, || {
        broker.subscribers(&subject("hang", "t")) == 1
    });
    let pid = broker.child.as_ref().unwrap().id() as i32;
    // SAFETY: kill(2) with the pid of a child this test spawned.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    let limit = Duration::from_secs(20);
    let noticed = std::panic::catch_unwind(|| {
        wait_for("the node to notice", limit, || {
            node.broker_state() != "connected"
        })
    });
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    noticed.unwrap();
    wait_for("the node to reconnect", limit, || {
        node.broker_state() == "connected"
    });
    wait_for("the subscription again", limit, || {
        broker.subscribers(&subject("hang", "t")) >= 1
    });
    assert!(node.metric("shardcast_broker_reconnects_total") >= 1);
}

#[test]
fn nats_loadgen_fanout_across_nodes() {
    loadgen_across_nodes(Kind::Nats, false);
}

#[test]
fn redis_loadgen_fanout_across_nodes() {
    loadgen_across_nodes(Kind::Redis, false);
}

#[test]
fn nats_loadgen_fanout_across_nodes_compressed() {
    loadgen_across_nodes(Kind::Nats, true);
}

/// A history topic across nodes: each node numbers what it delivers,
/// the other nodes' publications included, with consecutive offsets.
fn history_topics_are_numbered_by_each_node(kind: Kind) {
    let Some(broker) = Broker::start(kind) else {
        return;
    };
    let extra = ["--history", "h.*=100,60"];
    let a = Node::start_url(&broker.url(), "hist", &extra);
    let b = Node::start_url(&broker.url(), "hist", &extra);
    let mut sa = connect(a.addr, "/ws");
    subscribe(&mut sa, &["h.1"]);
    let mut sb = connect(b.addr, "/ws");
    subscribe(&mut sb, &["h.1"]);
    wait_for("both nodes' subscriptions", TIMEOUT, || {
        broker.subscribers(&subject("hist", "h.1")) == 2
    });
    let mut pa = connect(a.addr, "/ws");
    let mut pb = connect(b.addr, "/ws");
    for i in 0..5 {
        publish(&mut pa, "h.1", json!({ "from": "a", "i": i }));
    }
    for i in 0..5 {
        publish(&mut pb, "h.1", json!({ "from": "b", "i": i }));
    }
    for (node, ws) in [("A", &mut sa), ("B", &mut sb)] {
        let mut offsets = Vec::new();
        let mut per_origin: HashMap<String, Vec<u64>> = HashMap::new();
        for _ in 0..10 {
            let m = next_message(ws);
            offsets.push(
                m["offset"]
                    .as_u64()
                    .unwrap_or_else(|| panic!("{node}: {m}")),
            );
            per_origin
                .entry(m["data"]["from"].as_str().unwrap().to_owned())
                .or_default()
                .push(m["data"]["i"].as_u64().unwrap());
        }
        assert!(
            offsets.windows(2).all(|w| w[1] == w[0] + 1),
            "{node}: {offsets:?}"
        );
        for (from, is) in &per_origin {
            assert_eq!(is, &(0..5).collect::<Vec<_>>(), "{node}: from {from}");
        }
    }
}

#[test]
fn nats_history_topics_are_numbered_by_each_node() {
    history_topics_are_numbered_by_each_node(Kind::Nats);
}

#[test]
fn redis_history_topics_are_numbered_by_each_node() {
    history_topics_are_numbered_by_each_node(Kind::Redis);
}

#[test]
fn nats_three_nodes_deliver_exactly_once_in_order() {
    three_nodes_deliver_exactly_once_in_order(Kind::Nats);
}

#[test]
fn redis_three_nodes_deliver_exactly_once_in_order() {
    three_nodes_deliver_exactly_once_in_order(Kind::Redis);
}

#[test]
fn nats_interest_follows_subscriptions() {
    interest_follows_subscriptions(Kind::Nats);
}

#[test]
fn redis_interest_follows_subscriptions() {
    interest_follows_subscriptions(Kind::Redis);
}

#[test]
fn nats_broker_restart_mid_stream() {
    broker_restart_mid_stream(Kind::Nats);
}

#[test]
fn redis_broker_restart_mid_stream() {
    broker_restart_mid_stream(Kind::Redis);
}
