//! Measures the client against a real server it starts (connection establishment time, messages per second through one client, memory per client connection, reconnection time after a server restart) and prints the first-retry distribution of 10,000 clients under the default backoff policy with real jitter.
//!
//! `cargo build --release --bin shardcast && cargo run --release -p shardcast-client --example measure -- target/release/shardcast`
//! (the argument defaults to target/release/shardcast). About a minute.
//! Loopback only; the server is started with `--cores 2 --no-pin` and killed
//! through its `Child` handle.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use shardcast_client::{Backoff, BackoffPolicy, Client, Config, Delivery, Event, Heartbeat, State};

const WAIT: Duration = Duration::from_secs(20);

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the server on `port`; returns it and when it logged its address.
fn start(bin: &str, port: u16) -> (Server, SocketAddr, Instant) {
    let mut child = Command::new(bin)
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--cores",
            "2",
            "--no-pin",
        ])
        .args([
            "--log-format",
            "json",
            "--publish-rate",
            "10000000",
            "--publish-burst",
            "10000000",
        ])
        .args([
            "--max-connections",
            "100000",
            "--max-connections-per-ip",
            "100000",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the shardcast binary");
    let out = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if let Some(i) = line.find("\"addr\":\"") {
                let rest = &line[i + 8..];
                let addr = rest[..rest.find('"').unwrap()]
                    .parse::<SocketAddr>()
                    .unwrap();
                if let Some(tx) = tx.take() {
                    let _ = tx.send((addr, Instant::now()));
                }
            }
        }
    });
    let (addr, at) = rx.recv_timeout(WAIT).expect("server started");
    (Server(child), addr, at)
}

fn rss_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() - 1) as f64 * p) as usize]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let bin = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "target/release/shardcast".into());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (server, addr, _) = start(&bin, port);
    let url = format!("ws://{addr}/ws");

    // Connection establishment: Client::start until Connected, one at a time.
    let mut times = Vec::new();
    for _ in 0..200 {
        let t = Instant::now();
        let c = Client::start(Config::new(&url).unwrap()).unwrap();
        c.connected(WAIT).await.unwrap();
        times.push(t.elapsed());
        c.close().await;
    }
    println!(
        "connect (TCP + handshake, 200 sequential): p50 {:?}, p99 {:?}",
        pct(&mut times, 0.5),
        pct(&mut times, 0.99)
    );

    // Messages per second through one client: it publishes to a topic it
    // subscribes to, and receives every message back.
    let n = 200_000u32;
    let c = Client::start(Config::new(&url).unwrap().with_queue(1 << 20, 256 << 20)).unwrap();
    c.connected(WAIT).await.unwrap();
    let mut sub = c.subscribe("bench").await.unwrap();
    let payload = r#"{"n":1234567,"text":"sixty-four bytes of payload, give or take"}"#;
    let t = Instant::now();
    let recv = tokio::spawn(async move {
        let mut got = 0;
        while got < n {
            match tokio::time::timeout(WAIT, sub.recv()).await {
                Ok(Some(Event::Message(_))) => got += 1,
                other => panic!("after {got}: {other:?}"),
            }
        }
    });
    for _ in 0..n {
        while let Err(shardcast_client::Error::QueueFull { .. }) =
            c.publish("bench", payload, Delivery::Queue)
        {
            tokio::task::yield_now().await;
        }
    }
    let sent = t.elapsed();
    recv.await.unwrap();
    let all = t.elapsed();
    println!(
        "one client, {n} publishes of {} B to a topic it subscribes to: queued in {sent:?}, all received back in {all:?} = {:.0} msgs/s each way",
        payload.len(),
        n as f64 / all.as_secs_f64()
    );
    c.close().await;

    // Memory per client connection: RSS before and after 1000 open clients
    // (each with its own connection, driver task and buffers; heartbeat on).
    let before = rss_kib();
    let mut clients = Vec::new();
    for _ in 0..1000 {
        let c = Client::start(
            Config::new(&url)
                .unwrap()
                .with_heartbeat(Some(Heartbeat::default())),
        )
        .unwrap();
        clients.push(c);
    }
    for c in &clients {
        c.connected(WAIT).await.unwrap();
    }
    let mut subs = Vec::new();
    for c in &clients {
        subs.push(c.subscribe("mem").await.unwrap());
    }
    let after = rss_kib();
    println!(
        "memory: 1000 connected clients with one subscription each: +{} KiB RSS = {:.1} KiB per client",
        after - before,
        (after - before) as f64 / 1000.0
    );
    drop(subs);
    for c in &clients {
        c.close().await;
    }
    drop(clients);

    // Reconnection after a server restart, default backoff: SIGKILL the
    // server, start it again on the same port, time until Connected. First
    // with a connection that had been up for `reset_after` (5 s), so the
    // schedule starts over, as after a real outage; then back to back,
    // where each short-lived connection keeps the schedule growing.
    let c = Client::start(Config::new(&url).unwrap()).unwrap();
    c.connected(WAIT).await.unwrap();
    let mut server = Some(server);
    let mut connections = 1;
    for (label, rounds, stable) in [
        ("after 5.5 s up", 4, Duration::from_millis(5500)),
        ("back to back", 8, Duration::ZERO),
    ] {
        let mut from_up = Vec::new();
        let mut from_down = Vec::new();
        for _ in 0..rounds {
            tokio::time::sleep(stable).await;
            let down = Instant::now();
            drop(server.take());
            c.wait_for(WAIT, |s| s.state == State::Reconnecting)
                .await
                .unwrap();
            let (s, _, up) = start(&bin, port);
            server = Some(s);
            connections += 1;
            c.wait_for(WAIT, |s| {
                s.state == State::Connected && s.connections == connections
            })
            .await
            .unwrap();
            from_up.push(up.elapsed());
            from_down.push(down.elapsed());
        }
        println!(
            "reconnect after a server restart, {label} ({rounds} rounds, default backoff): from the new server's start p50 {:?} max {:?}; from the kill p50 {:?} max {:?}",
            pct(&mut from_up, 0.5),
            pct(&mut from_up, 1.0),
            pct(&mut from_down, 0.5),
            pct(&mut from_down, 1.0)
        );
    }
    c.close().await;
    drop(server);

    storm();
}

