//! Shared by the `server_*` tests: a shardcast server started in-process on port 0, JSON clients, HTTP and token helpers.
#![allow(dead_code)]

/// The engine tests' helpers, shared so both halves use one HTTP client.
#[path = "../common/mod.rs"]
pub mod common;

use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use serde_json::Value;
use shardcast::server::{self, Running, Settings};
use tungstenite::client::IntoClientRequest;
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

/// Every wait in the tests gives up after this.
pub const TIMEOUT: Duration = Duration::from_secs(10);

pub type Client = WebSocket<MaybeTlsStream<TcpStream>>;

/// Starts a server on 127.0.0.1:0 with two unpinned cores, no stats
/// ticker, and whatever `f` changes.
pub fn start(f: impl FnOnce(&mut Settings)) -> Running {
    let mut s = Settings::default();
    s.listen = "127.0.0.1:0".parse().unwrap();
    s.cores = Some(2);
    s.pin = false;
    s.stats_interval_ms = 0;
    s.shutdown_timeout_secs = 1;
    f(&mut s);
    server::start(s).expect("server starts")
}

/// Stops the server and waits for it.
pub fn stop(mut running: Running) {
    running.shutdown();
    running.join();
}

fn timeouts(ws: &Client) {
    if let MaybeTlsStream::Plain(s) = ws.get_ref() {
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        s.set_write_timeout(Some(TIMEOUT)).unwrap();
    }
}

/// Connects to `path` (e.g. `/ws?token=...`) and reads the `welcome`
/// every connection starts with.
pub fn connect(addr: SocketAddr, path: &str) -> Client {
    connect_welcome(addr, path).0
}

/// Connects to `path` and returns the connection and its `welcome`.
pub fn connect_welcome(addr: SocketAddr, path: &str) -> (Client, Value) {
    let mut ws = connect_raw(addr, path);
    let welcome = recv(&mut ws);
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    (ws, welcome)
}

/// Connects to `path`, reading nothing.
pub fn connect_raw(addr: SocketAddr, path: &str) -> Client {
    let (ws, resp) = tungstenite::connect(format!("ws://{addr}{path}")).expect("handshake");
    assert_eq!(resp.status(), 101);
    timeouts(&ws);
    ws
}

