//! Verifies that a token reaches the server in each placement (query, `Authorization: Bearer`, `auth` message) on the first connection and again after a reconnect, and that `authenticate` replaces the token on a live connection and for later ones.

mod support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use shardcast_client::{
    BackoffPolicy, Client, Config, Delivery, Error, Reason, State, TokenPlacement,
};
use support::{Cut, Proxy, Server};

const WAIT: Duration = Duration::from_secs(10);
const SECRET: &str = "client-auth-test";

/// An HS256 token for `sub` that may publish and subscribe to `t.*`.
fn token(sub: &str) -> String {
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &serde_json::json!({"sub": sub, "exp": exp, "subscribe": ["t.*"], "publish": ["t.*"]}),
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

fn jwt_server() -> Server {
    // A short auth deadline: a connection that presented nothing is closed
    // with 1008 after 1 s.
    Server::start(0, &["--jwt-secret", SECRET, "--auth-timeout-secs", "1"])
}

fn config(url: &str) -> Config {
    Config::new(url)
        .unwrap()
        .with_backoff(BackoffPolicy::default().with_base(Duration::from_millis(20)))
}

/// Whether the server treats the client's connection as authenticated: an
/// acknowledged publish to a granted topic succeeds only then.
async fn authorized(client: &Client) -> Result<u64, Error> {
    client.publish_acked("t.x", "1", Delivery::Now).await
}

/// Resets the client's connection through `proxy` and waits for connection `n`.
async fn reconnect(client: &Client, proxy: &Proxy, n: u64) {
    proxy.cut(Cut::Reset);
    client
        .wait_for(WAIT, |s| s.state == State::Connected && s.connections == n)
        .await
        .expect("reconnected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_placement_authenticates_each_connection() {
    let server = jwt_server();
    for placement in [
        TokenPlacement::Query,
        TokenPlacement::Header,
        TokenPlacement::Message,
    ] {
        let proxy = Proxy::start(server.addr).await;
        let client = Client::start(
            config(&proxy.url())
                .with_token(&token("alice"), placement)
                .unwrap(),
        )
        .unwrap();
        client.connected(WAIT).await.unwrap();
        assert_eq!(authorized(&client).await, Ok(0), "{placement:?}, first");
        reconnect(&client, &proxy, 2).await;
        assert_eq!(authorized(&client).await, Ok(0), "{placement:?}, again");
        client.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authenticate_replaces_the_token_now_and_for_later_connections() {
    let server = jwt_server();
    let proxy = Proxy::start(server.addr).await;
    let client = Client::start(config(&proxy.url())).unwrap();
    client.connected(WAIT).await.unwrap();
    assert!(
        matches!(authorized(&client).await, Err(Error::Server { code, .. }) if code == "unauthorized"),
        "nothing presented yet"
    );
    assert_eq!(client.authenticate("a\nb").await, Err(Error::InvalidToken));
    assert_eq!(
        client.authenticate(&token("bob")).await.as_deref(),
        Ok("bob")
    );
    assert_eq!(authorized(&client).await, Ok(0));
    // The new connection presents the token as an `auth` message by itself.
    reconnect(&client, &proxy, 2).await;
    assert_eq!(authorized(&client).await, Ok(0));

    // A token the server refuses: an error, then close 1008 stops the client.
    let refused = client.authenticate("not-a-jwt").await;
    assert!(
        matches!(&refused, Err(Error::Server { code, .. }) if code == "unauthorized"),
        "{refused:?}"
    );
    let s = client
        .wait_for(WAIT, |s| s.state == State::Failed)
        .await
        .unwrap();
    assert!(
        matches!(s.reason, Some(Reason::ServerClosed { code: 1008, .. })),
        "{:?}",
        s.reason
    );
}
