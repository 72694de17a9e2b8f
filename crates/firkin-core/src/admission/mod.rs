//! Capacity admission: a pure, synchronous ledger of the host's vCPU, memory and disk
//! ([`ledger::Ledger`]) and an async bounded wait queue on top of it ([`queue::Admission`]).
//!
//! Decisions: admit now; evict warm-pool entries and admit; wait (bounded queue, bounded time);
//! or reject (larger than the host, or the queue is full).

pub mod host;
pub mod ledger;
pub mod queue;

use serde::Serialize;

/// An amount of each resource the ledger tracks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Resources {
    /// Milli-vCPUs (1000 = one vCPU).
    pub milli_cpu: u64,
    pub memory_mb: u64,
    pub disk_mb: u64,
}

impl Resources {
    pub fn new(vcpus: u32, memory_mb: u32, disk_mb: u32) -> Resources {
        Resources {
            milli_cpu: u64::from(vcpus) * 1000,
            memory_mb: u64::from(memory_mb),
            disk_mb: u64::from(disk_mb),
        }
    }

    pub fn fits_in(&self, other: &Resources) -> bool {
        self.milli_cpu <= other.milli_cpu
            && self.memory_mb <= other.memory_mb
            && self.disk_mb <= other.disk_mb
    }

    pub fn saturating_sub(&self, other: &Resources) -> Resources {
        Resources {
            milli_cpu: self.milli_cpu.saturating_sub(other.milli_cpu),
            memory_mb: self.memory_mb.saturating_sub(other.memory_mb),
            disk_mb: self.disk_mb.saturating_sub(other.disk_mb),
        }
    }

    pub fn add(&self, other: &Resources) -> Resources {
        Resources {
            milli_cpu: self.milli_cpu + other.milli_cpu,
            memory_mb: self.memory_mb + other.memory_mb,
            disk_mb: self.disk_mb + other.disk_mb,
        }
    }

    /// The first resource of `self` that exceeds `limit`, by name.
    pub fn first_excess(&self, limit: &Resources) -> Option<Resource> {
        if self.milli_cpu > limit.milli_cpu {
            Some(Resource::Cpu)
        } else if self.memory_mb > limit.memory_mb {
            Some(Resource::Memory)
        } else if self.disk_mb > limit.disk_mb {
            Some(Resource::Disk)
        } else {
            None
        }
    }
}

/// A tracked resource, for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Resource {
    Cpu,
    Memory,
    Disk,
}

impl std::fmt::Display for Resource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Resource::Cpu => "vCPU",
            Resource::Memory => "memory",
            Resource::Disk => "disk",
        })
    }
}

/// What a reservation is for. Paused sandboxes hold disk only (their memory is on disk).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Class {
    Active,
    Warm,
    Paused,
}
