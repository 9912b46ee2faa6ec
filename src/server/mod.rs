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
//! - `limits`: connections, subscriptions and publish rates per address,
//!   subscriptions and topics over the server, each core's share of the
//!   server's publish rate; `buckets`: the token buckets they use.
//! - `client_ip`: which address a limit counts, and which `Host` and
//!   `Origin` name this machine.
//! - `metrics`: per-core server counters and the Prometheus exposition.
//! - `sessions`: what a closed connection leaves for its client to
//!   resume (`?session=ID`), kept per home core for `session_ttl_secs`.
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
mod buckets;
pub mod cli;
mod client_ip;
pub(crate) mod command;
mod deadlines;
pub(crate) mod http;
pub mod json;
mod limits;
pub mod metrics;
pub(crate) mod protocol;
mod resume;
mod sessions;
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

use std::cell::RefCell;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;

use shardcast::cluster::{Bridge, Cluster, ClusterConfig, ClusterStats};
use shardcast::proto::handshake::Request;
use shardcast::{
    CloseCode, Handler, HttpCtx, HttpRequest, HttpResponse, Message, Rejection, Server,
    ServerHandle, UpgradeRequest, Ws,
};

use self::auth::{Grant, Verifier};
use self::limits::{count_ip, IpShared, PerIp};
pub(crate) use self::limits::{PubLimit, SubLimit};
use self::metrics::ServerCounters;
pub use self::settings::{Settings, SettingsError, SlowConsumer};

/// The topic the server publishes its live statistics to.
pub const STATS_TOPIC: &str = "$sys.stats";

/// Per-connection state.
pub struct Client {
    /// What the client may do; `None` until it authenticates. Shared: an
    /// anonymous client without a `client_id` holds the server's one
    /// anonymous grant, not a copy.
    grant: Option<Arc<Grant>>,
    /// Publish token bucket: tokens left and when it was last filled.
    tokens: f64,
    filled: Instant,
    ip: IpAddr,
    /// Whether this connection was counted under `ip` at the handshake (it
    /// came through a trusted proxy) rather than at accept.
    counted_at_upgrade: bool,
    /// What this client's address shares among its connections, reached
    /// without a lock; `None` when nothing counts per address.
    per_ip: Option<Arc<IpShared>>,
    /// Subscribes waiting for their history topics' positions.
    pending_subs: Vec<PendingSub>,
    /// Subscriptions counted but out of the engine's registry until their
    /// join completes (from a position).
    pending_gated: usize,
    /// The last join token given.
    next_join: u64,
    /// The session this connection holds, if sessions are on.
    session: Option<sessions::Held>,
    /// The session asked for with `?session=` (taken in `open`).
    resume: Option<String>,
    /// The `welcome` was sent (or, for a resumed session, is on its way).
    welcomed: bool,
    /// Took its session over from a connection still open, and waits for
    /// what that one leaves: until then, its close keeps nothing.
    awaiting_handoff: bool,
    /// Per history topic joined: the last offset the client had when the
    /// stream on this connection began, and its epoch (what a resume
    /// starts from unless the client's TCP acknowledged a later message).
    bases: Vec<(String, u64, Arc<str>)>,
}

/// The close code of a connection whose session another connection took
/// over.
pub const SESSION_RESUMED: CloseCode = CloseCode(4001);

/// Whether `id` may name a client: 1 to 128 bytes, no control characters.
fn valid_client_id(id: &str) -> bool {
    (1..=128).contains(&id.len()) && !id.chars().any(char::is_control)
}

impl App {
    /// Counts the connection under its client identity (the token's `sub`,
    /// or an anonymous client's `client_id`), within
    /// `max_connections_per_client`; over it, answers so and closes with
    /// 1008. Returns whether the connection stays.
    fn identify(&self, ws: &mut Ws<'_, Self>) -> bool {
        let Some(sub) = ws.data().grant.as_ref().and_then(|g| g.sub.clone()) else {
            return true;
        };
        let limit = match self.settings.max_connections_per_client {
            0 => usize::MAX,
            n => n,
        };
        match ws.set_client_id(&sub, limit) {
            Ok(_) => true,
            Err(n) => {
                if !ws.data().welcomed {
                    // The first frame is the welcome, even of a refusal.
                    protocol::send_welcome(ws, None, Some(&sub));
                }
                let m = format!("this client already has its {n} connections");
                let frame = protocol::error_frame("too_many_connections", &m, None, &[]);
                ws.send_prepared(&frame);
                ws.close(CloseCode::POLICY_VIOLATION, "too many connections");
                false
            }
        }
    }
}

