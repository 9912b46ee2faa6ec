//! Server counters (per core, like the engine's) and the Prometheus text exposition of both.
//!
//! Written by hand rather than with a client crate: the engine already
//! keeps its counters per core as single-writer atomics, so a registry
//! would either count everything twice on the hot path or need a custom
//! collector that does what the few lines below do.

use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use crate::shard::stats::REJECT_STATUSES;
use crate::StatsSnapshot;

/// Error codes the server sends, in the order of [`ServerCounters::errors`].
pub const ERROR_CODES: [&str; 7] = [
    "bad_request",
    "unauthorized",
    "forbidden",
    "rate_limited",
    "too_large",
    "too_many_subscriptions",
    "internal",
];

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
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Renders the Prometheus text format (version 0.0.4): engine counters per
/// core (label `core`), rejections by status, server counters.
pub fn render(cores: &[StatsSnapshot], server: &[ServerCounters], uptime_secs: f64) -> String {
    let mut out = String::with_capacity(4096);
    type Get = fn(&StatsSnapshot) -> u64;
    let engine: [(&str, &str, &str, Get); 15] = [
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
        "shardcast_uptime_seconds",
        "gauge",
        "Seconds since the server started.",
    );
    let _ = writeln!(out, "shardcast_uptime_seconds {uptime_secs:.3}");
    out
}
