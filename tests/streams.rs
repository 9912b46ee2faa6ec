//! Verifies per-topic history (offsets, epochs, home cores) and subscriptions that start from a position: every subscriber on every core sees one topic's offsets in order, and a recovery racing a stream of publishes switches to the live stream with no gap and no duplicate.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{config, connect, read_text, send_text, Client};
use shardcast::{
    Config, Handler, HistoryConfig, HistoryPolicy, Message, PreparedFrame, Rejection, Server,
    ServerHandle, Since, StreamJoin, UpgradeRequest, Ws,
};

/// A text protocol: `join T OFFSET EPOCH` (recover), `latest T`, `sub T`
/// (join from now), `plainsub T` (subscribe), `pub T TEXT` (publish),
/// `core`; a refused join is answered `error WHY`. A join is answered
/// `joined T OFFSET EPOCH RECOVERED REPLAYED`; publications of a history
/// topic arrive framed as `OFFSET EPOCH TEXT`.
struct Streams;

impl Handler for Streams {
    type Data = ();
    type Local = ();

    fn upgrade(&self, _req: &mut UpgradeRequest<'_>) -> Result<(), Rejection> {
        Ok(())
    }

    fn message(&self, ws: &mut Ws<'_, Self>, msg: Message<'_>) {
        let Message::Text(t) = msg else { return };
        let parts: Vec<&str> = t.splitn(4, ' ').collect();
        match parts.as_slice() {
            ["join", topic, offset, epoch] => {
                let since = Since::Offset {
                    offset: offset.parse().unwrap(),
                    epoch: (*epoch).to_owned(),
                };
                join(ws, topic, since);
            }
            ["latest", topic] => join(ws, topic, Since::Latest),
            ["sub", topic] => join(ws, topic, Since::Now),
            ["plainsub", topic] => {
                ws.subscribe(topic).unwrap();
                ws.send_text("subscribed");
            }
            ["pub", topic, text] => {
                ws.publish(topic, &PreparedFrame::text(text), true);
            }
            ["history", topic] => {
                let (handle, id) = (ws.handle().clone(), ws.id());
                ws.read_history(topic, move |h| {
                    let offsets: Vec<String> = h
                        .map(|(_, log)| log.iter().map(|e| e.0.to_string()).collect())
                        .unwrap_or_default();
                    handle.send(
                        id,
                        &PreparedFrame::text(&format!("history {}", offsets.join(","))),
                    );
                });
            }
            ["core"] => {
                let c = ws.core();
                ws.send_text(&c.to_string());
            }
            _ => {
                ws.send_text("?");
            }
        }
    }

    fn joined(&self, ws: &mut Ws<'_, Self>, _token: u64, joins: &[StreamJoin]) {
        for j in joins {
            ws.send_text(&format!(
                "joined {} {} {} {} {}",
                j.topic, j.position.offset, j.position.epoch, j.recovered, j.replayed
            ));
        }
    }
}

fn join(ws: &mut Ws<'_, Streams>, topic: &str, since: Since) {
    if let Err(e) = ws.join(&[(topic, since)], 0) {
        ws.send_text(&format!("error {e}"));
    }
}

fn history(size: usize) -> HistoryConfig {
    HistoryConfig::new(move |t: &str| {
        t.starts_with("h.")
            .then(|| HistoryPolicy::new(size, Duration::from_secs(60)).with_max_bytes(256 << 20))
    })
    .with_frame(|_, f, pos| {
        PreparedFrame::text(&format!(
            "{} {} {}",
            pos.offset,
            pos.epoch,
            std::str::from_utf8(f.payload()).unwrap()
        ))
    })
}

fn start(cfg: Config) -> ServerHandle {
    Server::new(cfg.listen("127.0.0.1:0".parse().unwrap()), Streams)
        .start()
        .expect("server starts")
}

struct Joined {
    offset: u64,
    epoch: String,
    recovered: bool,
    replayed: usize,
}

