//! Engine configuration: cores, address and every limit, each with a documented default.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::proto::deflate::DeflateConfig;
use crate::proto::CloseCode;
use crate::streams::{HistoryConfig, HistoryPolicy};

/// What happens when a message would push a connection's outbox past
/// [`Config::outbox_limit`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SlowConsumerPolicy {
    /// Drop the new message for that connection only; the send reports
    /// [`SendStatus::Dropped`](crate::SendStatus::Dropped).
    DropMessage,
    /// Close the connection with this code (1008 or 1013 are the usual ones)
    /// and reason; what is already queued is discarded.
    Close(CloseCode, String),
}

/// Whether and how messages are compressed (permessage-deflate, RFC 7692).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Compression {
    /// No extension is negotiated: a client's offer is declined and a
    /// compressed frame from it fails the connection (1002). The default,
    /// because compression costs CPU on both ends and only pays for
    /// compressible payloads of some size, which the engine cannot know.
    #[default]
    Off,
    /// permessage-deflate is negotiated with the parameters of
    /// [`Config::deflate`], always with `server_no_context_takeover`: every
    /// message is compressed on its own, so a published message is
    /// compressed **once**, by the first core with a subscriber that
    /// negotiated compression, and the same compressed frame goes to every
    /// such subscriber on every core (subscribers without compression get
    /// the plain frame of the same publish). Direct sends are compressed
    /// per message with the core's compressor. Messages shorter than
    /// [`DeflateConfig::threshold`](crate::proto::deflate::DeflateConfig::threshold)
    /// go uncompressed. An idle connection holds no compressor state.
    /// Clients' compressed messages are inflated (bounded by
    /// [`Config::max_message_size`] while inflating).
    Shared,
    /// As [`Shared`](Self::Shared) for clients that ask for
    /// `server_no_context_takeover`; the others get a compressor of their
    /// own whose window carries over from message to message (better
    /// ratios for repetitive streams), through which every message to them
    /// goes, direct or published — one compression per message and
    /// connection, and the compressor's memory per connection (about
    /// 380 KB with a 15-bit window, from its first compressed message until
    /// it closes; see docs/design.md). Opt-in.
    Dedicated,
}

impl std::fmt::Display for Compression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Compression::Off => "off",
            Compression::Shared => "shared",
            Compression::Dedicated => "dedicated",
        })
    }
}

impl std::str::FromStr for Compression {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "off" => Ok(Compression::Off),
            "shared" => Ok(Compression::Shared),
            "dedicated" => Ok(Compression::Dedicated),
            other => Err(format!(
                "unknown compression {other:?}; expected off, shared or dedicated"
            )),
        }
    }
}

/// The engine's side of a link to other nodes (a cluster bridge such as
/// `shardcast::cluster`): told when a core gains or loses its interest in
/// a topic, and handed every publish that originates on this node.
///
/// Called on core threads and on threads publishing through a
/// [`ServerHandle`](crate::ServerHandle): an implementation queues and
/// returns, it never blocks or locks.
pub trait NodeLink: Send + Sync + std::fmt::Debug {
    /// Core `core` got its first local subscriber of `topic` (or a join
    /// waiting for the topic's history holds it) (`interested`), or lost
    /// its last one (or the join's hold). Called in order for each core,
    /// every `false` after a `true` of its own, so the node wants the topic
    /// while it has been told more `true`s than `false`s for it.
    fn interest(&self, core: usize, topic: &str, interested: bool);
    /// A publish that originated on this node: `frame` is the encoded
    /// frame every local subscriber shares. Frames that came from another
    /// node are not handed back.
    fn publish(&self, topic: &str, frame: &Bytes);
}

