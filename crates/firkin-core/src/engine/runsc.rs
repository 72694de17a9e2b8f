//! The gVisor engine: drives the `runsc` OCI CLI.
//!
//! Each sandbox runs with `--network=sandbox` (gVisor's netstack takes over the veth in the
//! sandbox's namespace) and `--overlay2=root:dir=<its disk>`: writes land in an overlay over the
//! read-only template rootfs whose filestore is a file on the sandbox's own loop-mounted disk
//! ([`super::disk`]), so they use host disk, not sandbox memory, within a hard size limit, and
//! they are checkpointed with the sandbox (a restore writes them into a fresh disk).
//!
//! Some runsc builds (e.g. Debian's 2024-07-29) refuse to start with networking because their
//! "root network namespace?" check tests for `/proc/sys/net/core/rmem_default`, which newer
//! kernels show in every namespace. We detect that by behaviour on first boot and from then on
//! run runsc inside a private mount namespace with an empty tmpfs over `/proc/sys/net`.

use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU8, Ordering};

use super::disk::{DiskUsage, Disks};
use super::{oci, AfterCheckpoint, BootSpec, Engine, EngineError};
use crate::atomic::write_json_atomic;
use crate::ids::SandboxId;

const ROOT_NETNS_QUIRK: &str = "cannot run with network enabled in root network namespace";

const MODE_UNKNOWN: u8 = 0;
const MODE_PLAIN: u8 = 1;
const MODE_NETNS_WORKAROUND: u8 = 2;

/// How runsc has to be invoked on this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LaunchMode {
    Unknown,
    Plain,
    /// Private mount namespace with tmpfs over /proc/sys/net (see module docs).
    NetnsWorkaround,
}

/// The runsc engine.
#[derive(Debug)]
pub struct RunscEngine {
    runsc: PathBuf,
    root: PathBuf,
    mode: AtomicU8,
    disks: Disks,
}

impl RunscEngine {
    /// An engine keeping runsc state under `root` and sandbox disks under `disks`.
    pub fn new(runsc: PathBuf, root: PathBuf, disks: PathBuf) -> RunscEngine {
        RunscEngine { runsc, root, mode: AtomicU8::new(MODE_UNKNOWN), disks: Disks::new(disks) }
    }

    pub fn launch_mode(&self) -> LaunchMode {
        match self.mode.load(Ordering::Relaxed) {
            MODE_PLAIN => LaunchMode::Plain,
            MODE_NETNS_WORKAROUND => LaunchMode::NetnsWorkaround,
            _ => LaunchMode::Unknown,
        }
    }

    fn base_command(&self, mode: LaunchMode) -> Command {
        let mut cmd = if mode == LaunchMode::NetnsWorkaround {
            let mut c = Command::new("unshare");
            c.args([
                "--mount",
                "--propagation",
                "private",
                "sh",
                "-c",
                "mount -t tmpfs none /proc/sys/net && exec \"$@\"",
                "sh",
            ]);
            c.arg(&self.runsc);
            c
        } else {
            Command::new(&self.runsc)
        };
        cmd.arg(format!("--root={}", self.root.display()));
        cmd
    }

    /// One `runsc run` (or `runsc restore` when `image` is given) attempt.
    fn run_once(&self, spec: &BootSpec, mode: LaunchMode, image: Option<&Path>) -> Result<(), String> {
        let filestore = self.disks.mount_dir(&spec.id);
        let log_path = spec.run_dir.join("sandbox.log");
        let log = open_log(&log_path).map_err(|e| format!("creating {}: {e}", log_path.display()))?;
        let log_err = log.try_clone().map_err(|e| e.to_string())?;
        let status = self
            .base_command(mode)
            .args(["--network=sandbox", "--net-disconnect-ok"])
            .arg(format!("--overlay2=root:dir={}", filestore.display()))
            .args(match image {
                None => vec!["run".to_owned(), "-detach".to_owned()],
                Some(img) => vec![
                    "restore".to_owned(),
                    "-detach".to_owned(),
                    format!("--image-path={}", img.display()),
                ],
            })
            .arg("--bundle")
            .arg(spec.run_dir.join("bundle"))
            .arg(spec.id.as_str())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .status()
            .map_err(|e| format!("spawning runsc: {e}"))?;
        if status.success() {
            return Ok(());
        }
        let mut text = String::new();
        if let Ok(mut f) = File::open(&log_path) {
            let _ = f.read_to_string(&mut text);
        }
        let tail: String =
            text.lines().rev().take(5).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n");
        Err(format!("{status}: {tail}"))
    }

