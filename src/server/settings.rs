//! The server's settings: every limit with its default, loadable from TOML and overridden by flags and `SHARDCAST_*` variables.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use shardcast::cluster::BrokerUrl;
use shardcast::proto::deflate::DeflateConfig;
use shardcast::{
    CloseCode, Compression, Config, HistoryConfig, HistoryPolicy, SlowConsumerPolicy, TaskRun,
};

/// What happens to a client that reads slower than messages arrive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SlowConsumer {
    /// Close it with 1013 ("try again later"), discarding what is queued.
    Close,
    /// Drop the messages that do not fit; the connection stays.
    Drop,
}

/// permessage-deflate (RFC 7692); see [`shardcast::Compression`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum CompressionSetting {
    /// Not negotiated.
    Off,
    /// Every message compressed on its own: a publish once for all subscribers.
    Shared,
    /// A compressor with its own window per connection that wants one.
    Dedicated,
}

impl From<CompressionSetting> for Compression {
    fn from(c: CompressionSetting) -> Compression {
        match c {
            CompressionSetting::Off => Compression::Off,
            CompressionSetting::Shared => Compression::Shared,
            CompressionSetting::Dedicated => Compression::Dedicated,
        }
    }
}

/// Topics whose names match `pattern` keep history (`[[namespace]]` in
/// TOML, `--history PATTERN=SIZE,TTL_SECS` on the command line).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Namespace {
    /// A topic name, or a pattern where `*` stands for any run of
    /// characters (`chat.*`, `*.prices`, `*`).
    pub pattern: String,
    /// Publications kept per topic. Default: 0 (no history).
    #[serde(default)]
    pub history_size: usize,
    /// Seconds a publication is kept. Default: 300.
    #[serde(default = "default_history_ttl")]
    pub history_ttl_secs: u64,
    /// Bytes of publications kept per topic. Default: 1 MiB.
    #[serde(default = "default_history_bytes")]
    pub history_max_bytes: usize,
}

fn default_history_ttl() -> u64 {
    300
}

fn default_history_bytes() -> usize {
    1 << 20
}

impl Namespace {
    /// Whether `topic` matches the pattern.
    pub fn matches(&self, topic: &str) -> bool {
        glob(self.pattern.as_bytes(), topic.as_bytes())
    }
}

impl std::str::FromStr for Namespace {
    type Err = String;
    /// `PATTERN=SIZE,TTL_SECS`, e.g. `chat.*=100,300`.
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?}: expected PATTERN=SIZE,TTL_SECS, e.g. 'chat.*=100,300'");
        let (pattern, rest) = s.rsplit_once('=').ok_or_else(bad)?;
        let (size, ttl) = rest.split_once(',').ok_or_else(bad)?;
        if pattern.is_empty() {
            return Err(bad());
        }
        Ok(Self {
            pattern: pattern.to_owned(),
            history_size: size.trim().parse().map_err(|_| bad())?,
            history_ttl_secs: ttl.trim().parse().map_err(|_| bad())?,
            history_max_bytes: default_history_bytes(),
        })
    }
}

/// `*` matches any run of bytes, everything else itself.
fn glob(p: &[u8], t: &[u8]) -> bool {
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// How each core's io_uring ring is told of completions, the most wanted
/// mode (an older kernel gets the next one down); see [`shardcast::TaskRun`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum TaskRunSetting {
    /// DEFER_TASKRUN (Linux 6.1+): completions collected when the core waits.
    Defer,
    /// COOP_TASKRUN (Linux 5.19+): completions at the core's next system call.
    Coop,
    /// No setup flags: the kernel interrupts the core for each completion.
    Interrupt,
}

/// The data path of an io_uring core; see [`shardcast::IoPath`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum IoPathSetting {
    /// Direct descriptors, provided buffers, sends as submissions (Linux
    /// 5.19+; the readiness path where the kernel lacks them).
    Direct,
    /// Readiness, then recv/sendmsg by the core (every kernel).
    Readiness,
}

