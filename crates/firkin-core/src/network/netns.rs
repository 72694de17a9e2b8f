//! Real per-sandbox networks with iproute2: `ip netns add`, a veth pair, addresses, a default
//! route to the host end. What leaves the sandbox is decided by the instance's firewall
//! ([`super::egress`]), and its DNS is answered by [`super::dns`].

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use super::dns::DnsForwarder;
use super::egress::Egress;
use super::firewall::{FirewallConfig, TABLE_PREFIX};
use super::forwarding::ForwardingFiles;
use super::policy::Cidr;
use super::slots::slot_addrs;
use super::{EgressPolicy, NetAttachment, Network, NetworkError, Traffic};
use crate::ids::SandboxId;

/// How sandboxes reach the outside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetOptions {
    /// Sandbox internet egress (NAT through the host's routing table).
    pub egress: bool,
    /// Resolvers the DNS forwarder asks; `None` = the host's (`/etc/resolv.conf`).
    pub dns: Option<Vec<SocketAddr>>,
    /// Concurrent egress connections per sandbox.
    pub max_connections: u32,
}

impl Default for NetOptions {
    fn default() -> Self {
        NetOptions { egress: true, dns: None, max_connections: 2500 }
    }
}

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
    opts: NetOptions,
    egress: Arc<Egress>,
    dns: Mutex<Option<DnsForwarder>>,
    forwarding: ForwardingFiles,
}

impl NetnsNetwork {
    /// `base` is the start of the /16 range carved into /30 slots; `state_dir` names the owner.
    pub fn new(base: Ipv4Addr, state_dir: &std::path::Path, opts: NetOptions) -> NetnsNetwork {
        use sha2::{Digest, Sha256};
        let digest = Sha256::digest(state_dir.as_os_str().as_encoded_bytes());
        let owner: String = digest.iter().take(3).map(|b| format!("{b:02x}")).collect();
        let cfg = FirewallConfig {
            table: format!("{TABLE_PREFIX}{owner}"),
            subnet: Cidr::new(base, 16),
            egress: opts.egress,
            dns_port: 0,
            forward_only_sandboxes: false,
            max_connections: opts.max_connections,
        };
        let egress = Arc::new(Egress::new(cfg));
        NetnsNetwork {
            base,
            owner,
            opts,
            egress,
            dns: Mutex::new(None),
            forwarding: ForwardingFiles::default(),
        }
    }

    /// The nftables table this instance owns.
    pub fn table_name(&self) -> String {
        format!("{TABLE_PREFIX}{}", self.owner)
    }

    fn upstreams(&self) -> Vec<SocketAddr> {
        match &self.opts.dns {
            Some(list) => list.clone(),
            None => super::dns::resolv_conf_servers(
                &std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
            ),
        }
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
    fn attach(
        &self,
        id: &SandboxId,
        slot: u32,
        egress: &EgressPolicy,
    ) -> Result<NetAttachment, NetworkError> {
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
        // The policy is in force before the interface exists.
        let made = self
            .egress
            .set(sandbox_ip, id.as_str(), egress)
            .and_then(|()| run_ip_batch(id.as_str(), "host side", None, OnFailedLine::Stop, &host))
            .and_then(|()| run_ip_batch(id.as_str(), "sandbox side", Some(&ns), OnFailedLine::Stop, &inside));
        if let Err(e) = made {
            let _ = self.detach(id, slot);
            return Err(e);
        }
        Ok(NetAttachment { netns_path: PathBuf::from(format!("/var/run/netns/{ns}")), sandbox_ip, host_ip })
    }

    fn set_policy(&self, id: &SandboxId, slot: u32, egress: &EgressPolicy) -> Result<(), NetworkError> {
        self.egress.set(slot_addrs(self.base, slot).1, id.as_str(), egress)
    }

    fn start(&self) -> Result<(), NetworkError> {
        let start = |e: String| NetworkError::Start(e);
        let subnet = self.egress.config().subnet;
        if let Some(other) = super::egress::other_table_on_subnet(&self.table_name(), subnet) {
            return Err(start(format!(
                "nftables table {other} of another firkin server already serves sandboxes in {subnet}: \
                 give this server another --subnet-base (or, if that server is gone for good, \
                 `nft delete table inet {other}`)"
            )));
        }
        let upstreams = self.upstreams();
        if upstreams.is_empty() {
            tracing::warn!(
                "no DNS resolvers (none in /etc/resolv.conf, no --dns): sandboxes cannot resolve names"
            );
        }
        let dns = DnsForwarder::start(Arc::clone(&self.egress), upstreams)
            .map_err(|e| start(format!("DNS forwarder: {e}")))?;
        let mut cfg = self.egress.config();
        cfg.dns_port = dns.port();
        // The table (with its guard, if forwarding is off) goes in before forwarding is on.
        cfg.forward_only_sandboxes = self.opts.egress && self.forwarding.guard_needed();
        self.egress.install(cfg.clone())?;
        if self.opts.egress {
            let fwd =
                self.forwarding.acquire(&self.owner).map_err(|e| start(format!("IPv4 forwarding: {e}")))?;
            if fwd.firkin_turned_it_on != cfg.forward_only_sandboxes {
                cfg.forward_only_sandboxes = fwd.firkin_turned_it_on;
                self.egress.install(cfg)?;
            }
        }
        *self.dns.lock().unwrap_or_else(|e| e.into_inner()) = Some(dns);
        Ok(())
    }

    fn stop(&self) -> Result<(), NetworkError> {
        let released = if self.opts.egress { self.forwarding.release(&self.owner) } else { Ok(()) };
        let uninstalled = self.egress.uninstall();
        self.dns.lock().unwrap_or_else(|e| e.into_inner()).take();
        released.map_err(|e| NetworkError::Start(format!("putting IPv4 forwarding back: {e}")))?;
        uninstalled
    }

    fn detach(&self, id: &SandboxId, slot: u32) -> Result<(), NetworkError> {
        let cleared = self.egress.clear(slot_addrs(self.base, slot).1, id.as_str());
        let (ns, host_if, _) = self.names(id);
        let mut lines = Vec::with_capacity(2);
        if std::path::Path::new("/sys/class/net").join(&host_if).exists() {
            lines.push(format!("link del {host_if}"));
        }
        if PathBuf::from(format!("/var/run/netns/{ns}")).exists() {
            lines.push(format!("netns del {ns}"));
        }
        if !lines.is_empty() {
            run_ip_batch(id.as_str(), "teardown", None, OnFailedLine::GoOn, &lines)?;
        }
        cleared
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

    fn traffic(&self, id: &SandboxId) -> Option<Traffic> {
        let (_, host_if, _) = self.names(id);
        let stats = std::path::Path::new("/sys/class/net").join(host_if).join("statistics");
        let read = |name: &str| std::fs::read_to_string(stats.join(name)).ok()?.trim().parse::<u64>().ok();
        // The host end receives what the sandbox sends.
        Some(Traffic { out_bytes: read("rx_bytes")?, in_bytes: read("tx_bytes")? })
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
