//! The network seam: each sandbox gets its own network namespace holding one end of a veth
//! pair; the other end stays on the host so the host reaches the agent at the sandbox address.

pub mod fake;
pub mod netns;
pub mod slots;

use std::net::Ipv4Addr;
use std::path::PathBuf;

use crate::ids::SandboxId;

/// What a sandbox's network looks like once attached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetAttachment {
    pub netns_path: PathBuf,
    /// Address of the sandbox (the agent listens here).
    pub sandbox_ip: Ipv4Addr,
    /// Address of the host end of the veth.
    pub host_ip: Ipv4Addr,
}

/// Network setup failures, naming the operation and the sandbox.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("network: {op} for sandbox {id} failed: {detail}")]
    Command { id: String, op: String, detail: String },
    #[error("network: no free address slot (all {0} in use)")]
    Exhausted(u32),
}

/// Creates and removes per-sandbox networks.
pub trait Network: Send + Sync + 'static {
    fn attach(&self, id: &SandboxId, slot: u32) -> Result<NetAttachment, NetworkError>;
    /// Removes the sandbox's namespace and veth. Idempotent.
    fn detach(&self, id: &SandboxId, slot: u32) -> Result<(), NetworkError>;
    /// Names of namespaces this network owns (for reconciliation).
    fn list_namespaces(&self) -> Vec<String>;
    /// Host-side TCP connections to `sandbox_ip` that are not yet fully closed (anything but
    /// TIME_WAIT/CLOSE): zero means no client connection is open inside the sandbox.
    fn live_connections(&self, sandbox_ip: Ipv4Addr) -> usize;
    /// Removes a namespace found by [`Network::list_namespaces`] (its veth goes with it).
    fn remove_namespace(&self, name: &str) -> Result<(), NetworkError>;
}