impl From<IoPathSetting> for shardcast::IoPath {
    fn from(p: IoPathSetting) -> shardcast::IoPath {
        match p {
            IoPathSetting::Direct => shardcast::IoPath::Direct,
            IoPathSetting::Readiness => shardcast::IoPath::Readiness,
        }
    }
}

impl From<TaskRunSetting> for TaskRun {
    fn from(t: TaskRunSetting) -> TaskRun {
        match t {
            TaskRunSetting::Defer => TaskRun::Defer,
            TaskRunSetting::Coop => TaskRun::Coop,
            TaskRunSetting::Interrupt => TaskRun::Interrupt,
        }
    }
}

/// Settings of a `shardcast` server.
///
/// Every field documents its default; the TOML file uses the same names.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct Settings {
    /// Address to listen on, for WebSocket and HTTP alike. Loopback by
    /// default so that a server started without auth is not reachable from
    /// the network by accident. Default: `127.0.0.1:8080`.
    pub listen: SocketAddr,
    /// Cores (threads) to run. Default: the CPUs of the affinity mask.
    pub cores: Option<usize>,
    /// Pin each core's thread to one CPU. Default: `true`.
    pub pin: bool,
    /// HS256 secret for client JWTs. When set, every WebSocket client must
    /// authenticate; when unset, anyone may subscribe and publish to any
    /// topic (a warning says so at start). Default: unset.
    pub jwt_secret: Option<String>,
    /// When set, a token's `iss` claim must equal it. Default: unset.
    pub jwt_issuer: Option<String>,
    /// When set, a token's `aud` claim must name it. Default: unset.
    pub jwt_audience: Option<String>,
    /// API keys for `POST /api/publish`. When empty, the HTTP API is open
    /// if `jwt_secret` is unset too, and closed otherwise. Default: none.
    pub api_keys: Vec<String>,
    /// `GET /metrics`, `GET /healthz` and the status page need one of the
    /// API keys, like the publish API (needs `api_keys`). Default: false.
    pub protect_status: bool,
    /// A client that connected without a token must send an `auth` message
    /// within this many seconds, or gets `unauthorized` and close 1008.
    /// Default: 10.
    pub auth_timeout_secs: u64,
    /// Connections over all cores, counted from their accept: an idle
    /// socket or a plain HTTP request until it is answered, a WebSocket
    /// until it closes; the next connection gets 503 at once.
    /// Default: 1,000,000.
    pub max_connections: usize,
    /// Connections from one IP address, counted like `max_connections`
    /// (behind a trusted proxy: the forwarded client's WebSockets); the
    /// next gets 429 at once. Zero: no limit. IPv6 addresses count per
    /// /64. Default: 10,000.
    pub max_connections_per_ip: usize,
    /// Proxies whose `X-Forwarded-For` names the client for the
    /// per-address limit (the right-most untrusted entry). Default: none
    /// (the header is ignored).
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// Allowed `Origin` values (exact, case-insensitive); others get 403.
    /// Empty allows any. Default: empty.
    pub allowed_origins: Vec<String>,
    /// Host names (without the port) a request's `Host` may name besides
    /// IP addresses and `localhost`, which always pass. Checked when the
    /// server is anonymous (a web page that rebinds its own name to this
    /// machine must not reach an open server through the visitor's
    /// browser), and whenever the list is not empty; others get 403.
    /// Default: none.
    pub allowed_hosts: Vec<String>,
    /// Topics one connection may subscribe to. Default: 1,000.
    pub max_subscriptions: usize,
    /// Subscriptions over all connections; past it a subscribe gets
    /// `too_many_subscriptions`. Zero: no limit. Default: 10,000,000
    /// (about 0.5–1 GiB of registry).
    pub max_total_subscriptions: usize,
    /// Subscriptions held by the connections of one address (IPv6 per
    /// /64); past it, `too_many_subscriptions`. It also bounds the topics
    /// one address can create, one per subscription. Zero: no limit.
    /// Default: 1,000,000.
    pub max_subscriptions_per_ip: usize,
    /// Topics with a subscriber, counted on each core that has one (the
    /// registry's memory is per core); a subscribe that would create one
    /// more gets `too_many_subscriptions`. Zero: no limit.
    /// Default: 1,000,000.
    pub max_topics: usize,
    /// Longest topic name in bytes. Default: 256.
    pub max_topic_length: usize,
    /// Largest client message in bytes (all its frames); a larger one
    /// closes the connection with 1009 as soon as its size is known,
    /// before it is buffered. Default: 65,536.
    pub max_message_size: usize,
    /// Publishes per second one connection may make, on average (token
    /// bucket); over it, `rate_limited`. Zero: no limit. Default: 100.
    pub publish_rate: f64,
    /// Publishes one connection may make in a burst. Default: 200.
    pub publish_burst: u32,
    /// Publishes per second the WebSocket connections of one address
    /// (IPv6 per /64) may make together, on average; over it,
    /// `rate_limited`. HTTP publishers are limited per API key or address
    /// by `http_publish_rate`. Zero: no limit. Default: 0 (off: one
    /// address may be a whole office behind NAT, so no figure fits every
    /// server; `publish_rate` already bounds each connection).
    pub publish_rate_per_ip: f64,
    /// Publishes one address may make in a burst. Default: 1,000.
    pub publish_burst_per_ip: u32,
    /// Publishes per second over the whole server, WebSocket and HTTP
    /// together, on average; over it, `rate_limited` (429 over HTTP). Each
    /// core enforces its share (the rate divided by the cores), so a
    /// publish touches no state shared between cores. Zero: no limit.
    /// Default: 0 (off: the right figure is the capacity measured on the
    /// server's own hardware; the per-connection and per-HTTP-client
    /// buckets bound each client already).
    pub server_publish_rate: f64,
    /// Publishes the whole server may take in a burst (split between the
    /// cores like the rate). Default: 100,000.
    pub server_publish_burst: u32,
    /// Messages one `POST /api/publish` may carry; more get 413.
    /// Default: 10,000.
    pub max_batch_items: usize,
    /// Messages per second one HTTP client (its API key, or its address
    /// without one) may publish, on average (token bucket); over it, 429.
    /// Zero: no limit. Default: 10,000.
    pub http_publish_rate: f64,
    /// Messages one HTTP client may publish in a burst. Default: 20,000.
    pub http_publish_burst: u32,
    /// Bytes queued for one slow client before `slow_consumer` applies.
    /// Default: 1 MiB.
    pub outbox_limit: usize,
    /// Bytes queued for one client past which `slow_consumer` applies at
    /// once, without waiting for the grace period of `outbox_limit`.
    /// Default: 16 MiB.
    pub outbox_burst_limit: usize,
    /// Policy for clients over `outbox_limit`. Default: `close`.
    pub slow_consumer: SlowConsumer,
    /// Largest `POST /api/publish` body in bytes. Default: 1 MiB.
    pub max_http_body: usize,
    /// Seconds a client may stay silent (pings are sent every third of
    /// it) before it is closed with 1001. Default: 120.
    pub idle_timeout_secs: u64,
    /// Seconds a graceful shutdown waits for close handshakes.
    /// Default: 5.
    pub shutdown_timeout_secs: u64,
    /// Milliseconds between two `$sys.stats` messages, which the status
    /// page shows. Zero disables them. Default: 1,000.
    pub stats_interval_ms: u64,
    /// Microseconds a core lets frames gather before each step of 512
    /// writes while at least `flush_gather_min` connections have frames to
    /// write (write coalescing under load); 0: write at once. Default: 500.
    pub flush_gather_us: u64,
    /// Connections with frames to write from which the core gathers.
    /// Default: 1,024.
    pub flush_gather_min: usize,
    /// io_uring completion mode. Default: `defer`.
    pub task_run: TaskRunSetting,
    /// io_uring data path. Default: `direct` (`readiness` where the kernel
    /// lacks what it needs).
    pub io_path: IoPathSetting,
    /// The broker this node shares with the other nodes of its cluster,
    /// `nats://HOST:PORT` or `redis://HOST:PORT`: publications reach
    /// subscribers on every node. Default: unset (a single node).
    pub broker: Option<String>,
    /// Subjects (NATS) or channels (Redis) start with this, so that
    /// several clusters can share one broker. Default: `shardcast`.
    pub broker_prefix: String,
    /// permessage-deflate: `off`, `shared` (a published message is
    /// compressed once for every subscriber that negotiated it) or
    /// `dedicated` (a window per connection). Off by default: compression
    /// costs CPU on both ends and pays only for compressible messages of
    /// some size. Default: `off`.
    pub compression: CompressionSetting,
    /// Messages shorter than this many bytes go uncompressed. Default: 128.
    pub compression_threshold: usize,
    /// zlib level (0..=9) of what the server compresses. Default: 6.
    pub compression_level: u32,
    /// Topics with history, by pattern; the first that matches a topic
    /// decides. Default: none.
    #[serde(rename = "namespace")]
    pub namespaces: Vec<Namespace>,
    /// Most publications one recovery returns; a client that missed more
    /// is told `recovered: false`. Default: 1,000.
    pub max_recovery: usize,
    /// Open connections one client identity (the token's `sub`, or an
    /// anonymous client's `client_id`) may hold; more are told
    /// `too_many_connections` and closed with 1008. 0: no limit.
    /// Default: 0.
    pub max_connections_per_client: usize,
    /// Seconds a session (its subscriptions and, per history topic, the
    /// position its client's TCP acknowledged) is kept after its
    /// connection ends, for a client to resume it with `?session=ID`
    /// (see PROTOCOL.md). 0 disables sessions: the `welcome` then names
    /// none. Default: 60.
    pub session_ttl_secs: u64,
    /// Most sessions kept for resumption over the server, shared equally
    /// by the cores; past it the oldest is dropped (counted as evicted).
    /// A kept session costs about 200 bytes plus its topic names.
    /// Default: 100,000.
    pub max_sessions: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            cores: None,
            pin: true,
            jwt_secret: None,
            protect_status: false,
            jwt_issuer: None,
            jwt_audience: None,
            api_keys: Vec::new(),
            auth_timeout_secs: 10,
            max_connections: 1_000_000,
            max_connections_per_ip: 10_000,
            trusted_proxies: Vec::new(),
            allowed_origins: Vec::new(),
            allowed_hosts: Vec::new(),
            max_subscriptions: 1_000,
            max_total_subscriptions: 10_000_000,
            max_subscriptions_per_ip: 1_000_000,
            max_topics: 1_000_000,
            max_topic_length: 256,
            max_message_size: 64 << 10,
            publish_rate: 100.0,
            publish_burst: 200,
            publish_rate_per_ip: 0.0,
            publish_burst_per_ip: 1_000,
            server_publish_rate: 0.0,
            server_publish_burst: 100_000,
            max_batch_items: 10_000,
            http_publish_rate: 10_000.0,
            http_publish_burst: 20_000,
            outbox_limit: 1 << 20,
            outbox_burst_limit: 16 << 20,
            slow_consumer: SlowConsumer::Close,
            max_http_body: 1 << 20,
            idle_timeout_secs: 120,
            shutdown_timeout_secs: 5,
            stats_interval_ms: 1_000,
            flush_gather_us: 500,
            flush_gather_min: 1024,
            task_run: TaskRunSetting::Defer,
            io_path: IoPathSetting::Direct,
            broker: None,
            broker_prefix: "shardcast".to_owned(),
            compression: CompressionSetting::Off,
            compression_threshold: 128,
            compression_level: 6,
            namespaces: Vec::new(),
            max_recovery: 1_000,
            max_connections_per_client: 0,
            session_ttl_secs: 60,
            max_sessions: 100_000,
        }
    }
}

