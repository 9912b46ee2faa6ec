//! Multi-node fanout through a broker (feature `cluster`): a node subscribes to the broker for the topics it has local subscribers of, forwards its own publications, and delivers other nodes' publications to its cores.
//!
//! # Layout
//!
//! - `config`: [`ClusterConfig`] and the broker's address.
//! - `wire`: topic names to subjects (channels) and the envelope of a
//!   publication (origin node, per-topic sequence number, name, payload).
//! - `interest`: the node's interest summed over its cores with a linger
//!   before letting go, sequence numbers, gap counting.
//! - `stats`: [`ClusterStats`], read by metrics and health checks.
//! - `nats`, `redis`: the bridge loop for each broker.
//!
//! One bridge thread per node owns the broker connection, in a tokio
//! current-thread runtime of its own. The cores reach it through the
//! [`NodeLink`] the engine is configured with ([`Cluster::link`]): interest
//! changes through an unbounded queue (never lost: they are as rare as
//! first and last subscribers), publications through a bounded one (a full
//! queue drops and counts). Publications from the broker enter the engine
//! the way [`ServerHandle::publish`] does, framed once on this node, and
//! are not handed back to the bridge.
//!
//! ```no_run
//! use shardcast::cluster::{Cluster, ClusterConfig};
//! # use shardcast::{Config, Handler, Rejection, Server, UpgradeRequest};
//! # struct App;
//! # impl Handler for App {
//! #     type Data = ();
//! #     type Local = ();
//! #     fn upgrade(&self, _: &mut UpgradeRequest<'_>) -> Result<(), Rejection> { Ok(()) }
//! # }
//! let cluster = Cluster::new(ClusterConfig::new("nats://127.0.0.1:4222".parse()?))?;
//! let config = Config::new().node_link(cluster.link());
//! let handle = Server::new(config, App).start()?;
//! let bridge = cluster.start(handle.clone())?;
//! println!("broker: {}", bridge.stats().snapshot().state);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod config;
mod interest;
mod nats;
mod redis;
mod stats;
pub mod wire;

use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use crate::config::NodeLink;
use crate::handle::ServerHandle;
use crate::proto::frame::{FrameHeader, OpCode};
use crate::proto::PreparedFrame;

pub use self::config::{BrokerKind, BrokerUrl, ClusterConfig, ClusterError};
use self::interest::{Gaps, NodeInterest, Sequencer};
pub use self::stats::{BrokerState, ClusterSnapshot, ClusterStats};
use self::wire::Envelope;
pub use self::wire::{subject, valid_prefix};

/// A sender forgets a topic's sequence after this long without a
/// publication (it starts again at 1).
const SEQ_IDLE: Duration = Duration::from_secs(300);
/// A receiver forgets an (origin, topic) after this long without a
/// publication; shorter than [`SEQ_IDLE`].
const GAP_IDLE: Duration = Duration::from_secs(120);
/// Publications taken from the queue in one go (one pipeline for Redis).
const BATCH: usize = 256;

/// One publication of this node on its way to the broker.
#[derive(Debug)]
struct Outbound {
    topic: Box<str>,
    opcode: OpCode,
    /// A slice of the frame every local subscriber shares: not copied.
    payload: Bytes,
}

/// The engine's side of the bridge: cheap, non-blocking, called on cores.
#[derive(Debug)]
struct Link {
    interest: mpsc::UnboundedSender<(Box<str>, bool)>,
    publish: mpsc::Sender<Outbound>,
    stats: Arc<ClusterStats>,
    local_prefixes: Vec<String>,
}

impl Link {
    fn stays_here(&self, topic: &str) -> bool {
        self.local_prefixes.iter().any(|p| topic.starts_with(&**p))
    }
}

impl NodeLink for Link {
    fn interest(&self, _core: usize, topic: &str, interested: bool) {
        if !self.stays_here(topic) {
            // Fails only once the bridge has stopped.
            let _ = self.interest.send((topic.into(), interested));
        }
    }

    fn publish(&self, topic: &str, frame: &Bytes) {
        if self.stays_here(topic) {
            return;
        }
        let Some((opcode, payload)) = split_frame(frame) else {
            ClusterStats::add(&self.stats.dropped_out, 1);
            return;
        };
        let out = Outbound {
            topic: topic.into(),
            opcode,
            payload,
        };
        // Counted before it can be taken off the queue.
        self.stats.queued.fetch_add(1, Ordering::Relaxed);
        if self.publish.try_send(out).is_err() {
            self.stats.queued.fetch_sub(1, Ordering::Relaxed);
            ClusterStats::add(&self.stats.dropped_out, 1);
        }
    }
}