fn joined(ws: &mut Client) -> Joined {
    let r = read_text(ws);
    let p: Vec<&str> = r.split(' ').collect();
    assert_eq!(p[0], "joined", "{r}");
    Joined {
        offset: p[2].parse().unwrap(),
        epoch: p[3].to_owned(),
        recovered: p[4] == "true",
        replayed: p[5].parse().unwrap(),
    }
}

/// A publication: (offset, epoch, text).
fn publication(ws: &mut Client) -> (u64, String, String) {
    let r = read_text(ws);
    let mut p = r.splitn(3, ' ');
    let offset = p.next().unwrap().parse().unwrap_or_else(|_| panic!("{r}"));
    (
        offset,
        p.next().unwrap().to_owned(),
        p.next().unwrap().to_owned(),
    )
}

fn core_of(ws: &mut Client) -> usize {
    send_text(ws, "core");
    read_text(ws).parse().unwrap()
}

#[test]
fn recovery_returns_exactly_what_was_missed_then_the_live_stream() {
    let h = start(config(2).history(history(100)));
    let addr = h.local_addr();
    let mut a = connect(addr, "/");
    send_text(&mut a, "sub h.t");
    let j = joined(&mut a);
    assert_eq!((j.offset, j.recovered, j.replayed), (0, false, 0));
    for i in 1..=5 {
        h.publish_text("h.t", &format!("m{i}"));
    }
    for i in 1..=5 {
        assert_eq!(publication(&mut a), (i, j.epoch.clone(), format!("m{i}")));
    }
    // A client that has offset 2 gets 3..5, then live.
    let mut b = connect(addr, "/");
    send_text(&mut b, &format!("join h.t 2 {}", j.epoch));
    let k = joined(&mut b);
    assert_eq!((k.offset, k.recovered, k.replayed), (5, true, 3));
    for i in 3..=5 {
        assert_eq!(publication(&mut b).0, i);
    }
    h.publish_text("h.t", "m6");
    assert_eq!(publication(&mut b), (6, j.epoch.clone(), "m6".into()));
    assert_eq!(publication(&mut a).0, 6);
    // Up to date: recovered, nothing replayed.
    let mut c = connect(addr, "/");
    send_text(&mut c, &format!("join h.t 6 {}", j.epoch));
    let k = joined(&mut c);
    assert_eq!((k.offset, k.recovered, k.replayed), (6, true, 0));
    // Another epoch: not recovered, nothing old follows, live does.
    let mut d = connect(addr, "/");
    send_text(&mut d, "join h.t 2 nope");
    let k = joined(&mut d);
    assert_eq!((k.offset, k.recovered, k.replayed), (6, false, 0));
    // Latest value.
    let mut e = connect(addr, "/");
    send_text(&mut e, "latest h.t");
    let k = joined(&mut e);
    assert_eq!((k.offset, k.recovered, k.replayed), (6, true, 1));
    assert_eq!(publication(&mut e), (6, j.epoch.clone(), "m6".into()));
    h.publish_text("h.t", "m7");
    for ws in [&mut a, &mut b, &mut c, &mut d, &mut e] {
        assert_eq!(publication(ws), (7, j.epoch.clone(), "m7".into()));
    }
    // The history as the handle reads it.
    let (pos, log) = h.history("h.t").unwrap().unwrap();
    assert_eq!((pos.offset, &*pos.epoch), (7, j.epoch.as_str()));
    assert_eq!(
        log.iter().map(|e| e.0).collect::<Vec<_>>(),
        (1..=7).collect::<Vec<_>>()
    );
    assert!(h.history("plain").unwrap().is_none());
    // And as a callback reads it, on the topic's home core.
    send_text(&mut e, "history h.t");
    assert_eq!(read_text(&mut e), "history 1,2,3,4,5,6,7");
    send_text(&mut e, "history h.none");
    assert_eq!(read_text(&mut e), "history ");
    common::stop(h);
}

