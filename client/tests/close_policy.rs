//! Verifies that the server's answers decide about reconnecting: a refused token (HTTP 401) and an auth close (1008) stop the client in `Failed`; acknowledgements and refusals come back as results.

mod support;

use std::time::Duration;

use shardcast_client::{
    Client, Config, ConnectError, Delivery, Error, Reason, State, TokenPlacement,
};
use support::Server;

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_failures_stop_and_acks_resolve() {
    let server = Server::start(0, &["--jwt-secret", "s3cret", "--auth-timeout-secs", "1"]);

    // A token the server refuses at the handshake: 401, not retried.
    let bad = Client::start(
        Config::new(&server.url())
            .unwrap()
            .with_token("not-a-jwt", TokenPlacement::Header)
            .unwrap(),
    )
    .unwrap();
    let s = bad
        .wait_for(WAIT, |s| s.state.is_terminal() && s.reason.is_some())
        .await
        .unwrap();
    assert_eq!(s.state, State::Failed);
    assert!(
        matches!(&s.reason, Some(Reason::Connect(e)) if matches!(**e, ConnectError::Rejected(401))),
        "{:?}",
        s.reason
    );
    assert_eq!(s.connections, 0);

    // No token and no `auth` message: the server refuses publishes, then
    // closes with 1008 at the auth deadline, which stops the client.
    let late = Client::start(Config::new(&server.url()).unwrap()).unwrap();
    late.connected(WAIT).await.unwrap();
    let refused = late.publish_acked("t", "1", Delivery::Now).await;
    assert!(
        matches!(&refused, Err(Error::Server { code, .. }) if code == "unauthorized"),
        "{refused:?}"
    );
    assert!(late.ping().await.is_ok(), "ping is allowed before auth");
    let s = late
        .wait_for(WAIT, |s| s.state == State::Failed)
        .await
        .unwrap();
    assert!(
        matches!(s.reason, Some(Reason::ServerClosed { code: 1008, .. })),
        "{:?}",
        s.reason
    );
    assert_eq!(late.publish("t", "1", Delivery::Queue), Err(Error::Closed));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_ends_in_disconnected_and_ends_the_streams() {
    let server = Server::start(0, &[]);
    let client = Client::start(Config::new(&server.url()).unwrap()).unwrap();
    client.connected(WAIT).await.unwrap();
    let mut sub = client.subscribe("x").await.unwrap();
    let n = client
        .publish_acked("x", "[1]", Delivery::Now)
        .await
        .unwrap();
    assert_eq!(n, 1);
    client.close().await;
    let s = client.state();
    assert_eq!(s.state, State::Disconnected);
    assert!(matches!(s.reason, Some(Reason::ClientClosed)));
    // The message published before the close, then the end of the stream.
    assert!(sub.recv().await.is_some());
    assert!(tokio::time::timeout(WAIT, sub.recv())
        .await
        .unwrap()
        .is_none());
}
