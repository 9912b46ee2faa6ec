//! The standalone `shardcast` server: a JSON pub/sub protocol, an HTTP API, auth, limits, metrics and a status page on top of the engine.
//!
//! # Layout
//!
//! - `settings`: [`Settings`], every limit with its default, from TOML.
//! - `command`: one client message parsed into a command or the error
//!   reply, without I/O (the part the fuzz target drives).
//! - `protocol`: the client protocol (JSON text frames, parsed with
//!   simd-json); see `PROTOCOL.md`.
//! - `http`: `POST /api/publish`, `GET /healthz`, `GET /metrics`, `GET /`.
//! - `auth`: JWT (HS256) claims and topic patterns, API keys.
//! - `metrics`: per-core server counters and the Prometheus exposition.
//! - `json`: raw value spans (so `data` passes through byte for byte) and
//!   string escaping.
//! - `cli`: flags, environment, logging and signals of the binary.
//!
//! [`start`] runs a server from [`Settings`] and returns a [`Running`]
//! handle; the binary and the integration tests both use it.
//!
//! The server is written against the engine's public API only (every
//! engine item it uses is imported through `shardcast::`, never through
//! `crate::`), as any application would be; CI compiles this directory a
//! second time as a crate of its own (`server-check/`) to prove it.

pub mod auth;
pub mod cli;
pub(crate) mod command;
pub(crate) mod http;
pub mod json;
pub mod metrics;
pub(crate) mod protocol;
pub mod settings;
pub mod top_topics;

/// The pure parsers of the server's inputs, for the fuzz targets in
/// `fuzz/`: the same functions the server runs, not a stable API.
#[doc(hidden)]
pub mod fuzzing {
    pub use super::command::{
        error_json, parse_command, reply_json, topics_reply_json, Command, CommandError, Op,
    };
    pub use super::http::{
        endpoint, parse_publish_body, presented_key, Endpoint, HttpError, PublishBody, PublishItem,
    };
    pub use super::protocol::message_frame;
}

use std::cell::{Cell, RefCell};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use std::collections::VecDeque;

use rustc_hash::{FxHashMap, FxHashSet};

use shardcast::proto::handshake::Request;
use shardcast::{
    CloseCode, ConnId, Handler, HttpCtx, HttpRequest, HttpResponse, Message, Rejection, Server,
    ServerHandle, UpgradeRequest, Ws,
};

use self::auth::{Grant, Verifier};
use self::metrics::ServerCounters;
pub use self::settings::{Settings, SettingsError, SlowConsumer};

/// The topic the server publishes its live statistics to.
pub const STATS_TOPIC: &str = "$sys.stats";

/// Per-connection state.
pub struct Client {
    /// What the client may do; `None` until it authenticates.
    grant: Option<Grant>,
    /// Publish token bucket: tokens left and when it was last filled.
    tokens: f64,
    filled: Instant,
    ip: IpAddr,
}

/// The server's [`Handler`].
pub struct App {
    settings: Settings,
    verifier: Option<Verifier>,
    /// Connections per IP address. Locked once per handshake and once per
    /// close, never on the message path.
    per_ip: Mutex<FxHashMap<IpAddr, usize>>,
    /// Shared with the completion callbacks of counted publishes, which
    /// run on whichever core finishes last.
    counters: Arc<[ServerCounters]>,
    started: Instant,
}

/// The server's state on one core ([`Handler::Local`]).
#[derive(Default)]
pub struct CoreLocal {
    /// This core's connections that still owe an `auth` message; shared
    /// with the core's sweeper task.
    pending: Rc<RefCell<Pending>>,
    /// Whether this core runs its auth-deadline sweeper.
    sweeper: Cell<bool>,
    /// The copy simd-json parses in place (it rewrites strings as it
    /// goes); reused so a message costs no allocation for it.
    scratch: RefCell<Vec<u8>>,
}

impl App {
    fn new(settings: Settings, cores: usize) -> Self {
        Self {
            verifier: settings.jwt_secret.as_deref().map(Verifier::new),
            settings,
            per_ip: Mutex::new(FxHashMap::default()),
            counters: (0..cores).map(|_| ServerCounters::default()).collect(),
            started: Instant::now(),
        }
    }