#[test]
fn a_gap_no_longer_in_history_is_not_recovered() {
    let h = start(config(2).history(history(10)));
    let mut a = connect(h.local_addr(), "/");
    send_text(&mut a, "sub h.t");
    let epoch = joined(&mut a).epoch;
    for i in 1..=20 {
        h.publish_text("h.t", &format!("m{i}"));
    }
    assert_eq!((0..20).map(|_| publication(&mut a).0).last(), Some(20));
    let mut b = connect(h.local_addr(), "/");
    send_text(&mut b, &format!("join h.t 5 {epoch}"));
    let k = joined(&mut b);
    assert_eq!((k.offset, k.recovered, k.replayed), (20, false, 0));
    send_text(&mut b, &format!("join h.t 10 {epoch}"));
    let k = joined(&mut b);
    assert_eq!((k.offset, k.recovered, k.replayed), (20, true, 10));
    for i in 11..=20 {
        assert_eq!(publication(&mut b).0, i);
    }
    common::stop(h);
    // More missed than one recovery may return: not recovered.
    let h = start(config(1).history(history(100).with_max_recovery(5)));
    let mut a = connect(h.local_addr(), "/");
    send_text(&mut a, "sub h.t");
    let epoch = joined(&mut a).epoch;
    for i in 1..=10 {
        h.publish_text("h.t", &format!("m{i}"));
    }
    assert_eq!((0..10).map(|_| publication(&mut a).0).last(), Some(10));
    send_text(&mut a, &format!("join h.t 4 {epoch}"));
    let k = joined(&mut a);
    assert_eq!((k.offset, k.recovered), (10, false));
    send_text(&mut a, &format!("join h.t 5 {epoch}"));
    let k = joined(&mut a);
    assert_eq!((k.offset, k.recovered, k.replayed), (10, true, 5));
    common::stop(h);
}

#[test]
fn every_subscriber_on_every_core_sees_the_same_offsets_from_publishers_everywhere() {
    let h = start(config(2).history(history(1000)));
    let addr = h.local_addr();
    let mut subs: Vec<Client> = Vec::new();
    let mut cores = [0; 2];
    while cores.iter().any(|&n| n < 2) {
        let mut ws = connect(addr, "/");
        cores[core_of(&mut ws)] += 1;
        send_text(&mut ws, "sub h.all");
        joined(&mut ws);
        subs.push(ws);
        assert!(subs.len() < 100, "connections did not reach both cores");
    }
    // Publishers: a client on each core and a thread with the handle.
    let mut pubs: Vec<Client> = Vec::new();
    let mut seen = [false; 2];
    while !seen.iter().all(|&s| s) {
        let mut ws = connect(addr, "/");
        let c = core_of(&mut ws);
        if !seen[c] {
            seen[c] = true;
            pubs.push(ws);
        }
    }
    let per = 200;
    let t = {
        let h = h.clone();
        std::thread::spawn(move || {
            for i in 0..per {
                h.publish_text("h.all", &format!("handle-{i}"));
            }
        })
    };
    for i in 0..per {
        for (k, p) in pubs.iter_mut().enumerate() {
            send_text(p, &format!("pub h.all ws{k}-{i}"));
        }
    }
    t.join().unwrap();
    let total = per * 3;
    let mut first: Option<Vec<String>> = None;
    for ws in &mut subs {
        let got: Vec<(u64, String, String)> = (0..total).map(|_| publication(ws)).collect();
        let offsets: Vec<u64> = got.iter().map(|g| g.0).collect();
        assert_eq!(
            offsets,
            (1..=total as u64).collect::<Vec<_>>(),
            "in offset order, no gap"
        );
        let texts: Vec<String> = got.into_iter().map(|g| g.2).collect();
        // Per publisher, in the order published.
        for src in ["handle-", "ws0-", "ws1-"] {
            let mine: Vec<&String> = texts.iter().filter(|t| t.starts_with(src)).collect();
            let want: Vec<String> = (0..per).map(|i| format!("{src}{i}")).collect();
            assert_eq!(mine.len(), per, "{src}");
            assert!(
                mine.iter().zip(&want).all(|(a, b)| *a == b),
                "{src} in order"
            );
        }
        match &first {
            None => first = Some(texts),
            Some(f) => assert_eq!(f, &texts, "the same sequence on every subscriber"),
        }
    }
    common::stop(h);
}

