//! In-run baselines: the engine's own floor on this machine, measured interleaved with the
//! firkin series so drift hits both: raw `runsc run` printing `echo`, and raw `runsc restore`
//! of a minimal checkpoint.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context;
use firkin_core::config::Layout;
use firkin_core::template::BASE_ROOTFS;
use serde_json::json;
use tokio::io::AsyncReadExt;

use super::Series;

/// The in-run engine floor: raw `runsc run` of the base rootfs printing `echo`.
pub struct Baseline {
    runsc: PathBuf,
    rootfs: PathBuf,
    scratch: PathBuf,
    pub series: Series,
}

impl Baseline {
    pub fn new(runsc: &std::path::Path) -> Baseline {
        let layout = Layout::from_env();
        Baseline {
            runsc: runsc.to_owned(),
            rootfs: layout.rootfs_dir(BASE_ROOTFS),
            scratch: layout.state_dir.join("run").join("bench"),
            series: Series::new("baseline.raw_runsc_run_echo"),
        }
    }

    pub async fn sample(&mut self, i: usize) {
        match raw_runsc_echo(&self.runsc, &self.rootfs, &self.scratch, i).await {
            Ok(d) => self.series.push(d),
            Err(e) => self.series.fail("raw runsc run", e),
        }
    }
}

/// Raw `runsc run` of the rootfs printing `echo`; time to the first stdout byte.
async fn raw_runsc_echo(
    runsc: &std::path::Path,
    rootfs: &std::path::Path,
    scratch: &std::path::Path,
    i: usize,
) -> anyhow::Result<Duration> {
    let bundle = scratch.join(format!("b{i}"));
    std::fs::create_dir_all(&bundle)?;
    let spec = json!({
        "ociVersion": "1.0.2",
        "process": {"terminal": false, "user": {"uid": 0, "gid": 0}, "args": ["/bin/echo", "firkin"], "env": ["PATH=/usr/bin:/bin"], "cwd": "/"},
        "root": {"path": rootfs, "readonly": true},
        "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"}],
        "linux": {"namespaces": [{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}]},
    });
    std::fs::write(bundle.join("config.json"), serde_json::to_vec(&spec)?)?;
    let root = scratch.join("runsc-root");
    let id = format!("firkinbench{i}x{}", std::process::id());
    let t0 = Instant::now();
    let mut child = tokio::process::Command::new(runsc)
        .arg(format!("--root={}", root.display()))
        .args(["--network=none", "run", "--bundle"])
        .arg(&bundle)
        .arg(&id)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("spawning runsc")?;
    let mut out = child.stdout.take().context("no stdout")?;
    let mut byte = [0u8; 1];
    let n = out.read(&mut byte).await?;
    let d = t0.elapsed();
    let status = child.wait().await?;
    let _ = std::fs::remove_dir_all(&bundle);
    anyhow::ensure!(n == 1 && status.success(), "raw runsc run failed: {status}");
    Ok(d)
}

/// The in-run restore floor: raw `runsc restore` (detached, no network) of a checkpoint of a
/// minimal sandbox (`sleep` on the base rootfs), taken once at the start.
pub struct RestoreBaseline {
    runsc: PathBuf,
    scratch: PathBuf,
    bundle: PathBuf,
    image: PathBuf,
    pub series: Series,
}

fn runsc_cmd(runsc: &Path, root: &Path) -> tokio::process::Command {
    let mut c = tokio::process::Command::new(runsc);
    c.arg(format!("--root={}", root.display()))
        .arg("--network=none")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    c
}

impl RestoreBaseline {
    pub async fn prepare(runsc: &Path) -> anyhow::Result<RestoreBaseline> {
        let layout = Layout::from_env();
        let scratch = layout.state_dir.join("run").join("bench-restore");
        let _ = std::fs::remove_dir_all(&scratch);
        let bundle = scratch.join("bundle");
        std::fs::create_dir_all(&bundle)?;
        let spec = json!({
            "ociVersion": "1.0.2",
            "process": {"terminal": false, "user": {"uid": 0, "gid": 0}, "args": ["/bin/sleep", "infinity"], "env": ["PATH=/usr/bin:/bin"], "cwd": "/"},
            "root": {"path": layout.rootfs_dir(BASE_ROOTFS), "readonly": true},
            "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"}],
            "linux": {"namespaces": [{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}]},
        });
        std::fs::write(bundle.join("config.json"), serde_json::to_vec(&spec)?)?;
        let root = scratch.join("runsc-root");
        let image = scratch.join("image");
        std::fs::create_dir_all(&image)?;
        let id = format!("firkinbenchsrc{}", std::process::id());
        let ok = |s: std::process::ExitStatus, what: &str| -> anyhow::Result<()> {
            anyhow::ensure!(s.success(), "{what}: {s}");
            Ok(())
        };
        ok(
            runsc_cmd(runsc, &root)
                .args(["run", "-detach", "--bundle"])
                .arg(&bundle)
                .arg(&id)
                .status()
                .await?,
            "runsc run",
        )?;
        ok(
            runsc_cmd(runsc, &root)
                .args(["checkpoint", "--image-path"])
                .arg(&image)
                .arg(&id)
                .status()
                .await?,
            "runsc checkpoint",
        )?;
        let _ = runsc_cmd(runsc, &root).args(["delete", "-force"]).arg(&id).status().await;
        Ok(RestoreBaseline {
            runsc: runsc.to_owned(),
            scratch,
            bundle,
            image,
            series: Series::new("baseline.raw_runsc_restore"),
        })
    }

    /// One detached restore (timed until `runsc restore` returns), then a delete (not timed).
    pub async fn sample(&mut self, i: usize) {
        let root = self.scratch.join("runsc-root");
        let id = format!("firkinbenchr{i}x{}", std::process::id());
        let t0 = Instant::now();
        let status = runsc_cmd(&self.runsc, &root)
            .args(["restore", "-detach", "--image-path"])
            .arg(&self.image)
            .arg("--bundle")
            .arg(&self.bundle)
            .arg(&id)
            .status()
            .await;
        let d = t0.elapsed();
        match status {
            Ok(s) if s.success() => self.series.push(d),
            Ok(s) => self.series.fail("raw runsc restore", s),
            Err(e) => self.series.fail("raw runsc restore", e),
        }
        let _ = runsc_cmd(&self.runsc, &root).args(["delete", "-force"]).arg(&id).status().await;
    }
}

impl RestoreBaseline {
    /// The measured series; removes the scratch image.
    pub fn finish(self) -> Series {
        let _ = std::fs::remove_dir_all(&self.scratch);
        self.series
    }
}
