//! `firkin doctor`: preflight checks with actionable messages.

use std::process::Command;

use firkin_core::config::Layout;
use firkin_core::template::{BASE_ROOTFS, INTERPRETER_ROOTFS, ROOTFS_MANIFEST};

use crate::setup::HostArgs;

pub fn run(args: &HostArgs) -> anyhow::Result<()> {
    let mut failures = 0;
    let mut check = |name: &str, ok: bool, detail: String| {
        println!("[{}] {name}: {detail}", if ok { " ok " } else { "FAIL" });
        if !ok {
            failures += 1;
        }
    };
    let root = nix::unistd::Uid::effective().is_root();
    check(
        "running as root",
        root,
        if root { "yes".into() } else { "firkin needs root for namespaces and runsc; run as root".into() },
    );
    match Command::new(&args.runsc).arg("--version").output() {
        Ok(out) => {
            let v = String::from_utf8_lossy(&out.stdout).lines().next().unwrap_or("").to_owned();
            // Debian's builds are `0.0~YYYYMMDD`; the 2022 build in plain bookworm is too old.
            let date: Option<u32> =
                v.split("0.0~").nth(1).and_then(|d| d.get(..8)).and_then(|d| d.parse().ok());
            let recent = date.is_none_or(|d| d >= 20240101);
            let detail = if recent {
                v
            } else {
                format!("{v}: too old (checkpoint/restore with networking needs a 2024 build); install runsc from bookworm-backports (scripts/setup.sh)")
            };
            check("runsc", out.status.success() && recent, detail);
        }
        Err(e) => {
            check("runsc", false, format!("{e}; install it with scripts/setup.sh (bookworm-backports)"))
        }
    }
    let ip_ok =
        Command::new("ip").args(["netns", "list"]).output().map(|o| o.status.success()).unwrap_or(false);
    check(
        "network namespaces (ip netns)",
        ip_ok,
        if ip_ok { "usable".into() } else { "install iproute2 and run as root".into() },
    );
    let layout = Layout::from_env();
    for name in [BASE_ROOTFS, INTERPRETER_ROOTFS] {
        let rootfs = layout.rootfs_dir(name);
        let have = rootfs.join(ROOTFS_MANIFEST).exists();
        check(
            &format!("rootfs {name}"),
            have,
            if have {
                rootfs.display().to_string()
            } else {
                format!("{} missing or incomplete: run scripts/setup.sh", rootfs.display())
            },
        );
    }
    let floors = args.disk_floors;
    let need = floors.restore_mb.max(floors.snapshot_mb).max(floors.warm_mb);
    match firkin_core::admission::host::free_disk_mb(&layout.state_dir) {
        Some(free) => check(
            "free disk for artifacts",
            free >= need,
            if free >= need {
                format!("{free} MiB free under {}", layout.state_dir.display())
            } else {
                format!(
                    "only {free} MiB free under {}; restores, saves or warm refills below their floors ({} / {} / {} MiB) are refused: free space, move FIRKIN_STATE_DIR, or lower --disk-floors",
                    layout.state_dir.display(),
                    floors.restore_mb,
                    floors.snapshot_mb,
                    floors.warm_mb
                )
            },
        ),
        None => {
            check("free disk for artifacts", false, format!("cannot stat {}", layout.state_dir.display()))
        }
    }
    match args.agent_path() {
        Ok(p) => check("agent binary", true, p.display().to_string()),
        Err(e) => check("agent binary", false, e.to_string()),
    }
    let v2 = std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    let v1 = ["memory", "cpuacct"].iter().all(|c| std::path::Path::new("/sys/fs/cgroup").join(c).is_dir());
    check(
        "cgroups",
        v2 || v1,
        if v2 {
            "v2 (unified)".into()
        } else if v1 {
            "v1/hybrid (memory, cpuacct controllers)".into()
        } else {
            "no usable cgroup hierarchy under /sys/fs/cgroup: sandbox limits and metrics need one".into()
        },
    );
    anyhow::ensure!(failures == 0, "{failures} check(s) failed");
    Ok(())
}