impl Settings {
    /// The history policy of `topic`: the first namespace that matches.
    pub fn history_policy(&self, topic: &str) -> Option<HistoryPolicy> {
        let n = self.namespaces.iter().find(|n| n.matches(topic))?;
        (n.history_size > 0).then(|| {
            HistoryPolicy::new(n.history_size, Duration::from_secs(n.history_ttl_secs))
                .with_max_bytes(n.history_max_bytes)
        })
    }

    /// The engine's history: the namespaces, and each publication's
    /// `message` frame completed with its `offset` and `epoch`.
    fn history_config(&self) -> HistoryConfig {
        let namespaces = self.namespaces.clone();
        let probe = Settings {
            namespaces,
            ..Settings::default()
        };
        HistoryConfig::new(move |t: &str| probe.history_policy(t))
            .with_frame(super::protocol::with_position)
            .with_max_recovery(self.max_recovery)
    }
}

/// Errors loading a settings file.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML for [`Settings`].
    #[error("invalid settings in {path}: {source}")]
    Parse {
        /// The file.
        path: String,
        /// Why.
        source: toml::de::Error,
    },
    /// The settings contradict themselves or would be unsafe.
    #[error("invalid settings: {0}")]
    Invalid(String),
}

impl Settings {
    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses settings from TOML text; missing fields keep their defaults.
    ///
    /// # Errors
    /// Invalid TOML, an unknown field or a value of the wrong type.
    pub fn from_toml(text: &str) -> Result<Self, toml::de::Error> {
        toml::from_str(text)
    }

