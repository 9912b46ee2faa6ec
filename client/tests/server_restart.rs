//! Verifies that when the server restarts during a stream, the client reconnects on its own, resubscribes, reports the gap, and what it receives stays in publish order.

mod support;

use std::time::{Duration, Instant};

use shardcast_client::{BackoffPolicy, Client, Config, Delivery, Event, Reason, State};
use support::{free_port, Server};

const WAIT: Duration = Duration::from_secs(15);
/// The default publish rate limit (100/s) would refuse the queued burst.
const FAST: &[&str] = &["--publish-rate", "100000", "--publish-burst", "100000"];

fn config(url: &str) -> Config {
    Config::new(url)
        .unwrap()
        .with_backoff(
            BackoffPolicy::default()
                .with_base(Duration::from_millis(50))
                .with_max(Duration::from_millis(400)),
        )
        .with_queue(100_000, 16 << 20)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_server_gets_the_subscriptions_back_and_order_is_kept() {
    let port = free_port();
    let server = Server::start(port, FAST);
    let url = server.url();
    let subscriber = Client::start(config(&url)).unwrap();
    let publisher = Client::start(config(&url)).unwrap();
    subscriber.connected(WAIT).await.unwrap();
    publisher.connected(WAIT).await.unwrap();
    let mut sub = subscriber.subscribe("seq").await.unwrap();
    let mut states = subscriber.state_changes();

    // A publisher streams numbered messages on its own task, through the restart.
    let streaming = {
        let publisher = publisher.clone();
        tokio::spawn(async move {
            for n in 0..400u32 {
                publisher
                    .publish("seq", &n.to_string(), Delivery::Queue)
                    .expect("queued");
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    // Restart once some messages have arrived.
    let mut got = Vec::new();
    while got.len() < 50 {
        match tokio::time::timeout(WAIT, sub.recv())
            .await
            .unwrap()
            .unwrap()
        {
            Event::Message(m) => got.push(m.data.parse::<u32>().unwrap()),
            other => panic!("{other:?}"),
        }
    }
    server.stop();
    let restarted = Instant::now();
    let server = Server::start(port, FAST);
    streaming.await.unwrap();

    // The server's shutdown closed with 1001, which the policy retries.
    let lost = tokio::time::timeout(WAIT, async {
        loop {
            let c = states.recv().await.unwrap();
            if c.state == State::Reconnecting {
                return c;
            }
        }
    })
    .await
    .unwrap();
    assert!(
        matches!(lost.reason, Some(Reason::ServerClosed { code: 1001, .. })),
        "{:?}",
        lost.reason
    );
    subscriber
        .wait_for(WAIT, |s| s.state == State::Connected && s.connections == 2)
        .await
        .unwrap();
    publisher
        .wait_for(WAIT, |s| s.state == State::Connected && s.connections == 2)
        .await
        .unwrap();
    eprintln!(
        "reconnected {:?} after the new server started",
        restarted.elapsed()
    );

    // A final message, acknowledged once delivered to the resubscribed client.
    let delivered = publisher
        .publish_acked("seq", "1000000", Delivery::Queue)
        .await
        .unwrap();
    assert_eq!(delivered, 1, "the subscription is back on the new server");
    let mut gaps = 0;
    loop {
        match tokio::time::timeout(WAIT, sub.recv())
            .await
            .unwrap()
            .unwrap()
        {
            Event::Message(m) => {
                let n = m.data.parse::<u32>().unwrap();
                if n == 1_000_000 {
                    break;
                }
                got.push(n);
            }
            Event::Gap {
                recovered,
                last,
                position,
            } => {
                // The topic has no history (no --history): nothing to recover.
                assert!(!recovered && last.is_none() && position.is_none());
                gaps += 1;
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(gaps, 1, "one reconnect, one gap");
    assert!(
        got.windows(2).all(|w| w[0] < w[1]),
        "messages arrive in publish order, none twice: {got:?}"
    );
    assert!(got.len() >= 50);
    let m = subscriber.metrics();
    assert_eq!(m.reconnects, 1);
    assert!(m.uptime.is_some() && m.last_message.is_some());
    drop(server);
}
