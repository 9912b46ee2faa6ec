//! Verifies that `shardcast` nodes sharing a real NATS or Redis broker deliver every publication to every subscriber on every node exactly once, in order per publisher, whatever the topic's name; that a node's broker subscriptions follow its local subscribers; that a broker restarted mid-stream loses only what the receiving node counts as a gap; and that the other nodes keep serving when one is killed.
//!
//! The brokers are the real `nats-server` and `redis-server`, started on
//! free loopback ports and stopped by PID; the nodes are the `shardcast`
//! binary. A node whose broker is absent must still serve its own
//! clients and stop cleanly. Without a broker's binary its tests say so
//! and pass, unless `CI` or `SHARDCAST_REQUIRE_BROKERS` is set: CI
//! installs both (`.ci/run`), so there they must run.

mod server_support;

#[allow(dead_code)]
#[path = "loadgen_support.rs"]
mod loadgen_support;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use shardcast::cluster::subject;
use tungstenite::stream::MaybeTlsStream;
use tungstenite::Message;

use server_support::{ask, connect, send, subscribe, Client, TIMEOUT};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Nats,
    Redis,
}

impl Kind {
    fn binary(self) -> &'static str {
        match self {
            Kind::Nats => "nats-server",
            Kind::Redis => "redis-server",
        }
    }
}

/// Where a broker's binary is: on PATH or in the sbin directories Debian
/// installs servers to (often not on a user's PATH). `None` (and a line
/// saying the test is skipped) when it is missing, except under CI.
fn broker_binary(kind: Kind) -> Option<PathBuf> {
    let name = kind.binary();
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs = std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/usr/bin", "/usr/local/bin"].map(PathBuf::from));
    for d in dirs {
        let p = d.join(name);
        if p.is_file() {
            return Some(p);
        }
    }
    assert!(
        std::env::var_os("CI").is_none() && std::env::var_os("SHARDCAST_REQUIRE_BROKERS").is_none(),
        "{name} is missing and CI (or SHARDCAST_REQUIRE_BROKERS) is set: CI installs it (.ci/run)"
    );
    eprintln!("SKIPPED: {name} not found; install it (apt-get install -y {name}) to run this test");
    None
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `f` every 20 ms until it holds, for at most `limit`.
fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One plain HTTP GET; `None` when nothing listens.
fn get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    get_version(addr, path, "1.1")
}

/// A GET in HTTP/`version`: 1.0 keeps NATS's monitoring answers from
/// being chunked.
fn get_version(addr: SocketAddr, path: &str, version: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(TIMEOUT)).ok()?;
    write!(
        s,
        "GET {path} HTTP/{version}\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let status = out.split_whitespace().nth(1)?.parse().ok()?;
    let body = out.split_once("\r\n\r\n")?.1.to_owned();
    Some((status, body))
}

/// A broker process this test started (and stops, by PID, on drop).
struct Broker {
    kind: Kind,
    binary: PathBuf,
    port: u16,
    /// NATS's monitoring port.
    monitor: u16,
    child: Option<Child>,
}

impl Broker {
    /// Starts a broker of `kind`, or `None` when its binary is missing.
    fn start(kind: Kind) -> Option<Broker> {
        let mut b = Broker {
            kind,
            binary: broker_binary(kind)?,
            port: free_port(),
            monitor: free_port(),
            child: None,
        };
        b.spawn();
        Some(b)
    }

    fn url(&self) -> String {
        match self.kind {
            Kind::Nats => format!("nats://127.0.0.1:{}", self.port),
            Kind::Redis => format!("redis://127.0.0.1:{}", self.port),
        }
    }

    /// Starts the process (again, on the same ports) and waits until it
    /// answers.
    fn spawn(&mut self) {
        let port = self.port.to_string();
        let mut cmd = Command::new(&self.binary);
        match self.kind {
            Kind::Nats => {
                let monitor = self.monitor.to_string();
                cmd.args(["-a", "127.0.0.1", "-p", &port, "-m", &monitor]);
            }
            Kind::Redis => {
                cmd.args([
                    "--port",
                    &port,
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--daemonize",
                    "no",
                ]);
            }
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("broker starts");
        self.child = Some(child);
        wait_for("the broker to answer", TIMEOUT, || match self.kind {
            Kind::Nats => get(SocketAddr::from(([127, 0, 0, 1], self.monitor)), "/varz")
                .is_some_and(|(st, _)| st == 200),
            Kind::Redis => self
                .redis(&["PING"])
                .is_some_and(|r| r == Resp::Simple("PONG".into())),
        });
    }

    /// Kills the process (SIGKILL) and reaps it.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Subscriptions the broker holds for exactly `subject`, over all its
    /// clients: NATS's monitoring endpoint, Redis's `PUBSUB NUMSUB`.
    fn subscribers(&self, subject: &str) -> usize {
        match self.kind {
            Kind::Nats => {
                let addr = SocketAddr::from(([127, 0, 0, 1], self.monitor));
                let Some((200, body)) = get_version(addr, "/connz?subs=1&limit=10000", "1.0")
                else {
                    return 0;
                };
                let v: Value = serde_json::from_str(&body).expect("connz JSON");
                v["connections"]
                    .as_array()
                    .map(|conns| {
                        conns
                            .iter()
                            .flat_map(|c| {
                                c["subscriptions_list"]
                                    .as_array()
                                    .cloned()
                                    .unwrap_or_default()
                            })
                            .filter(|s| s.as_str() == Some(subject))
                            .count()
                    })
                    .unwrap_or(0)
            }
            Kind::Redis => match self.redis(&["PUBSUB", "NUMSUB", subject]) {
                Some(Resp::Array(items)) => match items.get(1) {
                    Some(Resp::Int(n)) => *n as usize,
                    _ => 0,
                },
                _ => 0,
            },
        }
    }

    /// One Redis command over a fresh connection.
    fn redis(&self, args: &[&str]) -> Option<Resp> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        let mut req = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            req.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            req.extend_from_slice(a.as_bytes());
            req.extend_from_slice(b"\r\n");
        }
        s.write_all(&req).ok()?;
        read_resp(&mut BufReader::new(s))
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A Redis reply, as much of RESP2 as these tests read.
#[derive(Debug, PartialEq, Eq)]
enum Resp {
    Simple(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Vec<Resp>),
    Error(String),
}

fn read_resp(r: &mut impl BufRead) -> Option<Resp> {
    let mut line = String::new();
    r.read_line(&mut line).ok()?;
    let line = line.trim_end();
    let (kind, rest) = line.split_at_checked(1)?;
    Some(match kind {
        "+" => Resp::Simple(rest.to_owned()),
        "-" => Resp::Error(rest.to_owned()),
        ":" => Resp::Int(rest.parse().ok()?),
        "$" => {
            let n: i64 = rest.parse().ok()?;
            if n < 0 {
                Resp::Bulk(None)
            } else {
                let mut buf = vec![0; n as usize + 2];
                r.read_exact(&mut buf).ok()?;
                buf.truncate(n as usize);
                Resp::Bulk(Some(buf))
            }
        }
        "*" => {
            let n: usize = rest.parse().ok()?;
            let mut items = Vec::with_capacity(n);
            for _ in 0..n {
                items.push(read_resp(r)?);
            }
            Resp::Array(items)
        }
        _ => return None,
    })
}

/// A `shardcast` node: the binary, two cores, the broker, no publish rate
/// limit to speak of. Killed (SIGKILL) on drop.
struct Node {
    child: Child,
    addr: SocketAddr,
}

impl Node {
    fn start(broker: &Broker, prefix: &str) -> Node {
        Node::start_url(&broker.url(), prefix, &[])
    }

