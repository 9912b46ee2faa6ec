//! Verifies timeouts, pings, slow consumers, drain and graceful shutdown.

mod common;
use common::*;
use shardcast::{CloseCode, DriverKind, SlowConsumerPolicy, TaskRun};
use std::time::{Duration, Instant};

#[test]
fn drivers_follow_the_environment() {
    let (h, _) = start(config(2));
    let forced = std::env::var("MONOIO_FORCE_LEGACY_DRIVER").is_ok_and(|v| v == "1");
    let drivers = h.drivers();
    assert_eq!(drivers.len(), 2);
    if forced {
        assert!(
            drivers.iter().all(|d| *d == DriverKind::Legacy),
            "{drivers:?}"
        );
    } else if std::env::var("SHARDCAST_IO_PATH").is_ok_and(|v| v == "readiness") {
        assert!(
            drivers.iter().all(|d| *d == DriverKind::IoUring),
            "{drivers:?}"
        );
    } else if kernel_version() >= (6, 0) {
        // The default; every feature of the direct path is in 6.0.
        // Every feature of the direct path is in 6.0.
        assert!(
            drivers.iter().all(|d| *d == DriverKind::IoUringDirect),
            "{drivers:?}"
        );
    }
    eprintln!("drivers: {drivers:?}");
    stop(h);
}

/// The kernel's (major, minor) version, from `uname -r`.
fn kernel_version() -> (u32, u32) {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut parts = release.trim().split(['.', '-']);
    let mut next = || parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    (next(), next())
}

#[test]
fn every_task_run_mode_serves_or_falls_back_to_one_the_kernel_has() {
    let forced = std::env::var("MONOIO_FORCE_LEGACY_DRIVER").is_ok_and(|v| v == "1");
    let kernel = kernel_version();
    for wanted in [TaskRun::Defer, TaskRun::Coop, TaskRun::Interrupt] {
        let (h, _) = start(config(2).task_run(wanted));
        let runs = h.task_runs();
        assert_eq!(runs.len(), 2);
        for (driver, run) in h.drivers().iter().zip(&runs) {
            match driver {
                DriverKind::Legacy => assert_eq!(*run, None, "epoll has no ring"),
                DriverKind::IoUring | DriverKind::IoUringDirect => {
                    let got = run.expect("an io_uring core reports its mode");
                    // What this kernel must accept: DEFER_TASKRUN came in
                    // 6.1, COOP_TASKRUN in 5.19; a mode it has is never
                    // downgraded, and a fallback is always further down.
                    let has = |m: TaskRun| match m {
                        TaskRun::Defer => kernel >= (6, 1),
                        TaskRun::Coop => kernel >= (5, 19),
                        TaskRun::Interrupt => true,
                    };
                    let mut expected = wanted;
                    while !has(expected) {
                        expected = expected.fallback().unwrap();
                    }
                    assert_eq!(got, expected, "wanted {wanted}, kernel {kernel:?}");
                }
            }
        }
        if forced {
            assert!(runs.iter().all(Option::is_none), "{runs:?}");
        }
        // The mode carries traffic: an echo round trip on every core.
        for _ in 0..4 {
            let mut r = Raw::connect(h.local_addr());
            r.send_frame(true, 1, b"ring");
            loop {
                let (_, op, p) = r.read_frame().unwrap();
                if op == 1 {
                    assert_eq!(p, b"ring", "{wanted}");
                    break;
                }
            }
        }
        stop(h);
    }
}

#[test]
fn idle_connections_are_pinged_then_closed() {
    let cfg = config(1)
        .ping_interval(Duration::from_secs(1))
        .idle_timeout(Duration::from_secs(3));
    let (h, _) = start(cfg);
    let mut r = Raw::connect(h.local_addr());
    let t = Instant::now();
    let (_, op, _) = r.read_frame().unwrap();
    assert_eq!(op, 9, "a ping first");
    // We never answer: closed with 1001 after the idle timeout.
    assert_eq!(r.expect_close(), Some(1001));
    assert!(t.elapsed() >= Duration::from_secs(2), "{:?}", t.elapsed());
    stop(h);
}

#[test]
fn a_pong_keeps_the_connection() {
    let cfg = config(1)
        .ping_interval(Duration::from_secs(1))
        .idle_timeout(Duration::from_secs(3));
    let (h, _) = start(cfg);
    let mut r = Raw::connect(h.local_addr());
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(5) {
        let (_, op, payload) = r.read_frame().unwrap();
        assert_eq!(op, 9);
        r.send_frame(true, 10, &payload);
    }
    r.send_frame(true, 1, b"alive");
    loop {
        let (_, op, p) = r.read_frame().unwrap();
        if op == 1 {
            assert_eq!(p, b"alive");
            break;
        }
    }
    stop(h);
}

#[test]
fn silent_tcp_connections_are_dropped_at_the_handshake_timeout() {
    let (h, _) = start(config(1).handshake_timeout(Duration::from_secs(1)));
    let mut s = std::net::TcpStream::connect(h.local_addr()).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    let t = Instant::now();
    let mut buf = [0u8; 16];
    let n = std::io::Read::read(&mut s, &mut buf).unwrap_or(0);
    assert_eq!(n, 0);
    assert!(t.elapsed() < Duration::from_secs(5));
    stop(h);
}