#[test]
fn recovery_racing_a_publish_stream_has_no_gap_and_no_duplicate() {
    // Recoveries of any length: the cap has its own test.
    let h = start(config(2).history(history(1_000_000).with_max_recovery(1_000_000)));
    let addr = h.local_addr();
    let stop = Arc::new(AtomicBool::new(false));
    let publisher = {
        let (h, stop) = (h.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                h.publish_text("h.race", &format!("p{i}"));
                i += 1;
                if i.is_multiple_of(16) {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        })
    };
    let mut last: Option<(u64, String)> = None;
    let deadline = Instant::now() + Duration::from_secs(8);
    let mut cycles = 0;
    let mut received = 0u64;
    while Instant::now() < deadline && cycles < 60 {
        let mut ws = connect(addr, "/");
        match &last {
            None => send_text(&mut ws, "sub h.race"),
            Some((o, e)) => send_text(&mut ws, &format!("join h.race {o} {e}")),
        }
        let j = joined(&mut ws);
        if let Some((o, e)) = &last {
            assert_eq!(&j.epoch, e);
            assert!(j.recovered, "cycle {cycles}: from {o}, at {}", j.offset);
            assert_eq!(j.replayed as u64, j.offset - o);
        }
        let mut next = last.as_ref().map_or(j.offset + 1, |(o, _)| o + 1);
        // Read a while, then drop the connection mid-stream.
        for _ in 0..(50 + cycles * 7) {
            let (offset, epoch, _) = publication(&mut ws);
            assert_eq!(epoch, j.epoch);
            assert_eq!(offset, next, "cycle {cycles}: no gap, no duplicate");
            next += 1;
            received += 1;
        }
        last = Some((next - 1, j.epoch.clone()));
        drop(ws);
        cycles += 1;
    }
    stop.store(true, Ordering::Relaxed);
    publisher.join().unwrap();
    assert!(
        cycles >= 10 && received > 1000,
        "{cycles} cycles, {received} received"
    );
    common::stop(h);
}

#[test]
fn a_restarted_server_has_a_new_epoch() {
    let h = start(config(1).history(history(10)));
    let mut a = connect(h.local_addr(), "/");
    send_text(&mut a, "sub h.t");
    let epoch = joined(&mut a).epoch;
    h.publish_text("h.t", "x");
    assert_eq!(publication(&mut a).0, 1);
    common::stop(h);
    let h = start(config(1).history(history(10)));
    let mut b = connect(h.local_addr(), "/");
    send_text(&mut b, &format!("join h.t 1 {epoch}"));
    let k = joined(&mut b);
    assert!(!k.recovered && k.epoch != epoch && k.offset == 0);
    common::stop(h);
}

#[test]
fn a_plain_topic_cannot_be_joined_and_is_published_as_before() {
    let h = start(config(2).history(history(10)));
    let mut a: Client = connect(h.local_addr(), "/");
    send_text(&mut a, "sub plain");
    assert_eq!(read_text(&mut a), "error the topic keeps no history");
    send_text(&mut a, "plainsub plain");
    assert_eq!(read_text(&mut a), "subscribed");
    h.publish_text("plain", "as is");
    assert_eq!(read_text(&mut a), "as is");
    assert!(h.history("plain").unwrap().is_none());
    common::stop(h);
}
