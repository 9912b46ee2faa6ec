//! The command line: one subcommand per scenario, shared options flattened into each.

use crate::client::Target;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Load generator and benchmark client for shardcast and other WebSocket
/// pub/sub servers.
#[derive(Debug, Parser)]
#[command(name = "loadgen", version)]
pub struct Cli {
    /// The scenario to run.
    #[command(subcommand)]
    pub scenario: Scenario,
}

impl Cli {
    /// Parses `args` (the first one is the program name).
    ///
    /// # Errors
    /// Clap's usage error, as text.
    pub fn from_args<I, T>(args: I) -> Result<Cli, String>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        <Cli as Parser>::try_parse_from(args).map_err(|e| e.to_string())
    }
}

/// The scenarios.
#[derive(Debug, Subcommand)]
pub enum Scenario {
    /// Open N idle connections as fast as possible, hold them, close them;
    /// with --server-pid, the server's RSS per connection and cleanup time.
    Connections(ConnectionsArgs),
    /// S subscribers over T topics, P publishers (shardcast JSON protocol):
    /// deliveries/s, end-to-end latency, lost/duplicated/reordered.
    Fanout(FanoutArgs),
    /// C connections ping-pong a payload: messages/s and round-trip latency.
    Echo(EchoArgs),
    /// The websocket-shootout broadcast benchmark: clients step up until the
    /// broadcast round trip's p95 exceeds the limit.
    Broadcast(BroadcastArgs),
    /// Draws SVG charts from a results file of JSON lines.
    Plot(PlotArgs),
    /// Rounds of N connections subscribing to random topics and closing;
    /// after each the server's connections, topics and subscriptions must
    /// be 0, its table capacities and RSS back to baseline.
    Churn(ChurnArgs),
}

/// Options every traffic scenario takes.
#[derive(Debug, Clone, Args)]
pub struct Common {
    /// The server, `ws://host:port/path`.
    #[arg(long, default_value = "ws://127.0.0.1:9001/")]
    pub url: String,
    /// Loadgen cores (threads), each a pinned monoio runtime. Default: the
    /// CPUs of the affinity mask.
    #[arg(long)]
    pub cores: Option<usize>,
    /// Do not pin core threads to CPUs.
    #[arg(long)]
    pub no_pin: bool,
    /// The server's process id: report its CPU (and RSS where relevant).
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// With --server-pid, in `echo` and `fanout`: count the server's system
    /// calls and io_uring submissions over the measured window, per round
    /// trip or delivery, with `perf stat` attached to it (Debian's
    /// linux-perf, and the right to trace the server). Counting costs the
    /// server some CPU: take CPU figures from a run without it.
    #[arg(long, requires = "server_pid")]
    pub server_syscalls: bool,
    /// A name for this run, added to its results (plots use it).
    #[arg(long)]
    pub label: Option<String>,
    /// Print one JSON line instead of a table.
    #[arg(long)]
    pub json: bool,
    /// No progress output on stderr.
    #[arg(long, short)]
    pub quiet: bool,
    /// Connections opened concurrently per core.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Seconds to wait for all connections to open.
    #[arg(long, default_value = "30", value_parser = secs)]
    pub connect_timeout: Duration,
    /// Offer permessage-deflate (as browsers do) and require the server to
    /// accept it; compressed messages are inflated, which the loadgen's
    /// CPU figure includes.
    #[arg(long)]
    pub deflate: bool,
}

impl Common {
    /// The target of `--url`, with `--deflate`.
    ///
    /// # Errors
    /// As [`Target::parse`].
    pub fn target(&self) -> Result<Target, String> {
        let mut t = Target::parse(&self.url)?;
        t.deflate = self.deflate;
        Ok(t)
    }

    /// The number of cores to run.
    pub fn cores(&self) -> usize {
        self.cores
            .unwrap_or_else(|| core_affinity::get_core_ids().map_or(1, |c| c.len()))
            .max(1)
    }
}

/// Measurement timing.
#[derive(Debug, Clone, Args)]
pub struct Timing {
    /// Seconds of measurement.
    #[arg(long, default_value = "5", value_parser = secs)]
    pub duration: Duration,
    /// Seconds of traffic before measuring.
    #[arg(long, default_value = "1", value_parser = secs)]
    pub warmup: Duration,
}

