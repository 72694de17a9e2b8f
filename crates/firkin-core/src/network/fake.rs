//! A network that configures nothing, for unit tests.

use std::net::Ipv4Addr;

use super::slots::slot_addrs;
use super::{NetAttachment, Network, NetworkError};
use crate::ids::SandboxId;

#[derive(Debug, Default)]
pub struct FakeNetwork;

impl Network for FakeNetwork {
    fn attach(&self, id: &SandboxId, slot: u32) -> Result<NetAttachment, NetworkError> {
        let (host_ip, sandbox_ip) = slot_addrs(Ipv4Addr::new(127, 200, 0, 0), slot);
        Ok(NetAttachment {
            netns_path: format!("/fake/netns/{id}").into(),
            sandbox_ip,
            host_ip,
        })
    }

    fn detach(&self, _id: &SandboxId, _slot: u32) -> Result<(), NetworkError> {
        Ok(())
    }

    fn list_namespaces(&self) -> Vec<String> {
        Vec::new()
    }

    fn remove_namespace(&self, _name: &str) -> Result<(), NetworkError> {
        Ok(())
    }
}
