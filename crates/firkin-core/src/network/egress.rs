//! The live firewall of one firkin instance: its nftables table and every sandbox's egress
//! policy, kept in memory so the whole table can be rebuilt in one transaction (at start, and
//! after a crash) and so the DNS forwarder can look a sandbox's policy up by its address. The
//! addresses opened by domain rules are remembered per sandbox and opened again wherever it
//! runs next (resume, restart): its processes may still use them.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use super::firewall::{self, FirewallConfig};
use super::policy::EgressPolicy;
use super::resolved::Resolved;
use super::NetworkError;

/// A sandbox the firewall knows.
#[derive(Debug, Clone)]
struct Attached {
    id: String,
    policy: EgressPolicy,
}

/// The instance's firewall.
#[derive(Debug)]
pub struct Egress {
    cfg: Mutex<FirewallConfig>,
    /// Every attached sandbox by address, with its id (open policies included: the forwarder
    /// answers only these).
    policies: Mutex<BTreeMap<Ipv4Addr, Attached>>,
    resolved: Mutex<Resolved>,
    installed: AtomicBool,
}

impl Egress {
    pub fn new(cfg: FirewallConfig) -> Egress {
        Egress {
            cfg: Mutex::new(cfg),
            policies: Mutex::new(BTreeMap::new()),
            resolved: Mutex::new(Resolved::default()),
            installed: AtomicBool::new(false),
        }
    }

    fn policies(&self) -> MutexGuard<'_, BTreeMap<Ipv4Addr, Attached>> {
        self.policies.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn resolved(&self) -> MutexGuard<'_, Resolved> {
        self.resolved.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Statements re-opening, in `ip`'s set, what sandbox `id`'s domain rules opened before.
    fn reopen(&self, table: &str, ip: Ipv4Addr, id: &str, policy: &EgressPolicy) -> String {
        if policy.allow_domains.is_empty() {
            return String::new();
        }
        let open = self.resolved().open_for(id, Instant::now());
        open.iter().map(|(addr, secs)| firewall::open_resolved(table, ip, &[*addr], *secs)).collect()
    }

