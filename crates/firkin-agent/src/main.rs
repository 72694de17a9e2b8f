//! `firkin-agent`: runs as PID 1 inside every firkin sandbox and serves envd.
fn main() {}
