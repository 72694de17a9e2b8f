//! `firkin doctor`: preflight checks with actionable messages.

use std::path::Path;
use std::process::Command;

use firkin_core::config::Layout;
use firkin_core::template::{BASE_ROOTFS, INTERPRETER_ROOTFS, ROOTFS_MANIFEST};

use crate::setup::HostArgs;

/// A check's verdict: `Ok` with what was found, or `Err` saying what is wrong and how to fix it.
type Verdict = Result<String, String>;

pub fn run(args: &HostArgs) -> anyhow::Result<()> {
    let mut report = Report::default();
    report.record("running as root", running_as_root());
    report.record("runsc", runsc(&args.runsc));
    report.record("network namespaces (ip netns)", network_namespaces());
    let layout = Layout::from_env();
    for name in [BASE_ROOTFS, INTERPRETER_ROOTFS] {
        report.record(&format!("rootfs {name}"), rootfs(&layout, name));
    }
    report.record("free disk for artifacts", free_disk(&layout, args));
    report.record("agent binary", agent_binary(args));
    report.record("cgroups", cgroups());
    report.record("sandbox disks (ext4 loop mounts)", sandbox_disks());
    report.record("sandbox firewall (nftables)", firewall(args));
    anyhow::ensure!(report.failures == 0, "{} check(s) failed", report.failures);
    Ok(())
}

/// Prints every verdict as it comes and counts the failures.
#[derive(Default)]
struct Report {
    failures: usize,
}

impl Report {
    /// Prints `[ ok ] name: detail` or `[FAIL] name: detail`.
    fn record(&mut self, name: &str, verdict: Verdict) {
        let (tag, detail) = match verdict {
            Ok(detail) => (" ok ", detail),
            Err(detail) => {
                self.failures += 1;
                ("FAIL", detail)
            }
        };
        println!("[{tag}] {name}: {detail}");
    }
}

/// Each sandbox's disk is an ext4 image made with `mkfs.ext4` and loop-mounted.
fn sandbox_disks() -> Verdict {
    let on_path = |p: &str| {
        std::env::var_os("PATH").is_some_and(|path| std::env::split_paths(&path).any(|d| d.join(p).is_file()))
    };
    if !on_path("mkfs.ext4") {
        return Err("mkfs.ext4 not found: apt-get install e2fsprogs (scripts/setup.sh does)".into());
    }
    if !Path::new("/dev/loop-control").exists() {
        return Err("/dev/loop-control missing: the host needs loop devices (modprobe loop)".into());
    }
    Ok("mkfs.ext4 and /dev/loop-control present".into())
}

/// Sandboxes are fenced (and given egress) by an nftables table firkin owns.
fn firewall(args: &HostArgs) -> Verdict {
    let listed = std::process::Command::new("nft").args(["list", "tables"]).output();
    match listed {
        Err(e) => Err(format!("nft not runnable ({e}): apt-get install nftables (scripts/setup.sh does)")),
        Ok(out) if !out.status.success() => {
            Err(format!("nft list tables failed: {}", String::from_utf8_lossy(&out.stderr).trim()))
        }
        Ok(_) if !args.egress => Ok("nft works; egress is off (the host fences are installed anyway)".into()),
        Ok(_) => {
            let fwd = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap_or_default();
            let state = if fwd.trim() == "1" { "on" } else { "off (firkin turns it on while it serves)" };
            Ok(format!("nft works; egress on, IPv4 forwarding {state}"))
        }
    }
}

fn running_as_root() -> Verdict {
    if nix::unistd::Uid::effective().is_root() {
        Ok("yes".into())
    } else {
        Err("firkin needs root for namespaces and runsc; run as root".into())
    }
}

/// `runsc --version` works and the build is recent enough.
fn runsc(runsc: &Path) -> Verdict {
    let out = Command::new(runsc)
        .arg("--version")
        .output()
        .map_err(|e| format!("{e}; install it with scripts/setup.sh (bookworm-backports)"))?;
    let v = String::from_utf8_lossy(&out.stdout).lines().next().unwrap_or("").to_owned();
    // Debian's builds are `0.0~YYYYMMDD`; the 2022 build in plain bookworm is too old.
    let date: Option<u32> = v.split("0.0~").nth(1).and_then(|d| d.get(..8)).and_then(|d| d.parse().ok());
    if date.is_some_and(|d| d < 20240101) {
        return Err(format!("{v}: too old (checkpoint/restore with networking needs a 2024 build); install runsc from bookworm-backports (scripts/setup.sh)"));
    }
    if out.status.success() {
        Ok(v)
    } else {
        Err(v)
    }
}

fn network_namespaces() -> Verdict {
    let usable =
        Command::new("ip").args(["netns", "list"]).output().map(|o| o.status.success()).unwrap_or(false);
    if usable {
        Ok("usable".into())
    } else {
        Err("install iproute2 and run as root".into())
    }
}

/// The prepared rootfs `name` is complete (its manifest is written last).
fn rootfs(layout: &Layout, name: &str) -> Verdict {
    let rootfs = layout.rootfs_dir(name);
    if rootfs.join(ROOTFS_MANIFEST).exists() {
        Ok(rootfs.display().to_string())
    } else {
        Err(format!("{} missing or incomplete: run scripts/setup.sh", rootfs.display()))
    }
}

/// The state directory has room for the largest of the disk floors.
fn free_disk(layout: &Layout, args: &HostArgs) -> Verdict {
    let floors = args.disk_floors;
    let need = floors.restore_mb.max(floors.snapshot_mb).max(floors.warm_mb);
    let state_dir = layout.state_dir.display();
    let free = firkin_core::admission::host::free_disk_mb(&layout.state_dir)
        .ok_or_else(|| format!("cannot stat {state_dir}"))?;
    if free >= need {
        Ok(format!("{free} MiB free under {state_dir}"))
    } else {
        Err(format!(
            "only {free} MiB free under {state_dir}; restores, saves or warm refills below their floors ({} / {} / {} MiB) are refused: free space, move FIRKIN_STATE_DIR, or lower --disk-floors",
            floors.restore_mb, floors.snapshot_mb, floors.warm_mb
        ))
    }
}

fn agent_binary(args: &HostArgs) -> Verdict {
    args.agent_path().map(|p| p.display().to_string()).map_err(|e| e.to_string())
}

fn cgroups() -> Verdict {
    let v2 = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    let v1 = ["memory", "cpuacct"].iter().all(|c| Path::new("/sys/fs/cgroup").join(c).is_dir());
    if v2 {
        Ok("v2 (unified)".into())
    } else if v1 {
        Ok("v1/hybrid (memory, cpuacct controllers)".into())
    } else {
        Err("no usable cgroup hierarchy under /sys/fs/cgroup: sandbox limits and metrics need one".into())
    }
}
