//! Errors of runtime operations. The HTTP edge maps each variant to one status in one place.

use crate::admission::queue::AdmissionError;
use crate::agent_client::AgentError;
use crate::atomic::AtomicWriteError;
use crate::engine::EngineError;
use crate::ids::SandboxId;
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
    Build(#[from] BuildError),
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
    #[error("{op} of sandbox {id} failed: {source}")]
    Engine { op: Operation, id: String, source: EngineError },
    #[error("{op} of sandbox {id} failed: {source}")]
    Network { op: Operation, id: String, source: NetworkError },
    /// The host side of the sandbox network (firewall, DNS forwarder) could not be set up.
    #[error("the host side of the sandbox network")]
    HostNetwork(#[source] NetworkError),
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
    /// An operation failed, and so did the cleanup after it: both are kept.
    #[error("{error} (cleaning up afterwards failed too: {cleanup})")]
    WithCleanup { error: Box<RuntimeError>, cleanup: String },
}

impl RuntimeError {
    /// The error that decides what the caller is told (the original one of a failed cleanup).
    pub fn primary(&self) -> &RuntimeError {
        match self {
            RuntimeError::WithCleanup { error, .. } => error.primary(),
            other => other,
        }
    }
}

/// The runtime operation a sandbox is started (or stopped) for; errors name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Create,
    TemplateBuild,
    WarmRefill,
    Resume,
    Pause,
    Snapshot,
    CheckpointProbe,
    Readopt,
    /// A sandbox's egress policy replaced (`PUT /sandboxes/{id}/network`).
    UpdateNetwork,
    /// The server bringing its host network side up.
    Start,
}

impl std::fmt::Display for Operation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Operation::Create => "create",
            Operation::TemplateBuild => "template build",
            Operation::WarmRefill => "warm-pool refill",
            Operation::Resume => "resume",
            Operation::Pause => "pause",
            Operation::Snapshot => "snapshot",
            Operation::CheckpointProbe => "checkpoint probe",
            Operation::Readopt => "re-adoption",
            Operation::UpdateNetwork => "network update",
            Operation::Start => "server start",
        })
    }
}

/// What failed while tearing a sandbox down (each part was logged as it failed).
#[derive(Debug, thiserror::Error)]
#[error("teardown of sandbox {id}: {}", failed.join("; "))]
pub struct CleanupError {
    pub id: SandboxId,
    pub failed: Vec<String>,
}

/// Why a template build failed, naming the template and the step.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("template '{name}': step {step} ({what}) exited with {exit_code}; output:\n{output}")]
    StepFailed { name: String, step: usize, what: String, exit_code: i32, output: String },
    #[error("template '{name}': step {step} ({what}): {detail}")]
    Step { name: String, step: usize, what: String, detail: String },
    #[error("template '{name}': ready check `{check}` did not pass within {secs}s; last output:\n{output}")]
    NotReady { name: String, check: String, secs: u32, output: String },
}
