//! Runtime configuration and the on-disk storage layout.
//!
//! Durable state lives under `state_dir` (`FIRKIN_STATE_DIR`, default `~/.firkin/state`);
//! rebuildable caches under `cache_dir` (`FIRKIN_CACHE_DIR`, default `~/.firkin/cache`).

use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where everything lives on disk. All paths derive from the two roots.
#[derive(Debug, Clone)]
pub struct Layout {
    pub state_dir: PathBuf,
    pub cache_dir: PathBuf,
}

impl Layout {
    /// Layout from `FIRKIN_STATE_DIR` / `FIRKIN_CACHE_DIR`, else `$HOME/.firkin/{state,cache}`.
    pub fn from_env() -> Layout {
        let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/root"));
        let base = home.join(".firkin");
        let state_dir =
            std::env::var_os("FIRKIN_STATE_DIR").map(PathBuf::from).unwrap_or_else(|| base.join("state"));
        let cache_dir =
            std::env::var_os("FIRKIN_CACHE_DIR").map(PathBuf::from).unwrap_or_else(|| base.join("cache"));
        Layout { state_dir, cache_dir }
    }

    /// Persisted sandbox records (`<id>.json`).
    pub fn sandboxes_dir(&self) -> PathBuf {
        self.state_dir.join("sandboxes")
    }
    pub fn sandbox_record(&self, id: &str) -> PathBuf {
        self.sandboxes_dir().join(format!("{id}.json"))
    }
    /// Per-sandbox runtime directory (OCI bundle, logs).
    pub fn sandbox_run_dir(&self, id: &str) -> PathBuf {
        self.state_dir.join("run").join("sandboxes").join(id)
    }
    /// runsc's own state root.
    /// Per-sandbox disk images and their mount points.
    pub fn disks_dir(&self) -> PathBuf {
        self.state_dir.join("run").join("disks")
    }
    pub fn runsc_root(&self) -> PathBuf {
        self.state_dir.join("run").join("runsc")
    }
    /// Cached base rootfs directories (`rootfs/<name>`), built by `scripts/setup.sh`.
    pub fn rootfs_dir(&self, name: &str) -> PathBuf {
        self.cache_dir.join("rootfs").join(name)
    }
    /// Checkpoint images of paused sandboxes.
    pub fn paused_dir(&self) -> PathBuf {
        self.state_dir.join("snapshots").join("paused")
    }
    pub fn pause_image(&self, id: &str) -> PathBuf {
        self.paused_dir().join(id)
    }
    /// Snapshot artifacts (`images/<snapshot id>/` with `manifest.json`).
    pub fn snapshot_images_dir(&self) -> PathBuf {
        self.state_dir.join("snapshots").join("images")
    }
    pub fn snapshot_dir(&self, id: &str) -> PathBuf {
        self.snapshot_images_dir().join(id)
    }
    /// Built template artifacts (`templates/<build id>/` with `manifest.json`).
    pub fn templates_dir(&self) -> PathBuf {
        self.state_dir.join("templates")
    }
    /// Where quarantined (untrusted) artifacts are moved.
    pub fn quarantine_dir(&self) -> PathBuf {
        self.state_dir.join("quarantine")
    }
}

/// Knobs of the runtime, with E2B-compatible defaults.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    pub layout: Layout,
    /// Host path of the `firkin-agent` binary, bind-mounted into every sandbox.
    pub agent_path: PathBuf,
    /// The `runsc` binary.
    pub runsc_path: PathBuf,
    pub default_timeout: Duration,
    pub max_timeout: Duration,
    pub default_cpu_count: u32,
    pub max_cpu_count: u32,
    pub default_memory_mb: u32,
    pub max_memory_mb: u32,
    /// Disk size of sandboxes whose template does not set one (E2B's default: 10 GiB). A
    /// limit, not a reservation: see `disk_reserve_mb`.
    pub disk_size_mb: u32,
    /// Disk each running sandbox holds in the capacity ledger: headroom for what it writes, not
    /// its whole size (a 10 GiB limit per sandbox must not cap a host at a few sandboxes). The
    /// disk free-space floors guard what sandboxes really write.
    pub disk_reserve_mb: u32,
    /// Processes and threads the sandbox's user may have at once (RLIMIT_NPROC, enforced by
    /// gVisor inside the sandbox: a fork bomb fails, the sandbox lives on). `None`: one per 2 MiB
    /// of the sandbox's memory (see [`RuntimeConfig::process_limit`]).
    pub max_processes: Option<u32>,
    /// How long to wait for the agent to answer after the engine started the sandbox.
    pub ready_timeout: Duration,
    /// Domain reported in create responses (`null` when empty).
    pub domain: Option<String>,
    /// Capacity the admission ledger hands out.
    pub capacity: crate::admission::Resources,
    /// Requests allowed to wait for capacity at once.
    pub max_queue: usize,
    /// Longest a create waits for capacity before a 503.
    pub admission_wait: Duration,
    /// A running sandbox whose agent has not answered for this long is killed as stuck.
    pub stuck_after: Duration,
    /// Free-space floors for restores, checkpoint saves and warm refills.
    pub disk_floors: DiskFloors,
    /// Warm-pool depth per template id (0 or absent: no pool).
    pub warm_pool: std::collections::BTreeMap<String, usize>,
}

impl RuntimeConfig {
    pub fn new(layout: Layout, agent_path: impl AsRef<Path>) -> RuntimeConfig {
        let layout_state = layout.state_dir.clone();
        RuntimeConfig {
            layout,
            agent_path: agent_path.as_ref().to_owned(),
            runsc_path: PathBuf::from("runsc"),
            default_timeout: Duration::from_secs(300),
            max_timeout: Duration::from_secs(24 * 3600),
            default_cpu_count: 2,
            max_cpu_count: 8,
            default_memory_mb: 512,
            max_memory_mb: 8192,
            disk_size_mb: 10240,
            disk_reserve_mb: 1024,
            max_processes: None,
            ready_timeout: Duration::from_secs(20),
            domain: None,
            capacity: crate::admission::host::host_capacity(&layout_state, 16),
            max_queue: 64,
            admission_wait: Duration::from_secs(30),
            stuck_after: Duration::from_secs(60),
            disk_floors: DiskFloors::default(),
            warm_pool: std::collections::BTreeMap::new(),
        }
    }
}

impl RuntimeConfig {
    /// The process limit of a sandbox with `memory_mb`. Measured with a bash fork bomb in a
    /// 512 MiB sandbox: at 256 processes it is contained and the sandbox recovers; at 512 and
    /// 1024 the processes' memory starves the agent and the sandbox stops answering.
    pub fn process_limit(&self, memory_mb: u32) -> u32 {
        self.max_processes.unwrap_or((memory_mb / 2).clamp(128, 32768))
    }
}

/// Floors in MiB (defaults from the architecture contract: 10 GiB, 10 GiB, 20 GiB).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskFloors {
    pub restore_mb: u64,
    pub snapshot_mb: u64,
    pub warm_mb: u64,
}

impl Default for DiskFloors {
    fn default() -> Self {
        DiskFloors { restore_mb: 10 * 1024, snapshot_mb: 10 * 1024, warm_mb: 20 * 1024 }
    }
}
