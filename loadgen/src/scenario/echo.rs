//! `echo` (being built).

use crate::report::Report;

/// Runs the scenario.
///
/// # Errors
/// Not built yet.
pub fn run(_a: &crate::cli::EchoArgs) -> Result<Report, String> {
    Err("not built yet".into())
}
