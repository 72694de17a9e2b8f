//! What the memory watchdog reads from `/proc` inside the sandbox: the sandbox's memory use
//! (`/proc/meminfo`) and, per process, its resident set (`/proc/<pid>/statm`), its
//! `oom_score_adj` and its program name. Parsing is pure and unit-tested; the readers only open,
//! read and close files (no descriptor outlives a call, none is ever registered with epoll).

use std::fs::File;
use std::io::{self, Read};

use crate::metrics::meminfo_bytes;

/// Where gVisor reports the sandbox's memory.
pub const MEMINFO: &str = "/proc/meminfo";

/// Memory in use in the sandbox, in bytes, from a `/proc/meminfo` text.
///
/// gVisor's meminfo (runsc 20240729) derives every line from the sentry's memory accounting:
/// `MemTotal - MemAvailable` (`MemAvailable` is `MemFree` there) is everything the sentry's
/// memory file holds for the sandbox (anonymous memory, tmpfs, page cache, file mappings), which
/// is what the host memory cgroup is charged for (measured: within 1-12 MiB of the cgroup's
/// `shmem`). But `MemFree` stops at 0 once the use passes `MemTotal`, so the same total is also
/// summed from its parts, which do not stop:
/// `AnonPages` (anonymous + tmpfs) + `Cached` (page cache + mapped files + tmpfs) - `Shmem`
/// (tmpfs, counted twice). The larger of the two is returned.
pub fn memory_used(meminfo: &str) -> Option<u64> {
    let total = meminfo_bytes(meminfo, "MemTotal")?;
    let free = meminfo_bytes(meminfo, "MemAvailable").or_else(|| meminfo_bytes(meminfo, "MemFree"))?;
    let from_free = total.saturating_sub(free);
    let from_parts = match (
        meminfo_bytes(meminfo, "AnonPages"),
        meminfo_bytes(meminfo, "Cached"),
        meminfo_bytes(meminfo, "Shmem"),
    ) {
        (Some(anon), Some(cached), shmem) => (anon + cached).saturating_sub(shmem.unwrap_or(0)),
        _ => 0,
    };
    Some(from_free.max(from_parts))
}

/// Resident set size in bytes from a `/proc/<pid>/statm` text (its second field, in pages).
pub fn rss_from_statm(statm: &str, page_size: u64) -> Option<u64> {
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * page_size)
}

/// A `/proc/<pid>/oom_score_adj` value (-1000..=1000; out-of-range values are clamped).
pub fn parse_oom_score_adj(text: &str) -> Option<i32> {
    text.trim().parse::<i32>().ok().map(|v| v.clamp(-1000, 1000))
}

/// The program of a `/proc/<pid>/cmdline` text: `argv[0]` only. Arguments are left out of the
/// log on purpose (they may hold secrets; the sudo log does the same).
pub fn program_from_cmdline(cmdline: &[u8]) -> Option<String> {
    let argv0 = cmdline.split(|b| *b == 0).next().filter(|a| !a.is_empty())?;
    Some(String::from_utf8_lossy(argv0).into_owned())
}

/// One process as the victim selection sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessMemory {
    pub pid: i32,
    /// Resident set in bytes (0 for a zombie).
    pub rss: u64,
    pub oom_score_adj: i32,
}

/// Reads `path` (at most 64 KiB of it) into `buf` (cleared first), without the `statx` that
/// `File::read_to_string` adds for its size hint.
pub fn read_into(path: &str, buf: &mut String) -> io::Result<()> {
    buf.clear();
    File::open(path)?.take(64 * 1024).read_to_string(buf)?;
    Ok(())
}

/// Reads the start of a small file (`statm`, `oom_score_adj`) with one `read(2)`: three system
/// calls in all, which matters when every process is read while the sandbox is out of memory
/// (each system call costs tens of microseconds in gVisor).
fn read_small<'a>(path: &str, buf: &'a mut [u8]) -> Option<&'a str> {
    let n = File::open(path).ok()?.read(buf).ok()?;
    std::str::from_utf8(&buf[..n]).ok()
}

