//! Disk free-space floors: restores, checkpoint saves and warm-pool refills check the free space
//! of the filesystem that holds the artifact before they start, so a full disk gives a clear
//! refusal instead of a half-written image.

use std::path::Path;

use super::{Runtime, RuntimeError};
use crate::admission::host::free_disk_mb;
// The floors are a setting (`config`); they are re-exported here beside the checks that use them.
pub use crate::config::DiskFloors;

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

/// The floor (MiB) that guards `op`.
fn floor(floors: &DiskFloors, op: DiskOp) -> u64 {
    match op {
        DiskOp::Restore => floors.restore_mb,
        DiskOp::SnapshotSave => floors.snapshot_mb,
        DiskOp::WarmRefill => floors.warm_mb,
    }
}

impl Runtime {
    /// Refuses `op` when the filesystem holding `path` has less free space than its floor.
    pub(super) fn check_disk_floor(&self, op: DiskOp, path: &Path) -> Result<(), RuntimeError> {
        let floor_mb = floor(&self.inner.config.disk_floors, op);
        match free_disk_mb(path) {
            Some(free_mb) if free_mb < floor_mb => {
                Err(RuntimeError::DiskFloor { op: op.as_str(), path: path.to_owned(), free_mb, floor_mb })
            }
            _ => Ok(()),
        }
    }
}
