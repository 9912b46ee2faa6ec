//! Server counters (per core, like the engine's) and the Prometheus text exposition of both.
//!
//! Written by hand rather than with a client crate: the engine already
//! keeps its counters per core as single-writer atomics, so a registry
//! would either count everything twice on the hot path or need a custom
//! collector that does what the few lines below do.

use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use shardcast::cluster::{BrokerState, ClusterSnapshot};
use shardcast::stats::REJECT_STATUSES;
use shardcast::{DriverKind, MemoryGauges, StatsSnapshot, TaskRun};

/// Error codes the server sends, in the order of [`ServerCounters::errors`].
pub const ERROR_CODES: [&str; 6] = [
    "bad_request",
    "unauthorized",
    "forbidden",
    "rate_limited",
    "too_many_subscriptions",
    "internal",
];

/// The limits a subscription can be refused by, in the order of
/// [`ServerCounters::subscriptions_refused`].
pub const SUBSCRIPTION_LIMITS: [&str; 4] = ["connection", "address", "server", "topics"];

/// The limits a publish can be refused by, in the order of
/// [`ServerCounters::publishes_refused`].
pub const PUBLISH_LIMITS: [&str; 4] = ["connection", "http_client", "address", "server"];

/// HTTP statuses the server refuses requests with, in the order of
/// [`ServerCounters::http_refusals`] (the last slot counts any other).
pub const HTTP_REFUSAL_STATUSES: [u16; 10] = [400, 401, 403, 404, 405, 411, 413, 415, 429, 500];

/// Upper bounds of the latency histogram's buckets, in seconds.
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.000_01, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.1, 1.0,
];

/// A fixed-bucket latency histogram of atomics (Prometheus buckets are
/// cumulative; these are not, and are summed on render).
#[derive(Default, Debug)]
pub struct Histogram {
    buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    sum_ns: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, d: std::time::Duration) {
        let secs = d.as_secs_f64();
        let i = LATENCY_BUCKETS
            .iter()
            .position(|&b| secs <= b)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_ns
            .fetch_add(d.as_nanos().min(u64::MAX as u128) as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, core: usize) {
        let mut cum = 0;
        for (i, b) in self.buckets.iter().enumerate() {
            cum += b.load(Ordering::Relaxed);
            let le = LATENCY_BUCKETS
                .get(i)
                .map_or_else(|| "+Inf".to_string(), |b| b.to_string());
            let _ = writeln!(out, "{name}_bucket{{core=\"{core}\",le=\"{le}\"}} {cum}");
        }
        let sum = self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "{name}_sum{{core=\"{core}\"}} {sum}");
        let _ = writeln!(out, "{name}_count{{core=\"{core}\"}} {cum}");
    }
}

/// One core's server-level counters.
#[derive(Default, Debug)]
#[repr(align(128))]
pub struct ServerCounters {
    /// `publish` messages accepted from WebSocket clients.
    pub ws_publishes: AtomicU64,
    /// Messages published through `POST /api/publish`.
    pub http_publishes: AtomicU64,
    /// Subscriptions held by this core's connections.
    pub subscriptions: AtomicI64,
    /// Tokens accepted.
    pub auth_ok: AtomicU64,
    /// Tokens refused (handshake or `auth` message) and auth deadlines.
    pub auth_failed: AtomicU64,
    /// Error messages sent, by code (see [`ERROR_CODES`]).
    pub errors: [AtomicU64; ERROR_CODES.len()],
    /// Topics a subscribe was refused by a limit: per connection, per
    /// address, server-wide subscriptions, topics (see
    /// [`SUBSCRIPTION_LIMITS`]).
    pub subscriptions_refused: [AtomicU64; SUBSCRIPTION_LIMITS.len()],
    /// Messages a publish rate refused, by limit (see [`PUBLISH_LIMITS`]).
    pub publishes_refused: [AtomicU64; PUBLISH_LIMITS.len()],
    /// Plain HTTP requests the server's handler refused, by status (see
    /// [`HTTP_REFUSAL_STATUSES`]; the last slot counts any other).
    pub http_refusals: [AtomicU64; HTTP_REFUSAL_STATUSES.len() + 1],
    /// From a counted publish's arrival (a WebSocket `publish` with an
    /// `id`, or an HTTP publish) until every core has queued it for its
    /// subscribers.
    pub fanout_latency: Histogram,
}

