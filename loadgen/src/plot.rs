//! SVG charts of a results file (being built).

use std::path::{Path, PathBuf};

/// Writes charts for the results in `input` into `out`.
///
/// # Errors
/// Not built yet.
pub fn plot_file(_input: &Path, _out: &Path) -> Result<Vec<PathBuf>, String> {
    Err("not built yet".into())
}
