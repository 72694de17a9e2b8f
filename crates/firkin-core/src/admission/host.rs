//! Default capacity read from the host: CPUs (times an overcommit factor, since sandboxes are
//! mostly idle), memory (MemTotal less a reserve for the host), free disk of the state dir.

use std::path::Path;

use super::Resources;

/// Memory kept back for the host and firkin itself.
pub const HOST_MEMORY_RESERVE_MB: u64 = 1024;

/// Reads the host's capacity. `cpu_overcommit` multiplies the CPU count.
pub fn host_capacity(state_dir: &Path, cpu_overcommit: u32) -> Resources {
    let cpus = std::thread::available_parallelism().map(|n| n.get() as u64).unwrap_or(1);
    let mem_total_mb = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| parse_meminfo_kb(&s, "MemTotal:"))
        .map(|kb| kb / 1024)
        .unwrap_or(4096);
    Resources {
        milli_cpu: cpus * 1000 * u64::from(cpu_overcommit.max(1)),
        memory_mb: mem_total_mb.saturating_sub(HOST_MEMORY_RESERVE_MB).max(256),
        disk_mb: free_disk_mb(state_dir).unwrap_or(10 * 1024),
    }
}

/// Free space (MiB) of the filesystem holding `path` (or its nearest existing ancestor).
pub fn free_disk_mb(path: &Path) -> Option<u64> {
    let mut p = Some(path);
    while let Some(cur) = p {
        if cur.exists() {
            let st = nix::sys::statvfs::statvfs(cur).ok()?;
            return Some(st.blocks_available() as u64 * st.fragment_size() as u64 / (1024 * 1024));
        }
        p = cur.parent();
    }
    None
}

fn parse_meminfo_kb(text: &str, key: &str) -> Option<u64> {
    text.lines().find(|l| l.starts_with(key))?.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_parsing() {
        let t = "MemTotal:       24683640 kB\nMemFree:        100 kB\n";
        assert_eq!(parse_meminfo_kb(t, "MemTotal:"), Some(24683640));
        assert_eq!(parse_meminfo_kb(t, "Nope:"), None);
    }

    #[test]
    fn host_capacity_is_nonzero() {
        let c = host_capacity(Path::new("/"), 4);
        assert!(c.milli_cpu >= 4000 && c.memory_mb >= 256 && c.disk_mb > 0);
    }
}