impl ServerCounters {
    /// Counts one error message with `code`.
    pub fn error(&self, code: &str) {
        let i = ERROR_CODES
            .iter()
            .position(|c| *c == code)
            .unwrap_or(ERROR_CODES.len() - 1);
        self.errors[i].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one HTTP request refused with `status`.
    pub fn http_refused(&self, status: u16) {
        let i = HTTP_REFUSAL_STATUSES
            .iter()
            .position(|s| *s == status)
            .unwrap_or(HTTP_REFUSAL_STATUSES.len());
        self.http_refusals[i].fetch_add(1, Ordering::Relaxed);
    }
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// `shardcast_io_uring_feature{feature=...}`: 1 for each io_uring feature
/// the kernel offers (probed at start), 0 for the others.
pub fn render_uring_features(f: &shardcast::UringFeatures) -> String {
    let mut out = String::new();
    family(
        &mut out,
        "shardcast_io_uring_feature",
        "gauge",
        "io_uring features the kernel offers beyond Linux 5.10, probed at start (1) or missing (0).",
    );
    for (name, on) in f.list() {
        let _ = writeln!(
            out,
            "shardcast_io_uring_feature{{feature=\"{name}\"}} {}",
            u8::from(on)
        );
    }
    out
}

/// Renders each core's inbox: messages waiting (a core falling behind its
/// peers shows here first) and publishes refused because it was full.
pub fn render_inboxes(depths: &[usize], refused: &[u64]) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    out.push_str("# HELP shardcast_inbox_depth Messages waiting in the core's inbox from other cores.\n# TYPE shardcast_inbox_depth gauge\n");
    for (i, d) in depths.iter().enumerate() {
        let _ = writeln!(out, "shardcast_inbox_depth{{core=\"{i}\"}} {d}");
    }
    out.push_str("# HELP shardcast_inbox_refused_total Publishes refused because the core's inbox was full.\n# TYPE shardcast_inbox_refused_total counter\n");
    for (i, r) in refused.iter().enumerate() {
        let _ = writeln!(out, "shardcast_inbox_refused_total{{core=\"{i}\"}} {r}");
    }
    out
}

/// Renders the cluster bridge's state and counters (a node with
/// `--broker`).
pub fn render_cluster(s: &ClusterSnapshot) -> String {
    let mut out = String::new();
    family(
        &mut out,
        "shardcast_broker_connected",
        "gauge",
        "1 while the node is connected to its cluster's broker.",
    );
    let up = u8::from(s.state == BrokerState::Connected);
    let _ = writeln!(out, "shardcast_broker_connected {up}");
    for (name, kind, help, v) in [
        ("shardcast_broker_reconnects_total", "counter", "Broker connections re-established after a loss.", s.reconnects),
        ("shardcast_broker_published_total", "counter", "This node's publications handed to the broker.", s.published),
        ("shardcast_broker_publish_dropped_total", "counter", "This node's publications not handed to the broker (queue full, broker unreachable, frame that cannot cross).", s.dropped_out),
        ("shardcast_broker_received_total", "counter", "Publications from other nodes delivered to this node's cores.", s.received),
        ("shardcast_broker_refused_total", "counter", "Messages from the broker that were not valid envelopes.", s.dropped_in),
        ("shardcast_broker_gaps_total", "counter", "Publications of other nodes missed, counted from their sequence numbers.", s.gaps),
        ("shardcast_broker_queue_depth", "gauge", "Publications waiting in the bridge's queue.", s.queued),
        ("shardcast_broker_subscriptions", "gauge", "Topics the node holds a broker subscription for.", s.subscriptions),
    ] {
        family(&mut out, name, kind, help);
        let _ = writeln!(out, "{name} {v}");
    }
    out
}

/// What the server's sessions count (see PROTOCOL.md, sessions).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionCounts {
    /// Sessions kept for resumption now (their connection ended).
    pub kept: u64,
    /// Sessions resumed, from a kept one or taken over from an open one.
    pub resumed: u64,
    /// Kept sessions dropped at their TTL.
    pub expired: u64,
    /// Kept sessions dropped to stay within `max_sessions`.
    pub evicted: u64,
    /// Bytes the kept sessions hold, estimated.
    pub bytes: u64,
}