/// The system's page size (4 KiB when it cannot be asked).
pub fn page_size() -> u64 {
    // SAFETY: sysconf only reads a configuration value; it has no memory effects.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(size).ok().filter(|s| *s > 0).unwrap_or(4096)
}

/// Every process in `/proc` with its resident set (`oom_score_adj` left at 0: see
/// [`oom_score_adj`]). Processes that vanish while being read are left out.
pub fn processes(page_size: u64) -> Vec<ProcessMemory> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut buf = [0u8; 256];
    let mut out = Vec::new();
    for entry in dir.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        let Some(rss) =
            read_small(&format!("/proc/{pid}/statm"), &mut buf).and_then(|t| rss_from_statm(t, page_size))
        else {
            continue;
        };
        out.push(ProcessMemory { pid, rss, oom_score_adj: 0 });
    }
    out
}

/// How many processes the sandbox has (numeric entries of `/proc`; 0 when it cannot be read).
pub fn count_processes() -> usize {
    std::fs::read_dir("/proc").map_or(0, |dir| {
        dir.flatten()
            .filter(|e| e.file_name().to_str().is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit())))
            .count()
    })
}

/// The `oom_score_adj` of `pid` (0 when it cannot be read).
pub fn oom_score_adj(pid: i32) -> i32 {
    let mut buf = [0u8; 32];
    read_small(&format!("/proc/{pid}/oom_score_adj"), &mut buf).and_then(parse_oom_score_adj).unwrap_or(0)
}

/// The program `pid` runs, for the log (`argv[0]`, else its `comm`, else `?`).
pub fn program(pid: i32) -> String {
    if let Some(p) = std::fs::read(format!("/proc/{pid}/cmdline")).ok().and_then(|c| program_from_cmdline(&c))
    {
        return p;
    }
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|c| c.trim().to_string())
        .unwrap_or_else(|_| "?".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// As measured in a 512 MiB sandbox with 780 MiB held by one process (the host limit raised
    /// for the measurement): `MemFree` stops at 0, the parts keep counting.
    const OVER: &str = "MemTotal:         524288 kB\nMemFree:               0 kB\n\
        MemAvailable:          0 kB\nBuffers:               0 kB\nCached:            11264 kB\n\
        AnonPages:        798720 kB\nMapped:            11264 kB\nShmem:                 0 kB\n";
    /// As measured with 332 MiB held and 60 MiB in /dev/shm.
    const UNDER: &str = "MemTotal:         524288 kB\nMemFree:          109568 kB\n\
        MemAvailable:     109568 kB\nCached:            72704 kB\nAnonPages:        401408 kB\n\
        Mapped:            11264 kB\nShmem:             61440 kB\n";

    #[test]
    fn memory_used_from_meminfo() {
        assert_eq!(memory_used(UNDER), Some((524_288 - 109_568) * 1024));
        assert_eq!(memory_used(OVER), Some((798_720 + 11_264) * 1024), "not stopped at MemTotal");
        let linux_like = "MemTotal: 1000 kB\nMemFree: 100 kB\nMemAvailable: 400 kB\n";
        assert_eq!(memory_used(linux_like), Some(600 * 1024));
        assert_eq!(memory_used("MemTotal: 1000 kB\nMemFree: 250 kB\n"), Some(750 * 1024));
        assert_eq!(memory_used("MemFree: 250 kB\n"), None);
    }

    #[test]
    fn per_process_files() {
        assert_eq!(rss_from_statm("156039 5464 0 0 0 0 0\n", 4096), Some(5464 * 4096));
        assert_eq!(rss_from_statm("156039\n", 4096), None);
        assert_eq!(parse_oom_score_adj("-1000\n"), Some(-1000));
        assert_eq!(parse_oom_score_adj("5000"), Some(1000));
        assert_eq!(parse_oom_score_adj("x"), None);
        assert_eq!(program_from_cmdline(b"python3\0-c\0secret\0"), Some("python3".into()));
        assert_eq!(program_from_cmdline(b""), None);
        assert!(page_size() >= 4096);
        assert_eq!(oom_score_adj(-5), 0, "unreadable counts as 0");
    }
}
