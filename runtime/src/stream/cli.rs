//! Command-line front ends of the streaming pipeline (filled in below).

/// Placeholder until the commands land.
pub fn placeholder() {}
