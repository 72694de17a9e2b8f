//! The nftables ruleset firkin owns: one `inet firkin-<owner>` table per server instance, made
//! at start, replaced atomically after a crash, deleted at shutdown. Nothing else is touched.
//!
//! What the table does (threat model and limits: docs/security.md):
//! - **Spoofing**: a packet from a sandbox interface whose source does not route back through
//!   that interface, or is one of the host's own addresses, is dropped (before conntrack).
//! - **DNS**: every port-53 packet from this instance's sandboxes goes to firkin's forwarder.
//! - **The host**: sandboxes may not open connections to any of the host's addresses; only the
//!   forwarder's port and replies to connections the host opened (the proxy) pass.
//! - **Egress**: forwarded packets from sandboxes are dropped towards other sandboxes,
//!   link-local, loopback, multicast and reserved ranges always; then the sandbox's own policy
//!   chain (allow wins over deny) runs; then private ranges are dropped; the rest is accepted
//!   and masqueraded. With egress off, everything forwarded from a sandbox is dropped.
//! - **Concurrent connections** per sandbox are capped.
//!
//! Rules text is generated here (pure) and applied with `nft -f -`, one transaction each.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::Ipv4Addr;

use super::policy::{Cidr, EgressPolicy};

/// Prefix of firkin's table names: `firkin-<owner>`.
pub const TABLE_PREFIX: &str = "firkin-";

/// Prefix of the host side of every sandbox veth (all firkin instances).
pub const HOST_IF_PREFIX: &str = "fh";

/// Destinations no sandbox may reach, whatever its policy: "this network", loopback,
/// link-local (cloud metadata lives at 169.254.169.254), multicast, reserved, broadcast.
const NEVER: &str = "0.0.0.0/8, 127.0.0.0/8, 169.254.0.0/16, 224.0.0.0/3";

/// Private and shared ranges: closed unless a sandbox's `allowOut` names them.
const PRIVATE: &str = "10.0.0.0/8, 100.64.0.0/10, 172.16.0.0/12, 192.0.0.0/24, 192.168.0.0/16";

/// Whether `ip` is in a range closed to sandboxes by default (never, or private): a domain rule
/// does not open such an address — only `allowOut` naming its range does. Else an allowed name
/// whose DNS its owner controls could be pointed at the host's private networks.
pub fn fenced_by_default(ip: Ipv4Addr) -> bool {
    NEVER
        .split(", ")
        .chain(PRIVATE.split(", "))
        .filter_map(|c| c.parse::<Cidr>().ok())
        .any(|c| c.contains(ip))
}

/// How long an address resolved for an allowed domain stays open at least (seconds).
pub const MIN_DNS_OPEN_SECS: u32 = 300;

/// How the instance's table is shaped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirewallConfig {
    /// `firkin-<owner>`.
    pub table: String,
    /// This instance's sandbox addresses.
    pub subnet: Cidr,
    /// Sandbox egress (NAT) on or off.
    pub egress: bool,
    /// The local port firkin's DNS forwarder listens on (udp and tcp).
    pub dns_port: u16,
    /// firkin turned IPv4 forwarding on for its egress: keep the host from routing anything
    /// else (it did not before).
    pub forward_only_sandboxes: bool,
    /// Concurrent egress connections per sandbox.
    pub max_connections: u32,
}

/// The whole table, replacing any earlier one of the same name in the same transaction, with
/// the per-sandbox chains of `policies` (sandbox address → policy) included.
pub fn table(cfg: &FirewallConfig, policies: &BTreeMap<Ipv4Addr, EgressPolicy>) -> String {
    let t = &cfg.table;
    let mut s = format!("table inet {t} {{}}\ndelete table inet {t}\n");
    s.push_str(&table_body(cfg));
    for (ip, p) in policies.iter().filter(|(_, p)| !p.is_open()) {
        s.push_str(&sandbox_policy(t, *ip, p));
    }
    s
}

