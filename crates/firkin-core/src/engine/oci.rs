//! Builds the OCI runtime spec (`config.json`) for a sandbox whose init is the agent.

use serde_json::{json, Value};

use super::BootSpec;

/// In-sandbox path of the agent binary.
pub const AGENT_GUEST_PATH: &str = "/opt/firkin/firkin-agent";

/// Capabilities of the sandbox's root (inside gVisor): Docker's default set.
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
];

/// The OCI spec for `spec`.
pub fn runtime_spec(spec: &BootSpec) -> Value {
    let caps: Vec<&str> = CAPS.to_vec();
    let memory_bytes = u64::from(spec.memory_mb) * 1024 * 1024;
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
            ],
            "cwd": "/",
            "capabilities": {
                "bounding": caps, "effective": caps, "permitted": caps, "inheritable": caps, "ambient": caps,
            },
            "rlimits": [
                {"type": "RLIMIT_NOFILE", "hard": 1048576u64, "soft": 1048576u64},
                // Enforced by the sentry per user (root is exempt, as in Linux): a fork bomb
                // of the sandbox's user gets EAGAIN and the sandbox lives on. A host pids
                // cgroup limit would kill the whole sentry instead.
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
                "memory": {"limit": memory_bytes},
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
        assert_eq!(v["linux"]["resources"]["memory"]["limit"], 512u64 * 1024 * 1024);
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
