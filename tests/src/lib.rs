//! # edgeseg-e2e
//!
//! End-to-end tests across the edgeseg crates (in `tests/tests/`), plus the
//! helpers they share: where the repository's fixtures are and where the
//! shared data folder (`../shared`) is, if present.

use std::path::PathBuf;

/// Root of the repository (the workspace directory).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// The committed sample fixtures (`fixtures/` at the repository root).
pub fn fixtures_dir() -> PathBuf {
    repo_root().join("fixtures")
}

/// The shared data folder next to the checkout, if it exists.
///
/// `EDGESEG_SHARED` overrides the location. Tests that need it print why they
/// skip when this returns `None`.
pub fn shared_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("EDGESEG_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("..").join("shared"));
    dir.join("data").is_dir().then_some(dir)
}

// `Cargo.toml` turns on `edgeseg-bridge/std` and `edgeseg-bridge/display` for this crate, so
// that `cargo test --workspace` (the README's test command) also runs the bridge's host-side
// and display test suites, whose `[[test]]` targets require those features.
