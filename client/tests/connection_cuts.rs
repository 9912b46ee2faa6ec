//! Verifies that a client notices connections cut under it (an RST, a silent drop only the heartbeat can detect, a half-open connection), reconnects, resubscribes and receives again.

mod support;

use std::time::{Duration, Instant};

use shardcast_client::{
    BackoffPolicy, Client, Config, ConnectionError, Delivery, Event, Heartbeat, Reason, State,
};
use support::{Cut, Proxy, Server};

const WAIT: Duration = Duration::from_secs(10);
const INTERVAL: Duration = Duration::from_millis(300);
const TIMEOUT: Duration = Duration::from_millis(400);

fn config(url: &str) -> Config {
    Config::new(url)
        .unwrap()
        .with_heartbeat(Some(Heartbeat::new(INTERVAL, TIMEOUT)))
        .with_backoff(BackoffPolicy::default().with_base(Duration::from_millis(50)))
}

/// Publishes from `publisher` until `sub` receives one message, at most `WAIT`.
async fn flows(publisher: &Client, sub: &mut shardcast_client::Subscription, tag: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        assert!(
            Instant::now() < deadline,
            "no message on {} after the cut",
            sub.topic()
        );
        publisher
            .publish(sub.topic(), &format!("\"{tag}\""), Delivery::Now)
            .unwrap();
        match tokio::time::timeout(Duration::from_millis(200), sub.recv()).await {
            Ok(Some(Event::Message(m))) if *m.data == format!("\"{tag}\"") => return,
            Ok(Some(_)) | Err(_) => continue,
            Ok(None) => panic!("subscription ended"),
        }
    }
}

/// Cuts the client's connection `how`, and returns the reason it reports
/// and how long it took to notice.
async fn cut_and_recover(how: Cut) -> (Reason, Duration) {
    let server = Server::start(0, &[]);
    let proxy = Proxy::start(server.addr).await;
    let publisher = Client::start(config(&server.url())).unwrap();
    let client = Client::start(config(&proxy.url())).unwrap();
    client.connected(WAIT).await.unwrap();
    publisher.connected(WAIT).await.unwrap();
    let topic = format!("cut-{how:?}");
    let mut sub = client.subscribe(&topic).await.unwrap();
    flows(&publisher, &mut sub, "before").await;

    let mut changes = client.state_changes();
    let cut_at = Instant::now();
    proxy.cut(how);
    let lost = tokio::time::timeout(WAIT, async {
        loop {
            let c = changes.recv().await.unwrap();
            if c.state == State::Reconnecting {
                return c;
            }
        }
    })
    .await
    .expect("the client noticed the cut");
    let noticed = cut_at.elapsed();
    client
        .wait_for(WAIT, |s| s.state == State::Connected && s.connections == 2)
        .await
        .expect("reconnected");
    // The registry subscribed the topic again on the new connection: the
    // stream reports the gap, then messages flow.
    let gap = tokio::time::timeout(WAIT, async {
        loop {
            match sub.recv().await.expect("stream open") {
                Event::Message(m) if &*m.data == "\"before\"" => continue,
                other => return other,
            }
        }
    })
    .await
    .expect("an event after the reconnect");
    assert!(
        matches!(
            gap,
            Event::Gap {
                recovered: false,
                ..
            }
        ),
        "{gap:?}"
    );
    flows(&publisher, &mut sub, "after").await;
    assert_eq!(client.metrics().reconnects, 1);
    (lost.reason.unwrap(), noticed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_rst_is_noticed_at_once() {
    let (reason, noticed) = cut_and_recover(Cut::Reset).await;
    assert!(
        matches!(&reason, Reason::Connection(e) if matches!(**e, ConnectionError::Io(_))),
        "{reason}"
    );
    assert!(noticed < INTERVAL, "an RST needs no heartbeat: {noticed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_drop_is_noticed_by_the_heartbeat_within_interval_plus_timeout() {
    let (reason, noticed) = cut_and_recover(Cut::Silent).await;
    assert!(
        matches!(&reason, Reason::Connection(e) if matches!(**e, ConnectionError::HeartbeatTimeout(_))),
        "{reason}"
    );
    // A ping may have just been answered when the cut came: the next one
    // goes out within INTERVAL, and its pong is missed after TIMEOUT. The
    // slack is for a loaded 2-core machine.
    assert!(noticed >= TIMEOUT, "{noticed:?}");
    assert!(
        noticed < INTERVAL + TIMEOUT + Duration::from_millis(500),
        "{noticed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_open_connection_is_noticed_by_the_heartbeat() {
    let (reason, noticed) = cut_and_recover(Cut::HalfOpen).await;
    assert!(
        matches!(&reason, Reason::Connection(e) if matches!(**e, ConnectionError::HeartbeatTimeout(_))),
        "{reason}"
    );
    assert!(
        noticed < INTERVAL + TIMEOUT + Duration::from_millis(500),
        "{noticed:?}"
    );
}
