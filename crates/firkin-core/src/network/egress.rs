//! The live firewall of one firkin instance: its nftables table and every sandbox's egress
//! policy, kept in memory so the whole table can be rebuilt in one transaction (at start, and
//! after a crash) and so the DNS forwarder can look a sandbox's policy up by its address.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};

use super::firewall::{self, FirewallConfig};
use super::policy::EgressPolicy;
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
    installed: AtomicBool,
}

impl Egress {
    pub fn new(cfg: FirewallConfig) -> Egress {
        Egress {
            cfg: Mutex::new(cfg),
            policies: Mutex::new(BTreeMap::new()),
            installed: AtomicBool::new(false),
        }
    }

    fn policies(&self) -> MutexGuard<'_, BTreeMap<Ipv4Addr, Attached>> {
        self.policies.lock().unwrap_or_else(|e| e.into_inner())
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
        let policies: BTreeMap<Ipv4Addr, EgressPolicy> =
            self.policies().iter().map(|(ip, a)| (*ip, a.policy.clone())).collect();
        nft(&cfg.table, "install", &firewall::table(&cfg, &policies))?;
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
            nft(&table, &format!("policy for {ip}"), &firewall::sandbox_policy(&table, ip, policy))?;
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
        if addrs.is_empty() || policies.get(&ip).is_none_or(|a| a.policy.allow_domains.is_empty()) {
            return Ok(());
        }
        let table = self.config().table;
        let secs = ttl.max(firewall::MIN_DNS_OPEN_SECS);
        nft(
            &table,
            &format!("open resolved addresses for {ip}"),
            &firewall::open_resolved(&table, ip, addrs, secs),
        )
    }
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

/// Names of the `inet` tables whose name starts with `prefix` (for reconciliation and tests).
pub fn tables_with_prefix(prefix: &str) -> Vec<String> {
    let Ok(out) = Command::new("nft").args(["-j", "list", "tables"]).stderr(Stdio::null()).output() else {
        return Vec::new();
    };
    let Ok(json) = serde_json::from_slice::<serde_json::Value>(&out.stdout) else { return Vec::new() };
    json["nftables"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|o| o.get("table"))
        .filter(|t| t["family"] == "inet")
        .filter_map(|t| t["name"].as_str())
        .filter(|n| n.starts_with(prefix))
        .map(str::to_owned)
        .collect()
}
