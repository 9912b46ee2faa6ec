//! Verifies that the connection options take effect against a real server: a custom `Origin` header outside what the server allows is refused with 403 (and not retried), one inside it connects with a subprotocol offered, and a listener that never answers the handshake fails each attempt at the connect timeout.

mod support;

use std::time::{Duration, Instant};

use shardcast_client::{BackoffPolicy, Client, Config, ConnectError, Delivery, Reason, State};
use support::Server;
use tokio::net::TcpListener;

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_headers_reach_the_server() {
    // An anonymous server without an origin allowlist accepts browser pages
    // from this machine only.
    let server = Server::start(0, &[]);
    let foreign = Client::start(
        Config::new(&server.url())
            .unwrap()
            .with_header("Origin", "https://elsewhere.example")
            .unwrap(),
    )
    .unwrap();
    let s = foreign
        .wait_for(WAIT, |s| s.state.is_terminal() && s.reason.is_some())
        .await
        .unwrap();
    assert_eq!(s.state, State::Failed);
    assert!(
        matches!(&s.reason, Some(Reason::Connect(e)) if matches!(**e, ConnectError::Rejected(403))),
        "{:?}",
        s.reason
    );
    assert_eq!(s.connections, 0);

    let local = Client::start(
        Config::new(&server.url())
            .unwrap()
            .with_header("Origin", &format!("http://{}", server.addr))
            .unwrap()
            .with_protocol("shardcast.v1")
            .unwrap(),
    )
    .unwrap();
    local.connected(WAIT).await.unwrap();
    assert_eq!(local.publish_acked("t", "1", Delivery::Now).await, Ok(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handshake_that_never_answers_times_out_at_the_connect_timeout() {
    // Accepts connections and keeps them, answering nothing.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    let timeout = Duration::from_millis(200);
    let started = Instant::now();
    let client = Client::start(
        Config::new(&format!("ws://{addr}/ws"))
            .unwrap()
            .with_connect_timeout(timeout)
            .with_backoff(
                BackoffPolicy::default()
                    .with_base(Duration::from_millis(10))
                    .with_max_attempts(Some(2)),
            ),
    )
    .unwrap();
    let s = client
        .wait_for(WAIT, |s| s.state == State::Failed)
        .await
        .unwrap();
    let took = started.elapsed();
    assert!(
        matches!(&s.reason, Some(Reason::AttemptsExhausted(r))
            if matches!(&**r, Reason::Connect(e) if matches!(**e, ConnectError::Timeout(t) if t == timeout))),
        "{:?}",
        s.reason
    );
    // Three attempts (the first and two retries), each cut at the timeout.
    assert!(took >= timeout * 3, "{took:?}");
    assert!(took < timeout * 3 + Duration::from_secs(2), "{took:?}");
    assert_eq!(client.metrics().errors, 3);
    holder.abort();
}
