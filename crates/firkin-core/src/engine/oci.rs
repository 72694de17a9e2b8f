//! Builds the OCI runtime spec (`config.json`) for a sandbox whose init is the agent.

use serde_json::{json, Value};

use super::BootSpec;

/// In-sandbox path of the agent binary.
pub const AGENT_GUEST_PATH: &str = "/opt/firkin/firkin-agent";

/// Capabilities of the sandbox's root (inside gVisor): Docker's default set, plus
/// `CAP_SYS_ADMIN` for PID 1 (the agent) to mount each sandbox's own boot id; the agent drops
/// it from its bounding and inheritable sets before anything runs, so no process it starts
/// holds it (firkin-agent `identity`, docs/security.md "Per-sandbox identity after a restore").
const CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
    "CAP_SYS_ADMIN",
];

/// Environment variable telling the agent the sandbox's memory in MiB (the agent's
/// `oom::MEMORY_ENV`; the agent enforces it, see `host_memory_limit`).
pub const AGENT_MEMORY_ENV: &str = "FIRKIN_MEMORY_MB";

/// Least headroom of the host memory limit above the sandbox's memory.
const HOST_HEADROOM_MIN: u64 = 384 << 20;

/// The host memory cgroup limit of a sandbox with `memory_mb` MiB: its memory plus a quarter,
/// at least 384 MiB. runsc 20240729 has no OOM killer in the sentry: reaching the host limit
/// kills the whole sandbox. The agent's watchdog (`firkin-agent`'s `oom`) kills the sandbox's
/// largest process at its memory size instead, counting what each process costs the host
/// beyond the sandbox's own figure (~0.44 MiB), so this limit is only a backstop. Its headroom
/// holds the sentry's own memory (5-25 MiB idle), the host's page cache of the sandbox's disk
/// (reclaimable) and what processes allocate before the watchdog has killed one and the sentry
/// has freed its memory: measured in a 512 MiB sandbox on 2 vCPUs, over 20 runs of a 1.5 GiB
/// hog or two 800 MiB hogs at once, half of them with 230 other processes, the host cgroup
/// peaked at 858 MiB. With 256 MiB of headroom (768 MiB), 2 of 12 such runs reached the limit
/// (both with two hogs; the host's OOM killer then happened to pick the hogs' stub processes).
/// Memory committed inside one system call (`MAP_POPULATE`, one `read` of a large file) beyond
/// the headroom still ends the sandbox. gVisor shows the sandbox this limit as `MemTotal`.
pub fn host_memory_limit(memory_mb: u32) -> u64 {
    let memory = u64::from(memory_mb) << 20;
    memory + (memory / 4).max(HOST_HEADROOM_MIN)
}

/// The OCI spec for `spec`.
pub fn runtime_spec(spec: &BootSpec) -> Value {
    let caps: Vec<&str> = CAPS.to_vec();
    let period: u64 = 100_000;
    json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": 0, "gid": 0},
            "args": [AGENT_GUEST_PATH],
            "env": [
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                format!("FIRKIN_SANDBOX_ID={}", spec.id),
                format!("{AGENT_MEMORY_ENV}={}", spec.memory_mb),
            ],
            "cwd": "/",
            "capabilities": {
                "bounding": caps, "effective": caps, "permitted": caps, "inheritable": caps, "ambient": caps,
            },
            "rlimits": [
                {"type": "RLIMIT_NOFILE", "hard": 1048576u64, "soft": 1048576u64},
                // Enforced by the sentry per user, charged at fork to the forking thread's real
                // uid (the agent forks a user's command as that user). The sandbox's root lacks
                // CAP_SYS_RESOURCE, so root counts too, the agent's own threads included. A
                // fork bomb gets EAGAIN and the sandbox lives on; a host pids cgroup limit would
                // kill the whole sentry instead.
                {"type": "RLIMIT_NPROC", "hard": spec.max_processes, "soft": spec.max_processes},
            ],
            "noNewPrivileges": false,
        },
        "root": {"path": spec.rootfs, "readonly": false},
        "hostname": "firkin",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
            {"destination": AGENT_GUEST_PATH, "type": "bind", "source": spec.agent_path, "options": ["rbind", "ro"]},
        ],
        "linux": {
            "namespaces": [
                {"type": "pid"},
                {"type": "ipc"},
                {"type": "uts"},
                {"type": "mount"},
                {"type": "network", "path": spec.netns_path},
            ],
            "cgroupsPath": format!("/firkin/{}", spec.id),
            "resources": {
                "memory": {"limit": host_memory_limit(spec.memory_mb)},
                "cpu": {"quota": u64::from(spec.cpu_count) * period, "period": period},
            },
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::SandboxId;

    #[test]
    fn host_limit_is_a_backstop_with_headroom() {
        assert_eq!(host_memory_limit(128), 512 << 20);
        assert_eq!(host_memory_limit(1024), 1408 << 20);
        assert_eq!(host_memory_limit(1536), 1920 << 20);
        assert_eq!(host_memory_limit(2048), 2560 << 20);
        assert_eq!(host_memory_limit(8192), 10240 << 20);
    }

    #[test]
    fn spec_carries_limits_netns_and_agent() {
        let spec = BootSpec {
            id: SandboxId::parse("abc").unwrap(),
            rootfs: "/r".into(),
            netns_path: "/var/run/netns/x".into(),
            agent_path: "/usr/bin/firkin-agent".into(),
            run_dir: "/run/x".into(),
            cpu_count: 2,
            memory_mb: 512,
            disk_mb: 10240,
            max_processes: 1024,
        };
        let v = runtime_spec(&spec);
        assert_eq!(v["linux"]["resources"]["memory"]["limit"], 896u64 << 20, "512 MiB + 384 MiB headroom");
        assert!(v["process"]["env"].as_array().unwrap().iter().any(|e| e == "FIRKIN_MEMORY_MB=512"));
        assert_eq!(v["linux"]["resources"]["cpu"]["quota"], 200_000u64);
        assert_eq!(v["linux"]["namespaces"][4]["path"], "/var/run/netns/x");
        assert_eq!(
            v["process"]["rlimits"][1],
            serde_json::json!({"type": "RLIMIT_NPROC", "hard": 1024, "soft": 1024})
        );
        assert_eq!(v["process"]["args"][0], AGENT_GUEST_PATH);
        assert_eq!(v["mounts"][5]["source"], "/usr/bin/firkin-agent");
        let tmpfs: Vec<&str> = v["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["type"] == "tmpfs")
            .map(|m| m["destination"].as_str().unwrap())
            .collect();
        assert!(!tmpfs.contains(&"/tmp"), "/tmp is on the sandbox's disk, as in E2B: {tmpfs:?}");
    }
}
