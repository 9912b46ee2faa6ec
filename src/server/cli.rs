//! The `shardcast` binary: flags and `SHARDCAST_*` variables over an optional TOML file, logging, and SIGINT/SIGTERM for a graceful stop.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, ValueEnum};
use tracing_subscriber::EnvFilter;

use super::settings::{
    CompressionSetting, IoPathSetting, Namespace, Settings, SlowConsumer, TaskRunSetting,
};

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Slow-consumer policy as a flag value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SlowConsumerArg {
    /// Close the connection with 1013.
    Close,
    /// Drop the messages that do not fit.
    Drop,
}

/// A WebSocket pub/sub server: clients subscribe to topics and publish JSON
/// over WebSocket; backends publish over HTTP.
///
/// Settings come from, in increasing precedence: defaults, the TOML file
/// given with --config, SHARDCAST_* environment variables, flags. Without
/// --jwt-secret anyone may subscribe and publish (a warning says so).
#[derive(Debug, Parser)]
#[command(name = "shardcast", version, about, long_about, max_term_width = 100)]
pub struct Cli {
    /// TOML settings file (same names as the flags, with underscores).
    #[arg(short, long, env = "SHARDCAST_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Address for WebSocket and HTTP. [default: 127.0.0.1:8080]
    #[arg(short, long, env = "SHARDCAST_LISTEN", value_name = "ADDR")]
    pub listen: Option<SocketAddr>,

    /// Cores (threads) to run. [default: the CPUs of the affinity mask]
    #[arg(long, env = "SHARDCAST_CORES", value_name = "N")]
    pub cores: Option<usize>,

    /// Do not pin core threads to CPUs.
    #[arg(long, env = "SHARDCAST_NO_PIN")]
    pub no_pin: bool,