/// Configuration of a shardcast engine.
///
/// Build it with [`Config::new`] and the setters; every field documents its
/// default.
///
/// # Example
/// ```
/// use std::time::Duration;
/// use shardcast::{CloseCode, Config, SlowConsumerPolicy};
///
/// let config = Config::new()
///     .listen("0.0.0.0:9001".parse().unwrap())
///     .max_message_size(64 << 10)
///     .outbox_limit(256 << 10)
///     .slow_consumer(SlowConsumerPolicy::Close(CloseCode::TRY_AGAIN_LATER, "too slow".into()))
///     .ping_interval(Duration::from_secs(10))
///     .idle_timeout(Duration::from_secs(30))
///     .max_subscribers_per_topic(10_000);
/// assert_eq!(config.outbox_limit, 256 << 10);
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// Address every core listens on (each with its own SO_REUSEPORT socket).
    /// Port 0 picks a free port, shared by all cores.
    /// Default: `127.0.0.1:9001`.
    pub listen: SocketAddr,
    /// Number of cores (threads) to run. Default: the number of CPUs in the
    /// process's affinity mask (so `taskset -c 0` gives one core).
    pub cores: Option<usize>,
    /// Pin each core's thread to one CPU of the affinity mask.
    /// Default: `true`.
    pub pin: bool,
    /// Largest message, reassembled across fragments; larger ones close the
    /// connection with 1009. Default: 16 MiB.
    pub max_message_size: usize,
    /// Largest single frame. Default: 16 MiB.
    pub max_frame_size: usize,
    /// A message whose first byte has arrived must be complete (all its
    /// frames) within this, or the connection is closed with 1008: a client
    /// trickling a large message cannot hold its buffer indefinitely,
    /// whatever the idle timeout. Default: 10 s.
    pub message_timeout: Duration,
    /// Bytes one core may hold for partly received messages over all its
    /// connections; a connection whose partial message would take more is
    /// closed with 1013. Default: 256 MiB.
    pub max_reassembly_per_core: usize,
    /// Largest HTTP request head (handshake); larger gets 431.
    /// Default: 8 KiB.
    pub max_header_bytes: usize,
    /// Largest plain-HTTP request body accepted by [`Handler::http`](crate::Handler::http).
    /// Default: 1 MiB.
    pub max_http_body: usize,
    /// A connection that has not completed its handshake by then is closed.
    /// Default: 10 s.
    pub handshake_timeout: Duration,
    /// A connection from which nothing (not even a pong) arrived for this
    /// long is closed with 1001. Default: 120 s.
    pub idle_timeout: Duration,
    /// Send a ping after this long without traffic from the client, so dead
    /// peers are found and proxies keep the connection. Zero disables.
    /// Default: 30 s.
    pub ping_interval: Duration,
    /// After a close frame is sent, how long to wait for the peer's close
    /// before dropping the TCP connection. Default: 5 s.
    pub close_timeout: Duration,
    /// A plain HTTP request whose answer the application deferred
    /// ([`HttpCtx::defer`](crate::HttpCtx::defer)) is answered 504 if the
    /// answer has not come by then. Default: 30 s.
    pub http_reply_timeout: Duration,
    /// Bytes a connection may have queued for sending; a connection that
    /// stays over this for [`Config::slow_consumer_grace`] (or goes over
    /// [`Config::outbox_burst_limit`]) gets [`Config::slow_consumer`].
    /// Default: 1 MiB.
    pub outbox_limit: usize,
    /// A connection that reported backpressure gets its `drain` callback when
    /// its queued bytes fall to this level or below. Default: 64 KiB.
    pub outbox_low_water: usize,
    /// A connection over [`Config::outbox_limit`] is a slow consumer only
    /// once its socket has refused writes for this long without a break:
    /// a reader that keeps up but received a burst larger than the limit
    /// (a batch, many publishes in one loop turn) is not punished for the
    /// publisher's burst. Default: 2 s.
    pub slow_consumer_grace: Duration,
    /// Bytes a connection may have queued at most, lagging or not: the
    /// policy applies at once beyond this. Only messages get this
    /// allowance: a pong (or keepalive ping) that would take the outbox over
    /// [`Config::outbox_limit`] gets the policy at once, so a client that
    /// floods pings and reads nothing cannot make the server hold its pongs.
    /// Default: 16 MiB.
    pub outbox_burst_limit: usize,
    /// Publishes from other cores (or threads) one core's inbox holds at
    /// most; beyond it, publishes to that core are refused and counted
    /// ([`ServerHandle::inbox_refused`](crate::ServerHandle::inbox_refused)):
    /// a core far behind its peers loses publishes, not memory without
    /// bound. Default: 65,536.
    pub inbox_capacity: usize,
    /// Policy when the outbox limit would be exceeded.
    /// Default: [`SlowConsumerPolicy::Close`] with 1013 "slow consumer".
    pub slow_consumer: SlowConsumerPolicy,
    /// Most connections over all cores, counted from their accept: a socket
    /// that never sends its handshake, or sends a plain HTTP request,
    /// counts until it is answered; a WebSocket until it closes. The next
    /// connection gets 503 at once. Default: 1,000,000.
    pub max_connections: usize,
    /// Allowed `Origin` values (exact, case-insensitive); others get 403.
    /// Empty allows any origin, including none. Default: empty.
    pub allowed_origins: Vec<String>,
    /// Subprotocols the server speaks, most preferred first; the first one
    /// the client offers is selected. Default: none.
    pub subprotocols: Vec<String>,
    /// Listen backlog of each core's socket. Default: 4,096, which the
    /// kernel caps at `net.core.somaxconn` (4,096 by default since Linux
    /// 5.4). A burst of connects arrives faster than a core accepts
    /// whenever the core is held up for a few milliseconds (at 50,000
    /// connects a second, 20 ms fill 1,024 places), and a connect the full
    /// queue drops waits a second for the client's SYN to be resent.
    pub backlog: i32,
    /// Buckets of the cross-core interest table (a power of two).
    /// Default: 65,536.
    pub interest_buckets: usize,
    /// Graceful shutdown waits this long for close handshakes before it drops
    /// what is left. Default: 5 s.
    pub shutdown_timeout: Duration,
    /// Write coalescing under load: while at least
    /// [`flush_gather_min`](Self::flush_gather_min) connections have frames
    /// to write, the core waits this long, reading whatever input arrives
    /// meanwhile, before each step of 512 writes, so that frames for the
    /// same connection leave in one write. Fewer connections are written
    /// at once, so a core that is not busy adds no delay; a flush of `n`
    /// connections is delayed by at most `ceil(n / 512)` of these waits.
    /// Zero turns it off. Default: 500 µs.
    pub flush_gather: Duration,
    /// Connections with frames to write from which the core waits
    /// [`flush_gather`](Self::flush_gather) before writing. Default: 1,024.
    pub flush_gather_min: usize,
    /// How an io_uring core is told of completions: the most wanted mode;
    /// a kernel without it gets the next one down
    /// ([`TaskRun::Defer`] → [`TaskRun::Coop`] → [`TaskRun::Interrupt`]).
    /// Each core's result: [`ServerHandle::task_runs`](crate::ServerHandle::task_runs).
    /// Default: [`TaskRun::Defer`].
    pub task_run: TaskRun,
    /// Which data path an io_uring core runs. Default: [`IoPath::Direct`]
    /// (a core whose kernel or ring lacks a feature of it runs
    /// [`IoPath::Readiness`]). The environment variable
    /// `SHARDCAST_IO_PATH=direct|readiness` overrides it (to run a whole
    /// test suite on either path). Each core's result:
    /// [`ServerHandle::drivers`](crate::ServerHandle::drivers).
    pub io_path: IoPath,
    /// permessage-deflate: off, or negotiated and inflated.
    /// Default: [`Compression::Off`].
    pub compression: Compression,
    /// The permessage-deflate parameters the server negotiates when
    /// [`compression`](Self::compression) is on (window sizes, whether the
    /// client must compress every message on its own). With
    /// `client_no_context_takeover` (the default) a connection holds no
    /// inflater between messages; without it, each connection that sent a
    /// compressed message keeps one: 47 KiB measured with zlib-rs 0.6,
    /// whatever `client_max_window_bits` (it allocates a 32 KiB window
    /// always). Default: [`DeflateConfig::default`].
    pub deflate: DeflateConfig,
    /// Subscribers a topic may have on one core: a
    /// [`Ws::subscribe`](crate::Ws::subscribe) beyond it is refused with
    /// [`SubscribeError::TopicFull`](crate::SubscribeError::TopicFull).
    /// Counted per core, so that a subscribe never waits on another core:
    /// over the server a topic may reach this times the number of cores.
    /// Default: unlimited (`usize::MAX`).
    pub max_subscribers_per_topic: usize,
    /// Where interest changes and this node's own publishes go beyond the
    /// node (see [`NodeLink`]). Default: `None`, a single node.
    pub node_link: Option<Arc<dyn NodeLink>>,
    /// Per-topic history with offsets and epochs, for the topics it names
    /// (see [`crate::streams`]): their publishes go through each topic's
    /// home core, and subscriptions may start from a position
    /// ([`Ws::join`](crate::Ws::join)). Default: none.
    pub history: Option<HistoryConfig>,
}

