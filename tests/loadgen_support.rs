// Shared by the loadgen tests (included with #[path]): running a scenario
// in-process against an engine started on port 0.

use loadgen::cli::Cli;
use loadgen::report::Report;

/// Runs `loadgen ARGS` in-process and returns its report.
pub fn loadgen(args: &[&str]) -> Result<Report, String> {
    let cli = Cli::from_args(std::iter::once("loadgen").chain(args.iter().copied()))?;
    loadgen::run(&cli.scenario)
}

/// A small engine config: one core, port 0, not pinned (tests share CPUs).
pub fn small_config() -> shardcast::Config {
    shardcast::Config::new()
        .listen("127.0.0.1:0".parse().unwrap())
        .cores(1)
        .pin(false)
}

pub fn u(r: &Report, key: &str) -> u64 {
    r.map
        .get(key)
        .and_then(|v| v.as_u64())
        .unwrap_or_else(|| panic!("{key} missing in {}", r.to_json()))
}
