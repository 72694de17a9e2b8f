//! Errors of runtime operations. The HTTP edge maps each variant to one status in one place.

use crate::admission::queue::AdmissionError;
use crate::agent_client::AgentError;
use crate::atomic::AtomicWriteError;
use crate::engine::EngineError;
use crate::lifecycle::TransitionError;
use crate::network::NetworkError;
use crate::template::TemplateError;

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(transparent)]
    Template(#[from] TemplateError),
    #[error("invalid template spec: {0}")]
    TemplateSpec(#[from] crate::template::TemplateSpecError),
    #[error(transparent)]
    Build(#[from] super::template::BuildError),
    #[error("capacity: {0}")]
    Admission(#[from] AdmissionError),
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error("sandbox {0} is already paused")]
    AlreadyPaused(String),
    #[error("snapshot {0} not found")]
    SnapshotNotFound(String),
    #[error("sandbox {0} not found")]
    SandboxNotFound(String),
    #[error("sandbox {id}: {source}")]
    Transition { id: String, source: TransitionError },
    #[error("{feature} is not supported by this firkin server yet")]
    Unsupported { feature: &'static str },
    #[error("create of sandbox {id} failed: {source}")]
    Engine { id: String, source: EngineError },
    #[error("create of sandbox {id} failed: {source}")]
    Network { id: String, source: NetworkError },
    #[error("sandbox {id} did not become ready: {source}")]
    NotReady { id: String, source: AgentError },
    #[error("sandbox {id}: {source}")]
    Agent { id: String, source: AgentError },
    #[error(transparent)]
    Snapshot { source: crate::snapshot::SnapshotError },
    #[error("persisting sandbox state: {0}")]
    Persist(#[from] AtomicWriteError),
    #[error("{op} refused: only {free_mb} MiB free on the filesystem of {} (the floor is {floor_mb} MiB)", path.display())]
    DiskFloor { op: &'static str, path: std::path::PathBuf, free_mb: u64, floor_mb: u64 },
    #[error("internal: {0}")]
    Internal(String),
}