    /// HS256 secret for client JWTs; when set, clients must authenticate.
    #[arg(
        long,
        env = "SHARDCAST_JWT_SECRET",
        value_name = "SECRET",
        hide_env_values = true
    )]
    pub jwt_secret: Option<String>,

    /// A proxy whose X-Forwarded-For names the client for the per-address
    /// limit (repeat the flag, or comma-separate in the variable).
    #[arg(
        long = "trusted-proxy",
        env = "SHARDCAST_TRUSTED_PROXIES",
        value_name = "IP",
        value_delimiter = ','
    )]
    pub trusted_proxies: Vec<std::net::IpAddr>,

    /// Require an API key for /metrics, /healthz and the status page too.
    #[arg(long, env = "SHARDCAST_PROTECT_STATUS")]
    pub protect_status: bool,

    /// A file holding the HS256 secret (trailing whitespace trimmed), so
    /// the secret stays out of the process list and the environment.
    #[arg(long, env = "SHARDCAST_JWT_SECRET_FILE", value_name = "FILE")]
    pub jwt_secret_file: Option<PathBuf>,

    /// The `iss` a client token must carry.
    #[arg(long, env = "SHARDCAST_JWT_ISSUER", value_name = "ISS")]
    pub jwt_issuer: Option<String>,

    /// The `aud` a client token must name.
    #[arg(long, env = "SHARDCAST_JWT_AUDIENCE", value_name = "AUD")]
    pub jwt_audience: Option<String>,

    /// API key for POST /api/publish (repeat the flag, or comma-separate in
    /// the variable).
    #[arg(
        long = "api-key",
        env = "SHARDCAST_API_KEYS",
        value_name = "KEY",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub api_keys: Vec<String>,

    /// Seconds a client without a token has to send an auth message. [default: 10]
    #[arg(long, env = "SHARDCAST_AUTH_TIMEOUT_SECS", value_name = "SECS")]
    pub auth_timeout_secs: Option<u64>,

    /// Connections in all, idle and HTTP ones included; more get 503. [default: 1000000]
    #[arg(long, env = "SHARDCAST_MAX_CONNECTIONS", value_name = "N")]
    pub max_connections: Option<usize>,

    /// Connections per IP address, idle and HTTP ones included; more get 429; 0: no limit. [default: 10000]
    #[arg(long, env = "SHARDCAST_MAX_CONNECTIONS_PER_IP", value_name = "N")]
    pub max_connections_per_ip: Option<usize>,

    /// Allowed Origin (repeat, or comma-separate); others get 403. [default: any]
    #[arg(
        long = "allowed-origin",
        env = "SHARDCAST_ALLOWED_ORIGINS",
        value_name = "ORIGIN",
        value_delimiter = ','
    )]
    pub allowed_origins: Vec<String>,

    /// A host name requests may name in `Host` besides IP addresses and
    /// localhost (repeat, or comma-separate); checked on an anonymous server
    /// or when given; others get 403. [default: none]
    #[arg(
        long = "allowed-host",
        env = "SHARDCAST_ALLOWED_HOSTS",
        value_name = "HOST",
        value_delimiter = ','
    )]
    pub allowed_hosts: Vec<String>,

    /// Subscriptions per connection. [default: 1000]
    #[arg(long, env = "SHARDCAST_MAX_SUBSCRIPTIONS", value_name = "N")]
    pub max_subscriptions: Option<usize>,

    /// Subscriptions over all connections; 0: no limit. [default: 10000000]
    #[arg(long, env = "SHARDCAST_MAX_TOTAL_SUBSCRIPTIONS", value_name = "N")]
    pub max_total_subscriptions: Option<usize>,

    /// Subscriptions of the connections of one address; 0: no limit. [default: 1000000]
    #[arg(long, env = "SHARDCAST_MAX_SUBSCRIPTIONS_PER_IP", value_name = "N")]
    pub max_subscriptions_per_ip: Option<usize>,

    /// Topics with a subscriber, counted per core; 0: no limit. [default: 1000000]
    #[arg(long, env = "SHARDCAST_MAX_TOPICS", value_name = "N")]
    pub max_topics: Option<usize>,

    /// Longest topic name, in bytes. [default: 256]
    #[arg(long, env = "SHARDCAST_MAX_TOPIC_LENGTH", value_name = "BYTES")]
    pub max_topic_length: Option<usize>,

    /// Largest client message, in bytes. [default: 65536]
    #[arg(long, env = "SHARDCAST_MAX_MESSAGE_SIZE", value_name = "BYTES")]
    pub max_message_size: Option<usize>,

    /// Publishes per second per connection (token bucket); 0: no limit. [default: 100]
    #[arg(long, env = "SHARDCAST_PUBLISH_RATE", value_name = "PER_SEC")]
    pub publish_rate: Option<f64>,

    /// Publish burst per connection. [default: 200]
    #[arg(long, env = "SHARDCAST_PUBLISH_BURST", value_name = "N")]
    pub publish_burst: Option<u32>,

    /// Publishes per second of one address's WebSocket connections together; 0: no limit. [default: 0]
    #[arg(long, env = "SHARDCAST_PUBLISH_RATE_PER_IP", value_name = "PER_SEC")]
    pub publish_rate_per_ip: Option<f64>,

    /// Publish burst of one address. [default: 1000]
    #[arg(long, env = "SHARDCAST_PUBLISH_BURST_PER_IP", value_name = "N")]
    pub publish_burst_per_ip: Option<u32>,

    /// Publishes per second over the whole server, WebSocket and HTTP; 0: no limit. [default: 0]
    #[arg(long, env = "SHARDCAST_SERVER_PUBLISH_RATE", value_name = "PER_SEC")]
    pub server_publish_rate: Option<f64>,

    /// Publish burst of the whole server. [default: 100000]
    #[arg(long, env = "SHARDCAST_SERVER_PUBLISH_BURST", value_name = "N")]
    pub server_publish_burst: Option<u32>,

    /// Messages one POST /api/publish may carry. [default: 10000]
    #[arg(long, env = "SHARDCAST_MAX_BATCH_ITEMS", value_name = "N")]
    pub max_batch_items: Option<usize>,

    /// Messages per second one HTTP client (key or address) may publish; 0: no limit. [default: 10000]
    #[arg(long, env = "SHARDCAST_HTTP_PUBLISH_RATE", value_name = "PER_SEC")]
    pub http_publish_rate: Option<f64>,

    /// Messages one HTTP client may publish in a burst. [default: 20000]
    #[arg(long, env = "SHARDCAST_HTTP_PUBLISH_BURST", value_name = "N")]
    pub http_publish_burst: Option<u32>,

    /// Bytes queued for one slow client before --slow-consumer applies. [default: 1048576]
    #[arg(long, env = "SHARDCAST_OUTBOX_LIMIT", value_name = "BYTES")]
    pub outbox_limit: Option<usize>,

    /// Bytes queued for one client past which --slow-consumer applies at once. [default: 16777216]
    #[arg(long, env = "SHARDCAST_OUTBOX_BURST_LIMIT", value_name = "BYTES")]
    pub outbox_burst_limit: Option<usize>,

    /// What to do with a client over the outbox limit. [default: close]
    #[arg(long, env = "SHARDCAST_SLOW_CONSUMER", value_enum)]
    pub slow_consumer: Option<SlowConsumerArg>,

    /// Seconds a silent client is kept (pinged every third of it). [default: 120]
    #[arg(long, env = "SHARDCAST_IDLE_TIMEOUT_SECS", value_name = "SECS")]
    pub idle_timeout_secs: Option<u64>,

    /// Largest POST /api/publish body, in bytes; larger get 413. [default: 1048576]
    #[arg(long, env = "SHARDCAST_MAX_HTTP_BODY", value_name = "BYTES")]
    pub max_http_body: Option<usize>,

    /// Seconds a graceful shutdown waits for clients' close handshakes. [default: 5]
    #[arg(long, env = "SHARDCAST_SHUTDOWN_TIMEOUT_SECS", value_name = "SECS")]
    pub shutdown_timeout_secs: Option<u64>,

    /// Milliseconds between $sys.stats messages (the status page); 0: off. [default: 1000]
    #[arg(long, env = "SHARDCAST_STATS_INTERVAL_MS", value_name = "MS")]
    pub stats_interval_ms: Option<u64>,

    /// Microseconds a core lets frames gather before each step of 512 writes while at least
    /// --flush-gather-min connections have frames to write; 0: write at once. [default: 500]
    #[arg(long, env = "SHARDCAST_FLUSH_GATHER_US", value_name = "US")]
    pub flush_gather_us: Option<u64>,

    /// Connections with frames to write from which the core gathers. [default: 1024]
    #[arg(long, env = "SHARDCAST_FLUSH_GATHER_MIN", value_name = "N")]
    pub flush_gather_min: Option<usize>,

    /// io_uring completion mode; an older kernel gets the next one down. [default: defer]
    #[arg(long, env = "SHARDCAST_TASK_RUN", value_enum)]
    pub task_run: Option<TaskRunSetting>,

    /// io_uring data path: direct (direct descriptors, provided buffers,
    /// sends as submissions; Linux 5.19+, readiness before) or readiness.
    /// [default: direct]
    #[arg(long, env = "SHARDCAST_IO_PATH", value_enum)]
    pub io_path: Option<IoPathSetting>,

    /// The broker shared by the nodes of a cluster: nats://HOST:PORT or redis://HOST:PORT.
    /// [default: none, a single node]
    #[arg(long, env = "SHARDCAST_BROKER", value_name = "URL")]
    pub broker: Option<String>,

    /// Subjects (NATS) or channels (Redis) start with this, so that clusters can share a
    /// broker. [default: shardcast]
    #[arg(long, env = "SHARDCAST_BROKER_PREFIX", value_name = "PREFIX")]
    pub broker_prefix: Option<String>,

    /// permessage-deflate: off, shared (a publish compressed once for all
    /// subscribers) or dedicated (a window per connection). [default: off]
    #[arg(long, env = "SHARDCAST_COMPRESSION", value_enum)]
    pub compression: Option<CompressionSetting>,

    /// Messages shorter than this go uncompressed. [default: 128]
    #[arg(long, env = "SHARDCAST_COMPRESSION_THRESHOLD", value_name = "BYTES")]
    pub compression_threshold: Option<usize>,

    /// zlib level 0..=9 of what the server compresses. [default: 6]
    #[arg(long, env = "SHARDCAST_COMPRESSION_LEVEL", value_name = "LEVEL")]
    pub compression_level: Option<u32>,

    /// History for the topics matching PATTERN (`*`: any run of
    /// characters): the last SIZE publications of the last TTL_SECS
    /// seconds, with offsets and recovery (repeat for several). [default: none]
    #[arg(
        long = "history",
        env = "SHARDCAST_HISTORY",
        value_name = "PATTERN=SIZE,TTL_SECS",
        value_delimiter = ';'
    )]
    pub history: Vec<Namespace>,

    /// Open connections per client identity (JWT sub or client_id); 0: no limit. [default: 0]
    #[arg(long, env = "SHARDCAST_MAX_CONNECTIONS_PER_CLIENT", value_name = "N")]
    pub max_connections_per_client: Option<usize>,

    /// Seconds a session is kept after its connection ends, for a client
    /// to resume it with `?session=ID`; 0 disables sessions. [default: 60]
    #[arg(
        long = "session-ttl",
        env = "SHARDCAST_SESSION_TTL",
        value_name = "SECS"
    )]
    pub session_ttl_secs: Option<u64>,

    /// Most sessions kept for resumption over the server (the oldest goes first). [default: 100000]
    #[arg(long, env = "SHARDCAST_MAX_SESSIONS", value_name = "N")]
    pub max_sessions: Option<usize>,

    /// Most publications one recovery returns. [default: 1000]
    #[arg(long, env = "SHARDCAST_MAX_RECOVERY", value_name = "N")]
    pub max_recovery: Option<usize>,

    /// Log filter, e.g. `info` or `shardcast=debug` (RUST_LOG when unset). [default: info]
    #[arg(long, env = "SHARDCAST_LOG", value_name = "FILTER")]
    pub log: Option<String>,

    /// Log format.
    #[arg(long, env = "SHARDCAST_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

