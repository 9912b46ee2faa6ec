//! Verifies that a client with its own heartbeat off stays connected past the server's idle timeout because it answers the server's pings, and that the server does close a connection that answers none.

mod support;

use std::time::Duration;

use shardcast_client::{Client, Config, Error, State};
use support::Server;

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answering_the_servers_pings_keeps_an_idle_connection() {
    // Silent clients are pinged after 1 s (the server's timer counts whole
    // seconds: a third of 2 s rounds up) and dropped after 2 s.
    let server = Server::start(0, &["--idle-timeout-secs", "2"]);
    let client = Client::start(Config::new(&server.url()).unwrap().with_heartbeat(None)).unwrap();
    client.connected(WAIT).await.unwrap();
    let _sub = client.subscribe("quiet").await.unwrap();

    // Two idle timeouts pass without the connection changing.
    let changed = client
        .wait_for(Duration::from_secs(4), |s| {
            s.state != State::Connected || s.connections != 1
        })
        .await;
    assert!(matches!(changed, Err(Error::Timeout)), "{changed:?}");
    assert_eq!(client.metrics().reconnects, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_answers_nothing_is_closed_by_the_server() {
    // The control for the test above: a raw socket that completes the
    // handshake and then never reads is closed at the idle timeout.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = Server::start(0, &["--idle-timeout-secs", "2"]);
    let mut s = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    s.write_all(
        b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .await
    .unwrap();
    // Read (and never answer) until the server closes; the pings and its
    // Close frame arrive as bytes.
    let mut buf = vec![0u8; 4096];
    let mut total = 0;
    let closed = tokio::time::timeout(WAIT, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => total += n,
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "the server kept a connection that never answered"
    );
    assert!(total > 0);
}
