//! A network that configures nothing, for unit tests.

use std::net::Ipv4Addr;

use super::slots::slot_addrs;
use super::{NetAttachment, Network, NetworkError};
use crate::ids::SandboxId;

/// Hands out loopback addresses (`base + 4*slot + 2`), so a test can serve a fake agent there.
#[derive(Debug)]
pub struct FakeNetwork {
    pub base: Ipv4Addr,
}

impl Default for FakeNetwork {
    fn default() -> Self {
        FakeNetwork { base: Ipv4Addr::new(127, 200, 0, 0) }
    }
}

impl Network for FakeNetwork {
    fn attach(&self, id: &SandboxId, slot: u32) -> Result<NetAttachment, NetworkError> {
        let (host_ip, sandbox_ip) = slot_addrs(self.base, slot);
        Ok(NetAttachment { netns_path: format!("/fake/netns/{id}").into(), sandbox_ip, host_ip })
    }

    fn detach(&self, _id: &SandboxId, _slot: u32) -> Result<(), NetworkError> {
        Ok(())
    }

    fn list_namespaces(&self) -> Vec<String> {
        Vec::new()
    }

    fn live_connections(&self, _sandbox_ip: Ipv4Addr) -> usize {
        0
    }

    fn remove_namespace(&self, _name: &str) -> Result<(), NetworkError> {
        Ok(())
    }
}