/// A `subscribe` whose reply waits for the positions of its history topics.
pub(crate) struct PendingSub {
    token: u64,
    id: Option<Vec<u8>>,
    /// Every topic the reply lists.
    topics: Vec<String>,
    /// The topics asked from a position (the reply says `recovered`).
    recovering: Vec<String>,
    /// Topics out of the registry until the join completes.
    gated: usize,
    /// Error replies for the subscribe's refused topics, sent after it.
    after: Vec<shardcast::PreparedFrame>,
    /// A resumed session's `welcome` (its head), the reply instead of
    /// `subscribed`.
    welcome: Option<Vec<u8>>,
    /// A resumed session's topics without history, reserved and
    /// subscribed with the reply (whether each made a new topic here).
    later: Vec<(String, bool)>,
}

/// The server's [`Handler`].
pub struct App {
    settings: Settings,
    verifier: Option<Verifier>,
    /// Connections and subscriptions per IP address. Locked once per
    /// handshake and once per close, never on the message path.
    per_ip: Mutex<FxHashMap<IpAddr, PerIp>>,
    /// Subscriptions over all connections (`max_total_subscriptions`).
    subscriptions: AtomicUsize,
    /// Topics with a subscriber, counted on each core that has one
    /// (`max_topics`); only kept when that limit is set.
    topics: AtomicUsize,
    /// `publish_rate_per_ip`, if set.
    ip_publish_rate: Option<buckets::GcraRate>,
    /// One core's share of `server_publish_rate`, if set: each core has a
    /// bucket of its own, so the server-wide limit costs a publish no
    /// shared cache line.
    server_publish_rate: Option<buckets::GcraRate>,
    /// HTTP publish rate per client (API key, or address).
    http_buckets: buckets::Buckets,
    /// Shared with the completion callbacks of counted publishes, which
    /// run on whichever core finishes last.
    counters: Arc<[ServerCounters]>,
    started: Instant,
    /// The cluster bridge's counters, on a node with a broker.
    cluster: Option<Arc<ClusterStats>>,
    /// Sessions kept for resumption; `None` when `session_ttl_secs` is 0.
    sessions: Option<Arc<sessions::Sessions>>,
    /// The grant of every anonymous client that did not name itself.
    anonymous: Arc<Grant>,
}

/// The server's state on one core ([`Handler::Local`]).
#[derive(Default)]
pub struct CoreLocal {
    /// Auth deadlines and token expiries of this core's connections.
    deadlines: deadlines::Deadlines,
    /// This core's share of the server-wide publish rate.
    publish: buckets::Gcra,
    /// The copy simd-json parses in place (it rewrites strings as it
    /// goes); reused so a message costs no allocation for it.
    scratch: RefCell<Vec<u8>>,
    /// Whether this core's session sweeper runs.
    session_sweeper: std::cell::Cell<bool>,
}

impl App {
    fn new(settings: Settings, cores: usize) -> Self {
        let ip_publish_rate =
            buckets::GcraRate::new(settings.publish_rate_per_ip, settings.publish_burst_per_ip);
        let shares = cores.max(1);
        let (settings_ttl, max_sessions) = (settings.session_ttl_secs, settings.max_sessions);
        let server_publish_rate = buckets::GcraRate::new(
            settings.server_publish_rate / shares as f64,
            (settings.server_publish_burst / shares as u32).max(1),
        );
        Self {
            verifier: settings.jwt_secret.as_deref().map(|s| {
                Verifier::new(
                    s,
                    settings.jwt_issuer.as_deref(),
                    settings.jwt_audience.as_deref(),
                )
            }),
            http_buckets: buckets::Buckets::new(
                settings.http_publish_rate,
                settings.http_publish_burst,
            ),
            settings,
            per_ip: Mutex::new(FxHashMap::default()),
            subscriptions: AtomicUsize::new(0),
            topics: AtomicUsize::new(0),
            ip_publish_rate,
            server_publish_rate,
            counters: (0..cores).map(|_| ServerCounters::default()).collect(),
            started: Instant::now(),
            cluster: None,
            sessions: (settings_ttl > 0).then(|| {
                Arc::new(sessions::Sessions::new(
                    cores,
                    Duration::from_secs(settings_ttl),
                    max_sessions,
                ))
            }),
            anonymous: Arc::new(Grant::anonymous()),
        }
    }

    fn counters(&self, core: usize) -> &ServerCounters {
        &self.counters[core.min(self.counters.len() - 1)]
    }

