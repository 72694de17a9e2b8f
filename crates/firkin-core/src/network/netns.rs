//! Real per-sandbox networks with iproute2: `ip netns add`, a veth pair, addresses.
//! No route out of the host is configured: sandboxes have no internet egress.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Command, Stdio};

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
}

/// Runs `ip ARGS`; `owner` (a sandbox id or namespace name) and `op` name the failure.
fn run_ip(owner: &str, op: &str, args: &[&str]) -> Result<(), NetworkError> {
    run(owner, op, Command::new("ip").args(args), None)
}

/// What a batch of `ip` commands does after a failed line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OnFailedLine {
    /// Stop and report it (setup).
    Stop,
    /// Go on with the rest (teardown: remove whatever is there).
    GoOn,
}

/// Runs several `ip` commands in one process (`ip [-n NS] -batch -`): one fork/exec instead
/// of one per command, which is most of a create's network setup time.
fn run_ip_batch(
    owner: &str,
    op: &str,
    ns: Option<&str>,
    on_failure: OnFailedLine,
    lines: &[String],
) -> Result<(), NetworkError> {
    let mut cmd = Command::new("ip");
    if let Some(ns) = ns {
        cmd.args(["-n", ns]);
    }
    if on_failure == OnFailedLine::GoOn {
        cmd.arg("-force");
    }
    cmd.args(["-batch", "-"]);
    run(owner, op, &mut cmd, Some(lines.join("\n") + "\n"))
}

fn run(owner: &str, op: &str, cmd: &mut Command, stdin: Option<String>) -> Result<(), NetworkError> {
    use std::io::Write;
    let fail = |detail: String| NetworkError::Command { id: owner.to_owned(), op: op.to_owned(), detail };
    cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| fail(format!("spawning ip: {e}")))?;
    if let (Some(text), Some(mut pipe)) = (stdin.as_ref(), child.stdin.take()) {
        pipe.write_all(text.as_bytes()).map_err(|e| fail(format!("writing to ip: {e}")))?;
    }
    let out = child.wait_with_output().map_err(|e| fail(format!("waiting for ip: {e}")))?;
    if out.status.success() {
        Ok(())
    } else {
        let what = stdin.as_deref().map(|t| t.trim().replace('\n', "; ")).unwrap_or_default();
        Err(fail(format!("ip {what}: {}", String::from_utf8_lossy(&out.stderr).trim())))
    }
}

impl Network for NetnsNetwork {
    fn attach(&self, id: &SandboxId, slot: u32) -> Result<NetAttachment, NetworkError> {
        let (ns, host_if, sbx_if) = self.names(id);
        let (host_ip, sandbox_ip) = slot_addrs(self.base, slot);
        // Clear leftovers of a crashed earlier owner of this slot.
        if std::path::Path::new("/sys/class/net").join(&host_if).exists() {
            let _ = run_ip(id.as_str(), "cleanup", &["link", "del", &host_if]);
        }
        let host = [
            format!("netns add {ns}"),
            format!("link add {host_if} type veth peer name {sbx_if} netns {ns}"),
            format!("addr add {host_ip}/30 dev {host_if}"),
            format!("link set {host_if} up"),
        ];
        let inside = [
            format!("addr add {sandbox_ip}/30 dev {sbx_if}"),
            format!("link set {sbx_if} up"),
            // gVisor's netstack takes loopback over only if it is up: servers on localhost.
            "link set lo up".to_owned(),
            format!("route add default via {host_ip}"),
        ];
        let made = run_ip_batch(id.as_str(), "host side", None, OnFailedLine::Stop, &host)
            .and_then(|()| run_ip_batch(id.as_str(), "sandbox side", Some(&ns), OnFailedLine::Stop, &inside));
        if let Err(e) = made {
            let _ = self.detach(id, slot);
            return Err(e);
        }
        Ok(NetAttachment { netns_path: PathBuf::from(format!("/var/run/netns/{ns}")), sandbox_ip, host_ip })
    }

    fn detach(&self, id: &SandboxId, _slot: u32) -> Result<(), NetworkError> {
        let (ns, host_if, _) = self.names(id);
        let mut lines = Vec::with_capacity(2);
        if std::path::Path::new("/sys/class/net").join(&host_if).exists() {
            lines.push(format!("link del {host_if}"));
        }
        if PathBuf::from(format!("/var/run/netns/{ns}")).exists() {
            lines.push(format!("netns del {ns}"));
        }
        if lines.is_empty() {
            return Ok(());
        }
        run_ip_batch(id.as_str(), "teardown", None, OnFailedLine::GoOn, &lines)
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
