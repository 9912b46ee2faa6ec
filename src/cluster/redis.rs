//! The bridge on Redis pub/sub: a subscriber connection and a publisher connection (RESP2 keeps them apart), reconnected with jittered backoff, every wanted channel subscribed again in one command.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use redis::aio::{MultiplexedConnection, PubSubSink, PubSubStream};
use tokio::sync::oneshot;

use super::interest::Change;
use super::{backoff, subject, BrokerState, ClusterStats, Node};

/// How long one connection attempt, or one command, may take before the
/// connection counts as lost.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How often an idle bridge checks that Redis still answers (a broker
/// gone without a reset would otherwise go unnoticed by a node that only
/// listens).
const PING_EVERY: Duration = Duration::from_secs(5);

pub(super) async fn run(mut node: Node, mut stop: oneshot::Receiver<()>) {
    let client = match redis::Client::open(node.url.as_str()) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, url = %node.url, "cluster: cannot use Redis");
            return;
        }
    };
    let mut attempt = 0;
    let mut ever = false;
    let mut batch = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        node.stats.set_state(BrokerState::Connecting);
        let connected = tokio::select! {
            _ = &mut stop => return,
            r = tokio::time::timeout(CONNECT_TIMEOUT, connect(&client, &node)) => match r {
                Ok(Ok(c)) => Some(c),
                Ok(Err(e)) => { tracing::warn!(error = %e, "cluster: Redis unreachable"); None }
                Err(_) => { tracing::warn!("cluster: Redis connection timed out"); None }
            },
        };
        let Some((mut publisher, mut sink, mut stream)) = connected else {
            // Wait, carrying on with interest and dropping (counted) what
            // cannot be published.
            let until = tokio::time::Instant::now() + backoff(attempt);
            attempt += 1;
            loop {
                tokio::select! {
                    biased;
                    _ = &mut stop => return,
                    _ = tokio::time::sleep_until(until) => break,
                    Some((topic, on)) = node.interest_rx.recv() => {
                        node.interest.change(&topic, on, Instant::now());
                    }
                    Some(first) = node.publish_rx.recv() => {
                        node.stamp(first, &mut batch);
                        ClusterStats::add(&node.stats.dropped_out, batch.len() as u64);
                        batch.clear();
                    }
                    _ = tick.tick() => { node.expired(); }
                }
            }
            continue;
        };
        attempt = 0;
        if std::mem::replace(&mut ever, true) {
            ClusterStats::add(&node.stats.reconnects, 1);
        }
        node.set_subscriptions(node.interest.len());
        node.stats.set_state(BrokerState::Connected);
        tracing::info!("cluster: connected to Redis");
        let mut ping =
            tokio::time::interval_at(tokio::time::Instant::now() + PING_EVERY, PING_EVERY);
        loop {
            tokio::select! {
                biased;
                _ = &mut stop => return,
                Some((topic, on)) = node.interest_rx.recv() => {
                    if node.interest.change(&topic, on, Instant::now()) == Change::Subscribe {
                        node.set_subscriptions(node.interest.len());
                        let sub = sink.subscribe(subject(&node.prefix, &topic));
                        if !matches!(tokio::time::timeout(CONNECT_TIMEOUT, sub).await, Ok(Ok(()))) {
                            break;
                        }
                    }
                }
                msg = stream.next() => match msg {
                    Some(m) => node.accept(m.get_payload_bytes()),
                    None => break,
                },
                Some(first) = node.publish_rx.recv() => {
                    node.stamp(first, &mut batch);
                    let n = batch.len() as u64;
                    let mut pipe = redis::pipe();
                    for (subject, env) in batch.drain(..) {
                        pipe.cmd("PUBLISH").arg(subject).arg(&env[..]).ignore();
                    }
                    // A failed batch may have reached the broker in part;
                    // receivers count what they miss by sequence number.
                    let sent = tokio::time::timeout(CONNECT_TIMEOUT, pipe.query_async::<()>(&mut publisher)).await;
                    if matches!(sent, Ok(Ok(()))) {
                        ClusterStats::add(&node.stats.published, n);
                    } else {
                        ClusterStats::add(&node.stats.dropped_out, n);
                        break;
                    }
                }
                _ = tick.tick() => {
                    let gone = node.expired();
                    if !gone.is_empty() {
                        node.set_subscriptions(node.interest.len());
                        let subjects: Vec<String> =
                            gone.iter().map(|t| subject(&node.prefix, t)).collect();
                        let unsub = sink.unsubscribe(subjects);
                        if !matches!(tokio::time::timeout(CONNECT_TIMEOUT, unsub).await, Ok(Ok(()))) {
                            break;
                        }
                    }
                }
                _ = ping.tick() => {
                    let cmd = redis::cmd("PING");
                    let pong = cmd.query_async::<()>(&mut publisher);
                    if !matches!(tokio::time::timeout(CONNECT_TIMEOUT, pong).await, Ok(Ok(()))) {
                        break;
                    }
                }
            }
        }
        tracing::warn!("cluster: lost Redis, reconnecting");
    }
}

/// Both connections, with every wanted channel subscribed in one command.
async fn connect(
    client: &redis::Client,
    node: &Node,
) -> redis::RedisResult<(MultiplexedConnection, PubSubSink, PubSubStream)> {
    let publisher = client.get_multiplexed_async_connection().await?;
    let (mut sink, stream) = client.get_async_pubsub().await?.split();
    let subjects: Vec<String> = node
        .interest
        .topics()
        .map(|t| subject(&node.prefix, t))
        .collect();
    if !subjects.is_empty() {
        sink.subscribe(subjects).await?;
    }
    Ok((publisher, sink, stream))
}
