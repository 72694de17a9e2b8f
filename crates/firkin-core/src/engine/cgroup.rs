//! Per-sandbox resource usage read from the host's cgroup of the sandbox (`/firkin/<id>`, set in
//! the OCI spec), on cgroup v1 (`cpuacct`, `memory` controllers) or v2 (unified). Read-only; the
//! parsing is pure and unit-tested.

use std::path::Path;

/// Usage of one sandbox's cgroup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CgroupUsage {
    /// Total CPU time consumed, in nanoseconds.
    pub cpu_ns: u64,
    /// Memory in use, excluding reclaimable inactive file cache.
    pub memory_bytes: u64,
    /// The memory limit, if one is set.
    pub memory_limit: Option<u64>,
}

const ROOT: &str = "/sys/fs/cgroup";

fn read(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

fn stat_value(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// A limit file: a number, or `max` / an effectively unlimited v1 value for none.
fn parse_limit(text: &str) -> Option<u64> {
    let v: u64 = text.trim().parse().ok()?;
    (v < (1u64 << 62)).then_some(v)
}

/// Reads the usage of the cgroup `/firkin/<id>`; `None` when there is no such cgroup.
pub fn usage(id: &str) -> Option<CgroupUsage> {
    let rel = format!("firkin/{id}");
    let root = Path::new(ROOT);
    let v2 = root.join(&rel);
    if v2.join("cpu.stat").exists() {
        let cpu_us = stat_value(&read(&v2.join("cpu.stat"))?, "usage_usec")?;
        let current: u64 = read(&v2.join("memory.current"))?.trim().parse().ok()?;
        let inactive =
            read(&v2.join("memory.stat")).and_then(|s| stat_value(&s, "inactive_file")).unwrap_or(0);
        return Some(CgroupUsage {
            cpu_ns: cpu_us * 1000,
            memory_bytes: current.saturating_sub(inactive),
            memory_limit: read(&v2.join("memory.max")).and_then(|s| parse_limit(&s)),
        });
    }
    let cpuacct = ["cpuacct", "cpu,cpuacct"].iter().map(|c| root.join(c).join(&rel)).find(|p| p.exists())?;
    let mem = root.join("memory").join(&rel);
    let cpu_ns: u64 = read(&cpuacct.join("cpuacct.usage"))?.trim().parse().ok()?;
    let usage: u64 = read(&mem.join("memory.usage_in_bytes"))?.trim().parse().ok()?;
    let inactive =
        read(&mem.join("memory.stat")).and_then(|s| stat_value(&s, "total_inactive_file")).unwrap_or(0);
    Some(CgroupUsage {
        cpu_ns,
        memory_bytes: usage.saturating_sub(inactive),
        memory_limit: read(&mem.join("memory.limit_in_bytes")).and_then(|s| parse_limit(&s)),
    })
}

/// CPU use in percent of `cpus` between two readings `wall_ns` apart.
pub fn cpu_percent(before: u64, after: u64, wall_ns: u64, cpus: u32) -> f64 {
    if wall_ns == 0 || cpus == 0 {
        return 0.0;
    }
    let pct = after.saturating_sub(before) as f64 / (wall_ns as f64 * f64::from(cpus)) * 100.0;
    (pct * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_files_and_limits() {
        assert_eq!(stat_value("usage_usec 1500\nuser_usec 1000\n", "usage_usec"), Some(1500));
        assert_eq!(stat_value("cache 1\ntotal_inactive_file 4096\n", "total_inactive_file"), Some(4096));
        assert_eq!(stat_value("a 1\n", "b"), None);
        assert_eq!(parse_limit("536870912\n"), Some(536_870_912));
        assert_eq!(parse_limit("max\n"), None);
        assert_eq!(parse_limit("9223372036854771712\n"), None, "v1's 'unlimited'");
        assert_eq!(cpu_percent(0, 500_000_000, 1_000_000_000, 2), 25.0);
        assert_eq!(cpu_percent(10, 5, 1_000, 1), 0.0);
        assert!(usage("no-such-sandbox-id").is_none());
    }
}
