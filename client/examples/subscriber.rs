//! Subscribes to topics and prints every message, reconnecting and resubscribing as needed; Ctrl-C closes.
//!
//! `cargo run -p shardcast-client --example subscriber -- ws://127.0.0.1:8080/ws news chat`

use std::time::Duration;

use shardcast_client::{Client, Config, Event};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .unwrap_or_else(|| "ws://127.0.0.1:8080/ws".into());
    let mut topics: Vec<String> = args.collect();
    if topics.is_empty() {
        topics.push("demo".into());
    }

    let client = Client::start(Config::new(&url)?)?;
    let mut states = client.state_changes();
    tokio::spawn(async move {
        while let Ok(s) = states.recv().await {
            match s.reason {
                Some(r) => eprintln!("state: {:?} ({r})", s.state),
                None => eprintln!("state: {:?}", s.state),
            }
        }
    });
    // Subscribing works while still connecting: the registry sends it on connect.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    for t in &topics {
        let mut sub = client.subscribe(t).await?;
        let tx = tx.clone();
        tokio::spawn(async move {
            while let Some(e) = sub.recv().await {
                let _ = tx.send(e);
            }
        });
    }
    drop(tx);
    let mut report = tokio::time::interval(Duration::from_secs(10));
    report.tick().await;
    loop {
        tokio::select! {
            e = rx.recv() => match e {
                Some(Event::Message(m)) => println!("{}: {}", m.topic, m.data),
                Some(Event::Gap { recovered, last, position }) => {
                    // Positions exist on the server's history topics (--history).
                    eprintln!(
                        "resubscribed after a reconnect; missed messages recovered: {recovered} \
                         (had {last:?}, server at {position:?})"
                    )
                }
                Some(other) => eprintln!("{other:?}"),
                None => break,
            },
            _ = report.tick() => eprintln!("{:?}", client.metrics()),
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    client.close().await;
    Ok(())
}
