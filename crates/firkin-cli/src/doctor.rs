//! `firkin doctor`: preflight checks with actionable messages.

use std::process::Command;

use firkin_core::config::Layout;
use firkin_core::template::BASE_ROOTFS;

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
            check("runsc", out.status.success(), v);
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
    let rootfs = layout.rootfs_dir(BASE_ROOTFS);
    let have = rootfs.join("bin").exists();
    check(
        "base rootfs",
        have,
        if have {
            rootfs.display().to_string()
        } else {
            format!("{} missing: run scripts/setup.sh", rootfs.display())
        },
    );
    match args.agent_path() {
        Ok(p) => check("agent binary", true, p.display().to_string()),
        Err(e) => check("agent binary", false, e.to_string()),
    }
    let v2 = std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    check("cgroups", true, if v2 { "v2 (unified)".into() } else { "v1/hybrid controllers".into() });
    anyhow::ensure!(failures == 0, "{failures} check(s) failed");
    Ok(())
}
