//! `edgeseg-tools`: offline tools (evaluation today).
fn main() {}