    fn start_url(url: &str, prefix: &str, extra: &[&str]) -> Node {
        let mut child = Command::new(env!("CARGO_BIN_EXE_shardcast"))
            .args(extra)
            .args([
                "--listen",
                "127.0.0.1:0",
                "--no-pin",
                "--cores",
                "2",
                "--log-format",
                "json",
                "--stats-interval-ms",
                "0",
                "--publish-rate",
                "1000000",
                "--publish-burst",
                "1000000",
                "--broker",
                url,
                "--broker-prefix",
                prefix,
            ])
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("shardcast starts");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        // Reads the log to its end, so the node never blocks on a full
        // pipe; the bridge's lines go to the test's output.
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let v: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
                if let Some(a) = v["fields"]["addr"].as_str() {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(a.parse::<SocketAddr>().unwrap());
                    }
                }
                if line.contains("cluster") {
                    eprintln!("{line}");
                }
            }
        });
        let addr = rx.recv_timeout(TIMEOUT).expect("the node's listening line");
        Node { child, addr }
    }

    /// A counter or gauge of the node's `/metrics` (without labels).
    fn metric(&self, name: &str) -> u64 {
        let (_, body) = get(self.addr, "/metrics").expect("metrics");
        body.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in /metrics"))
    }

    /// The node's `/healthz`.
    fn health(&self) -> Value {
        let (st, body) = get(self.addr, "/healthz").expect("healthz");
        assert_eq!(st, 200, "{body}");
        serde_json::from_str(&body).expect("healthz JSON")
    }

    fn broker_state(&self) -> String {
        self.health()["broker"]["state"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Topic names that are not subject-friendly: spaces, dots, wildcards,
/// non-ASCII, and the longest name the server accepts (256 bytes).
fn awkward_topics() -> Vec<String> {
    vec![
        "plain".into(),
        "with space".into(),
        "dots.in.the.name".into(),
        "star*".into(),
        "*".into(),
        ">".into(),
        "a.*.>".into(),
        "ünïcødé ✓".into(),
        "%2E".into(),
        "é".repeat(128),
    ]
}

fn publish(ws: &mut Client, topic: &str, data: Value) {
    send(
        ws,
        &json!({"type":"publish","topic":topic,"data":data}).to_string(),
    );
}

/// The next `message` (other replies skipped).
fn next_message(ws: &mut Client) -> Value {
    loop {
        let v = server_support::recv(ws);
        if v["type"] == "message" {
            return v;
        }
    }
}

/// Whether anything arrives on `ws` within `wait`.
fn silent_for(ws: &mut Client, wait: Duration) -> bool {
    if let MaybeTlsStream::Plain(s) = ws.get_ref() {
        s.set_read_timeout(Some(wait)).unwrap();
    }
    loop {
        match ws.read() {
            Ok(Message::Ping(_) | Message::Pong(_)) => continue,
            Ok(other) => panic!("unexpected message {other:?}"),
            Err(_) => return true,
        }
    }
}

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

/// Reads `message`s on a thread until `{"end":true}` or a read error;
/// returns the `i` of each.
fn collect(mut ws: Client) -> std::thread::JoinHandle<Vec<u64>> {
    std::thread::spawn(move || {
        let mut seen = Vec::new();
        loop {
            let msg = match ws.read() {
                Ok(Message::Text(t)) => t,
                Ok(_) => continue,
                Err(_) => return seen,
            };
            let v: Value = serde_json::from_str(&msg).unwrap();
            if v["type"] != "message" {
                continue;
            }
            if v["data"]["end"] == true {
                return seen;
            }
            seen.push(v["data"]["i"].as_u64().unwrap());
        }
    })
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