/// `connections` options.
#[derive(Debug, Clone, Args)]
pub struct ConnectionsArgs {
    /// Shared options.
    #[command(flatten)]
    pub common: Common,
    /// Connections to open.
    #[arg(long, short = 'n', default_value_t = 10_000)]
    pub connections: usize,
    /// Seconds to hold the connections before sampling the server and closing.
    #[arg(long, default_value = "2", value_parser = secs)]
    pub hold: Duration,
    /// Topics to subscribe to: connection i subscribes to `t{i % T}` and
    /// waits for the answer (shardcast's JSON protocol); 0: stay idle,
    /// unsubscribed.
    #[arg(long, default_value_t = 0, value_name = "T")]
    pub subscribe_topics: usize,
    /// Most connections per process; more are spread over worker processes
    /// of this program (each process may have 20,000 open files here).
    #[arg(long, default_value_t = 19_000)]
    pub per_process: usize,
    /// Seconds to wait for the server to release every connection.
    #[arg(long, default_value = "30", value_parser = secs)]
    pub cleanup_timeout: Duration,
    /// Internal: run as a worker driven over stdin/stdout by a parent.
    #[arg(long, hide = true)]
    pub worker: bool,
    /// Internal: global index of this process's first connection.
    #[arg(long, hide = true, default_value_t = 0)]
    pub index_offset: usize,
    /// Internal: total connections over all processes (source spreading).
    #[arg(long, hide = true)]
    pub total: Option<usize>,
    /// Internal: the first source address to use (see `Target::sources`).
    #[arg(long, hide = true)]
    pub source_base: Option<usize>,
}

/// `churn` options.
#[derive(Debug, Clone, Args)]
pub struct ChurnArgs {
    /// Shared options.
    #[command(flatten)]
    pub common: Common,
    /// Rounds of open, subscribe, verify, close.
    #[arg(long, default_value_t = 10)]
    pub rounds: usize,
    /// Connections per round (one process: below its open-file limit).
    #[arg(long, short = 'n', default_value_t = 1_000)]
    pub connections: usize,
    /// Fewest topics a connection subscribes to.
    #[arg(long, default_value_t = 1)]
    pub min_topics: usize,
    /// Most topics a connection subscribes to.
    #[arg(long, default_value_t = 8)]
    pub max_topics: usize,
    /// Topic names to draw from (`churn.0` … `churn.N-1`).
    #[arg(long, default_value_t = 100_000)]
    pub topic_space: usize,
    /// Fraction of connections closed with a reset (SO_LINGER 0) instead of
    /// the closing handshake.
    #[arg(long, default_value_t = 0.1)]
    pub reset_fraction: f64,
    /// Most relative difference of the server's RSS after a round from its
    /// RSS after round 1 (needs --server-pid).
    #[arg(long, default_value_t = 0.05)]
    pub rss_tolerance: f64,
    /// Seconds to wait for the server to report it is back to baseline.
    #[arg(long, default_value = "30", value_parser = secs)]
    pub cleanup_timeout: Duration,
    /// Seconds between the server reporting its baseline and reading its RSS.
    #[arg(long, default_value = "1", value_parser = secs)]
    pub settle: Duration,
    /// Seed of the topic choice. Default: random (reported).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Path of the server's Prometheus metrics on the WebSocket port.
    #[arg(long, default_value = "/metrics")]
    pub metrics_path: String,
    /// The first source address to use (see `Target::sources`). Default: random.
    #[arg(long)]
    pub source_base: Option<usize>,
}

