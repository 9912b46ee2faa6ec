//! The bridge on NATS core pub/sub: one connection (async-nats, which reconnects and resubscribes on its own), one subscription per topic the node wants.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::interest::Change;
use super::{backoff, subject, BrokerState, ClusterStats, Node};

/// Messages from the subscriptions waiting for the bridge loop.
const INBOUND: usize = 4096;

pub(super) async fn run(mut node: Node, mut stop: oneshot::Receiver<()>) {
    let stats = node.stats.clone();
    let ever = Arc::new(AtomicBool::new(false));
    let options = async_nats::ConnectOptions::new()
        .name("shardcast")
        // This node delivers its own publications itself.
        .no_echo()
        .retry_on_initial_connect()
        .max_reconnects(None)
        .connection_timeout(Duration::from_secs(2))
        .ping_interval(Duration::from_secs(5))
        .reconnect_delay_callback(backoff)
        .event_callback(move |event| {
            let (stats, ever) = (stats.clone(), ever.clone());
            async move {
                match event {
                    async_nats::Event::Connected => {
                        if ever.swap(true, Ordering::Relaxed) {
                            ClusterStats::add(&stats.reconnects, 1);
                        }
                        stats.set_state(BrokerState::Connected);
                        tracing::info!("cluster: connected to NATS");
                    }
                    async_nats::Event::Disconnected => {
                        stats.set_state(BrokerState::Connecting);
                        tracing::warn!("cluster: lost NATS, reconnecting");
                    }
                    // Messages lost to a slow subscription show up as gaps.
                    e @ (async_nats::Event::SlowConsumer(_)
                    | async_nats::Event::ServerError(_)
                    | async_nats::Event::ClientError(_)) => {
                        tracing::warn!(event = %e, "cluster: NATS");
                    }
                    other => tracing::debug!(event = %other, "cluster: NATS event"),
                }
            }
        });
    node.stats.set_state(BrokerState::Connecting);
    let client = match options.connect(node.url.as_str()).await {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, url = %node.url, "cluster: cannot use NATS");
            return;
        }
    };
    let (in_tx, mut in_rx) = mpsc::channel::<Bytes>(INBOUND);
    let mut subs: HashMap<Box<str>, JoinHandle<()>> = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut batch = Vec::new();
    loop {
        tokio::select! {
            biased;
            _ = &mut stop => break,
            Some((topic, on)) = node.interest_rx.recv() => {
                if node.interest.change(&topic, on, std::time::Instant::now()) == Change::Subscribe {
                    match client.subscribe(subject(&node.prefix, &topic)).await {
                        Ok(sub) => {
                            subs.insert(topic, tokio::spawn(pump(sub, in_tx.clone())));
                        }
                        Err(e) => tracing::error!(error = %e, "cluster: NATS subscribe failed"),
                    }
                    node.set_subscriptions(subs.len());
                }
            }
            Some(data) = in_rx.recv() => {
                node.accept(&data);
                for _ in 1..super::BATCH {
                    match in_rx.try_recv() {
                        Ok(d) => node.accept(&d),
                        Err(_) => break,
                    }
                }
            }
            Some(first) = node.publish_rx.recv() => {
                node.stamp(first, &mut batch);
                for (subject, env) in batch.drain(..) {
                    // While disconnected the client would queue, then wait:
                    // drop and count instead, and let receivers count the gap.
                    if client.connection_state() != async_nats::connection::State::Connected {
                        ClusterStats::add(&node.stats.dropped_out, 1);
                    } else if client.publish(subject, env).await.is_ok() {
                        ClusterStats::add(&node.stats.published, 1);
                    } else {
                        ClusterStats::add(&node.stats.dropped_out, 1);
                    }
                }
            }
            _ = tick.tick() => {
                let gone = node.expired();
                if !gone.is_empty() {
                    for t in gone {
                        // Dropping the subscription unsubscribes it.
                        if let Some(task) = subs.remove(&t) {
                            task.abort();
                        }
                    }
                    node.set_subscriptions(subs.len());
                }
            }
        }
    }
    for (_, task) in subs.drain() {
        task.abort();
    }
    node.set_subscriptions(0);
    // Flushes what was published; bounded, since the broker may be gone.
    let _ = tokio::time::timeout(Duration::from_secs(1), client.drain()).await;
}

/// Hands one subscription's messages to the bridge loop, in order.
async fn pump(mut sub: async_nats::Subscriber, to: mpsc::Sender<Bytes>) {
    while let Some(msg) = sub.next().await {
        if to.send(msg.payload).await.is_err() {
            return;
        }
    }
}
