//! Verifies that the `shardcast` binary starts with flags and environment, serves clients, and on SIGTERM closes them with 1001 and exits 0.

mod server_support;

use std::io::{BufRead, BufReader};
use std::process::Command;
use std::time::Instant;

use server_support::*;

#[test]
fn the_binary_serves_and_stops_gracefully_on_sigterm() {
    let mut child = server_command(Command::new(env!("CARGO_BIN_EXE_shardcast")))
        .env("SHARDCAST_CORES", "2")
        .env("SHARDCAST_MAX_SUBSCRIPTIONS", "1")
        .spawn()
        .expect("binary starts");
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let start = Instant::now();
    let (addr, mut warned) = (
        loop {
            assert!(start.elapsed() < TIMEOUT, "no listening line");
            let line = lines.next().expect("log line").unwrap();
            if let Some(a) = listening_addr(&line) {
                break a;
            }
        },
        false,
    );
    for line in lines.by_ref().take(2) {
        warned |= line.unwrap().contains("anonymous");
    }
    assert!(warned, "no warning about anonymous access");

    let (st, _) = http(addr, "GET", "/healthz", &[], "");
    assert_eq!(st, 200);
    let mut c = connect(addr, "/ws");
    // The environment applied: one subscription at most.
    let v = ask(&mut c, r#"{"type":"subscribe","topics":["a","b"]}"#);
    assert_eq!(v["topics"], serde_json::json!(["a"]));
    assert_error(&recv(&mut c), "too_many_subscriptions");

    // SAFETY: kill(2) with a pid we spawned and a valid signal number.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert_eq!(expect_close(&mut c), 1001);
    drop(c);
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(start.elapsed() < TIMEOUT, "did not exit after SIGTERM");
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert!(status.success(), "{status:?}");
}

#[test]
fn help_names_the_flags_and_their_variables() {
    let out = Command::new(env!("CARGO_BIN_EXE_shardcast"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for s in [
        "--listen",
        "--cores",
        "SHARDCAST_LISTEN",
        "--jwt-secret",
        "--config",
    ] {
        assert!(help.contains(s), "--help lacks {s}:\n{help}");
    }
}

#[test]
fn out_of_descriptors_the_server_backs_off_logs_sparingly_and_recovers() {
    // A descriptor limit far below what the clients open.
    let mut sh = Command::new("sh");
    sh.args(["-c", "ulimit -n 48 && exec \"$0\" \"$@\""])
        .arg(env!("CARGO_BIN_EXE_shardcast"));
    let mut child = server_command(sh)
        .args(["--cores", "1"])
        .spawn()
        .expect("binary starts");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if tx.send(line.unwrap_or_default()).is_err() {
                return;
            }
        }
    });
    let start = Instant::now();
    let addr = loop {
        let line = rx.recv_timeout(TIMEOUT).expect("a log line");
        if let Some(a) = listening_addr(&line) {
            break a;
        }
        assert!(start.elapsed() < TIMEOUT, "no listening line");
    };

    // 80 sockets: the kernel completes them, the server runs out of
    // descriptors accepting them.
    let held: Vec<std::net::TcpStream> = (0..80)
        .map(|_| std::net::TcpStream::connect(addr).unwrap())
        .collect();
    let flood = Instant::now();
    std::thread::sleep(std::time::Duration::from_millis(2500));
    drop(held);
    let mut c = loop {
        assert!(
            flood.elapsed() < TIMEOUT,
            "no recovery after the descriptors came back"
        );
        match tungstenite::connect(format!("ws://{addr}/ws")) {
            Ok((c, _)) => break c,
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(100)),
        }
    };
    c.send(tungstenite::Message::text(r#"{"type":"ping","id":1}"#))
        .unwrap();
    let welcome = c.read().unwrap();
    assert!(welcome.to_string().contains("welcome"), "{welcome}");
    let reply = c.read().unwrap();
    assert!(reply.to_string().contains("pong"), "{reply}");
    let secs = flood.elapsed().as_secs() + 1;

    // SAFETY: kill(2) with a pid we spawned and a valid signal number.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + TIMEOUT;
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the server did not stop");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    reader.join().unwrap();
    let failures: Vec<String> = rx
        .try_iter()
        .filter(|l| l.contains("accept failed"))
        .collect();
    assert!(
        !failures.is_empty(),
        "the server never ran out of descriptors"
    );
    assert!(
        failures.len() as u64 <= secs + 1,
        "{} accept warnings in {secs} s: not rate-limited",
        failures.len()
    );
}