impl Cli {
    /// The settings: the file (if any), then what the flags and variables
    /// set.
    ///
    /// # Errors
    /// The file cannot be read or parsed.
    pub fn settings(&self) -> anyhow::Result<Settings> {
        let mut s = match &self.config {
            Some(path) => Settings::from_file(path)?,
            None => Settings::default(),
        };
        macro_rules! set {
            ($($f:ident),*) => { $( if let Some(v) = self.$f.clone() { s.$f = v; } )* };
        }
        set!(
            listen,
            auth_timeout_secs,
            max_connections,
            max_connections_per_ip,
            max_subscriptions,
            max_total_subscriptions,
            max_subscriptions_per_ip,
            max_topics,
            max_topic_length,
            max_message_size,
            publish_rate,
            publish_burst,
            publish_rate_per_ip,
            publish_burst_per_ip,
            server_publish_rate,
            server_publish_burst,
            max_batch_items,
            http_publish_rate,
            http_publish_burst,
            outbox_limit,
            outbox_burst_limit,
            idle_timeout_secs,
            max_http_body,
            shutdown_timeout_secs,
            stats_interval_ms,
            flush_gather_us,
            flush_gather_min,
            task_run,
            io_path,
            broker_prefix,
            compression,
            compression_threshold,
            compression_level,
            max_recovery,
            max_connections_per_client,
            session_ttl_secs,
            max_sessions
        );
        if self.broker.is_some() {
            s.broker = self.broker.clone();
        }
        if !self.history.is_empty() {
            s.namespaces = self.history.clone();
        }
        if self.cores.is_some() {
            s.cores = self.cores;
        }
        if self.no_pin {
            s.pin = false;
        }
        if self.protect_status {
            s.protect_status = true;
        }
        if !self.trusted_proxies.is_empty() {
            s.trusted_proxies = self.trusted_proxies.clone();
        }
        if self.jwt_secret.is_some() {
            s.jwt_secret = self.jwt_secret.clone();
        }
        if let Some(path) = &self.jwt_secret_file {
            let secret = std::fs::read_to_string(path)
                .with_context(|| format!("reading the JWT secret from {}", path.display()))?;
            s.jwt_secret = Some(secret.trim_end().to_owned());
        }
        if self.jwt_issuer.is_some() {
            s.jwt_issuer = self.jwt_issuer.clone();
        }
        if self.jwt_audience.is_some() {
            s.jwt_audience = self.jwt_audience.clone();
        }
        if !self.api_keys.is_empty() {
            s.api_keys = self.api_keys.clone();
        }
        if !self.allowed_origins.is_empty() {
            s.allowed_origins = self.allowed_origins.clone();
        }
        if !self.allowed_hosts.is_empty() {
            s.allowed_hosts = self.allowed_hosts.clone();
        }
        if let Some(p) = self.slow_consumer {
            s.slow_consumer = match p {
                SlowConsumerArg::Close => SlowConsumer::Close,
                SlowConsumerArg::Drop => SlowConsumer::Drop,
            };
        }
        if s.jwt_secret.as_deref() == Some("") {
            anyhow::bail!("the JWT secret is empty");
        }
        if let Some(secret) = &s.jwt_secret {
            if secret.len() < 32 {
                tracing::warn!(
                    bytes = secret.len(),
                    "the JWT secret is shorter than 32 bytes: HS256 tokens signed with it can be brute-forced; use 32 random bytes or more"
                );
            }
        }
        Ok(s)
    }
}