    /// The table's configuration.
    pub fn config(&self) -> FirewallConfig {
        self.cfg.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Whether sandboxes have egress at all (server-wide).
    pub fn enabled(&self) -> bool {
        self.config().egress
    }

    /// (Re)builds the whole table with every known policy, in one transaction: an earlier
    /// table of this instance (left by a crash) is replaced without a gap.
    pub fn install(&self, cfg: FirewallConfig) -> Result<(), NetworkError> {
        *self.cfg.lock().unwrap_or_else(|e| e.into_inner()) = cfg.clone();
        let attached = self.policies().clone();
        self.remember_table_sets(&cfg.table, &attached);
        let policies: BTreeMap<Ipv4Addr, EgressPolicy> =
            attached.iter().map(|(ip, a)| (*ip, a.policy.clone())).collect();
        let mut script = firewall::table(&cfg, &policies);
        for (ip, a) in &attached {
            script.push_str(&self.reopen(&cfg.table, *ip, &a.id, &a.policy));
        }
        nft(&cfg.table, "install", &script)?;
        self.installed.store(true, Ordering::SeqCst);
        Ok(())
    }

    /// Deletes the table (nothing else firkin did not make is touched).
    pub fn uninstall(&self) -> Result<(), NetworkError> {
        self.installed.store(false, Ordering::SeqCst);
        let table = self.config().table;
        nft(&table, "uninstall", &firewall::delete_table(&table))
    }

    /// Sets the policy of sandbox `id` at `ip` (replacing its earlier one atomically).
    pub fn set(&self, ip: Ipv4Addr, id: &str, policy: &EgressPolicy) -> Result<(), NetworkError> {
        let mut policies = self.policies();
        let was_open = policies.get(&ip).is_none_or(|a| a.policy.is_open());
        if self.installed.load(Ordering::SeqCst) && !(was_open && policy.is_open()) {
            let table = self.config().table;
            let script = firewall::sandbox_policy(&table, ip, policy) + &self.reopen(&table, ip, id, policy);
            nft(&table, &format!("policy for {ip}"), &script)?;
        }
        policies.insert(ip, Attached { id: id.to_owned(), policy: policy.clone() });
        Ok(())
    }

    /// Forgets sandbox `id` at `ip` and removes its rules (nothing if another sandbox holds
    /// the address now).
    pub fn clear(&self, ip: Ipv4Addr, id: &str) -> Result<(), NetworkError> {
        let mut policies = self.policies();
        if policies.get(&ip).is_some_and(|a| a.id == id) {
            let gone = policies.remove(&ip).map(|a| a.policy).unwrap_or_default();
            if self.installed.load(Ordering::SeqCst) && !gone.is_open() {
                let table = self.config().table;
                nft(&table, &format!("remove rules of {ip}"), &firewall::remove_sandbox(&table, ip))?;
            }
        }
        Ok(())
    }

    /// The policy of the sandbox at `ip`, if it is one of this instance's.
    pub fn policy_of(&self, ip: Ipv4Addr) -> Option<EgressPolicy> {
        self.policies().get(&ip).map(|a| a.policy.clone())
    }

    /// Opens `addrs` (answers for a name its policy allows) to the sandbox at `ip`.
    pub fn open_resolved(&self, ip: Ipv4Addr, addrs: &[Ipv4Addr], ttl: u32) -> Result<(), NetworkError> {
        let policies = self.policies();
        // Only while the sandbox still has a domain rule (its policy may have just changed).
        let Some(attached) = policies.get(&ip).filter(|a| !a.policy.allow_domains.is_empty()) else {
            return Ok(());
        };
        // A name opens public addresses only (see `fenced_by_default`).
        let addrs: Vec<Ipv4Addr> =
            addrs.iter().copied().filter(|a| !firewall::fenced_by_default(*a)).collect();
        if addrs.is_empty() {
            return Ok(());
        }
        let addrs = addrs.as_slice();
        let table = self.config().table;
        let secs = ttl.max(firewall::MIN_DNS_OPEN_SECS);
        self.resolved().record(&attached.id, addrs, secs, Instant::now());
        nft(
            &table,
            &format!("open resolved addresses for {ip}"),
            &firewall::open_resolved(&table, ip, addrs, secs),
        )
    }
}

impl Egress {
    /// Before the table is replaced (a restart after a crash): remembers what its DNS sets
    /// held for the sandboxes re-adopted at the same addresses.
    fn remember_table_sets(&self, table: &str, attached: &BTreeMap<Ipv4Addr, Attached>) {
        let Ok(out) =
            Command::new("nft").args(["-j", "list", "table", "inet", table]).stderr(Stdio::null()).output()
        else {
            return;
        };
        let Ok(json) = serde_json::from_slice::<serde_json::Value>(&out.stdout) else { return };
        let now = Instant::now();
        for (ip, elems) in firewall::dns_set_elements(&json) {
            if let Some(a) = attached.get(&ip) {
                for (addr, secs) in elems {
                    self.resolved().record(&a.id, &[addr], secs, now);
                }
            }
        }
    }
}

/// Another firkin table (not `own`) that serves sandboxes in `subnet`, if any: a second server
/// on the same `--subnet-base` (or one killed and never restarted, whose table is still there).
pub fn other_table_on_subnet(own: &str, subnet: super::policy::Cidr) -> Option<String> {
    let out = Command::new("nft").args(["-j", "list", "tables"]).stderr(Stdio::null()).output().ok()?;
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    let names: Vec<String> = json["nftables"]
        .as_array()?
        .iter()
        .filter_map(|o| o.get("table"))
        .filter(|t| t["family"] == "inet")
        .filter_map(|t| t["name"].as_str())
        .filter(|n| n.starts_with(firewall::TABLE_PREFIX) && *n != own)
        .map(str::to_owned)
        .collect();
    names.into_iter().find(|name| {
        Command::new("nft")
            .args(["list", "table", "inet", name])
            .stderr(Stdio::null())
            .output()
            .is_ok_and(|o| firewall::serves_subnet(&String::from_utf8_lossy(&o.stdout), subnet))
    })
}

/// Runs one `nft -f -` transaction.
fn nft(table: &str, op: &str, script: &str) -> Result<(), NetworkError> {
    use std::io::Write;
    let fail =
        |detail: String| NetworkError::Command { id: table.to_owned(), op: format!("nft {op}"), detail };
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| fail(format!("spawning nft (is nftables installed?): {e}")))?;
    if let Some(mut pipe) = child.stdin.take() {
        pipe.write_all(script.as_bytes()).map_err(|e| fail(format!("writing to nft: {e}")))?;
    }
    let out = child.wait_with_output().map_err(|e| fail(format!("waiting for nft: {e}")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(fail(String::from_utf8_lossy(&out.stderr).trim().to_owned()))
    }
}