/// The opcode and payload of a final, unmasked, uncompressed Text or
/// Binary frame; `None` for anything else (which cannot cross nodes).
fn split_frame(frame: &Bytes) -> Option<(OpCode, Bytes)> {
    let (h, len) = FrameHeader::parse(frame).ok()??;
    let end = len.checked_add(usize::try_from(h.payload_len).ok()?)?;
    let plain = h.fin && h.rsv == 0 && h.mask.is_none() && end == frame.len();
    (plain && matches!(h.opcode, OpCode::Text | OpCode::Binary))
        .then(|| (h.opcode, frame.slice(len..end)))
}

/// A node's membership of a cluster, before its bridge runs: configure the
/// engine with [`Cluster::link`], start the server, then
/// [`Cluster::start`] the bridge with its handle.
#[derive(Debug)]
pub struct Cluster {
    config: ClusterConfig,
    link: Arc<Link>,
    stats: Arc<ClusterStats>,
    interest: mpsc::UnboundedReceiver<(Box<str>, bool)>,
    publish: mpsc::Receiver<Outbound>,
}

impl Cluster {
    /// Checks `config` and makes the queues between the cores and the
    /// bridge. Connects to nothing yet.
    ///
    /// # Errors
    /// [`ClusterError::Prefix`] for a prefix that cannot begin a subject.
    pub fn new(config: ClusterConfig) -> Result<Self, ClusterError> {
        if !valid_prefix(&config.prefix) {
            return Err(ClusterError::Prefix(config.prefix));
        }
        let stats = Arc::new(ClusterStats::default());
        let (itx, irx) = mpsc::unbounded_channel();
        let (ptx, prx) = mpsc::channel(config.queue_capacity.max(1));
        Ok(Self {
            link: Arc::new(Link {
                interest: itx,
                publish: ptx,
                stats: stats.clone(),
                local_prefixes: config.local_prefixes.clone(),
            }),
            config,
            stats,
            interest: irx,
            publish: prx,
        })
    }

    /// What the engine is configured with
    /// ([`Config::node_link`](crate::Config::node_link)).
    pub fn link(&self) -> Arc<dyn NodeLink> {
        self.link.clone()
    }

    /// The bridge's counters.
    pub fn stats(&self) -> Arc<ClusterStats> {
        self.stats.clone()
    }

    /// Starts the bridge thread for the server behind `handle`. The broker
    /// need not be reachable: the bridge connects, and reconnects, in the
    /// background with jittered backoff.
    ///
    /// # Errors
    /// The thread cannot be started.
    pub fn start(self, handle: ServerHandle) -> io::Result<Bridge> {
        let (stop_tx, stop_rx) = oneshot::channel();
        let stats = self.stats.clone();
        let kind = self.config.broker.kind();
        let now = Instant::now();
        let node = Node {
            url: self.config.broker.as_str().to_owned(),
            prefix: self.config.prefix.clone(),
            linger: self.config.linger,
            origin: fastrand::u64(1..),
            handle,
            stats: self.stats.clone(),
            interest_rx: self.interest,
            publish_rx: self.publish,
            interest: NodeInterest::default(),
            seq: Sequencer::new(SEQ_IDLE, now),
            gaps: Gaps::new(GAP_IDLE, now),
        };
        let thread = std::thread::Builder::new()
            .name("shardcast-bridge".into())
            .spawn(move || {
                let stats = node.stats.clone();
                match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt.block_on(async move {
                        match kind {
                            BrokerKind::Nats => nats::run(node, stop_rx).await,
                            BrokerKind::Redis => redis::run(node, stop_rx).await,
                        }
                    }),
                    Err(e) => tracing::error!(error = %e, "cluster bridge: no runtime"),
                }
                stats.set_state(BrokerState::Stopped);
            })?;
        Ok(Bridge {
            stop: Some(stop_tx),
            thread: Some(thread),
            stats,
        })
    }
}

/// A running bridge. Dropping it stops the bridge thread.
#[derive(Debug)]
pub struct Bridge {
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    stats: Arc<ClusterStats>,
}

impl Bridge {
    /// The bridge's counters.
    pub fn stats(&self) -> &Arc<ClusterStats> {
        &self.stats
    }

    /// Stops the bridge thread and waits for it.
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        self.halt();
    }
}

/// What the bridge loop of either broker works with.
struct Node {
    url: String,
    prefix: String,
    linger: Duration,
    /// This node's id in envelopes, random per process.
    origin: u64,
    handle: ServerHandle,
    stats: Arc<ClusterStats>,
    interest_rx: mpsc::UnboundedReceiver<(Box<str>, bool)>,
    publish_rx: mpsc::Receiver<Outbound>,
    interest: NodeInterest,
    seq: Sequencer,
    gaps: Gaps,
}

