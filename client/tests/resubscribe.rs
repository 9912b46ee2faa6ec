//! Verifies that a client holding more topic names than fit in one message under the server's size limit (64 KiB by default) gets every topic back after a reconnect.

mod support;

use std::time::{Duration, Instant};

use shardcast_client::{BackoffPolicy, Client, Config, Delivery, Event, State, Subscription};
use support::{Cut, Proxy, Server};

const WAIT: Duration = Duration::from_secs(15);

/// Publishes to `sub`'s topic until a message arrives on it (the first
/// publishes may precede the resubscribe), skipping the reconnect's gap.
async fn delivered(publisher: &Client, sub: &mut Subscription) {
    let deadline = Instant::now() + WAIT;
    loop {
        assert!(Instant::now() < deadline, "nothing on {}", sub.topic());
        publisher.publish(sub.topic(), "1", Delivery::Now).unwrap();
        match tokio::time::timeout(Duration::from_millis(200), sub.recv()).await {
            Ok(Some(Event::Message(_))) => return,
            Ok(Some(Event::Gap { .. })) | Err(_) => continue,
            Ok(other) => panic!("{}: {other:?}", sub.topic()),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_topic_comes_back_when_they_exceed_one_message() {
    // 700 names of 120 bytes: about 86 KB of names, over the 64 KiB limit,
    // under the default 1000 subscriptions per connection.
    let server = Server::start(
        0,
        &["--publish-rate", "100000", "--publish-burst", "100000"],
    );
    let proxy = Proxy::start(server.addr).await;
    let config = |url: &str| {
        Config::new(url)
            .unwrap()
            .with_backoff(BackoffPolicy::default().with_base(Duration::from_millis(20)))
    };
    let client = Client::start(config(&proxy.url())).unwrap();
    let publisher = Client::start(config(&server.url())).unwrap();
    client.connected(WAIT).await.unwrap();
    publisher.connected(WAIT).await.unwrap();
    let mut subs = Vec::new();
    for i in 0..700 {
        let topic = format!("{i:04}.{}", "t".repeat(115));
        subs.push(client.subscribe(&topic).await.unwrap());
    }

    proxy.cut(Cut::Reset);
    client
        .wait_for(WAIT, |s| s.state == State::Connected && s.connections == 2)
        .await
        .unwrap();
    // The first and the last name, and one from the middle.
    for i in [0, 350, 699] {
        delivered(&publisher, &mut subs[i]).await;
    }
    assert_eq!(client.topics().len(), 700);
    assert_eq!(client.metrics().errors, 1, "only the reset: no refusal");
}
