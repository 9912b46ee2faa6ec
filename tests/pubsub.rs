//! Verifies publish/subscribe across cores: delivery, per-publisher order, publishing from foreign threads, and cleanup on disconnect.

mod common;
use common::*;
use shardcast::ServerHandle;
use std::time::{Duration, Instant};

#[test]
fn publish_reaches_subscribers_on_every_core_in_order() {
    let cores = 2;
    let (h, _) = start(config(cores));
    let addr = h.local_addr();
    let mut subs = one_per_core(addr, cores);
    for (core, c) in subs.iter_mut() {
        send_text(c, "sub:news");
        assert_eq!(read_text(c), format!("subscribed:news:{core}"));
    }
    assert_eq!(h.subscriber_count("news").unwrap(), cores);
    // A publisher on some core; its messages reach both cores in order.
    let mut publisher = connect(addr, "/");
    let n = 500;
    for i in 0..n {
        send_text(&mut publisher, &format!("pub:news:{i}"));
    }
    for (core, c) in subs.iter_mut() {
        for i in 0..n {
            assert_eq!(read_text(c), i.to_string(), "subscriber on core {core}");
        }
    }
    let mut local = 0;
    for _ in 0..n {
        let r = read_text(&mut publisher);
        local += r
            .strip_prefix("published:")
            .unwrap()
            .parse::<usize>()
            .unwrap();
    }
    // Exactly one subscriber shares the publisher's core.
    assert_eq!(local, n);
    stop(h);
}

#[test]
fn publish_from_a_foreign_thread_and_counted_publish() {
    let (h, _) = start(config(2));
    let addr = h.local_addr();
    let mut subs = one_per_core(addr, 2);
    for (_, c) in subs.iter_mut() {
        send_text(c, "sub:t");
        read_text(c);
    }
    let h2 = h.clone();
    std::thread::spawn(move || {
        for i in 0..100 {
            h2.publish_text("t", &format!("f{i}"));
        }
    })
    .join()
    .unwrap();
    for (_, c) in subs.iter_mut() {
        for i in 0..100 {
            assert_eq!(read_text(c), format!("f{i}"));
        }
    }
    let report = h
        .publish_counted("t", &shardcast::PreparedFrame::text("counted"))
        .unwrap();
    assert_eq!(report.delivered, 2);
    assert_eq!(h.publish_text("nobody-listens", "x"), 0);
    stop(h);
}

#[test]
fn subscriptions_go_away_with_their_connection() {
    let (h, _) = start(config(2));
    let addr = h.local_addr();
    let mut clients: Vec<_> = (0..20).map(|_| connect(addr, "/")).collect();
    for c in clients.iter_mut() {
        send_text(c, "sub:room");
        read_text(c);
        send_text(c, "sub:other");
        read_text(c);
    }
    assert_eq!(h.subscriber_count("room").unwrap(), 20);
    let mut c0 = clients.remove(0);
    send_text(&mut c0, "unsub:room");
    assert_eq!(read_text(&mut c0), "unsubscribed:room");
    assert_eq!(h.subscriber_count("room").unwrap(), 19);
    drop(c0); // vanishes without a close frame
    for c in clients.iter_mut() {
        let _ = c.close(None);
    }
    drop(clients);
    wait_until("registries empty", || {
        h.query(|c| c.topic_count() + c.subscription_total())
            .unwrap()
            .iter()
            .sum::<usize>()
            == 0
    });
    wait_until("connections gone", || h.stats().active == 0);
    assert_eq!(
        h.publish_text("room", "anyone?"),
        0,
        "no core keeps interest"
    );
    stop(h);
}