/// How an io_uring core is told of completions (the ring's setup flags).
///
/// By default the kernel interrupts the thread that owns a ring (an
/// inter-processor interrupt) to post each completion as it happens: on a
/// busy core that is one interrupt and one reschedule per completion. The
/// two other modes let the core collect completions when it is ready for
/// them, which is what a thread-per-core engine does anyway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TaskRun {
    /// `IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_SINGLE_ISSUER` (Linux 6.1+):
    /// completions are posted only when the core asks for them, in the
    /// call it makes to wait; no interrupts.
    Defer,
    /// `IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG` (Linux 5.19+):
    /// completions are posted at the core's next system call instead of by
    /// an interrupt.
    Coop,
    /// No setup flags (every kernel with io_uring): the kernel interrupts
    /// the core to post completions.
    Interrupt,
}

/// The data path of a core on io_uring.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IoPath {
    /// Sockets accepted as direct descriptors into the ring's file table
    /// (not process descriptors: no `RLIMIT_NOFILE` bound), received by
    /// multishot `recv` into a provided-buffer ring, written by `sendmsg`
    /// submissions; no task per connection. Needs Linux 5.19 (sparse file
    /// tables, accept into an allocated slot, buffer rings; multishot
    /// receive from 6.0, single-shot receives before); a core whose
    /// kernel or ring lacks any of it runs [`IoPath::Readiness`].
    Direct,
    /// The ring (or epoll) reports readiness and the core calls `recv` and
    /// `sendmsg` itself; one task per connection. Every kernel.
    Readiness,
}