    fn counters(&self, core: usize) -> &ServerCounters {
        &self.counters[core.min(self.counters.len() - 1)]
    }

    fn counters_arc(&self) -> Arc<[ServerCounters]> {
        self.counters.clone()
    }

    fn release_ip(&self, ip: IpAddr) {
        if self.settings.max_connections_per_ip == 0 {
            return;
        }
        let mut m = self.per_ip.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = m.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                m.remove(&ip);
            }
        }
    }
}

/// The token a handshake carries: `?token=` or `Authorization: Bearer`.
fn handshake_token<'a>(req: &Request<'a>) -> Option<&'a str> {
    req.query_param("token")
        .filter(|t| !t.is_empty())
        .or_else(|| {
            req.header_str("authorization")
                .and_then(|h| {
                    h.strip_prefix("Bearer ")
                        .or_else(|| h.strip_prefix("bearer "))
                })
                .map(str::trim)
        })
}

impl Handler for App {
    type Data = Client;
    type Local = CoreLocal;

    fn upgrade(&self, req: &mut UpgradeRequest<'_>) -> Result<Client, Rejection> {
        let grant = match &self.verifier {
            None => Some(Grant::anonymous()),
            Some(v) => match handshake_token(req.request()) {
                None => None,
                Some(token) => match v.verify(token) {
                    Ok(g) => Some(g),
                    Err(e) => {
                        tracing::debug!(peer = %req.peer(), error = %e, "handshake token refused");
                        self.counters(req.core())
                            .auth_failed
                            .fetch_add(1, Ordering::Relaxed);
                        return Err(Rejection::new(401, format!("{e}\n")));
                    }
                },
            },
        };
        let ip = req.peer().ip();
        let limit = self.settings.max_connections_per_ip;
        if limit > 0 {
            let mut m = self.per_ip.lock().unwrap_or_else(|e| e.into_inner());
            let n = m.entry(ip).or_insert(0);
            if *n >= limit {
                tracing::debug!(%ip, limit, "connection limit per address reached");
                return Err(Rejection::new(
                    429,
                    "too many connections from this address\n",
                ));
            }
            *n += 1;
        }
        Ok(Client {
            grant,
            tokens: f64::from(self.settings.publish_burst.max(1)),
            filled: Instant::now(),
            ip,
        })
    }