/// Renders the sessions' gauge and counters.
pub fn render_sessions(c: &SessionCounts) -> String {
    let mut out = String::new();
    for (name, kind, help, v) in [
        (
            "shardcast_sessions",
            "gauge",
            "Sessions kept for resumption (their connection ended, within session_ttl_secs).",
            c.kept,
        ),
        (
            "shardcast_sessions_bytes",
            "gauge",
            "Bytes the kept sessions hold, estimated.",
            c.bytes,
        ),
        (
            "shardcast_sessions_resumed_total",
            "counter",
            "Sessions resumed with ?session=, kept or taken over from an open connection.",
            c.resumed,
        ),
        (
            "shardcast_sessions_expired_total",
            "counter",
            "Kept sessions dropped at their TTL.",
            c.expired,
        ),
        (
            "shardcast_sessions_evicted_total",
            "counter",
            "Kept sessions dropped to stay within max_sessions.",
            c.evicted,
        ),
    ] {
        family(&mut out, name, kind, help);
        let _ = writeln!(out, "{name} {v}");
    }
    out
}

/// Renders each core's io driver and, on io_uring, how its ring is told of
/// completions (`task_run`: defer, coop or interrupt; see
/// [`shardcast::TaskRun`]), as an info gauge of value 1.
pub fn render_drivers(drivers: &[DriverKind], task_runs: &[Option<TaskRun>]) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    family(
        &mut out,
        "shardcast_core_driver",
        "gauge",
        "The core's io driver and io_uring completion mode (value 1).",
    );
    for (i, d) in drivers.iter().enumerate() {
        let run = task_runs
            .get(i)
            .copied()
            .flatten()
            .map_or_else(|| "none".to_string(), |t| t.to_string());
        let _ = writeln!(
            out,
            "shardcast_core_driver{{core=\"{i}\",driver=\"{d}\",task_run=\"{run}\"}} 1"
        );
    }
    out
}

