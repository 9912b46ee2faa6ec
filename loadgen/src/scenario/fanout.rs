//! `fanout` (being built).

use crate::report::Report;

/// Runs the scenario.
///
/// # Errors
/// Not built yet.
pub fn run(_a: &crate::cli::FanoutArgs) -> Result<Report, String> {
    Err("not built yet".into())
}