/// `fanout` options.
#[derive(Debug, Clone, Args)]
pub struct FanoutArgs {
    /// Shared options.
    #[command(flatten)]
    pub common: Common,
    /// Timing.
    #[command(flatten)]
    pub timing: Timing,
    /// Subscriber connections; subscriber i subscribes to topic i % topics.
    #[arg(long, short = 's', default_value_t = 10_000)]
    pub subscribers: usize,
    /// Publishers connect here instead of --url: another node of a
    /// cluster (`shardcast --broker ...`), so that every delivery crosses
    /// the broker (subscribers on --url, publishers on this node).
    #[arg(long, value_name = "URL")]
    pub publish_url: Option<String>,
    /// Another process whose CPU to report over the measurement, as
    /// `NAME=PID` (repeatable): `NAME_cpu_percent` and
    /// `NAME_cpu_ns_per_delivery`, e.g. a cluster's broker and publishing
    /// node.
    #[arg(long, value_name = "NAME=PID", value_parser = named_pid)]
    pub watch_pid: Vec<(String, u32)>,
    /// Topics.
    #[arg(long, short = 't', default_value_t = 100)]
    pub topics: usize,
    /// Publisher connections. Publishes flow in max(publishers, topics)
    /// lanes, lane l from publisher l % publishers to topic l % topics;
    /// each publisher takes its lanes in turn. Default: one per topic, at
    /// most 100.
    #[arg(long, short = 'p')]
    pub publishers: Option<usize>,
    /// Bytes of `data` per message (at least the 43-byte stamp).
    #[arg(long, default_value_t = 64)]
    pub payload: usize,
    /// Publishes per second over all publishers; 0 = as fast as the bound
    /// on outstanding deliveries allows (closed loop).
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Closed loop: most deliveries sent and not yet received. Default:
    /// max(20,000, 8 × subscribers per topic).
    #[arg(long)]
    pub max_outstanding: Option<u64>,
    /// Closed loop: send one publish per write, and only when at least this
    /// many deliveries (and the publish's own) fit in the window, instead of
    /// batches of up to 16 publishes per write.
    #[arg(long, value_name = "N")]
    pub min_free: Option<u64>,
    /// Seconds to wait, after publishing stops, for deliveries in flight.
    #[arg(long, default_value = "5", value_parser = secs)]
    pub drain_timeout: Duration,
    /// Subscribers that stop reading (the socket stays open) --stall-after
    /// into the measurement, and read again when publishing stops, to learn
    /// how the server treated them. Reported apart from the others.
    #[arg(long, default_value_t = 0)]
    pub stall: usize,
    /// Seconds into the measurement at which the --stall subscribers stop reading.
    #[arg(long, default_value = "1", value_parser = secs)]
    pub stall_after: Duration,
    /// Bytes of receive buffer (SO_RCVBUF) for the --stall subscribers'
    /// sockets; 0: the kernel's default, which grows while they read.
    #[arg(long, default_value_t = 0)]
    pub stall_rcvbuf: usize,
    /// With --server-pid: seconds between samples of the server's RSS.
    #[arg(long, default_value = "0.5", value_parser = secs)]
    pub rss_interval: Duration,
}

/// Echo message formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EchoProtocol {
    /// The payload as a text message, echoed as is (examples/echo).
    Raw,
    /// `{"type":"echo","payload":"…"}` (websocket-shootout, examples/shootout).
    Shootout,
}

/// `echo` options.
#[derive(Debug, Clone, Args)]
pub struct EchoArgs {
    /// Shared options.
    #[command(flatten)]
    pub common: Common,
    /// Timing.
    #[command(flatten)]
    pub timing: Timing,
    /// Connections.
    #[arg(long, short = 'n', default_value_t = 100)]
    pub connections: usize,
    /// Bytes of payload per message (at least the 26-byte short stamp; the
    /// websocket-shootout sends 32).
    #[arg(long, default_value_t = 64)]
    pub payload: usize,
    /// Messages in flight per connection.
    #[arg(long, default_value_t = 1)]
    pub window: usize,
    /// Message format.
    #[arg(long, value_enum, default_value_t = EchoProtocol::Raw)]
    pub protocol: EchoProtocol,
}

/// `broadcast` options (defaults are the websocket-shootout's).
#[derive(Debug, Clone, Args)]
pub struct BroadcastArgs {
    /// Shared options.
    #[command(flatten)]
    pub common: Common,
    /// Clients at the first step.
    #[arg(long, default_value_t = 1000)]
    pub initial_clients: usize,
    /// Clients added per step.
    #[arg(long, default_value_t = 1000)]
    pub step: usize,
    /// Stop after this many clients (this machine: 20,000 open files per process).
    #[arg(long, default_value_t = 19_000)]
    pub max_clients: usize,
    /// The steps' client counts, comma-separated (e.g. `1000,2000,5000`),
    /// instead of --initial-clients and --step.
    #[arg(long, value_delimiter = ',', value_name = "N,N,...")]
    pub steps: Vec<usize>,
    /// Round trips measured per step.
    #[arg(long, default_value_t = 100)]
    pub samples: usize,
    /// Broadcasts in flight, each from a random client.
    #[arg(long, default_value_t = 4)]
    pub in_flight: usize,
    /// Stop when a step's p95 round trip exceeds this many milliseconds.
    #[arg(long, default_value_t = 500)]
    pub limit_ms: u64,
    /// Seconds a step may take before it counts as failed.
    #[arg(long, default_value = "30", value_parser = secs)]
    pub step_timeout: Duration,
}

