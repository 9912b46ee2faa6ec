//! Verifies, against a server started with `--history`, that a subscriber whose connection is cut recovers every message published meanwhile, exactly once and in offset order, and reports `Event::Gap { recovered: true }`; that a server restart (a new epoch) and a gap larger than `--max-recovery` are reported with `recovered: false` and the position the stream goes on from; and that a replay cut short by another cut is recovered from where it stopped.

mod support;

use std::time::Duration;

use shardcast_client::{
    BackoffPolicy, Client, Config, Delivery, Event, Heartbeat, Position, State, Subscription,
};
use support::{free_port, Cut, Proxy, Server};

const WAIT: Duration = Duration::from_secs(15);

/// History for `hist.*` (10,000 messages, 300 s), and a publish rate the
/// streams below stay under.
fn flags(extra: &[&'static str]) -> Vec<&'static str> {
    let mut v = vec![
        "--history",
        "hist.*=10000,300",
        "--publish-rate",
        "100000",
        "--publish-burst",
        "100000",
    ];
    v.extend_from_slice(extra);
    v
}

fn config(url: &str) -> Config {
    Config::new(url)
        .unwrap()
        .with_heartbeat(Some(Heartbeat::new(
            Duration::from_millis(300),
            Duration::from_millis(400),
        )))
        .with_backoff(
            BackoffPolicy::default()
                .with_base(Duration::from_millis(50))
                .with_max(Duration::from_millis(200)),
        )
        .with_queue(100_000, 16 << 20)
}

fn pos(offset: u64, epoch: &str) -> Option<Position> {
    Some(Position {
        offset,
        epoch: epoch.to_owned(),
    })
}

async fn next(sub: &mut Subscription) -> Event {
    tokio::time::timeout(WAIT, sub.recv())
        .await
        .expect("an event in time")
        .expect("stream open")
}

/// The next event, which must be a message: its data as a number, and its position.
async fn message(sub: &mut Subscription) -> (u64, Position) {
    match next(sub).await {
        Event::Message(m) => (
            m.data.parse().unwrap(),
            m.position.expect("a history topic"),
        ),
        other => panic!("expected a message, got {other:?}"),
    }
}

/// A server with `extra` flags, a proxy in front of it for the subscriber,
/// and the subscriber and a publisher connected.
async fn setup(extra: &[&'static str]) -> (Server, Proxy, Client, Client) {
    let server = Server::start(0, &flags(extra));
    let proxy = Proxy::start(server.addr).await;
    let subscriber = Client::start(config(&proxy.url())).unwrap();
    let publisher = Client::start(config(&server.url())).unwrap();
    subscriber.connected(WAIT).await.unwrap();
    publisher.connected(WAIT).await.unwrap();
    (server, proxy, subscriber, publisher)
}

/// Resets the subscriber's connection and refuses its reconnects (until
/// `proxy.refuse(false)`), once it knows it is reconnecting.
async fn cut_off(proxy: &Proxy, subscriber: &Client) {
    proxy.refuse(true);
    proxy.cut(Cut::Reset);
    subscriber
        .wait_for(WAIT, |s| s.state == State::Reconnecting)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_subscriber_gets_every_message_exactly_once_in_offset_order() {
    let (_server, proxy, subscriber, publisher) = setup(&["--max-recovery", "10000"]).await;
    let mut sub = subscriber.subscribe("hist.cut").await.unwrap();
    // The answer gave the topic's position before any message.
    let epoch = sub.position().expect("a position from the answer").epoch;
    assert_eq!(sub.position(), pos(0, &epoch));

    // A publisher streams numbered messages on its own task, through every
    // cut, over a connection that is never cut, until told to stop; it
    // returns the last number.
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let mut streaming = {
        let publisher = publisher.clone();
        tokio::spawn(async move {
            let mut n = 0u64;
            while !*stopped.borrow_and_update() {
                for _ in 0..5 {
                    n += 1;
                    publisher
                        .publish("hist.cut", &n.to_string(), Delivery::Queue)
                        .expect("queued");
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            n
        })
    };

    let mut got: Vec<(u64, Position)> = Vec::new();
    let mut gaps = Vec::new();
    let mut cuts = 0;
    let mut last = None;
    while last.is_none() || got.last().map(|m| m.0) < last {
        // Three cuts, each once 100 messages arrived after the last gap's
        // replay; the proxy refuses reconnects for a while so that messages
        // are certainly missed.
        let since = gaps
            .last()
            .map_or(0, |g: &(usize, Position)| g.1.offset as usize);
        if cuts < 3 && gaps.len() == cuts && got.len() >= since + 100 {
            cuts += 1;
            proxy.refuse(true);
            proxy.cut(Cut::Reset);
            subscriber
                .wait_for(WAIT, |s| s.state == State::Reconnecting)
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(300)).await;
            proxy.refuse(false);
        }
        if last.is_none() && gaps.len() == 3 && got.len() >= gaps[2].1.offset as usize + 100 {
            stop.send_replace(true);
            last = Some((&mut streaming).await.unwrap());
            continue;
        }
        match next(&mut sub).await {
            Event::Message(m) => got.push((m.data.parse().unwrap(), m.position.unwrap())),
            Event::Gap {
                recovered,
                last,
                position,
            } => {
                assert!(recovered, "recovered from the last position: {last:?}");
                assert_eq!(last.as_ref(), got.last().map(|m| &m.1), "last seen");
                let at = position.expect("the answer's position");
                assert_eq!(at.epoch, epoch);
                assert!(at.offset > last.unwrap().offset, "messages were missed");
                gaps.push((got.len(), at));
            }
            other => panic!("{other:?}"),
        }
    }
    let n = last.unwrap();
    eprintln!(
        "{n} messages, gaps after {:?}",
        gaps.iter().map(|g| (g.0, g.1.offset)).collect::<Vec<_>>()
    );
    assert_eq!(cuts, 3);
    assert_eq!(gaps.len(), 3, "one gap per cut: {gaps:?}");
    let numbers: Vec<u64> = got.iter().map(|m| m.0).collect();
    assert_eq!(
        numbers,
        (1..=n).collect::<Vec<_>>(),
        "every message once, in order"
    );
    for (i, (_, p)) in got.iter().enumerate() {
        assert_eq!((p.offset, p.epoch.as_str()), (i as u64 + 1, epoch.as_str()));
    }
    // The replayed messages after each gap reach at least the answer's position.
    for (at, position) in &gaps {
        assert!(got.len() as u64 >= position.offset && *at < position.offset as usize);
    }
    assert_eq!(sub.position(), pos(n, &epoch));
    assert_eq!(subscriber.position("hist.cut"), pos(n, &epoch));
    let m = subscriber.metrics();
    assert_eq!((m.reconnects, m.duplicates, m.skipped), (3, 0, 0));
    // Live again: one more message, and nothing else arrives.
    publisher
        .publish_acked("hist.cut", "0", Delivery::Now)
        .await
        .unwrap();
    assert_eq!(message(&mut sub).await, (0, pos(n + 1, &epoch).unwrap()));
    assert!(
        tokio::time::timeout(Duration::from_millis(300), sub.recv())
            .await
            .is_err(),
        "nothing twice"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_saw_nothing_recovers_from_the_answers_position() {
    let (_server, proxy, subscriber, publisher) = setup(&[]).await;
    // Published before the subscription: not part of it.
    for n in 1..=3 {
        publisher
            .publish_acked("hist.quiet", &n.to_string(), Delivery::Now)
            .await
            .unwrap();
    }
    let mut sub = subscriber.subscribe("hist.quiet").await.unwrap();
    let epoch = sub.position().unwrap().epoch;
    assert_eq!(sub.position(), pos(3, &epoch));
    cut_off(&proxy, &subscriber).await;
    for n in 4..=9 {
        publisher
            .publish_acked("hist.quiet", &n.to_string(), Delivery::Now)
            .await
            .unwrap();
    }
    proxy.refuse(false);
    assert_eq!(
        next(&mut sub).await,
        Event::Gap {
            recovered: true,
            last: pos(3, &epoch),
            position: pos(9, &epoch),
        }
    );
    for n in 4..=9 {
        assert_eq!(message(&mut sub).await, (n, pos(n, &epoch).unwrap()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_server_has_a_new_epoch_and_the_gap_is_not_recovered() {
    let port = free_port();
    let server = Server::start(port, &flags(&[]));
    let subscriber = Client::start(config(&server.url())).unwrap();
    let publisher = Client::start(config(&server.url())).unwrap();
    subscriber.connected(WAIT).await.unwrap();
    publisher.connected(WAIT).await.unwrap();
    let mut sub = subscriber.subscribe("hist.restart").await.unwrap();
    let old = sub.position().unwrap().epoch;
    for n in 1..=5 {
        publisher
            .publish("hist.restart", &n.to_string(), Delivery::Now)
            .unwrap();
    }
    for n in 1..=5 {
        assert_eq!(message(&mut sub).await, (n, pos(n, &old).unwrap()));
    }

    server.stop();
    let server = Server::start(port, &flags(&[]));
    subscriber
        .wait_for(WAIT, |s| s.state == State::Connected && s.connections == 2)
        .await
        .unwrap();
    let Event::Gap {
        recovered,
        last,
        position,
    } = next(&mut sub).await
    else {
        panic!("a gap first");
    };
    assert!(!recovered, "another epoch: nothing to recover");
    assert_eq!(last, pos(5, &old));
    let new = position.expect("the new stream's position");
    assert_ne!(new.epoch, old, "a restart starts a new epoch");
    assert_eq!(sub.position().as_ref(), Some(&new));

    // The stream goes on in the new epoch, from the position given.
    publisher
        .wait_for(WAIT, |s| s.state == State::Connected && s.connections == 2)
        .await
        .unwrap();
    let delivered = publisher
        .publish_acked("hist.restart", "6", Delivery::Now)
        .await
        .unwrap();
    assert_eq!(delivered, 1);
    assert_eq!(
        message(&mut sub).await,
        (6, pos(new.offset + 1, &new.epoch).unwrap())
    );
    assert_eq!(subscriber.metrics().duplicates, 0);
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_missed_messages_than_one_recovery_returns_are_not_recovered() {
    let (_server, proxy, subscriber, publisher) = setup(&["--max-recovery", "10"]).await;
    let mut sub = subscriber.subscribe("hist.many").await.unwrap();
    let epoch = sub.position().unwrap().epoch;
    cut_off(&proxy, &subscriber).await;
    for n in 1..=49 {
        publisher
            .publish("hist.many", &n.to_string(), Delivery::Now)
            .unwrap();
    }
    publisher
        .publish_acked("hist.many", "50", Delivery::Now)
        .await
        .unwrap();
    proxy.refuse(false);
    assert_eq!(
        next(&mut sub).await,
        Event::Gap {
            recovered: false,
            last: pos(0, &epoch),
            position: pos(50, &epoch),
        }
    );
    // Nothing of the history follows; the stream goes on from there.
    publisher.publish("hist.many", "51", Delivery::Now).unwrap();
    assert_eq!(message(&mut sub).await, (51, pos(51, &epoch).unwrap()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_cut_short_is_recovered_from_where_it_stopped() {
    let (_server, proxy, subscriber, publisher) = setup(&["--max-recovery", "10000"]).await;
    let mut sub = subscriber.subscribe("hist.replay").await.unwrap();
    let epoch = sub.position().unwrap().epoch;
    cut_off(&proxy, &subscriber).await;
    const N: u64 = 3000;
    for n in 1..N {
        publisher
            .publish("hist.replay", &n.to_string(), Delivery::Queue)
            .unwrap();
    }
    publisher
        .publish_acked("hist.replay", &N.to_string(), Delivery::Queue)
        .await
        .unwrap();
    proxy.refuse(false);
    assert_eq!(
        next(&mut sub).await,
        Event::Gap {
            recovered: true,
            last: pos(0, &epoch),
            position: pos(N, &epoch),
        }
    );
    // Cut again at once, while the replay is (most likely) still arriving.
    cut_off(&proxy, &subscriber).await;
    proxy.refuse(false);
    let mut got = Vec::new();
    let mut before_second_gap = None;
    while got.len() < N as usize {
        match next(&mut sub).await {
            Event::Message(m) => {
                let p = m.position.unwrap();
                assert_eq!(p.epoch, epoch);
                got.push((m.data.parse::<u64>().unwrap(), p.offset));
            }
            Event::Gap {
                recovered,
                last,
                position,
            } => {
                assert!(before_second_gap.is_none(), "one more gap");
                assert!(recovered);
                assert_eq!(last, pos(got.len() as u64, &epoch), "from where it stopped");
                assert_eq!(position, pos(N, &epoch));
                before_second_gap = Some(got.len());
            }
            other => panic!("{other:?}"),
        }
    }
    eprintln!(
        "the first replay delivered {:?} of {N} before the cut",
        before_second_gap
    );
    assert!(before_second_gap.is_some(), "the second cut was a gap");
    let want: Vec<(u64, u64)> = (1..=N).map(|n| (n, n)).collect();
    assert_eq!(got, want, "every message once, in offset order");
    let m = subscriber.metrics();
    assert_eq!((m.duplicates, m.skipped), (0, 0));
}