impl IoPath {
    /// This path, or the one `SHARDCAST_IO_PATH` names.
    pub(crate) fn effective(self) -> IoPath {
        match std::env::var("SHARDCAST_IO_PATH").ok().as_deref() {
            Some(s) => s.parse().unwrap_or(self),
            None => self,
        }
    }
}

impl std::fmt::Display for IoPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            IoPath::Direct => "direct",
            IoPath::Readiness => "readiness",
        })
    }
}

impl std::str::FromStr for IoPath {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "direct" => Ok(IoPath::Direct),
            "readiness" => Ok(IoPath::Readiness),
            _ => Err(format!("unknown io path {s:?} (direct or readiness)")),
        }
    }
}

impl TaskRun {
    /// The next mode to try when the kernel refuses this one.
    pub fn fallback(self) -> Option<TaskRun> {
        match self {
            TaskRun::Defer => Some(TaskRun::Coop),
            TaskRun::Coop => Some(TaskRun::Interrupt),
            TaskRun::Interrupt => None,
        }
    }
}

impl std::fmt::Display for TaskRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TaskRun::Defer => "defer",
            TaskRun::Coop => "coop",
            TaskRun::Interrupt => "interrupt",
        })
    }
}

impl std::str::FromStr for TaskRun {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "defer" => Ok(TaskRun::Defer),
            "coop" => Ok(TaskRun::Coop),
            "interrupt" => Ok(TaskRun::Interrupt),
            _ => Err(format!(
                "unknown task run mode {s:?} (defer, coop, interrupt)"
            )),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 9001)),
            cores: None,
            pin: true,
            max_message_size: 16 << 20,
            max_frame_size: 16 << 20,
            message_timeout: Duration::from_secs(10),
            max_reassembly_per_core: 256 << 20,
            max_header_bytes: 8 << 10,
            max_http_body: 1 << 20,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(120),
            ping_interval: Duration::from_secs(30),
            close_timeout: Duration::from_secs(5),
            http_reply_timeout: Duration::from_secs(30),
            outbox_limit: 1 << 20,
            outbox_low_water: 64 << 10,
            slow_consumer_grace: Duration::from_secs(2),
            inbox_capacity: 1 << 16,
            outbox_burst_limit: 16 << 20,
            slow_consumer: SlowConsumerPolicy::Close(
                CloseCode::TRY_AGAIN_LATER,
                "slow consumer".to_string(),
            ),
            max_connections: 1_000_000,
            allowed_origins: Vec::new(),
            subprotocols: Vec::new(),
            backlog: 4096,
            interest_buckets: 1 << 16,
            shutdown_timeout: Duration::from_secs(5),
            flush_gather: Duration::from_micros(500),
            flush_gather_min: 1024,
            task_run: TaskRun::Defer,
            io_path: IoPath::Direct,
            compression: Compression::Off,
            deflate: DeflateConfig::default(),
            max_subscribers_per_topic: usize::MAX,
            node_link: None,
            history: None,
        }
    }
}