fn table_body(cfg: &FirewallConfig) -> String {
    let (t, net, port, fh) = (&cfg.table, cfg.subnet, cfg.dns_port, HOST_IF_PREFIX);
    let mut s = String::new();
    let _ = writeln!(s, "add table inet {t}");
    let _ =
        writeln!(s, "add set inet {t} never {{ type ipv4_addr; flags interval; elements = {{ {NEVER} }}; }}");
    let _ = writeln!(
        s,
        "add set inet {t} private {{ type ipv4_addr; flags interval; elements = {{ {PRIVATE} }}; }}"
    );
    let _ = writeln!(s, "add set inet {t} conns {{ type ipv4_addr; size 65535; flags dynamic; }}");
    let _ = writeln!(s, "add map inet {t} by_sandbox {{ type ipv4_addr : verdict; }}");
    // Regular chains exist before the rules that jump to them.
    let _ = writeln!(s, "add chain inet {t} to_host");
    let _ = writeln!(s, "add chain inet {t} egress");
    // Spoofing: strict reverse-path check on every firkin sandbox interface (instance-agnostic,
    // so two instances' identical rules agree), before conntrack sees the packet.
    let _ = writeln!(
        s,
        "add chain inet {t} spoof {{ type filter hook prerouting priority raw; policy accept; }}"
    );
    let _ = writeln!(s, "add rule inet {t} spoof iifname \"{fh}*\" meta nfproto ipv6 drop");
    let _ = writeln!(s, "add rule inet {t} spoof iifname \"{fh}*\" fib saddr . iif oif missing drop");
    let _ = writeln!(s, "add rule inet {t} spoof iifname \"{fh}*\" fib saddr type local drop");
    let _ =
        writeln!(s, "add chain inet {t} dns {{ type nat hook prerouting priority dstnat; policy accept; }}");
    let _ = writeln!(
        s,
        "add rule inet {t} dns iifname \"{fh}*\" ip saddr {net} meta l4proto {{ tcp, udp }} th dport 53 redirect to :{port}"
    );
    let _ =
        writeln!(s, "add chain inet {t} input {{ type filter hook input priority filter; policy accept; }}");
    let _ = writeln!(s, "add rule inet {t} input iifname \"{fh}*\" ip saddr {net} jump to_host");
    // The forwarder answers sandboxes only (it also checks the source itself).
    let _ = writeln!(s, "add rule inet {t} input meta l4proto {{ tcp, udp }} th dport {port} drop");
    let _ = writeln!(s, "add rule inet {t} to_host ct state established,related accept");
    let _ = writeln!(s, "add rule inet {t} to_host meta l4proto {{ tcp, udp }} th dport {port} accept");
    let _ = writeln!(s, "add rule inet {t} to_host drop");
    s.push_str(&forward_chains(cfg));
    s
}

fn forward_chains(cfg: &FirewallConfig) -> String {
    let (t, net, fh) = (&cfg.table, cfg.subnet, HOST_IF_PREFIX);
    let mut s = String::new();
    let _ = writeln!(
        s,
        "add chain inet {t} forward {{ type filter hook forward priority filter; policy accept; }}"
    );
    let _ = writeln!(s, "add rule inet {t} forward iifname \"{fh}*\" ip saddr {net} jump egress");
    let _ = writeln!(
        s,
        "add rule inet {t} forward oifname \"{fh}*\" ip daddr {net} ct state established,related accept"
    );
    let _ = writeln!(s, "add rule inet {t} forward oifname \"{fh}*\" ip daddr {net} drop");
    if cfg.forward_only_sandboxes {
        let _ = writeln!(s, "add rule inet {t} forward iifname != \"{fh}*\" oifname != \"{fh}*\" drop");
    }
    let _ = writeln!(s, "add rule inet {t} egress ct state established,related accept");
    if !cfg.egress {
        let _ = writeln!(s, "add rule inet {t} egress drop");
        return s;
    }
    let _ = writeln!(s, "add rule inet {t} egress oifname \"{fh}*\" drop");
    let _ = writeln!(s, "add rule inet {t} egress ip daddr @never drop");
    let _ = writeln!(
        s,
        "add rule inet {t} egress ct state new add @conns {{ ip saddr ct count over {} }} reject",
        cfg.max_connections
    );
    let _ = writeln!(s, "add rule inet {t} egress ip saddr vmap @by_sandbox");
    let _ = writeln!(s, "add rule inet {t} egress ip daddr @private drop");
    let _ =
        writeln!(s, "add chain inet {t} nat {{ type nat hook postrouting priority srcnat; policy accept; }}");
    let _ = writeln!(s, "add rule inet {t} nat ip saddr {net} oifname != \"{fh}*\" masquerade");
    s
}

fn chain_name(ip: Ipv4Addr) -> String {
    format!("s-{}", ip.to_string().replace('.', "-"))
}

/// The DNS-opened address set of one sandbox.
fn dns_set_name(ip: Ipv4Addr) -> String {
    format!("d-{}", ip.to_string().replace('.', "-"))
}

