//! `GET /metrics`: CPU (from two `/proc/stat` samples), memory (`/proc/meminfo`) and root
//! filesystem usage (`statvfs("/")`), in envd's JSON shape.

use std::time::Duration;

use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

/// Aggregate CPU counters from the first line of `/proc/stat`: (busy, total) jiffies.
pub fn parse_cpu_line(stat: &str) -> Option<(u64, u64)> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let fields: Vec<u64> = line.split_whitespace().skip(1).filter_map(|f| f.parse().ok()).collect();
    if fields.len() < 4 {
        return None;
    }
    // user nice system idle iowait irq softirq steal (guest fields are included in user/nice).
    let total: u64 = fields.iter().take(8).sum();
    let idle = fields[3] + fields.get(4).copied().unwrap_or(0);
    Some((total.saturating_sub(idle), total))
}

/// Number of per-CPU lines in `/proc/stat`.
pub fn count_cpus(stat: &str) -> usize {
    stat.lines()
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .count()
}

/// A `/proc/meminfo` value in bytes.
pub fn meminfo_bytes(meminfo: &str, key: &str) -> Option<u64> {
    meminfo.lines().find_map(|line| {
        let rest = line.strip_prefix(key)?.strip_prefix(':')?;
        let kb: u64 = rest.split_whitespace().next()?.parse().ok()?;
        Some(kb * 1024)
    })
}

fn cpu_used_pct(a: (u64, u64), b: (u64, u64)) -> f64 {
    let busy = b.0.saturating_sub(a.0) as f64;
    let total = b.1.saturating_sub(a.1) as f64;
    if total <= 0.0 {
        return 0.0;
    }
    ((busy / total) * 10000.0).round() / 100.0
}

async fn read(path: &str) -> String {
    tokio::fs::read_to_string(path).await.unwrap_or_default()
}

/// `GET /metrics`.
pub async fn metrics() -> Response {
    let first = read("/proc/stat").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let second = read("/proc/stat").await;
    let pct = match (parse_cpu_line(&first), parse_cpu_line(&second)) {
        (Some(a), Some(b)) => cpu_used_pct(a, b),
        _ => 0.0,
    };
    let cpu_count = match count_cpus(&second) {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let meminfo = read("/proc/meminfo").await;
    let mem_total = meminfo_bytes(&meminfo, "MemTotal").unwrap_or(0);
    let mem_available = meminfo_bytes(&meminfo, "MemAvailable").unwrap_or(mem_total);
    let mem_cache = meminfo_bytes(&meminfo, "Cached").unwrap_or(0);
    let mem_used = mem_total.saturating_sub(mem_available);
    let (disk_total, disk_used) = match nix::sys::statvfs::statvfs("/") {
        Ok(s) => {
            let frsize = s.fragment_size();
            (s.blocks() * frsize, s.blocks().saturating_sub(s.blocks_free()) * frsize)
        }
        Err(_) => (0, 0),
    };
    let ts = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    Json(json!({
        "ts": ts,
        "cpu_count": cpu_count,
        "cpu_used_pct": pct,
        "mem_total": mem_total,
        "mem_used": mem_used,
        "mem_cache": mem_cache,
        "mem_total_mib": mem_total >> 20,
        "mem_used_mib": mem_used >> 20,
        "disk_used": disk_used,
        "disk_total": disk_total,
    }))
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_files() {
        let stat = "cpu  100 0 100 700 100 0 0 0 0 0\ncpu0 50 0 50 350 50 0 0 0 0 0\ncpu1 1 1 1 1\nintr 5\n";
        assert_eq!(parse_cpu_line(stat), Some((200, 1000)));
        assert_eq!(count_cpus(stat), 2);
        assert_eq!(cpu_used_pct((0, 0), (200, 1000)), 20.0);
        let mem = "MemTotal:        2048 kB\nMemAvailable:    1024 kB\nCached: 10 kB\nSwapCached: 5 kB\n";
        assert_eq!(meminfo_bytes(mem, "MemTotal"), Some(2048 * 1024));
        assert_eq!(meminfo_bytes(mem, "Cached"), Some(10 * 1024));
    }
}
