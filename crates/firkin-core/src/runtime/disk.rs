//! Disk free-space floors: restores, checkpoint saves and warm-pool refills check the free space
//! of the filesystem that holds the artifact before they start, so a full disk gives a clear
//! refusal instead of a half-written image.

use std::path::Path;

use super::{Runtime, RuntimeError};
use crate::admission::host::free_disk_mb;

/// The operations a floor guards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskOp {
    Restore,
    SnapshotSave,
    WarmRefill,
}

impl DiskOp {
    pub fn as_str(self) -> &'static str {
        match self {
            DiskOp::Restore => "restore",
            DiskOp::SnapshotSave => "snapshot save",
            DiskOp::WarmRefill => "warm-pool refill",
        }
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

impl DiskFloors {
    fn floor(&self, op: DiskOp) -> u64 {
        match op {
            DiskOp::Restore => self.restore_mb,
            DiskOp::SnapshotSave => self.snapshot_mb,
            DiskOp::WarmRefill => self.warm_mb,
        }
    }
}

impl Runtime {
    /// Refuses `op` when the filesystem holding `path` has less free space than its floor.
    pub(super) fn check_disk_floor(&self, op: DiskOp, path: &Path) -> Result<(), RuntimeError> {
        let floor_mb = self.inner.config.disk_floors.floor(op);
        match free_disk_mb(path) {
            Some(free_mb) if free_mb < floor_mb => {
                Err(RuntimeError::DiskFloor { op: op.as_str(), path: path.to_owned(), free_mb, floor_mb })
            }
            _ => Ok(()),
        }
    }
}
