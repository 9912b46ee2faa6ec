//! Publishes a numbered message to a topic every interval, queueing while disconnected, and prints each acknowledgement.
//!
//! `cargo run -p shardcast-client --example publisher -- ws://127.0.0.1:8080/ws demo 500`
//! (URL, topic, milliseconds between messages).

use std::time::Duration;

use shardcast_client::{Client, Config, Delivery, Error};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .unwrap_or_else(|| "ws://127.0.0.1:8080/ws".into());
    let topic = args.next().unwrap_or_else(|| "demo".into());
    let every: u64 = args.next().map_or(Ok(500), |s| s.parse())?;

    let client = Client::start(Config::new(&url)?)?;
    let mut tick = tokio::time::interval(Duration::from_millis(every));
    for n in 0u64.. {
        tokio::select! {
            _ = tick.tick() => {}
            _ = tokio::signal::ctrl_c() => break,
        }
        let data = format!(r#"{{"n":{n}}}"#);
        // Acknowledged publishes run on their own task so that a slow
        // answer does not hold up the next message; order is the queue's.
        let c = client.clone();
        let t = topic.clone();
        tokio::spawn(async move {
            match c.publish_acked(&t, &data, Delivery::Queue).await {
                Ok(delivered) => println!("{data} delivered to {delivered}"),
                Err(Error::QueueFull { count, .. }) => {
                    eprintln!("{data} refused: {count} already queued")
                }
                Err(e) => eprintln!("{data}: {e}"),
            }
        });
    }
    client.close().await;
    Ok(())
}
