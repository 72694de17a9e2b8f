//! The surface that crosses between the firkin host and the `firkin-agent` running inside every
//! sandbox. Everything here is versioned: a sandbox restored from an old snapshot carries an old
//! agent, so the host must be able to tell which surface it is talking to.

pub mod agent;
pub mod signature;