    /// Writes the bundle and runs (or restores) the sandbox, detecting the netns quirk.
    fn start(&self, spec: &BootSpec, image: Option<&Path>) -> Result<(), EngineError> {
        let bundle = spec.run_dir.join("bundle");
        fs::create_dir_all(&bundle).map_err(|source| EngineError::Bundle { id: spec.id.clone(), source })?;
        fs::create_dir_all(&self.root)
            .map_err(|source| EngineError::Bundle { id: spec.id.clone(), source })?;
        write_json_atomic(&bundle.join("config.json"), &oci::runtime_spec(spec))
            .map_err(|e| EngineError::Bundle { id: spec.id.clone(), source: e.source })?;
        // A fresh disk for a boot and for a restore alike: the image carries the overlay's
        // contents, and the restore writes them into it. A failure later is cleaned up by
        // `destroy`, which the runtime calls for any sandbox whose start began.
        self.disks.create(&spec.id, spec.disk_mb)?;

        let mode = self.mode.load(Ordering::Relaxed);
        let launch =
            if mode == MODE_NETNS_WORKAROUND { LaunchMode::NetnsWorkaround } else { LaunchMode::Plain };
        let first = self.run_once(spec, launch, image);
        match first {
            Ok(()) => {
                if mode == MODE_UNKNOWN {
                    self.mode.store(MODE_PLAIN, Ordering::Relaxed);
                }
                Ok(())
            }
            Err(detail) if mode != MODE_NETNS_WORKAROUND && detail.contains(ROOT_NETNS_QUIRK) => {
                tracing::warn!("runsc needs the /proc/sys/net workaround on this host; enabling it");
                // The failed attempt's runsc state goes; its disk is reused.
                if let Err(e) = self.delete_runsc(&spec.id) {
                    tracing::debug!(sandbox = %spec.id, error = %e, "removing the failed attempt");
                }
                self.mode.store(MODE_NETNS_WORKAROUND, Ordering::Relaxed);
                self.run_once(spec, LaunchMode::NetnsWorkaround, image).map_err(|detail| EngineError::Runsc {
                    id: spec.id.clone(),
                    op: if image.is_some() { "restore" } else { "run" },
                    detail,
                })
            }
            Err(detail) => Err(EngineError::Runsc {
                id: spec.id.clone(),
                op: if image.is_some() { "restore" } else { "run" },
                detail,
            }),
        }
    }

    /// `runsc delete -force`; a sandbox runsc does not know is fine.
    fn delete_runsc(&self, id: &SandboxId) -> Result<(), EngineError> {
        let out = self.runsc_status(&["delete", "-force", id.as_str()]).map_err(|source| {
            EngineError::Spawn { id: id.clone(), program: "runsc delete".into(), source }
        })?;
        if out.status.success() {
            return Ok(());
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        if stderr.contains("does not exist") || stderr.contains("not found") {
            return Ok(());
        }
        Err(EngineError::Runsc { id: id.clone(), op: "delete", detail: stderr.trim().to_owned() })
    }

    fn runsc_status(&self, args: &[&str]) -> Result<std::process::Output, std::io::Error> {
        self.base_command(LaunchMode::Plain).args(args).stdin(Stdio::null()).output()
    }
}

impl Engine for RunscEngine {
    fn boot(&self, spec: &BootSpec) -> Result<(), EngineError> {
        self.start(spec, None)
    }