#[test]
fn a_slow_consumer_is_closed_and_the_others_get_everything() {
    let cfg = config(2)
        .outbox_limit(256 << 10)
        .slow_consumer(SlowConsumerPolicy::Close(
            CloseCode::TRY_AGAIN_LATER,
            "slow consumer".into(),
        ));
    let (h, ev) = start(cfg);
    let addr = h.local_addr();
    // The stalled client subscribes and then never reads.
    let mut stalled = Raw::connect(addr);
    stalled.send_frame(true, 1, b"sub:firehose");
    let (_, _, p) = stalled.read_frame().unwrap();
    assert!(p.starts_with(b"subscribed:"));
    let mut good = connect(addr, "/");
    send_text(&mut good, "sub:firehose");
    read_text(&mut good);
    let payload = "x".repeat(16 << 10);
    let n = 2000; // 32 MiB in all: far past the stalled client's socket buffers
                  // The publisher stays at most 8 messages (128 KiB) ahead of the healthy
                  // reader, so only the stalled client can exceed the 256 KiB outbox.
    let (progress_tx, progress_rx) = std::sync::mpsc::channel::<usize>();
    let h2 = h.clone();
    let p2 = payload.clone();
    let publisher = std::thread::spawn(move || {
        let mut acked = 0;
        for i in 0..n {
            while i >= acked + 8 {
                acked = progress_rx.recv_timeout(TIMEOUT).expect("reader progress");
            }
            h2.publish_text("firehose", &format!("{i}:{p2}"));
        }
    });
    for i in 0..n {
        let m = read_text(&mut good);
        assert!(
            m.starts_with(&format!("{i}:")),
            "message {i} out of order or lost"
        );
        let _ = progress_tx.send(i + 1);
    }
    publisher.join().unwrap();
    wait_until("slow consumer closed", || h.stats().slow_closes == 1);
    wait_until("close callback", || {
        ev.closed.lock().unwrap().iter().any(|(c, _)| *c == 1013)
    });
    stop(h);
}

#[test]
fn a_burst_to_a_reader_that_keeps_up_is_delivered_whole_under_either_policy() {
    for policy in [
        SlowConsumerPolicy::DropMessage,
        SlowConsumerPolicy::Close(CloseCode::TRY_AGAIN_LATER, "slow".into()),
    ] {
        let cfg = config(1)
            .outbox_limit(64 << 10)
            .outbox_low_water(16 << 10)
            .slow_consumer(policy);
        let (h, _) = start(cfg);
        let mut c = connect(h.local_addr(), "/");
        // 400 × 8 KiB queued in one callback: 3.2 MiB against a 64 KiB
        // limit, to a client that reads all along.
        send_text(&mut c, "flood:400:8192");
        send_text(&mut c, "after");
        let mut got = 0;
        loop {
            match c.read().unwrap() {
                tungstenite::Message::Binary(_) => got += 1,
                tungstenite::Message::Text(t) => {
                    assert_eq!(t.as_str(), "after");
                    break;
                }
                _ => {}
            }
        }
        assert_eq!(got, 400);
        let s = h.stats();
        assert_eq!((s.dropped, s.slow_closes), (0, 0));
        stop(h);
    }
}

#[test]
fn drop_policy_reports_drops_and_drain_fires() {
    // No room for bursts: the limit applies at once.
    let cfg = config(1)
        .outbox_limit(64 << 10)
        .outbox_burst_limit(64 << 10)
        .outbox_low_water(16 << 10)
        .slow_consumer(SlowConsumerPolicy::DropMessage);
    let (h, ev) = start(cfg);
    let mut c = connect(h.local_addr(), "/");
    // 100 × 8 KiB queued at once: 800 KiB against a 64 KiB limit.
    send_text(&mut c, "flood:100:8192");
    send_text(&mut c, "after");
    let mut got = 0;
    loop {
        match c.read().unwrap() {
            tungstenite::Message::Binary(b) => {
                assert_eq!(b.len(), 8192);
                got += 1;
            }
            tungstenite::Message::Text(t) => {
                assert_eq!(t.as_str(), "after");
                break;
            }
            _ => {}
        }
    }
    assert!((7..100).contains(&got), "got {got}");
    assert_eq!(h.stats().dropped, 100 - got as u64);
    wait_until("drain", || {
        ev.drains.load(std::sync::atomic::Ordering::SeqCst) >= 1
    });
    stop(h);
}

#[test]
fn graceful_shutdown_sends_1001_and_stops() {
    let (h, _) = start(config(2));
    let addr = h.local_addr();
    let mut raws: Vec<Raw> = (0..10).map(|_| Raw::connect(addr)).collect();
    let h2 = h.clone();
    let t = std::thread::spawn(move || {
        h2.shutdown();
        h2.join();
    });
    for r in raws.iter_mut() {
        assert_eq!(r.expect_close(), Some(1001));
        r.send_frame(true, 8, &1001u16.to_be_bytes());
        r.expect_eof();
    }
    t.join().unwrap();
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "listener closed"
    );
}