/// Installs (or replaces) the policy chain of the sandbox at `ip`; an open policy removes it.
pub fn sandbox_policy(table: &str, ip: Ipv4Addr, p: &EgressPolicy) -> String {
    if p.is_open() {
        return remove_sandbox(table, ip);
    }
    let (chain, set) = (chain_name(ip), dns_set_name(ip));
    let mut s = String::new();
    let _ = writeln!(s, "add chain inet {table} {chain}");
    let _ = writeln!(s, "flush chain inet {table} {chain}");
    let _ = writeln!(s, "add set inet {table} {set} {{ type ipv4_addr; flags timeout; }}");
    if !p.allow_domains.is_empty() {
        let _ = writeln!(s, "add rule inet {table} {chain} ip daddr @{set} accept");
    }
    if !p.allow_cidrs.is_empty() {
        let _ = writeln!(s, "add rule inet {table} {chain} ip daddr {{ {} }} accept", join(&p.allow_cidrs));
    }
    if !p.deny_cidrs.is_empty() {
        let _ = writeln!(s, "add rule inet {table} {chain} ip daddr {{ {} }} drop", join(&p.deny_cidrs));
    }
    if p.no_internet {
        let _ = writeln!(s, "add rule inet {table} {chain} drop");
    }
    let _ = writeln!(s, "add element inet {table} by_sandbox {{ {ip} : jump {chain} }}");
    s
}

/// Removes the policy chain and DNS set of the sandbox at `ip`, whether or not they exist
/// (each object is added first, so the deletes cannot fail the transaction).
pub fn remove_sandbox(table: &str, ip: Ipv4Addr) -> String {
    let (chain, set) = (chain_name(ip), dns_set_name(ip));
    let mut s = String::new();
    let _ = writeln!(s, "add chain inet {table} {chain}");
    let _ = writeln!(s, "add element inet {table} by_sandbox {{ {ip} : jump {chain} }}");
    let _ = writeln!(s, "delete element inet {table} by_sandbox {{ {ip} }}");
    let _ = writeln!(s, "delete chain inet {table} {chain}");
    let _ = writeln!(s, "add set inet {table} {set} {{ type ipv4_addr; flags timeout; }}");
    let _ = writeln!(s, "delete set inet {table} {set}");
    s
}

/// Opens `addrs` for the sandbox at `ip` for `secs` seconds (restarting the clock of any
/// already open). The sandbox's policy chain must exist.
pub fn open_resolved(table: &str, ip: Ipv4Addr, addrs: &[Ipv4Addr], secs: u32) -> String {
    let set = dns_set_name(ip);
    let list = addrs.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
    let timed = addrs.iter().map(|a| format!("{a} timeout {secs}s")).collect::<Vec<_>>().join(", ");
    format!(
        "add element inet {table} {set} {{ {timed} }}\ndelete element inet {table} {set} {{ {list} }}\n\
         add element inet {table} {set} {{ {timed} }}\n"
    )
}

/// The DNS-opened sets in `nft -j list table` output: sandbox address → (address, seconds
/// left) of each element.
pub fn dns_set_elements(json: &serde_json::Value) -> Vec<(Ipv4Addr, Vec<(Ipv4Addr, u32)>)> {
    let sets = json["nftables"].as_array().into_iter().flatten().filter_map(|o| o.get("set"));
    sets.filter_map(|set| {
        let ip: Ipv4Addr = set["name"].as_str()?.strip_prefix("d-")?.replace('-', ".").parse().ok()?;
        let elems = set["elem"].as_array().into_iter().flatten().filter_map(|e| {
            let e = &e["elem"];
            let addr = e["val"].as_str()?.parse().ok()?;
            let left = e["expires"].as_u64().or_else(|| e["timeout"].as_u64())?;
            Some((addr, u32::try_from(left).ok()?.max(1)))
        });
        Some((ip, elems.collect()))
    })
    .collect()
}

fn join(cidrs: &[Cidr]) -> String {
    cidrs.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
}

/// Whether a listed table (`nft list table` text) serves sandboxes in `subnet`: its DNS
/// redirect names the subnet. Two instances on one subnet would take each other's traffic.
pub fn serves_subnet(table_text: &str, subnet: Cidr) -> bool {
    let needle = format!("ip saddr {subnet} ");
    table_text.lines().any(|l| l.contains(&needle) && l.contains("redirect to"))
}