impl Node {
    /// Takes up to [`BATCH`] publications off the queue (the first already
    /// taken) and stamps each: (subject, envelope). One that cannot be
    /// encoded is dropped and counted.
    fn stamp(&mut self, first: Outbound, out: &mut Vec<(String, Bytes)>) {
        let now = Instant::now();
        let mut next = Some(first);
        while let Some(o) = next {
            self.stats.queued.fetch_sub(1, Ordering::Relaxed);
            let env = Envelope {
                opcode: o.opcode,
                origin: self.origin,
                seq: self.seq.next(&o.topic, now),
                topic: &o.topic,
                payload: &o.payload,
            };
            match env.encode() {
                Ok(b) => out.push((subject(&self.prefix, &o.topic), b)),
                Err(_) => ClusterStats::add(&self.stats.dropped_out, 1),
            }
            next = if out.len() < BATCH {
                self.publish_rx.try_recv().ok()
            } else {
                None
            };
        }
    }

    /// Delivers one message from the broker to this node's cores.
    fn accept(&mut self, data: &[u8]) {
        let e = match Envelope::decode(data) {
            Ok(e) => e,
            Err(err) => {
                tracing::debug!(error = %err, "cluster: message refused");
                ClusterStats::add(&self.stats.dropped_in, 1);
                return;
            }
        };
        // Our own (Redis echoes them; NATS is told not to), a topic let go
        // of, or another topic sharing a hashed subject.
        if e.origin == self.origin || !self.interest.wants(e.topic) {
            return;
        }
        let skipped = self.gaps.record(e.origin, e.topic, e.seq, Instant::now());
        if skipped > 0 {
            ClusterStats::add(&self.stats.gaps, skipped);
        }
        let frame = PreparedFrame::from_parts(e.opcode, &[e.payload]);
        self.handle.publish_from_node(e.topic, frame.as_bytes());
        ClusterStats::add(&self.stats.received, 1);
    }

    /// Topics whose linger has run out: forgotten here, returned so the
    /// broker can be told.
    fn expired(&mut self) -> Vec<Box<str>> {
        let gone = self.interest.expired(Instant::now(), self.linger);
        for t in &gone {
            self.gaps.forget(t);
        }
        gone
    }

    fn set_subscriptions(&self, n: usize) {
        self.stats.subscriptions.store(n as u64, Ordering::Relaxed);
    }
}

/// The wait before reconnect attempt `attempt` (from 0): 100 ms doubling
/// up to 2 s, each cut by a random factor in [0.5, 1) so that nodes that
/// lost the broker together do not come back together.
fn backoff(attempt: usize) -> Duration {
    let base = 100u64 << attempt.min(5);
    let ms = base.min(2_000);
    Duration::from_millis(ms / 2 + fastrand::u64(0..ms / 2 + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_data_frames_cross() {
        let f = PreparedFrame::text("hé");
        let (op, p) = split_frame(f.as_bytes()).unwrap();
        assert_eq!((op, &p[..]), (OpCode::Text, "hé".as_bytes()));
        let big = vec![7u8; 70_000];
        let (op, p) = split_frame(PreparedFrame::binary(&big).as_bytes()).unwrap();
        assert_eq!((op, p.len()), (OpCode::Binary, big.len()));
        assert!(split_frame(PreparedFrame::ping(b"x").as_bytes()).is_none());
        let mut rsv1 = f.as_bytes().to_vec();
        rsv1[0] |= 0x40;
        assert!(split_frame(&Bytes::from(rsv1)).is_none());
        assert!(split_frame(&Bytes::from_static(&[0x81])).is_none());
    }

    #[test]
    fn the_link_queues_drops_when_full_and_keeps_local_topics_home() {
        let broker = "nats://127.0.0.1:1".parse().unwrap();
        let mut c = Cluster::new(
            ClusterConfig::new(broker)
                .queue_capacity(1)
                .local_prefixes(vec!["$sys.".into()]),
        )
        .unwrap();
        let link = c.link();
        let frame = PreparedFrame::text("x");
        link.publish("$sys.stats", frame.as_bytes());
        link.interest(0, "$sys.stats", true);
        link.publish("a", frame.as_bytes());
        link.publish("b", frame.as_bytes());
        link.publish("c", PreparedFrame::ping(b"p").as_bytes());
        link.interest(1, "a b", true);
        let s = c.stats().snapshot();
        assert_eq!((s.queued, s.dropped_out), (1, 2));
        let out = c.publish.try_recv().unwrap();
        assert_eq!((&*out.topic, &out.payload[..]), ("a", &b"x"[..]));
        assert!(c.publish.try_recv().is_err());
        assert_eq!(c.interest.try_recv().unwrap(), ("a b".into(), true));
        assert!(c.interest.try_recv().is_err());
        assert!(
            Cluster::new(ClusterConfig::new("redis://h:1".parse().unwrap()).prefix("a b")).is_err()
        );
    }

    #[test]
    fn backoff_grows_with_jitter_and_a_cap() {
        for a in 0..20 {
            let d = backoff(a);
            assert!(d >= Duration::from_millis(50) && d <= Duration::from_secs(2));
        }
        assert!(backoff(0) <= Duration::from_millis(100));
    }
}
