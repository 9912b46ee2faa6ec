//! `loadgen`: the benchmark client for shardcast and any server speaking the same protocols.
//!
//! # Layout
//!
//! - [`cli`]: the command line: scenarios and their options.
//! - [`runtime`]: one pinned monoio runtime per core (io_uring, epoll fallback)
//!   and the state the cores share with the main thread.
//! - [`client`]: the WebSocket client on one core: connecting from a chosen
//!   source address, the opening handshake (`shardcast::proto` in the client
//!   role), the read loop and the corked outbox.
//! - [`stamp`]: the fixed-width stamp every measured message carries
//!   (sender id, sequence number, send time).
//! - [`track`]: per-sender sequence tracking: lost, duplicated, reordered.
//! - [`sys`]: clocks, this process's CPU use, another process's RSS, CPU and
//!   open files; [`syscalls`]: the server's system calls in a window.
//! - [`report`]: results as an ordered table and as JSON lines.
//! - [`rss`]: the server's RSS sampled over time during a run.
//! - [`scenario`]: `connections`, `fanout`, `echo`, `broadcast`, `churn`.
//! - [`plot`]: SVG charts of a results file; [`markdown`]: its tables.

#![warn(missing_docs)]

pub mod cli;
pub mod client;
pub mod markdown;
pub mod plot;
pub mod report;
pub mod rss;
pub mod runtime;
pub mod scenario;
pub mod stamp;
pub mod sys;
pub mod syscalls;
pub mod track;

/// Runs a traffic scenario in this process and returns its report
/// (`plot` and worker mode are not scenarios).
///
/// # Errors
/// The scenario's error, as text.
pub fn run(s: &cli::Scenario) -> Result<report::Report, String> {
    use cli::Scenario;
    let (mut r, label) = match s {
        Scenario::Connections(a) => (scenario::connections::run(a)?, &a.common.label),
        Scenario::Fanout(a) => (scenario::fanout::run(a)?, &a.common.label),
        Scenario::Echo(a) => (scenario::echo::run(a)?, &a.common.label),
        Scenario::Broadcast(a) => (scenario::broadcast::run(a)?, &a.common.label),
        Scenario::Churn(a) => (scenario::churn::run(a)?, &a.common.label),
        Scenario::Plot(_) => return Err("plot is not a scenario".into()),
    };
    if let Some(l) = label {
        r.set("label", l.as_str());
    }
    Ok(r)
}
