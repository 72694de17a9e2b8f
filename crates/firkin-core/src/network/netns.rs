//! Real per-sandbox networks with iproute2: `ip netns add`, a veth pair, addresses.
//! No route out of the host is configured: sandboxes have no internet egress.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Command;

use super::slots::slot_addrs;
use super::{NetAttachment, Network, NetworkError};
use crate::ids::SandboxId;

/// Prefix of every namespace firkin creates: `fk-<owner>-<sandbox id>`.
pub const NETNS_PREFIX: &str = "fk-";

/// iproute2-backed network.
///
/// Several firkin instances (say a server and a bench) may share a host: namespaces carry an
/// owner tag derived from the instance's state directory, so each reconciles only its own, and
/// veth names derive from the (random) sandbox id, not from the per-instance slot.
#[derive(Debug)]
pub struct NetnsNetwork {
    base: Ipv4Addr,
    owner: String,
}

impl NetnsNetwork {
    /// `base` is the start of the /16 range carved into /30 slots; `state_dir` names the owner.
    pub fn new(base: Ipv4Addr, state_dir: &std::path::Path) -> NetnsNetwork {
        use sha2::{Digest, Sha256};
        let digest = Sha256::digest(state_dir.as_os_str().as_encoded_bytes());
        let owner: String = digest.iter().take(3).map(|b| format!("{b:02x}")).collect();
        NetnsNetwork { base, owner }
    }

    fn ns_prefix(&self) -> String {
        format!("{NETNS_PREFIX}{}-", self.owner)
    }

    fn names(&self, id: &SandboxId) -> (String, String, String) {
        // Interface names are at most 15 bytes: "fh" / "fs" + 13 chars of the id.
        let short: String = id.as_str().chars().take(13).collect();
        (format!("{}{id}", self.ns_prefix()), format!("fh{short}"), format!("fs{short}"))
    }

    fn ip(id: &SandboxId, op: &str, args: &[&str]) -> Result<(), NetworkError> {
        run_ip(id.as_str(), op, args)
    }
}

/// Runs `ip ARGS`; `owner` (a sandbox id or namespace name) and `op` name the failure.
fn run_ip(owner: &str, op: &str, args: &[&str]) -> Result<(), NetworkError> {
    let fail = |detail: String| NetworkError::Command { id: owner.to_owned(), op: op.to_owned(), detail };
    let out = Command::new("ip").args(args).output().map_err(|e| fail(format!("spawning ip: {e}")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(fail(format!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim())))
    }
}

impl Network for NetnsNetwork {
    fn attach(&self, id: &SandboxId, slot: u32) -> Result<NetAttachment, NetworkError> {
        let (ns, host_if, sbx_if) = self.names(id);
        let (host_ip, sandbox_ip) = slot_addrs(self.base, slot);
        // Clear leftovers of a crashed earlier owner of this slot.
        let _ = Self::ip(id, "cleanup", &["link", "del", &host_if]);
        let host_cidr = format!("{host_ip}/30");
        let sbx_cidr = format!("{sandbox_ip}/30");
        let host_s = host_ip.to_string();
        let steps: [(&str, Vec<&str>); 8] = [
            ("netns add", vec!["netns", "add", &ns]),
            (
                "veth add",
                vec!["link", "add", &host_if, "type", "veth", "peer", "name", &sbx_if, "netns", &ns],
            ),
            ("host addr", vec!["addr", "add", &host_cidr, "dev", &host_if]),
            ("host up", vec!["link", "set", &host_if, "up"]),
            ("sandbox addr", vec!["-n", &ns, "addr", "add", &sbx_cidr, "dev", &sbx_if]),
            ("sandbox up", vec!["-n", &ns, "link", "set", &sbx_if, "up"]),
            // gVisor's netstack takes loopback over only if it is up: servers on localhost.
            ("sandbox lo up", vec!["-n", &ns, "link", "set", "lo", "up"]),
            ("sandbox route", vec!["-n", &ns, "route", "add", "default", "via", &host_s]),
        ];
        for (op, args) in steps.iter() {
            if let Err(e) = Self::ip(id, op, args) {
                let _ = self.detach(id, slot);
                return Err(e);
            }
        }
        Ok(NetAttachment { netns_path: PathBuf::from(format!("/var/run/netns/{ns}")), sandbox_ip, host_ip })
    }

    fn detach(&self, id: &SandboxId, _slot: u32) -> Result<(), NetworkError> {
        let (ns, host_if, _) = self.names(id);
        let _ = Self::ip(id, "veth del", &["link", "del", &host_if]);
        if PathBuf::from(format!("/var/run/netns/{ns}")).exists() {
            Self::ip(id, "netns del", &["netns", "del", &ns])?;
        }
        Ok(())
    }

    fn list_namespaces(&self) -> Vec<String> {
        std::fs::read_dir("/var/run/netns")
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .filter_map(|e| e.file_name().into_string().ok())
                    .filter(|n| n.starts_with(&self.ns_prefix()))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn live_connections(&self, sandbox_ip: Ipv4Addr) -> usize {
        std::fs::read_to_string("/proc/net/tcp").map(|t| count_live(&t, sandbox_ip)).unwrap_or(0)
    }

    fn remove_namespace(&self, name: &str) -> Result<(), NetworkError> {
        run_ip(name, "netns del", &["netns", "del", name])
    }
}

/// Counts `/proc/net/tcp` rows whose remote address is `ip` and whose state is neither
/// TIME_WAIT (06) nor CLOSE (07). Addresses are little-endian hex on little-endian hosts.
fn count_live(table: &str, ip: Ipv4Addr) -> usize {
    let want = format!("{:08X}", u32::from_le_bytes(ip.octets()));
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let (Some(rem), Some(state)) = (cols.get(2), cols.get(3)) else { return false };
            rem.split(':').next() == Some(want.as_str()) && *state != "06" && *state != "07"
        })
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_only_live_connections_to_the_sandbox() {
        // 10.210.0.2 is 0200D20A little-endian.
        let t = "  sl  local_address rem_address   st\n\
   0: 0100D20A:9C40 0200D20A:C34F 01 0\n\
   1: 0100D20A:9C41 0200D20A:C34F 06 0\n\
   2: 0100D20A:9C42 0200D20A:C34F 05 0\n\
   3: 0100007F:0BB8 0100007F:9C40 01 0\n";
        assert_eq!(count_live(t, Ipv4Addr::new(10, 210, 0, 2)), 2);
        assert_eq!(count_live(t, Ipv4Addr::new(10, 210, 0, 6)), 0);
    }
}
