//! firkin's typed core. Everything a front end (the HTTP server, the CLI, a future gRPC edge)
//! needs goes through [`runtime::Runtime`]; the OS boundaries sit behind the [`engine::Engine`]
//! and [`network::Network`] traits, each with an in-tree fake for unit tests.

pub mod admission;
pub mod agent_client;
pub mod atomic;
pub mod config;
pub mod digest;
pub mod engine;
#[cfg(any(test, feature = "test-support"))]
pub mod fake_agent;
pub mod ids;
pub mod lifecycle;
pub mod network;
pub mod record;
pub mod runtime;
pub mod samples;
pub mod snapshot;
pub mod template;
pub mod timefmt;