/// Connects with extra request headers.
pub fn connect_with(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Client {
    let mut req = format!("ws://{addr}{path}").into_client_request().unwrap();
    for (k, v) in headers {
        req.headers_mut().insert(
            tungstenite::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            tungstenite::http::HeaderValue::from_str(v).unwrap(),
        );
    }
    let (mut ws, resp) = tungstenite::connect(req).expect("handshake");
    assert_eq!(resp.status(), 101);
    timeouts(&ws);
    let welcome = recv(&mut ws);
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    ws
}

/// Tries a handshake that should be refused; returns the HTTP status.
pub fn refused(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> u16 {
    let mut req = format!("ws://{addr}{path}").into_client_request().unwrap();
    for (k, v) in headers {
        req.headers_mut().insert(
            tungstenite::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            tungstenite::http::HeaderValue::from_str(v).unwrap(),
        );
    }
    match tungstenite::connect(req) {
        Err(tungstenite::Error::Http(resp)) => resp.status().as_u16(),
        Ok(_) => panic!("handshake to {path} was accepted"),
        Err(e) => panic!("handshake to {path} failed otherwise: {e}"),
    }
}

/// Sends a text message.
pub fn send(ws: &mut Client, text: &str) {
    ws.send(Message::text(text)).expect("send");
}

/// The next text message, raw (pings and pongs skipped).
pub fn recv_raw(ws: &mut Client) -> String {
    loop {
        match ws.read().expect("read") {
            Message::Text(t) => return t.to_string(),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("expected text, got {other:?}"),
        }
    }
}

/// The next text message, parsed.
pub fn recv(ws: &mut Client) -> Value {
    let raw = recv_raw(ws);
    serde_json::from_str(&raw).unwrap_or_else(|e| panic!("server sent invalid JSON {raw}: {e}"))
}

/// Sends `text` and returns the parsed reply.
pub fn ask(ws: &mut Client, text: &str) -> Value {
    send(ws, text);
    recv(ws)
}

/// Reads until the server's close frame; returns its code.
pub fn expect_close(ws: &mut Client) -> u16 {
    loop {
        match ws.read() {
            Ok(Message::Close(Some(f))) => return f.code.into(),
            Ok(Message::Close(None)) => return 1005,
            Ok(_) => continue,
            Err(e) => panic!("connection ended without a close frame: {e}"),
        }
    }
}

/// Asserts the connection still answers.
pub fn assert_alive(ws: &mut Client) {
    let pong = ask(ws, r#"{"type":"ping","id":"alive"}"#);
    assert_eq!(pong["type"], "pong", "{pong}");
    assert_eq!(pong["id"], "alive");
}

/// Asserts an error with `code` and returns it.
pub fn assert_error(v: &Value, code: &str) {
    assert_eq!(v["type"], "error", "{v}");
    assert_eq!(v["code"], code, "{v}");
    assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
}

/// Subscribes and checks the reply.
pub fn subscribe(ws: &mut Client, topics: &[&str]) {
    let msg = serde_json::json!({"type":"subscribe","topics":topics,"id":1}).to_string();
    let v = ask(ws, &msg);
    assert_eq!(v["type"], "subscribed", "{v}");
    assert_eq!(v["topics"], serde_json::json!(topics));
}

/// Connects until at least one client sits on each of the server's cores,
/// returning them all.
pub fn clients_on_every_core(running: &Running) -> Vec<Client> {
    let n = running.handle().cores();
    let mut clients = Vec::new();
    for _ in 0..200 {
        clients.push(connect(running.local_addr(), "/ws"));
        let per_core = running.handle().core_stats();
        if clients.len() >= n && per_core.iter().all(|s| s.active > 0) {
            return clients;
        }
    }
    panic!("200 connections did not reach all {n} cores");
}

/// Sends an HTTP request; returns the status and body.
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let mut req = format!("{method} {path} HTTP/1.1\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req.push_str(&format!("Host: {addr}\r\n"));
    }
    req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    // The publish API takes JSON and must be told so; a test of that
    // passes its own Content-Type (or an empty one to send none).
    let typed = headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("content-type"));
    if method == "POST" && !typed {
        req.push_str("Content-Type: application/json\r\n");
    }
    req.push_str("\r\n");
    req.push_str(body);
    let (status, text) = common::http(addr, &req);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// Seconds since the epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// An HS256 token with `claims`.
pub fn token(secret: &str, claims: Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

/// Polls `f` until it is true or the timeout passes.
pub fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < TIMEOUT, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The `connections` figure of the server's `/healthz`.
pub fn healthz_connections(addr: SocketAddr) -> u64 {
    let (st, body) = http(addr, "GET", "/healthz", &[], "");
    assert_eq!(st, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    v["connections"].as_u64().unwrap()
}

/// The `shardcast` binary run as a child process, killed (SIGKILL, by
/// PID) on drop.
pub struct Binary(pub std::process::Child);

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Binary {
    /// Starts the binary on a free loopback port with JSON logs, `args`
    /// after those, under an open-file limit of `nofile` (through a shell
    /// that lowers its own limit and execs it), without `RUST_LOG` and the
    /// variables in `unset`; returns it and its address, read from its
    /// "listening" log line. Its log is read to the end on a thread of its
    /// own, so it never blocks on a full pipe.
    pub fn start_limited(nofile: u64, args: &[&str], unset: &[&str]) -> (Self, SocketAddr) {
        use std::io::{BufRead, BufReader};
        use std::process::Command;
        let mut sh = Command::new("sh");
        sh.arg("-c")
            .arg(format!("ulimit -n {nofile} && exec \"$0\" \"$@\""))
            .arg(env!("CARGO_BIN_EXE_shardcast"));
        let mut command = server_command(sh);
        command.args(args);
        for name in unset {
            command.env_remove(name);
        }
        let mut child = command.spawn().expect("binary starts");
        let stdout = child.stdout.take().unwrap();
        let binary = Binary(child);
        let mut lines = BufReader::new(stdout).lines();
        let start = Instant::now();
        let addr = loop {
            assert!(start.elapsed() < TIMEOUT, "no listening line");
            let line = lines.next().expect("log line").unwrap();
            if let Some(a) = listening_addr(&line) {
                break a;
            }
        };
        std::thread::spawn(move || for _ in lines {});
        (binary, addr)
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.0.id()
    }
}

/// `command` (the binary, or a shell that execs it with the arguments that
/// follow) on a free loopback port, logging JSON to a pipe.
pub fn server_command(mut command: std::process::Command) -> std::process::Command {
    command
        .args([
            "--listen",
            "127.0.0.1:0",
            "--no-pin",
            "--log-format",
            "json",
        ])
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null());
    command
}

/// The address in the binary's "listening" JSON log line, if `line` is it.
pub fn listening_addr(line: &str) -> Option<std::net::SocketAddr> {
    let v: serde_json::Value = serde_json::from_str(line).expect("JSON log line");
    v["fields"]["addr"].as_str().map(|a| a.parse().unwrap())
}