    fn counters_arc(&self) -> Arc<[ServerCounters]> {
        self.counters.clone()
    }

    /// Whether a request's `Host` must be refused (DNS rebinding): only
    /// when the server checks it and the request names one (a request
    /// without `Host` does not come from a browser).
    fn host_refused(&self, req: &Request<'_>) -> bool {
        self.settings.checks_host()
            && req
                .header_str("host")
                .is_some_and(|h| !client_ip::host_allowed(h, &self.settings.allowed_hosts))
    }
}

/// The answer to a `Host` that is not an IP address, `localhost` or an
/// allowed host.
const HOST_REFUSED: &str = "host not allowed: name this server by IP address or localhost, or add the name with --allowed-host (allowed_hosts)\n";

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
        if self.host_refused(req.request()) {
            return Err(Rejection::new(403, HOST_REFUSED));
        }
        // Anonymous, with no allowlist of its own: a web page from elsewhere
        // must not read and publish every topic through the visitor's
        // browser. Clients that send no Origin are not browsers.
        if self.settings.anonymous() && self.settings.allowed_origins.is_empty() {
            if let Some(origin) = req.request().origin() {
                if !client_ip::is_loopback_origin(origin) {
                    return Err(Rejection::new(
                        403,
                        "origin not allowed: an anonymous server accepts pages from this machine only (set allowed_origins)\n",
                    ));
                }
            }
        }
        let grant = match &self.verifier {
            None => {
                // An anonymous client may name itself (`?client_id=`), so
                // that its connections are counted and reachable together.
                match req.request().query_param("client_id") {
                    None => Some(self.anonymous.clone()),
                    Some(raw) => {
                        let mut g = Grant::anonymous();
                        match shardcast::proto::handshake::percent_decode(raw) {
                            Some(id) if valid_client_id(&id) => g.sub = Some(id.into_owned()),
                            _ => {
                                return Err(Rejection::new(
                                    400,
                                    "client_id: 1 to 128 bytes, no control characters\n",
                                ))
                            }
                        }
                        Some(Arc::new(g))
                    }
                }
            }
            Some(v) => match handshake_token(req.request()) {
                None => None,
                Some(token) => match v.verify(token) {
                    Ok(g) => Some(Arc::new(g)),
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
        let forwarded = req.request().header_str("x-forwarded-for");
        let client =
            client_ip::client_address(req.peer().ip(), forwarded, &self.settings.trusted_proxies);
        let ip = client_ip::limit_key(client);
        // A direct client was counted when its socket was accepted
        // (`connect`); one behind a trusted proxy is known only now.
        let counted_at_upgrade = self.counts_per_ip() && self.proxied(req.peer().ip());
        let mut per_ip = None;
        if self.counts_per_ip() {
            let mut m = self.per_ip.lock().unwrap_or_else(|e| e.into_inner());
            if counted_at_upgrade {
                count_ip(&mut m, ip, self.settings.max_connections_per_ip)?;
            }
            per_ip = m.get(&ip).map(|e| e.shared.clone());
        }
        // A session to resume: any value is accepted here (an unknown one
        // gets a fresh session, not an error).
        let resume = self
            .sessions
            .as_ref()
            .and(req.request().query_param("session"))
            .and_then(shardcast::proto::handshake::percent_decode)
            .filter(|id| id.len() <= 64)
            .map(std::borrow::Cow::into_owned);
        Ok(Client {
            resume,
            welcomed: false,
            session: None,
            awaiting_handoff: false,
            bases: Vec::new(),
            grant,
            tokens: f64::from(self.settings.publish_burst.max(1)),
            filled: Instant::now(),
            ip,
            counted_at_upgrade,
            per_ip,
            pending_subs: Vec::new(),
            pending_gated: 0,
            next_join: 0,
        })
    }

    fn connect(&self, peer: SocketAddr, _core: usize) -> Result<(), Rejection> {
        if !self.counts_per_ip() || self.proxied(peer.ip()) {
            return Ok(());
        }
        let ip = client_ip::limit_key(peer.ip());
        let mut m = self.per_ip.lock().unwrap_or_else(|e| e.into_inner());
        count_ip(&mut m, ip, self.settings.max_connections_per_ip)
    }

    fn disconnect(&self, peer: SocketAddr, _core: usize) {
        if self.counts_per_ip() && !self.proxied(peer.ip()) {
            self.release_ip(client_ip::limit_key(peer.ip()));
        }
    }

    fn open(&self, ws: &mut Ws<'_, Self>) {
        if !self.identify(ws) {
            return;
        }
        self.start_session(ws);
        let c = self.counters(ws.core());
        let deadlines = &ws.local().deadlines;
        match ws.data().grant.as_ref().map(|g| g.exp) {
            None => {
                let deadline =
                    Instant::now() + Duration::from_secs(self.settings.auth_timeout_secs);
                deadlines.await_auth(ws.handle(), ws.id(), deadline);
            }
            Some(exp) => {
                if let Some(exp) = exp {
                    deadlines.watch_expiry(ws.handle(), ws.id(), exp);
                }
                if self.verifier.is_some() {
                    c.auth_ok.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    fn message(&self, ws: &mut Ws<'_, Self>, msg: Message<'_>) {
        protocol::on_message(self, ws, msg);
    }

    fn joined(&self, ws: &mut Ws<'_, Self>, token: u64, joins: &[shardcast::StreamJoin]) {
        protocol::joined(ws, token, joins);
    }

    fn close(&self, ws: &mut Ws<'_, Self>, code: CloseCode, _reason: &str) {
        self.end_session(ws, code);
        // A join still waiting keeps its topics out of the registry.
        let subs = ws.subscription_count() + ws.data().pending_gated;
        self.counters(ws.core())
            .subscriptions
            .fetch_sub(subs as i64, Ordering::Relaxed);
        // The subscriptions go after this returns; a topic this connection
        // alone holds on its core goes with them.
        let topics = if self.settings.max_topics > 0 && subs > 0 {
            ws.topics()
                .iter()
                .filter(|t| ws.local_subscriber_count(t) == 1)
                .count()
        } else {
            0
        };
        self.release_subscription(ws, subs, topics);
        ws.local().deadlines.forget(ws.id());
        if ws.data().counted_at_upgrade {
            self.release_ip(ws.data().ip);
        }
    }

    fn http(&self, req: &HttpRequest<'_>, ctx: &mut HttpCtx<'_, Self>) -> HttpResponse {
        http::route(self, req, ctx)
    }
}

/// A running server: its engine handle and its statistics thread.
pub struct Running {
    handle: ServerHandle,
    stop_stats: Option<mpsc::Sender<()>>,
    stats: Option<JoinHandle<()>>,
    app: Arc<AppRef>,
    /// The cluster bridge, on a node with a broker; stopped after the
    /// cores.
    bridge: Option<Bridge>,
}

/// What the statistics thread and [`Running`] share of the app.
struct AppRef {
    anonymous: bool,
    open_api: bool,
    /// The app's sessions, for [`Running::sessions`].
    sessions: Option<Arc<sessions::Sessions>>,
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
        if let Some(b) = self.bridge.take() {
            b.stop();
        }
    }

    /// The sessions' gauge and counters; `None` when sessions are off
    /// (`session_ttl_secs` 0).
    pub fn sessions(&self) -> Option<metrics::SessionCounts> {
        self.app.sessions.as_ref().map(|s| s.counts())
    }

    /// The cluster bridge's counters, on a node with a broker.
    pub fn cluster(&self) -> Option<&Arc<ClusterStats>> {
        self.bridge.as_ref().map(Bridge::stats)
    }
}

/// Starts a server with `settings` and returns once every core accepts.
///
/// # Errors
/// The settings are invalid ([`Settings::validate`]), binding the address
/// fails, or a core cannot start.
pub fn start(settings: Settings) -> io::Result<Running> {
    settings
        .validate()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let mut config = settings.engine_config();
    let cores = config.effective_cores();
    let cluster = match &settings.broker {
        None => None,
        Some(url) => {
            let broker = url
                .parse()
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
            // The server's own topics ($sys.stats, ...) describe this node.
            let c = Cluster::new(
                ClusterConfig::new(broker)
                    .prefix(settings.broker_prefix.clone())
                    .local_prefixes(vec!["$sys.".to_owned()]),
            )
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
            config = config.node_link(c.link());
            Some(c)
        }
    };
    let interval = Duration::from_millis(settings.stats_interval_ms);
    let anonymous = settings.anonymous();
    let open_api = settings.api_keys.is_empty() && anonymous;
    let mut app = App::new(settings, cores);
    let shared = Arc::new(AppRef {
        anonymous,
        open_api,
        sessions: app.sessions.clone(),
    });
    app.cluster = cluster.as_ref().map(Cluster::stats);
    let handle = Server::new(config, app).start()?;
    let bridge = match cluster {
        Some(c) => Some(c.start(handle.clone())?),
        None => None,
    };
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
        bridge,
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