    /// Reads settings from a TOML file.
    ///
    /// # Errors
    /// See [`SettingsError`].
    pub fn from_file(path: &Path) -> Result<Self, SettingsError> {
        let text = std::fs::read_to_string(path).map_err(|source| SettingsError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_toml(&text).map_err(|source| SettingsError::Parse {
            path: path.display().to_string(),
            source,
        })
    }

    /// Refuses settings that cannot be served safely: an empty API key
    /// (a trailing comma in `SHARDCAST_API_KEYS` would otherwise make an
    /// empty `X-API-Key` valid).
    ///
    /// # Errors
    /// [`SettingsError::Invalid`] saying what is wrong.
    pub fn validate(&self) -> Result<(), SettingsError> {
        if let Some(i) = self.api_keys.iter().position(|k| k.trim().is_empty()) {
            return Err(SettingsError::Invalid(format!(
                "API key {} of {} is empty (a trailing comma in SHARDCAST_API_KEYS?)",
                i + 1,
                self.api_keys.len()
            )));
        }
        if self.protect_status && self.api_keys.is_empty() {
            return Err(SettingsError::Invalid(
                "protect_status needs at least one API key".into(),
            ));
        }
        if let Some(b) = &self.broker {
            b.parse::<BrokerUrl>()
                .map_err(|e| SettingsError::Invalid(e.to_string()))?;
        }
        if !shardcast::cluster::valid_prefix(&self.broker_prefix) {
            return Err(SettingsError::Invalid(format!(
                "broker_prefix {:?}: dot-separated tokens without whitespace, '*' or '>'",
                self.broker_prefix
            )));
        }
        Ok(())
    }

    /// Whether the `Host` of requests is checked (see
    /// [`Settings::allowed_hosts`]).
    pub fn checks_host(&self) -> bool {
        self.anonymous() || !self.allowed_hosts.is_empty()
    }

    /// Whether WebSocket clients may connect without a token.
    pub fn anonymous(&self) -> bool {
        self.jwt_secret.is_none()
    }

    /// The engine configuration these settings ask for.
    pub fn engine_config(&self) -> Config {
        let idle = Duration::from_secs(self.idle_timeout_secs.max(1));
        let mut c = Config::new()
            .listen(self.listen)
            .pin(self.pin)
            .max_message_size(self.max_message_size)
            .max_frame_size(self.max_message_size)
            .max_http_body(self.max_http_body)
            .max_connections(self.max_connections)
            .allowed_origins(self.allowed_origins.clone())
            .outbox_limit(self.outbox_limit)
            .outbox_burst_limit(self.outbox_burst_limit.max(self.outbox_limit))
            .outbox_low_water((self.outbox_limit / 16).max(1))
            .idle_timeout(idle)
            .ping_interval(idle / 3)
            .shutdown_timeout(Duration::from_secs(self.shutdown_timeout_secs))
            .flush_gather(Duration::from_micros(self.flush_gather_us))
            .flush_gather_min(self.flush_gather_min)
            .task_run(self.task_run.into())
            .io_path(self.io_path.into())
            .compression(self.compression.into())
            .deflate(
                DeflateConfig::default()
                    .with_threshold(self.compression_threshold)
                    .with_level(self.compression_level),
            )
            .slow_consumer(match self.slow_consumer {
                SlowConsumer::Close => {
                    SlowConsumerPolicy::Close(CloseCode::TRY_AGAIN_LATER, "slow consumer".into())
                }
                SlowConsumer::Drop => SlowConsumerPolicy::DropMessage,
            });
        if self.namespaces.iter().any(|n| n.history_size > 0) {
            c = c.history(self.history_config());
        }
        if let Some(n) = self.cores {
            c = c.cores(n);
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_overrides_only_what_it_names() {
        let s = Settings::from_toml(
            "listen = \"0.0.0.0:9000\"\nmax_subscriptions = 5\nslow_consumer = \"drop\"\n",
        )
        .unwrap();
        assert_eq!(s.listen, "0.0.0.0:9000".parse().unwrap());
        assert_eq!(s.max_subscriptions, 5);
        assert_eq!(s.slow_consumer, SlowConsumer::Drop);
        assert_eq!(s.max_topic_length, Settings::default().max_topic_length);
    }

    #[test]
    fn write_coalescing_and_the_completion_mode_reach_the_engine() {
        let s = Settings::from_toml(
            "flush_gather_us = 250\nflush_gather_min = 64\ntask_run = \"coop\"\n",
        )
        .unwrap();
        let c = s.engine_config();
        assert_eq!(c.flush_gather, Duration::from_micros(250));
        assert_eq!(c.flush_gather_min, 64);
        assert_eq!(c.task_run, TaskRun::Coop);
        let d = Settings::default().engine_config();
        assert_eq!(
            (d.flush_gather, d.task_run),
            (Duration::from_micros(500), TaskRun::Defer)
        );
        assert!(Settings::from_toml("task_run = \"sqpoll\"\n").is_err());
    }

    #[test]
    fn unknown_fields_are_refused() {
        assert!(Settings::from_toml("max_subscripshuns = 5\n").is_err());
    }

    #[test]
    fn the_broker_and_its_prefix_are_checked() {
        let s =
            Settings::from_toml("broker = \"nats://10.0.0.5:4222\"\nbroker_prefix = \"prod.eu\"\n")
                .unwrap();
        assert!(s.validate().is_ok());
        assert_eq!(s.broker.as_deref(), Some("nats://10.0.0.5:4222"));
        assert_eq!(Settings::default().broker, None);
        assert_eq!(Settings::default().broker_prefix, "shardcast");
        for bad in [
            "broker = \"http://10.0.0.5\"\n",
            "broker = \"redis://\"\n",
            "broker_prefix = \"a b\"\n",
            "broker_prefix = \"a.>\"\n",
        ] {
            let s = Settings::from_toml(bad).unwrap();
            assert!(s.validate().is_err(), "{bad}");
        }
    }
}