fn init_logging(cli: &Cli) {
    let filter = match &cli.log {
        Some(f) => EnvFilter::new(f),
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    };
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match cli.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Blocks SIGINT and SIGTERM in this thread (and so in every thread it
/// starts afterwards) so that [`wait_for_signal`] receives them.
fn block_signals() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; sigemptyset/sigaddset initialise it,
    // and pthread_sigmask only reads it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

/// Waits for SIGINT or SIGTERM and returns its number.
fn wait_for_signal(set: &libc::sigset_t) -> i32 {
    let mut sig = 0;
    // SAFETY: `set` was initialised by `block_signals`; `sig` is a valid
    // out-pointer.
    unsafe { libc::sigwait(set, &mut sig) };
    sig
}

/// The binary's entry point: parse, start, wait for a signal, stop.
///
/// # Errors
/// Bad settings, or the server cannot start (address in use, ...).
pub fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logging(&cli);
    let settings = cli.settings()?;
    let listen = settings.listen;
    let signals = block_signals();
    let mut running =
        super::start(settings.clone()).with_context(|| format!("cannot listen on {listen}"))?;
    let addr = running.local_addr();
    tracing::info!(
        %addr,
        cores = running.handle().cores(),
        drivers = ?running.handle().drivers(),
        "shardcast listening: ws://{addr}/ , status page http://{addr}/ , metrics http://{addr}/metrics"
    );
    if running.anonymous() {
        tracing::warn!(
            "no JWT secret set (--jwt-secret / SHARDCAST_JWT_SECRET): anonymous clients may subscribe and publish to any topic"
        );
    }
    if running.open_api() {
        tracing::warn!(
            "no API key set (--api-key / SHARDCAST_API_KEYS): POST /api/publish is open to anyone"
        );
    } else if settings.api_keys.is_empty() {
        tracing::info!("no API key set: POST /api/publish is disabled");
    }
    let sig = wait_for_signal(&signals);
    tracing::info!(signal = sig, "shutting down: closing connections with 1001");
    running.shutdown();
    // A second signal stops at once.
    std::thread::spawn(move || {
        let sig = wait_for_signal(&signals);
        tracing::warn!(signal = sig, "second signal: exiting without draining");
        std::process::exit(130);
    });
    running.join();
    tracing::info!("stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_the_file_which_overrides_defaults() {
        let dir = std::env::temp_dir().join(format!("shardcast-cli-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("s.toml");
        std::fs::write(
            &file,
            "listen = \"0.0.0.0:9000\"\nmax_subscriptions = 7\npublish_rate = 5.0\n",
        )
        .unwrap();
        let cli = Cli::try_parse_from([
            "shardcast",
            "--config",
            file.to_str().unwrap(),
            "--max-subscriptions",
            "9",
            "--api-key",
            "a",
            "--api-key",
            "b",
            "--slow-consumer",
            "drop",
        ])
        .unwrap();
        let s = cli.settings().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(s.listen, "0.0.0.0:9000".parse().unwrap());
        assert_eq!(s.max_subscriptions, 9);
        assert_eq!(s.publish_rate, 5.0);
        assert_eq!(s.api_keys, ["a", "b"]);
        assert_eq!(s.slow_consumer, SlowConsumer::Drop);
        assert_eq!(s.max_topic_length, Settings::default().max_topic_length);
    }

    #[test]
    fn no_arguments_mean_the_documented_defaults() {
        let s = Cli::try_parse_from(["shardcast"])
            .unwrap()
            .settings()
            .unwrap();
        assert_eq!(s.listen, "127.0.0.1:8080".parse().unwrap());
        assert!(s.anonymous());
        assert_eq!((s.session_ttl_secs, s.max_sessions), (60, 100_000));
    }

    #[test]
    fn sessions_are_set_by_flag_and_by_file() {
        let s = Cli::try_parse_from(["shardcast", "--session-ttl", "0", "--max-sessions", "5"])
            .unwrap()
            .settings()
            .unwrap();
        assert_eq!((s.session_ttl_secs, s.max_sessions), (0, 5));
        let s = Settings::from_toml(
            "session_ttl_secs = 300
max_sessions = 10
",
        )
        .unwrap();
        assert_eq!((s.session_ttl_secs, s.max_sessions), (300, 10));
    }
}