#[test]
fn a_core_that_falls_behind_refuses_publishes_past_its_inbox_capacity_and_counts_them() {
    let (h, _) = start(config(2).inbox_capacity(100));
    let clients = one_per_core(h.local_addr(), 2);
    let (core, mut sub) = clients.into_iter().next().unwrap();
    send_text(&mut sub, "sub:busy");
    assert!(read_text(&mut sub).starts_with("subscribed:busy:"));
    // Hold the subscriber's core for a moment, from another thread.
    let (held_tx, held_rx) = std::sync::mpsc::channel();
    let blocker = {
        let h = h.clone();
        std::thread::spawn(move || {
            let held_tx = std::sync::Mutex::new(held_tx);
            h.query(move |c| {
                if c.core() == core {
                    let _ = held_tx.lock().unwrap().send(());
                    std::thread::sleep(std::time::Duration::from_millis(300));
                }
            })
            .unwrap();
        })
    };
    held_rx.recv_timeout(TIMEOUT).unwrap();
    for i in 0..1000 {
        h.publish_text("busy", &i.to_string());
    }
    blocker.join().unwrap();
    let refused: u64 = h.inbox_refused()[core];
    assert!(
        refused >= 800,
        "only {refused} of 1000 refused with room for 100"
    );
    // What was queued arrives, in order; nothing else does.
    let mut got = Vec::new();
    while got.len() < (1000 - refused) as usize {
        got.push(read_text(&mut sub).parse::<u32>().unwrap());
    }
    assert!(got.windows(2).all(|w| w[0] < w[1]), "out of order");
    assert_eq!(h.inbox_refused().iter().sum::<u64>(), refused);
    stop(h);
}

#[test]
fn frames_queued_in_one_turn_leave_in_one_write_and_are_counted() {
    let (h, _) = start(config(1));
    let mut r = Raw::connect(h.local_addr());
    // The 101 answer is written as one frame of the outbox; the client can
    // read it before the core has counted it.
    wait_until("the handshake's answer is counted", || {
        h.stats().frames_written == 1
    });
    let before = h.stats();
    // One callback queues 200 binary frames of 10 bytes: one flush, and
    // they fit one write.
    r.send_frame(true, 1, b"flood:200:10");
    let mut bytes = 0;
    for _ in 0..200 {
        let (_, op, p) = r.read_frame().unwrap();
        assert_eq!((op, p.len()), (2, 10));
        bytes += 2 + p.len() as u64;
    }
    wait_until("the writes are counted", || {
        h.stats().frames_written - before.frames_written >= 200
    });
    let after = h.stats();
    let (writes, frames) = (
        after.writes - before.writes,
        after.frames_written - before.frames_written,
    );
    assert_eq!(frames, 200, "every frame written is counted once");
    assert!(
        (1..=2).contains(&writes),
        "200 frames queued in one turn took {writes} writes"
    );
    assert_eq!(after.write_bytes - before.write_bytes, bytes);
    stop(h);
}

/// Three subscribers of `t` and a publisher on one core; the publisher
/// sends two publishes 5 ms apart. Returns (the subscribers' write count
/// delta, gathers, the time until the first delivery).
/// `n` connections, each subscribed to `topic` (its answer read).
fn subscribed(h: &ServerHandle, n: usize, topic: &str) -> Vec<Raw> {
    let mut subs: Vec<Raw> = (0..n).map(|_| Raw::connect(h.local_addr())).collect();
    for s in &mut subs {
        s.send_frame(true, 1, format!("sub:{topic}").as_bytes());
    }
    for s in &mut subs {
        let (_, _, p) = s.read_frame().unwrap();
        assert!(p.starts_with(format!("subscribed:{topic}").as_bytes()));
    }
    subs
}

fn two_publishes(cfg: shardcast::Config) -> (u64, u64, Duration) {
    let (h, _) = start(cfg);
    let mut subs = subscribed(&h, 3, "t");
    let mut p = Raw::connect(h.local_addr());
    wait_until("the handshakes are counted", || {
        h.stats().frames_written == 3 * 2 + 1
    });
    let before = h.stats();
    let sent = Instant::now();
    p.send_frame(true, 1, b"pub:t:a");
    std::thread::sleep(Duration::from_millis(5));
    p.send_frame(true, 1, b"pub:t:b");
    let mut first = None;
    for s in &mut subs {
        for want in [b"a", b"b"] {
            let (_, op, m) = s.read_frame().unwrap();
            first.get_or_insert_with(|| sent.elapsed());
            assert_eq!((op, m.as_slice()), (1, &want[..]));
        }
    }
    for _ in 0..2 {
        let (_, _, m) = p.read_frame().unwrap();
        assert_eq!(m, b"published:3");
    }
    wait_until("the writes are counted", || {
        h.stats().frames_written - before.frames_written == 3 * 2 + 2
    });
    let after = h.stats();
    stop(h);
    (
        after.writes - before.writes,
        after.gathers - before.gathers,
        first.unwrap(),
    )
}

