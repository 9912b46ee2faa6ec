//! Shared by the cluster tests: real brokers (`nats-server`, `redis-server`) on free loopback ports and `shardcast` nodes, each stopped by its PID on drop, and the JSON protocol helpers the scenarios use.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tungstenite::stream::MaybeTlsStream;
use tungstenite::Message;

use crate::server_support::{send, Client, TIMEOUT};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Nats,
    Redis,
}

impl Kind {
    pub fn binary(self) -> &'static str {
        match self {
            Kind::Nats => "nats-server",
            Kind::Redis => "redis-server",
        }
    }
}

/// Where a broker's binary is: on PATH or in the sbin directories Debian
/// installs servers to (often not on a user's PATH). `None` (and a line
/// saying the test is skipped) when it is missing, except under CI.
pub fn broker_binary(kind: Kind) -> Option<PathBuf> {
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

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `f` every 20 ms until it holds, for at most `limit`.
pub fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One plain HTTP GET; `None` when nothing listens.
pub fn get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    get_version(addr, path, "1.1")
}

/// A GET in HTTP/`version`: 1.0 keeps NATS's monitoring answers from
/// being chunked.
pub fn get_version(addr: SocketAddr, path: &str, version: &str) -> Option<(u16, String)> {
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
pub struct Broker {
    pub kind: Kind,
    pub binary: PathBuf,
    pub port: u16,
    /// NATS's monitoring port.
    pub monitor: u16,
    pub child: Option<Child>,
}

impl Broker {
    /// Starts a broker of `kind`, or `None` when its binary is missing.
    pub fn start(kind: Kind) -> Option<Broker> {
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

    pub fn url(&self) -> String {
        match self.kind {
            Kind::Nats => format!("nats://127.0.0.1:{}", self.port),
            Kind::Redis => format!("redis://127.0.0.1:{}", self.port),
        }
    }

    /// Starts the process (again, on the same ports) and waits until it
    /// answers.
    pub fn spawn(&mut self) {
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
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Subscriptions the broker holds for exactly `subject`, over all its
    /// clients: NATS's monitoring endpoint, Redis's `PUBSUB NUMSUB`.
    pub fn subscribers(&self, subject: &str) -> usize {
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
    pub fn redis(&self, args: &[&str]) -> Option<Resp> {
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
pub enum Resp {
    Simple(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Vec<Resp>),
    Error(String),
}

pub fn read_resp(r: &mut impl BufRead) -> Option<Resp> {
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
pub struct Node {
    pub child: Child,
    pub addr: SocketAddr,
}

impl Node {
    pub fn start(broker: &Broker, prefix: &str) -> Node {
        Node::start_url(&broker.url(), prefix, &[])
    }

    pub fn start_url(url: &str, prefix: &str, extra: &[&str]) -> Node {
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
    pub fn metric(&self, name: &str) -> u64 {
        let (_, body) = get(self.addr, "/metrics").expect("metrics");
        body.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in /metrics"))
    }

    /// The node's `/healthz`.
    pub fn health(&self) -> Value {
        let (st, body) = get(self.addr, "/healthz").expect("healthz");
        assert_eq!(st, 200, "{body}");
        serde_json::from_str(&body).expect("healthz JSON")
    }

    pub fn broker_state(&self) -> String {
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
pub fn awkward_topics() -> Vec<String> {
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

pub fn publish(ws: &mut Client, topic: &str, data: Value) {
    send(
        ws,
        &json!({"type":"publish","topic":topic,"data":data}).to_string(),
    );
}

/// The next `message` (other replies skipped).
pub fn next_message(ws: &mut Client) -> Value {
    loop {
        let v = crate::server_support::recv(ws);
        if v["type"] == "message" {
            return v;
        }
    }
}

/// Whether anything arrives on `ws` within `wait`.
pub fn silent_for(ws: &mut Client, wait: Duration) -> bool {
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

/// Reads `message`s on a thread until `{"end":true}` or a read error;
/// returns the `i` of each.
pub fn collect(mut ws: Client) -> std::thread::JoinHandle<Vec<u64>> {
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
