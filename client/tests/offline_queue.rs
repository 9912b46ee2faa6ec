//! Verifies that messages published while the client cannot connect are queued in order up to the bounds (full is an error, never a silent drop), refused when the caller said they may not wait, and flushed in order once a connection opens.

mod support;

use std::time::Duration;

use shardcast_client::{BackoffPolicy, Client, Config, Delivery, Error, Event, State};
use support::{Proxy, Server};

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_while_down_then_flushed_in_order() {
    let server = Server::start(0, &[]);
    let proxy = Proxy::start(server.addr).await;
    proxy.refuse(true);
    let publisher = Client::start(
        Config::new(&proxy.url())
            .unwrap()
            .with_backoff(
                BackoffPolicy::default()
                    .with_base(Duration::from_millis(20))
                    .with_max(Duration::from_millis(100)),
            )
            .with_queue(20, 1000),
    )
    .unwrap();
    // The proxy resets every attempt: the client keeps trying.
    publisher
        .wait_for(WAIT, |s| s.state == State::Connecting && s.attempt >= 2)
        .await
        .unwrap();

    assert_eq!(
        publisher.publish("q", "\"now\"", Delivery::Now),
        Err(Error::NotConnected)
    );
    for n in 0..20 {
        publisher
            .publish("q", &n.to_string(), Delivery::Queue)
            .unwrap();
    }
    // Bytes count each message as written: {"type":"publish","topic":"q","data":N}.
    let bytes: usize = (0..20)
        .map(|n: u32| r#"{"type":"publish","topic":"q","data":}"#.len() + n.to_string().len())
        .sum();
    assert_eq!(
        publisher.publish("q", "20", Delivery::Queue),
        Err(Error::QueueFull { count: 20, bytes })
    );
    assert_eq!(publisher.metrics().queue_depth, 20);
    assert_eq!(publisher.metrics().queue_bytes, bytes);
    assert_eq!(
        publisher.publish("q", "{oops", Delivery::Queue),
        Err(Error::InvalidJson)
    );

    // A subscriber directly on the server, then the way opens.
    let subscriber = Client::start(Config::new(&server.url()).unwrap()).unwrap();
    subscriber.connected(WAIT).await.unwrap();
    let mut sub = subscriber.subscribe("q").await.unwrap();
    proxy.refuse(false);
    publisher.connected(WAIT).await.unwrap();
    let mut got = Vec::new();
    while got.len() < 20 {
        match tokio::time::timeout(WAIT, sub.recv())
            .await
            .unwrap()
            .unwrap()
        {
            Event::Message(m) => got.push(m.data.parse::<u32>().unwrap()),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(got, (0..20).collect::<Vec<_>>());
    let m = publisher.metrics();
    assert_eq!((m.queue_depth, m.queue_bytes), (0, 0));
    assert_eq!(m.messages_out, 20);
    assert!(
        m.errors >= 2,
        "the refused attempts are counted: {}",
        m.errors
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_hands_back_what_was_never_sent() {
    let server = Server::start(0, &[]);
    let proxy = Proxy::start(server.addr).await;
    proxy.refuse(true);
    let client = Client::start(
        Config::new(&proxy.url())
            .unwrap()
            .with_backoff(BackoffPolicy::default().with_base(Duration::from_millis(20))),
    )
    .unwrap();
    client
        .wait_for(WAIT, |s| s.state == State::Connecting && s.attempt >= 1)
        .await
        .unwrap();
    client.publish("q", "1", Delivery::Queue).unwrap();
    let acked = {
        let client = client.clone();
        tokio::spawn(async move { client.publish_acked("q", "2", Delivery::Queue).await })
    };
    // The acknowledged publish is queued once the depth says so.
    tokio::time::timeout(WAIT, async {
        while client.metrics().queue_depth < 2 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .unwrap();
    client.publish("q", "3", Delivery::Queue).unwrap();

    let unsent = tokio::time::timeout(WAIT, client.close()).await.unwrap();
    assert_eq!(unsent.len(), 3, "{unsent:?}");
    let data: Vec<u32> = unsent
        .iter()
        .map(|t| {
            serde_json::from_str::<serde_json::Value>(t).unwrap()["data"]
                .as_u64()
                .unwrap() as u32
        })
        .collect();
    assert_eq!(data, [1, 2, 3]);
    assert_eq!(
        tokio::time::timeout(WAIT, acked).await.unwrap().unwrap(),
        Err(Error::Closed)
    );
    assert_eq!(client.state().state, State::Disconnected);
    assert!(
        client.close().await.is_empty(),
        "a second close has nothing left"
    );
}