macro_rules! setters {
    ($($(#[$doc:meta])* $name:ident: $ty:ty;)*) => {
        $(
            $(#[$doc])*
            pub fn $name(mut self, value: $ty) -> Self {
                self.$name = value;
                self
            }
        )*
    };
}

impl Config {
    /// The default configuration.
    pub fn new() -> Self {
        Self::default()
    }

    /// Links this node to others (a cluster bridge); see [`NodeLink`].
    pub fn node_link(mut self, link: Arc<dyn NodeLink>) -> Self {
        self.node_link = Some(link);
        self
    }

    /// Sets the number of cores.
    pub fn cores(mut self, cores: usize) -> Self {
        self.cores = Some(cores);
        self
    }

    setters! {
        /// Sets [`Config::listen`].
        listen: SocketAddr;
        /// Sets [`Config::pin`].
        pin: bool;
        /// Sets [`Config::max_message_size`].
        max_message_size: usize;
        /// Sets [`Config::max_frame_size`].
        max_frame_size: usize;
        /// Sets [`Config::message_timeout`].
        message_timeout: Duration;
        /// Sets [`Config::max_reassembly_per_core`].
        max_reassembly_per_core: usize;
        /// Sets [`Config::max_header_bytes`].
        max_header_bytes: usize;
        /// Sets [`Config::max_http_body`].
        max_http_body: usize;
        /// Sets [`Config::handshake_timeout`].
        handshake_timeout: Duration;
        /// Sets [`Config::idle_timeout`].
        idle_timeout: Duration;
        /// Sets [`Config::ping_interval`].
        ping_interval: Duration;
        /// Sets [`Config::http_reply_timeout`].
        http_reply_timeout: Duration;
        /// Sets [`Config::close_timeout`].
        close_timeout: Duration;
        /// Sets [`Config::outbox_limit`].
        outbox_limit: usize;
        /// Sets [`Config::outbox_low_water`].
        outbox_low_water: usize;
        /// Sets [`Config::inbox_capacity`].
        inbox_capacity: usize;
        /// Sets [`Config::slow_consumer_grace`].
        slow_consumer_grace: Duration;
        /// Sets [`Config::outbox_burst_limit`].
        outbox_burst_limit: usize;
        /// Sets [`Config::slow_consumer`].
        slow_consumer: SlowConsumerPolicy;
        /// Sets [`Config::max_connections`].
        max_connections: usize;
        /// Sets [`Config::allowed_origins`].
        allowed_origins: Vec<String>;
        /// Sets [`Config::subprotocols`].
        subprotocols: Vec<String>;
        /// Sets [`Config::backlog`].
        backlog: i32;
        /// Sets [`Config::interest_buckets`].
        interest_buckets: usize;
        /// Sets [`Config::shutdown_timeout`].
        shutdown_timeout: Duration;
        /// Sets [`Config::flush_gather`].
        flush_gather: Duration;
        /// Sets [`Config::flush_gather_min`].
        flush_gather_min: usize;
        /// Sets [`Config::task_run`].
        task_run: TaskRun;
        /// Sets [`Config::io_path`].
        io_path: IoPath;
        /// Sets [`Config::compression`].
        compression: Compression;
        /// Sets [`Config::deflate`].
        deflate: DeflateConfig;
        /// Sets [`Config::max_subscribers_per_topic`].
        max_subscribers_per_topic: usize;
    }

    /// Sets [`Config::history`].
    pub fn history(mut self, history: HistoryConfig) -> Self {
        self.history = Some(history);
        self
    }

    /// The history policy of `topic`, if it keeps history.
    #[inline]
    pub(crate) fn history_of(&self, topic: &str) -> Option<HistoryPolicy> {
        self.history.as_ref().and_then(|h| h.policy(topic))
    }

    /// The number of cores this configuration runs: [`Config::cores`] or
    /// the CPUs of the affinity mask.
    pub fn effective_cores(&self) -> usize {
        self.cores
            .unwrap_or_else(|| core_affinity::get_core_ids().map_or(1, |c| c.len()))
            .max(1)
    }
}