/// `plot` options.
#[derive(Debug, Clone, Args)]
pub struct PlotArgs {
    /// A file of JSON result lines (as `--json` prints them).
    pub input: std::path::PathBuf,
    /// Directory for the SVG files.
    #[arg(long, default_value = ".")]
    pub out: std::path::PathBuf,
    /// Also write the results as Markdown tables to this file.
    #[arg(long)]
    pub markdown: Option<std::path::PathBuf>,
}

/// Parses seconds, fractions allowed (`0.5`).
pub fn secs(s: &str) -> Result<Duration, String> {
    let v: f64 = s.parse().map_err(|e| format!("{s}: {e}"))?;
    if !(0.0..=86_400.0).contains(&v) {
        return Err(format!("{s}: out of range"));
    }
    Ok(Duration::from_secs_f64(v))
}

/// `NAME=PID`, NAME of letters, digits and `_`.
fn named_pid(s: &str) -> Result<(String, u32), String> {
    let (name, pid) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: expected NAME=PID"))?;
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Err(format!("{name:?}: a name of letters, digits and _"));
    }
    let pid = pid.parse().map_err(|e| format!("{pid:?}: {e}"))?;
    Ok((name.to_owned(), pid))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("loadgen").chain(args.iter().copied()))
    }

    #[test]
    fn fanout_defaults_and_overrides() {
        let Scenario::Fanout(f) = parse(&["fanout"]).unwrap().scenario else {
            panic!()
        };
        assert_eq!(
            (f.subscribers, f.topics, f.payload, f.rate),
            (10_000, 100, 64, 0)
        );
        assert_eq!(f.timing.duration, Duration::from_secs(5));
        let Scenario::Fanout(f) = parse(&[
            "fanout",
            "-s",
            "500",
            "-t",
            "1",
            "--rate",
            "1000",
            "--duration",
            "0.5",
            "--url",
            "ws://127.0.0.1:1/x",
            "--json",
        ])
        .unwrap()
        .scenario
        else {
            panic!()
        };
        assert_eq!((f.subscribers, f.topics, f.rate), (500, 1, 1000));
        assert_eq!(f.stall, 0);
        assert_eq!(f.min_free, None);
        assert_eq!(f.timing.duration, Duration::from_millis(500));
        assert!(f.common.json);
    }

    #[test]
    fn rejects_bad_input() {
        assert!(parse(&["fanout", "--duration", "-1"]).is_err());
        assert!(parse(&["fanout", "--subscribers", "many"]).is_err());
        assert!(parse(&["nonsense"]).is_err());
        assert!(parse(&["echo", "--protocol", "xml"]).is_err());
    }

    #[test]
    fn other_scenarios_parse() {
        let Scenario::Connections(c) = parse(&["connections", "-n", "40000", "--server-pid", "7"])
            .unwrap()
            .scenario
        else {
            panic!()
        };
        assert_eq!(
            (c.connections, c.per_process, c.common.server_pid),
            (40_000, 19_000, Some(7))
        );
        let Scenario::Echo(e) = parse(&["echo", "--protocol", "shootout"]).unwrap().scenario else {
            panic!()
        };
        assert_eq!(e.protocol, EchoProtocol::Shootout);
        let Scenario::Broadcast(b) = parse(&["broadcast"]).unwrap().scenario else {
            panic!()
        };
        assert_eq!((b.samples, b.in_flight, b.limit_ms), (100, 4, 500));
        assert!(b.steps.is_empty());
        let Scenario::Broadcast(b) = parse(&["broadcast", "--steps", "1000,2000,5000"])
            .unwrap()
            .scenario
        else {
            panic!()
        };
        assert_eq!(b.steps, [1000, 2000, 5000]);
    }

    #[test]
    fn watched_pids_are_named() {
        assert_eq!(named_pid("broker=42"), Ok(("broker".to_owned(), 42)));
        for bad in ["42", "=42", "a b=1", "x=", "x=-1"] {
            assert!(named_pid(bad).is_err(), "{bad:?}");
        }
    }
}
