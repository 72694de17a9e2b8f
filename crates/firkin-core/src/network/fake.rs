//! A network that configures nothing, for unit tests.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Mutex;

use super::slots::slot_addrs;
use super::{EgressPolicy, NetAttachment, Network, NetworkError, Traffic};
use crate::ids::SandboxId;

/// Hands out loopback addresses (`base + 4*slot + 2`), so a test can serve a fake agent there,
/// and remembers each attached sandbox's egress policy so tests can check what was applied.
#[derive(Debug)]
pub struct FakeNetwork {
    pub base: Ipv4Addr,
    policies: Mutex<BTreeMap<String, EgressPolicy>>,
}

impl Default for FakeNetwork {
    fn default() -> Self {
        FakeNetwork { base: Ipv4Addr::new(127, 200, 0, 0), policies: Mutex::new(BTreeMap::new()) }
    }
}

impl FakeNetwork {
    /// Addresses from `base` on.
    pub fn at(base: Ipv4Addr) -> FakeNetwork {
        FakeNetwork { base, ..FakeNetwork::default() }
    }

    /// The policy in force for sandbox `id`, if it is attached.
    pub fn policy(&self, id: &str) -> Option<EgressPolicy> {
        self.policies.lock().unwrap_or_else(|e| e.into_inner()).get(id).cloned()
    }

    fn record(&self, id: &SandboxId, egress: Option<&EgressPolicy>) {
        let mut policies = self.policies.lock().unwrap_or_else(|e| e.into_inner());
        match egress {
            Some(p) => policies.insert(id.to_string(), p.clone()),
            None => policies.remove(id.as_str()),
        };
    }
}

impl Network for FakeNetwork {
    fn attach(
        &self,
        id: &SandboxId,
        slot: u32,
        egress: &EgressPolicy,
    ) -> Result<NetAttachment, NetworkError> {
        let (host_ip, sandbox_ip) = slot_addrs(self.base, slot);
        self.record(id, Some(egress));
        Ok(NetAttachment { netns_path: format!("/fake/netns/{id}").into(), sandbox_ip, host_ip })
    }

    fn set_policy(&self, id: &SandboxId, _slot: u32, egress: &EgressPolicy) -> Result<(), NetworkError> {
        self.record(id, Some(egress));
        Ok(())
    }

    fn detach(&self, id: &SandboxId, _slot: u32) -> Result<(), NetworkError> {
        self.record(id, None);
        Ok(())
    }

    fn start(&self) -> Result<(), NetworkError> {
        Ok(())
    }

    fn stop(&self) -> Result<(), NetworkError> {
        Ok(())
    }

    fn list_namespaces(&self) -> Vec<String> {
        Vec::new()
    }

    fn live_connections(&self, _sandbox_ip: Ipv4Addr) -> usize {
        0
    }

    fn traffic(&self, _id: &SandboxId) -> Option<Traffic> {
        None
    }

    fn remove_namespace(&self, _name: &str) -> Result<(), NetworkError> {
        Ok(())
    }
}