/// 10,000 clients dropped at the same instant: when does each one's first
/// retry land? Drawn from the client's own [`Backoff`] with a real
/// (OS-seeded) random source, so the figures change a little per run.
fn storm() {
    const CLIENTS: usize = 10_000;
    let policy = BackoffPolicy::default();
    let mut rng = fastrand::Rng::new();
    let mut first: Vec<Duration> = (0..CLIENTS)
        .map(|_| {
            Backoff::new(policy.clone())
                .next_delay(&mut rng)
                .expect("unlimited attempts")
        })
        .collect();
    let buckets = 10;
    let width = policy.ceiling(0) / buckets as u32;
    let mut counts = vec![0usize; buckets];
    for d in &first {
        counts[((d.as_nanos() / width.as_nanos()) as usize).min(buckets - 1)] += 1;
    }
    println!(
        "reconnect storm: first retry of {CLIENTS} clients, default policy (base {:?}, factor {}, max {:?}), full jitter:",
        policy.base, policy.factor, policy.max
    );
    let peak = *counts.iter().max().unwrap_or(&1) as f64;
    for (i, n) in counts.iter().enumerate() {
        let from = width * i as u32;
        let bar = "#".repeat((50.0 * *n as f64 / peak).round() as usize);
        println!(
            "  {:>5.1}-{:>5.1} ms {n:>5} {bar}",
            from.as_secs_f64() * 1e3,
            (from + width).as_secs_f64() * 1e3
        );
    }
    println!(
        "  p50 {:?}, p99 {:?}, max {:?}; busiest {:?} window: {} clients ({:.1} %)",
        pct(&mut first, 0.5),
        pct(&mut first, 0.99),
        pct(&mut first, 1.0),
        width,
        counts.iter().max().unwrap_or(&0),
        100.0 * *counts.iter().max().unwrap_or(&0) as f64 / CLIENTS as f64
    );
}