/// Renders the Prometheus text format (version 0.0.4): engine counters per
/// core (label `core`), rejections by status, server counters.
pub fn render(cores: &[StatsSnapshot], server: &[ServerCounters], uptime_secs: f64) -> String {
    let mut out = String::with_capacity(4096);
    type Get = fn(&StatsSnapshot) -> u64;
    let engine: [(&str, &str, &str, Get); 27] = [
        (
            "shardcast_connections_active",
            "gauge",
            "Open WebSocket connections.",
            |s| s.active,
        ),
        (
            "shardcast_connections_peak",
            "gauge",
            "Most WebSocket connections open at once.",
            |s| s.peak,
        ),
        (
            "shardcast_connections_total",
            "counter",
            "WebSocket connections upgraded.",
            |s| s.upgrades,
        ),
        (
            "shardcast_tcp_accepted_total",
            "counter",
            "TCP connections accepted.",
            |s| s.accepted,
        ),
        (
            "shardcast_sockets_open",
            "gauge",
            "TCP connections held, in any state.",
            |s| s.sockets,
        ),
        (
            "shardcast_messages_in_total",
            "counter",
            "Data messages received from clients.",
            |s| s.messages_in,
        ),
        (
            "shardcast_bytes_in_total",
            "counter",
            "Bytes received.",
            |s| s.bytes_in,
        ),
        (
            "shardcast_bytes_out_total",
            "counter",
            "Bytes queued for clients (frames times recipients).",
            |s| s.bytes_out,
        ),
        (
            "shardcast_bytes_written_total",
            "counter",
            "Bytes written to sockets.",
            |s| s.write_bytes,
        ),
        (
            "shardcast_socket_writes_total",
            "counter",
            "Writes to sockets (sendmsg calls); frames_written over writes is the frames one write carries.",
            |s| s.writes,
        ),
        (
            "shardcast_frames_written_total",
            "counter",
            "Frames (messages and control frames) completely written to sockets.",
            |s| s.frames_written,
        ),
        (
            "shardcast_write_gathers_total",
            "counter",
            "Waits of flush_gather for more frames before a step of writes (write coalescing under load).",
            |s| s.gathers,
        ),
        (
            "shardcast_recv_no_buffers_total",
            "counter",
            "Direct io_uring path: receives that found every provided buffer in use (re-armed at once).",
            |s| s.recv_no_buffers,
        ),
        (
            "shardcast_publishes_total",
            "counter",
            "Publishes started on a core.",
            |s| s.publishes,
        ),
        (
            "shardcast_deliveries_total",
            "counter",
            "Messages queued for subscribers.",
            |s| s.deliveries,
        ),
        (
            "shardcast_dropped_total",
            "counter",
            "Messages dropped by the slow-consumer policy.",
            |s| s.dropped,
        ),
        (
            "shardcast_discarded_total",
            "counter",
            "Messages discarded before being written (to a closing connection, by a slow-consumer close, or lost with a connection that ended).",
            |s| s.discarded,
        ),
        (
            "shardcast_compressions_total",
            "counter",
            "Messages compressed (permessage-deflate). Shared compression: one per publish that a subscriber took compressed, whatever the number of subscribers and cores, plus one per compressed direct send.",
            |s| s.compressions,
        ),
        (
            "shardcast_compress_in_bytes_total",
            "counter",
            "Bytes of frames given to the compressor.",
            |s| s.compress_in,
        ),
        (
            "shardcast_compress_out_bytes_total",
            "counter",
            "Bytes of the frames the compressor made (plain size when a frame did not shrink).",
            |s| s.compress_out,
        ),
        (
            "shardcast_messages_out_compressed_total",
            "counter",
            "Data messages queued compressed (RSV1), of shardcast_messages_out_total.",
            |s| s.compressed_out,
        ),
        (
            "shardcast_slow_consumer_closes_total",
            "counter",
            "Connections closed as slow consumers.",
            |s| s.slow_closes,
        ),
        (
            "shardcast_protocol_errors_total",
            "counter",
            "WebSocket protocol violations.",
            |s| s.protocol_errors,
        ),
        (
            "shardcast_handler_panics_total",
            "counter",
            "Application callbacks that panicked (connection closed with 1011, or 500).",
            |s| s.handler_panics,
        ),
        (
            "shardcast_message_timeouts_total",
            "counter",
            "Connections closed (1008) because a message did not complete in time.",
            |s| s.message_timeouts,
        ),
        (
            "shardcast_reassembly_refused_total",
            "counter",
            "Connections closed (1013) by the per-core budget for partial messages.",
            |s| s.reassembly_refused,
        ),
        (
            "shardcast_http_requests_total",
            "counter",
            "Plain HTTP requests answered.",
            |s| s.http_requests,
        ),
    ];
    for (name, kind, help, get) in engine {
        family(&mut out, name, kind, help);
        for (i, s) in cores.iter().enumerate() {
            let _ = writeln!(out, "{name}{{core=\"{i}\"}} {}", get(s));
        }
    }
    // Sizes and capacities of each core's tables, as of its last tick
    // (once a second): read from the same single-writer atomics, so a
    // scrape never waits for a core.
    type GetM = fn(&MemoryGauges) -> u64;
    let memory: [(&str, &str, GetM); 14] = [
        (
            "shardcast_slab_connections",
            "Connections in the connection slab (any state).",
            |m| m.connections,
        ),
        (
            "shardcast_slab_capacity",
            "Slots of the connection slab.",
            |m| m.connection_slots,
        ),
        (
            "shardcast_registry_topics",
            "Topics with a subscriber on the core.",
            |m| m.topics,
        ),
        (
            "shardcast_registry_subscriptions",
            "Subscriber-topic pairs in the core's registry.",
            |m| m.subscriptions,
        ),
        (
            "shardcast_registry_index_capacity",
            "Entries the registry's topic-name index holds without growing.",
            |m| m.topic_index_capacity,
        ),
        (
            "shardcast_registry_topic_slots",
            "Slots of the registry's topic table.",
            |m| m.topic_slots,
        ),
        (
            "shardcast_registry_subscriber_lists",
            "Slots of the registry's per-connection subscription lists.",
            |m| m.subscriber_lists,
        ),
        (
            "shardcast_interest_refs_capacity",
            "Entries the interest-bucket reference counts hold without growing.",
            |m| m.interest_refs_capacity,
        ),
        (
            "shardcast_timer_entries",
            "Timer wheel entries, stale ones included.",
            |m| m.timer_entries,
        ),
        (
            "shardcast_timer_capacity",
            "Entries the timer wheel's slots hold without growing.",
            |m| m.timer_capacity,
        ),
        (
            "shardcast_flush_list_capacity",
            "Room in the list of connections waiting to be written.",
            |m| m.dirty_capacity,
        ),
        (
            "shardcast_dedicated_compressors",
            "Connections holding a compressor of their own (compression dedicated).",
            |m| m.dedicated_compressors,
        ),
        (
            "shardcast_history_streams",
            "History topics whose home is the core.",
            |m| m.history_streams,
        ),
        (
            "shardcast_history_bytes",
            "Bytes of publications the core keeps in topic histories.",
            |m| m.history_bytes,
        ),
    ];
    for (name, help, get) in memory {
        family(&mut out, name, "gauge", help);
        for (i, s) in cores.iter().enumerate() {
            let _ = writeln!(out, "{name}{{core=\"{i}\"}} {}", get(&s.memory));
        }
    }
    family(
        &mut out,
        "shardcast_handshake_rejections_total",
        "counter",
        "Handshakes refused, by HTTP status.",
    );
    for (i, s) in cores.iter().enumerate() {
        for (j, status) in REJECT_STATUSES
            .iter()
            .map(|s| s.to_string())
            .chain(["other".into()])
            .enumerate()
        {
            let n = s.rejected.get(j).copied().unwrap_or(0);
            let _ = writeln!(
                out,
                "shardcast_handshake_rejections_total{{core=\"{i}\",status=\"{status}\"}} {n}"
            );
        }
    }
    type GetS = fn(&ServerCounters) -> String;
    let srv: [(&str, &str, &str, GetS); 5] = [
        (
            "shardcast_ws_publishes_total",
            "counter",
            "Publish messages accepted from WebSocket clients.",
            |c| c.ws_publishes.load(Ordering::Relaxed).to_string(),
        ),
        (
            "shardcast_http_publishes_total",
            "counter",
            "Messages published through the HTTP API.",
            |c| c.http_publishes.load(Ordering::Relaxed).to_string(),
        ),
        (
            "shardcast_subscriptions",
            "gauge",
            "Subscriptions held.",
            |c| c.subscriptions.load(Ordering::Relaxed).max(0).to_string(),
        ),
        (
            "shardcast_auth_ok_total",
            "counter",
            "Tokens accepted.",
            |c| c.auth_ok.load(Ordering::Relaxed).to_string(),
        ),
        (
            "shardcast_auth_failed_total",
            "counter",
            "Tokens refused and authentication deadlines missed.",
            |c| c.auth_failed.load(Ordering::Relaxed).to_string(),
        ),
    ];
    for (name, kind, help, get) in srv {
        family(&mut out, name, kind, help);
        for (i, c) in server.iter().enumerate() {
            let _ = writeln!(out, "{name}{{core=\"{i}\"}} {}", get(c));
        }
    }
    family(
        &mut out,
        "shardcast_client_errors_total",
        "counter",
        "Error messages sent to clients, by code.",
    );
    for (i, c) in server.iter().enumerate() {
        for (j, code) in ERROR_CODES.iter().enumerate() {
            let n = c.errors[j].load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "shardcast_client_errors_total{{core=\"{i}\",code=\"{code}\"}} {n}"
            );
        }
    }
    family(
        &mut out,
        "shardcast_subscriptions_refused_total",
        "counter",
        "Subscriptions refused, by the limit that refused them.",
    );
    for (i, c) in server.iter().enumerate() {
        for (j, limit) in SUBSCRIPTION_LIMITS.iter().enumerate() {
            let n = c.subscriptions_refused[j].load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "shardcast_subscriptions_refused_total{{core=\"{i}\",limit=\"{limit}\"}} {n}"
            );
        }
    }
    family(
        &mut out,
        "shardcast_publishes_refused_total",
        "counter",
        "Messages refused by a publish rate, by the limit that refused them.",
    );
    for (i, c) in server.iter().enumerate() {
        for (j, limit) in PUBLISH_LIMITS.iter().enumerate() {
            let n = c.publishes_refused[j].load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "shardcast_publishes_refused_total{{core=\"{i}\",limit=\"{limit}\"}} {n}"
            );
        }
    }
    family(
        &mut out,
        "shardcast_http_refusals_total",
        "counter",
        "Plain HTTP requests refused by the server, by status.",
    );
    for (i, c) in server.iter().enumerate() {
        for (j, status) in HTTP_REFUSAL_STATUSES
            .iter()
            .map(u16::to_string)
            .chain(["other".into()])
            .enumerate()
        {
            let n = c.http_refusals[j].load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "shardcast_http_refusals_total{{core=\"{i}\",status=\"{status}\"}} {n}"
            );
        }
    }
    let name = "shardcast_fanout_latency_seconds";
    family(
        &mut out,
        name,
        "histogram",
        "From a counted publish's arrival until every core has queued it.",
    );
    for (i, c) in server.iter().enumerate() {
        c.fanout_latency.render(&mut out, name, i);
    }
    family(
        &mut out,
        "shardcast_uptime_seconds",
        "gauge",
        "Seconds since the server started.",
    );
    let _ = writeln!(out, "shardcast_uptime_seconds {uptime_secs:.3}");
    out
}
