//! The network seam: each sandbox gets its own network namespace holding one end of a veth
//! pair; the other end stays on the host so the host reaches the agent at the sandbox address.
//! The real network also owns the host's firewall for sandboxes (egress, fences, policies) and
//! the DNS forwarder sandboxes use.

pub mod dns;
pub mod egress;
pub mod fake;
pub mod firewall;
pub mod forwarding;
pub mod netns;
pub mod policy;
pub mod resolved;
pub mod slots;

use std::net::Ipv4Addr;
use std::path::PathBuf;

use crate::ids::SandboxId;
pub use policy::EgressPolicy;

/// What a sandbox's network looks like once attached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetAttachment {
    pub netns_path: PathBuf,
    /// Address of the sandbox (the agent listens here).
    pub sandbox_ip: Ipv4Addr,
    /// Address of the host end of the veth.
    pub host_ip: Ipv4Addr,
}

/// Bytes through a sandbox's interface since it was attached (its last start or resume).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Traffic {
    /// Sent by the sandbox (egress, and answers to the proxy).
    pub out_bytes: u64,
    /// Received by the sandbox.
    pub in_bytes: u64,
}

/// Network setup failures, naming the operation and the sandbox.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("network: {op} for sandbox {id} failed: {detail}")]
    Command { id: String, op: String, detail: String },
    #[error("network: no free address slot (all {0} in use)")]
    Exhausted(u32),
    #[error("network: starting the host side: {0}")]
    Start(String),
}

/// Creates and removes per-sandbox networks.
pub trait Network: Send + Sync + 'static {
    /// Creates the sandbox's namespace and veth in `slot`, with its egress policy in force
    /// before anything runs there.
    fn attach(&self, id: &SandboxId, slot: u32, egress: &EgressPolicy)
        -> Result<NetAttachment, NetworkError>;
    /// Replaces the egress policy of the sandbox attached in `slot` (also used to re-register
    /// sandboxes found running after a restart, before [`Network::start`]).
    fn set_policy(&self, id: &SandboxId, slot: u32, egress: &EgressPolicy) -> Result<(), NetworkError>;
    /// Removes the sandbox's namespace, veth and rules. Idempotent.
    fn detach(&self, id: &SandboxId, slot: u32) -> Result<(), NetworkError>;
    /// Installs the host side (firewall, DNS forwarder), replacing what a crashed earlier
    /// server left. Call once, inside a tokio runtime, after re-adopting sandboxes.
    fn start(&self) -> Result<(), NetworkError>;
    /// Removes the host side again (at shutdown).
    fn stop(&self) -> Result<(), NetworkError>;
    /// Names of namespaces this network owns (for reconciliation).
    fn list_namespaces(&self) -> Vec<String>;
    /// Host-side TCP connections to `sandbox_ip` that are not yet fully closed (anything but
    /// TIME_WAIT/CLOSE): zero means no client connection is open inside the sandbox.
    fn live_connections(&self, sandbox_ip: Ipv4Addr) -> usize;
    /// Bytes through the sandbox's interface, if it is attached.
    fn traffic(&self, id: &SandboxId) -> Option<Traffic>;
    /// Removes a namespace found by [`Network::list_namespaces`] (its veth goes with it).
    fn remove_namespace(&self, name: &str) -> Result<(), NetworkError>;
}