/// Deletes the table if it exists.
pub fn delete_table(table: &str) -> String {
    format!("table inet {table} {{}}\ndelete table inet {table}\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(egress: bool) -> FirewallConfig {
        FirewallConfig {
            table: "firkin-abc123".into(),
            subnet: "10.211.0.0/16".parse().unwrap(),
            egress,
            dns_port: 40053,
            forward_only_sandboxes: false,
            max_connections: 2500,
        }
    }

    #[test]
    fn the_table_replaces_itself_and_scopes_rules_to_its_subnet() {
        let t = table(&cfg(true), &BTreeMap::new());
        assert!(t.starts_with("table inet firkin-abc123 {}\ndelete table inet firkin-abc123\n"));
        assert!(t.contains("ip saddr 10.211.0.0/16 meta l4proto { tcp, udp } th dport 53 redirect to :40053"));
        assert!(t.contains("ip saddr 10.211.0.0/16 oifname != \"fh*\" masquerade"));
        assert!(t.contains("ct count over 2500"));
        assert!(!t.contains("iifname != \"fh*\" oifname != \"fh*\" drop"));
        // No policy chains for sandboxes with open policies.
        let open = BTreeMap::from([(Ipv4Addr::new(10, 211, 0, 2), EgressPolicy::default())]);
        assert!(!table(&cfg(true), &open).contains("s-10-211-0-2"));
    }

    #[test]
    fn egress_off_drops_all_forwarding_and_does_no_nat() {
        let t = table(&cfg(false), &BTreeMap::new());
        assert!(t.contains("add rule inet firkin-abc123 egress drop"));
        assert!(!t.contains("masquerade"));
        // The host fence is there either way.
        assert!(t.contains("add rule inet firkin-abc123 to_host drop"));
    }

    #[test]
    fn a_policy_chain_allows_before_it_denies() {
        let ip = Ipv4Addr::new(10, 211, 0, 6);
        let p = EgressPolicy::from_e2b(
            Some(false),
            &["198.18.0.10".into(), "web.example.test".into()],
            &["198.18.0.0/24".into()],
        )
        .unwrap();
        let s = sandbox_policy("firkin-abc123", ip, &p);
        let pos = |needle: &str| s.find(needle).unwrap_or_else(|| panic!("{needle} missing in\n{s}"));
        assert!(pos("ip daddr @d-10-211-0-6 accept") < pos("ip daddr { 198.18.0.0/24 } drop"));
        assert!(pos("ip daddr { 198.18.0.10 } accept") < pos("ip daddr { 198.18.0.0/24 } drop"));
        assert!(s.contains("add rule inet firkin-abc123 s-10-211-0-6 drop\n"));
        assert!(s.ends_with("add element inet firkin-abc123 by_sandbox { 10.211.0.6 : jump s-10-211-0-6 }\n"));
        assert_eq!(
            sandbox_policy("firkin-abc123", ip, &EgressPolicy::default()),
            remove_sandbox("firkin-abc123", ip)
        );
    }

    #[test]
    fn a_table_is_known_by_the_subnet_it_serves() {
        let listed = "table inet firkin-abc123 {\n\tchain dns {\n\t\tiifname \"fh*\" ip saddr 10.211.0.0/16 \
                      meta l4proto { tcp, udp } th dport 53 redirect to :40053\n\t}\n}\n";
        assert!(serves_subnet(listed, "10.211.0.0/16".parse().unwrap()));
        assert!(!serves_subnet(listed, "10.21.0.0/16".parse().unwrap()));
        assert!(!serves_subnet(listed, "10.212.0.0/16".parse().unwrap()));
    }

    #[test]
    fn private_and_reserved_addresses_are_fenced_by_default() {
        for ip in [
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "100.64.0.1",
            "127.0.0.1",
            "169.254.169.254",
            "224.0.0.1",
        ] {
            assert!(fenced_by_default(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["198.18.0.10", "8.8.8.8", "172.32.0.1"] {
            assert!(!fenced_by_default(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn reads_dns_sets_back_from_nft_json() {
        let json = serde_json::json!({"nftables": [
            {"metainfo": {"json_schema_version": 1}},
            {"table": {"family": "inet", "name": "t"}},
            {"set": {"family": "inet", "name": "d-10-0-0-2", "table": "t", "type": "ipv4_addr",
                     "elem": [{"elem": {"val": "198.18.0.10", "timeout": 300, "expires": 287}}]}},
            {"set": {"family": "inet", "name": "never", "table": "t", "type": "ipv4_addr"}},
            {"set": {"family": "inet", "name": "d-10-0-0-6", "table": "t", "type": "ipv4_addr"}}
        ]});
        let got = dns_set_elements(&json);
        assert_eq!(
            got,
            [
                (Ipv4Addr::new(10, 0, 0, 2), vec![(Ipv4Addr::new(198, 18, 0, 10), 287)]),
                (Ipv4Addr::new(10, 0, 0, 6), vec![])
            ]
        );
    }

    #[test]
    fn resolved_addresses_are_reopened_with_a_fresh_timeout() {
        let s = open_resolved("t", Ipv4Addr::new(10, 0, 0, 2), &[Ipv4Addr::new(198, 18, 0, 10)], 300);
        assert_eq!(
            s,
            "add element inet t d-10-0-0-2 { 198.18.0.10 timeout 300s }\n\
             delete element inet t d-10-0-0-2 { 198.18.0.10 }\n\
             add element inet t d-10-0-0-2 { 198.18.0.10 timeout 300s }\n"
        );
    }
}