    fn checkpoint(
        &self,
        id: &SandboxId,
        image_dir: &Path,
        after: AfterCheckpoint,
    ) -> Result<(), EngineError> {
        let mut args = vec![
            "checkpoint".to_owned(),
            format!("--image-path={}", image_dir.display()),
            "--compression=none".to_owned(),
        ];
        if after == AfterCheckpoint::KeepRunning {
            args.push("--leave-running".to_owned());
        }
        args.push(id.to_string());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = self.runsc_status(&args).map_err(|source| EngineError::Spawn {
            id: id.clone(),
            program: "runsc checkpoint".into(),
            source,
        })?;
        if out.status.success() {
            return Ok(());
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        let first = stderr.lines().find(|l| !l.trim().is_empty()).unwrap_or("").trim().to_owned();
        Err(EngineError::Runsc { id: id.clone(), op: "checkpoint", detail: first })
    }

    fn restore(&self, spec: &BootSpec, image_dir: &Path) -> Result<(), EngineError> {
        self.start(spec, Some(image_dir))
    }

    fn destroy(&self, id: &SandboxId) -> Result<(), EngineError> {
        self.delete_runsc(id)?;
        Ok(self.disks.remove(id)?)
    }

    fn disk_usage(&self, id: &SandboxId) -> Option<DiskUsage> {
        self.disks.usage(id)
    }

    fn settle(&self, timeout: std::time::Duration) -> bool {
        let root_arg = format!("--root={}", self.root.display());
        let start = std::time::Instant::now();
        loop {
            let busy = runsc_commands_with(&root_arg);
            if busy == 0 {
                return true;
            }
            if start.elapsed() >= timeout {
                tracing::warn!(busy, "runsc commands of an earlier server are still running");
                return false;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// Every sandbox this engine holds something for: a runsc sandbox or a disk (a disk alone
    /// is what a start interrupted by a crash leaves).
    fn list(&self) -> Result<Vec<String>, EngineError> {
        let mut ids = self.disks.list();
        if self.root.exists() {
            let out = self.runsc_status(&["list", "-quiet"]).map_err(|e| EngineError::List(e.to_string()))?;
            if !out.status.success() {
                return Err(EngineError::List(String::from_utf8_lossy(&out.stderr).trim().to_owned()));
            }
            let listed = String::from_utf8_lossy(&out.stdout);
            ids.extend(listed.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_owned));
        }
        ids.sort();
        ids.dedup();
        Ok(ids)
    }

    fn describe(&self) -> String {
        format!(
            "gVisor runsc ({}), root {}, launch mode {:?}",
            self.runsc.display(),
            self.root.display(),
            self.launch_mode()
        )
    }
}

/// The sandbox's log (PID 1's stdout and stderr, and runsc's), empty, opened for appending.
///
/// Why `O_APPEND`: the runtime cuts a log that outgrows its cap (`runtime::heartbeat`), and
/// every writer must then carry on at the new end. Without it, writers keep their own offsets:
/// the file stays as large as before (a hole up to where they write), and a restored sandbox
/// writes at the offset saved in its checkpoint (its new log began with that many NUL bytes).
fn open_log(path: &Path) -> std::io::Result<File> {
    let log = fs::OpenOptions::new().create(true).append(true).open(path)?;
    log.set_len(0)?; // std refuses truncate together with append
    Ok(log)
}

/// Number of live runsc CLI commands (not the long-lived `runsc-sandbox`/`runsc-gofer`
/// processes) naming `root_arg`, other than this process.
fn runsc_commands_with(root_arg: &str) -> usize {
    let me = std::process::id().to_string();
    let Ok(rd) = std::fs::read_dir("/proc") else { return 0 };
    rd.flatten()
        .filter(|e| e.file_name().to_string_lossy().bytes().all(|b| b.is_ascii_digit()))
        .filter(|e| e.file_name().to_string_lossy() != me)
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .filter(|cmd| {
            let args: Vec<&[u8]> = cmd.split(|b| *b == 0).collect();
            let argv0 = String::from_utf8_lossy(args.first().copied().unwrap_or_default()).into_owned();
            let long_lived = argv0.ends_with("runsc-sandbox") || argv0.ends_with("runsc-gofer");
            !long_lived && args.iter().any(|a| String::from_utf8_lossy(a).contains(root_arg))
        })
        .count()
}