#[test]
fn under_load_writes_gather_for_the_budget_and_at_low_load_leave_at_once() {
    // Four connections to write (three subscribers and the publisher's
    // answer) reach a threshold of 2: the turn waits 100 ms, the second
    // publish arrives meanwhile, and each connection gets one write.
    let gathered = config(1)
        .flush_gather(Duration::from_millis(100))
        .flush_gather_min(2);
    let (writes, gathers, first) = two_publishes(gathered);
    assert!(gathers >= 1, "the turn gathered");
    assert!(
        first >= Duration::from_millis(90),
        "waited the budget: {first:?}"
    );
    assert_eq!(writes, 4, "both frames in one write per connection");

    // Below the threshold nothing waits: two writes per connection.
    let (writes, gathers, first) = two_publishes(
        config(1)
            .flush_gather(Duration::from_millis(100))
            .flush_gather_min(100),
    );
    assert_eq!(gathers, 0);
    assert!(first < Duration::from_millis(90), "{first:?}");
    assert_eq!(writes, 8, "one write per frame");
}

#[test]
fn a_long_flush_under_load_waits_the_gather_before_each_step() {
    // 1,200 subscribers, a threshold of 600: one publish is written in
    // three steps of at most 512. Before the first (1,200 to write) and
    // the second (688) the core waits the budget; the third (176, under
    // the threshold) goes at once.
    let gather = Duration::from_millis(60);
    let (h, _) = start(config(1).flush_gather(gather).flush_gather_min(600));
    let mut subs = subscribed(&h, 1200, "big");
    let mut p = Raw::connect(h.local_addr());
    wait_until("the subscriptions are written", || {
        h.stats().frames_written == 1200 * 2 + 1
    });
    let before = h.stats();
    let sent = Instant::now();
    p.send_frame(true, 1, b"pub:big:x");
    let mut last = Duration::ZERO;
    for s in &mut subs {
        let (_, op, m) = s.read_frame().unwrap();
        assert_eq!((op, m.as_slice()), (1, &b"x"[..]));
        last = last.max(sent.elapsed());
    }
    let (_, _, m) = p.read_frame().unwrap();
    assert_eq!(m, b"published:1200");
    let after = h.stats();
    stop(h);
    assert_eq!(
        after.gathers - before.gathers,
        2,
        "a wait before each of the first two steps"
    );
    assert!(
        last >= 2 * gather - Duration::from_millis(5),
        "the last write came after {last:?}"
    );
}

#[test]
fn a_fanout_larger_than_a_flush_step_reaches_everyone_in_order() {
    // 1,200 subscribers on one core: each publish is written in steps
    // (512 connections at a time, the core reading between steps).
    let (h, _) = start(config(1));
    let mut subs = subscribed(&h, 1200, "big");
    let mut p = Raw::connect(h.local_addr());
    for i in 0..20 {
        p.send_frame(true, 1, format!("pub:big:{i}").as_bytes());
    }
    for _ in 0..20 {
        let (_, _, m) = p.read_frame().unwrap();
        assert_eq!(m, b"published:1200");
    }
    for (n, s) in subs.iter_mut().enumerate() {
        for i in 0..20 {
            let (_, op, m) = s.read_frame().unwrap();
            assert_eq!((op, m), (1, format!("{i}").into_bytes()), "subscriber {n}");
        }
    }
    let st = h.stats();
    assert!(
        st.frames_written >= st.writes,
        "{} frames in {} writes",
        st.frames_written,
        st.writes
    );
    stop(h);
}
