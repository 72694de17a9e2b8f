//! The isolation engine seam. One real engine (gVisor `runsc`, [`runsc::RunscEngine`]) and a fake
//! for unit tests ([`fake::FakeEngine`]). Methods block (they run host processes); the runtime
//! calls them from `spawn_blocking`.

pub mod cgroup;
pub mod disk;
pub mod fake;
pub mod oci;
pub mod reaper;
pub mod runsc;

use std::path::{Path, PathBuf};

use crate::ids::SandboxId;

/// What the engine needs to boot one sandbox.
#[derive(Debug, Clone)]
pub struct BootSpec {
    pub id: SandboxId,
    /// Read-only template rootfs; writes go to a per-sandbox overlay.
    pub rootfs: PathBuf,
    /// Network namespace the sandbox joins.
    pub netns_path: PathBuf,
    /// Host path of the agent binary (bind-mounted read-only).
    pub agent_path: PathBuf,
    /// Per-sandbox directory for the bundle and logs.
    pub run_dir: PathBuf,
    pub cpu_count: u32,
    pub memory_mb: u32,
    /// Size of the sandbox's disk (its root filesystem's writable layer), a hard limit.
    pub disk_mb: u32,
    /// Processes (and threads) the sandbox's user may have at once (RLIMIT_NPROC).
    pub max_processes: u32,
}

/// Engine failures, each naming the operation and the sandbox.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("engine: writing bundle for sandbox {id}: {source}")]
    Bundle { id: SandboxId, source: std::io::Error },
    #[error("engine: spawning {program} for sandbox {id}: {source}")]
    Spawn { id: SandboxId, program: String, source: std::io::Error },
    #[error("engine: runsc {op} of sandbox {id} failed: {detail}")]
    Runsc { id: SandboxId, op: &'static str, detail: String },
    #[error("engine: listing sandboxes: {0}")]
    List(String),
    #[error("engine: {0}")]
    Disk(#[from] disk::DiskError),
}

/// What happens to a sandbox once its checkpoint is saved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterCheckpoint {
    KeepRunning,
    Stop,
}

/// A sandbox engine.
pub trait Engine: Send + Sync + 'static {
    /// Boots a sandbox whose init process is the agent. Returns once the engine reports it
    /// started (the agent may not answer yet).
    fn boot(&self, spec: &BootSpec) -> Result<(), EngineError>;
    /// Disk usage of a running sandbox, where the engine gives it a disk of its own.
    fn disk_usage(&self, _id: &SandboxId) -> Option<disk::DiskUsage> {
        None
    }
    /// Saves the sandbox's whole state (memory, processes, overlay) into `image_dir`; `after`
    /// says whether it keeps running (pause, snapshots and template captures all keep it
    /// running: the image is proven restorable before the source is stopped).
    fn checkpoint(&self, id: &SandboxId, image_dir: &Path, after: AfterCheckpoint)
        -> Result<(), EngineError>;
    /// Starts a sandbox from a checkpoint image instead of booting it.
    fn restore(&self, spec: &BootSpec, image_dir: &Path) -> Result<(), EngineError>;
    /// Stops and deletes a sandbox. Idempotent: an unknown sandbox is not an error.
    fn destroy(&self, id: &SandboxId) -> Result<(), EngineError>;
    /// Ids of every sandbox the engine currently holds (for reconciliation).
    fn list(&self) -> Result<Vec<String>, EngineError>;
    /// Waits (at most `timeout`) until no engine command an earlier server started is still
    /// running (a restore it began just before it died would otherwise complete after the
    /// reconciliation). Returns whether the engine is settled.
    fn settle(&self, timeout: std::time::Duration) -> bool;
    /// Human-readable engine description for logs and `doctor`.
    fn describe(&self) -> String;
}