    fn open(&self, ws: &mut Ws<'_, Self>) {
        let c = self.counters(ws.core());
        if ws.data().grant.is_none() {
            let deadline = Instant::now() + Duration::from_secs(self.settings.auth_timeout_secs);
            let local = ws.local();
            {
                let mut p = local.pending.borrow_mut();
                p.deadlines.push_back((ws.id(), deadline));
                p.waiting.insert(ws.id());
            }
            if !local.sweeper.replace(true) {
                monoio::spawn(auth_sweeper(ws.handle().clone(), local.pending.clone()));
            }
        } else if self.verifier.is_some() {
            c.auth_ok.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn message(&self, ws: &mut Ws<'_, Self>, msg: Message<'_>) {
        protocol::on_message(self, ws, msg);
    }

    fn close(&self, ws: &mut Ws<'_, Self>, _code: CloseCode, _reason: &str) {
        let subs = ws.subscription_count() as i64;
        self.counters(ws.core())
            .subscriptions
            .fetch_sub(subs, Ordering::Relaxed);
        if ws.data().grant.is_none() {
            forget_pending(ws);
        }
        self.release_ip(ws.data().ip);
    }

    fn http(&self, req: &HttpRequest<'_>, ctx: &mut HttpCtx<'_, Self>) -> HttpResponse {
        http::route(self, req, ctx)
    }
}

/// One core's auth deadlines: a queue in deadline order (every connection
/// gets the same timeout) and the set of connections still waiting, so that
/// authenticating or leaving costs O(1) and the sweeper skips those.
#[derive(Default)]
struct Pending {
    deadlines: VecDeque<(ConnId, Instant)>,
    waiting: FxHashSet<ConnId>,
}

/// Drops `ws` from its core's auth deadlines.
fn forget_pending(ws: &Ws<'_, App>) {
    ws.local().pending.borrow_mut().waiting.remove(&ws.id());
}

/// Closes this core's connections that missed their auth deadline. One
/// task per core, not one timer per connection.
async fn auth_sweeper(handle: ServerHandle, pending: Rc<RefCell<Pending>>) {
    let frame = protocol::error_frame("unauthorized", "authentication timeout", None, &[]);
    loop {
        monoio::time::sleep(Duration::from_millis(250)).await;
        let now = Instant::now();
        let mut expired = Vec::new();
        {
            let mut p = pending.borrow_mut();
            while p.deadlines.front().is_some_and(|(_, d)| *d <= now) {
                let (id, _) = p.deadlines.pop_front().expect("front exists");
                if p.waiting.remove(&id) {
                    expired.push(id);
                }
            }
        }
        for id in expired {
            tracing::debug!(conn = ?id, "authentication deadline passed");
            handle.send(id, &frame);
            handle.close(id, CloseCode::POLICY_VIOLATION, "authentication timeout");
        }
    }
}

/// A running server: its engine handle and its statistics thread.
pub struct Running {
    handle: ServerHandle,
    stop_stats: Option<mpsc::Sender<()>>,
    stats: Option<JoinHandle<()>>,
    app: Arc<AppRef>,
}

/// What the statistics thread and [`Running`] share of the app.
struct AppRef {
    anonymous: bool,
    open_api: bool,
}

impl Running {
    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.handle.local_addr()
    }

    /// The engine's handle (publish, stats, shutdown).
    pub fn handle(&self) -> &ServerHandle {
        &self.handle
    }

    /// Whether clients may connect without a token.
    pub fn anonymous(&self) -> bool {
        self.app.anonymous
    }

    /// Whether `POST /api/publish` needs no key.
    pub fn open_api(&self) -> bool {
        self.app.open_api
    }

    /// Starts a graceful shutdown: close 1001 to every client, drain, stop.
    pub fn shutdown(&mut self) {
        self.stop_stats.take();
        self.handle.shutdown();
    }

    /// Waits until the server has stopped.
    pub fn join(mut self) {
        self.stop_stats.take();
        self.handle.join();
        if let Some(t) = self.stats.take() {
            let _ = t.join();
        }
    }
}

/// Starts a server with `settings` and returns once every core accepts.
///
/// # Errors
/// Binding the address fails, or a core cannot start.
pub fn start(settings: Settings) -> io::Result<Running> {
    let config = settings.engine_config();
    let cores = config.effective_cores();
    let interval = Duration::from_millis(settings.stats_interval_ms);
    let shared = Arc::new(AppRef {
        anonymous: settings.anonymous(),
        open_api: settings.api_keys.is_empty() && settings.anonymous(),
    });
    let handle = Server::new(config, App::new(settings, cores)).start()?;
    let (tx, rx) = mpsc::channel::<()>();
    let stats = if interval.is_zero() {
        None
    } else {
        let h = handle.clone();
        Some(
            std::thread::Builder::new()
                .name("shardcast-stats".into())
                .spawn(move || stats_loop(h, rx, interval))?,
        )
    };
    Ok(Running {
        handle,
        stop_stats: Some(tx),
        stats,
        app: shared,
    })
}

/// Publishes live statistics to [`STATS_TOPIC`] every `interval` until
/// told to stop.
fn stats_loop(handle: ServerHandle, stop: mpsc::Receiver<()>, interval: Duration) {
    let started = Instant::now();
    let mut prev = handle.core_stats();
    let mut prev_at = Instant::now();
    loop {
        match stop.recv_timeout(interval) {
            Err(RecvTimeoutError::Timeout) => {}
            _ => return,
        }
        let now = Instant::now();
        let cur = handle.core_stats();
        let dt = now.duration_since(prev_at).as_secs_f64().max(1e-3);
        let body = protocol::stats_json(&prev, &cur, dt, started.elapsed().as_secs_f64());
        prev = cur;
        prev_at = now;
        let frame = protocol::message_frame(STATS_TOPIC, body.as_bytes());
        handle.publish(STATS_TOPIC, &frame);
        top_topics::publish(&handle);
    }
}
