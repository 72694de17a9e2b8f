//! Continuation snapshots: a sandbox created with metadata `firkin.continuation=on` is captured
//! when it stops (killed through the API: reason `stopped`), idles out (its timeout passes:
//! `idle`) or exits (its template's start command, the sandbox's main workload, ends: `exited`,
//! found by the heartbeat), as the snapshot `continuation-<sandbox id>`, and then ends. A
//! follow-up create with that name (or the snapshot id) restores it as a new sandbox whose
//! metadata reports `firkin.continuation.reason`, `firkin.continuation.from` and, for `exited`,
//! `firkin.continuation.exitCode`. A follow-up of an exited sandbox has no main workload left:
//! it runs until killed or timed out.

use std::sync::Arc;

use super::error::Operation;
use super::{Runtime, RuntimeError};
use crate::lifecycle::SandboxState;
use crate::snapshot::SnapshotStore;

/// Metadata that opts a sandbox in.
pub const CONTINUATION_KEY: &str = "firkin.continuation";
/// Metadata of a follow-up: why its source ended, and which sandbox it was.
pub const REASON_KEY: &str = "firkin.continuation.reason";
pub const FROM_KEY: &str = "firkin.continuation.from";
pub const EXIT_CODE_KEY: &str = "firkin.continuation.exitCode";

/// Why a sandbox ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// Killed through the API.
    Stopped,
    /// Its timeout passed.
    Idle,
    /// Its start command ended with this exit code (-1: killed by a signal).
    Exited(i32),
}

impl StopReason {
    pub fn as_str(self) -> &'static str {
        match self {
            StopReason::Stopped => "stopped",
            StopReason::Idle => "idle",
            StopReason::Exited(_) => "exited",
        }
    }
}

/// The snapshot name of a sandbox's continuation.
pub fn continuation_name(id: &str) -> String {
    format!("continuation-{id}")
}

impl Runtime {
    /// Kill through the API: captures a continuation first if the sandbox asked for one.
    pub async fn stop(&self, id: &str) -> Result<(), RuntimeError> {
        self.capture_continuation(id, StopReason::Stopped).await;
        self.kill(id).await
    }

    /// The heartbeat saw the start command of running sandbox `id` end with `code`. A sandbox
    /// that opted into continuations is captured (reason `exited`) and ended; others keep
    /// running, as E2B sandboxes do, and so does one whose start command had ended before it
    /// came up (a one-shot start command, or a follow-up of an exited sandbox).
    pub(super) async fn start_exited(&self, id: &str, code: i32) {
        let Ok(rec) = self.get_visible(id) else { return };
        let opted_in = rec.metadata.get(CONTINUATION_KEY).map(String::as_str) == Some("on");
        if rec.state != SandboxState::Running || !opted_in || rec.start_ended {
            return;
        }
        tracing::info!(sandbox = id, exit_code = code, "start command exited; ending the sandbox");
        self.capture_continuation(id, StopReason::Exited(code)).await;
        if let Err(e) = self.kill(id).await {
            tracing::warn!(sandbox = id, error = %e, "ending an exited sandbox failed");
        }
    }

    /// Captures `continuation-<id>` if the sandbox opted in and is running. Failures are logged:
    /// the sandbox is ending either way.
    pub(super) async fn capture_continuation(&self, id: &str, reason: StopReason) {
        let Ok(rec) = self.get_visible(id) else { return };
        if rec.state != SandboxState::Running
            || rec.metadata.get(CONTINUATION_KEY).map(String::as_str) != Some("on")
        {
            return;
        }
        let store = Arc::clone(&self.inner.snapshots);
        let name = continuation_name(id);
        let source = id.to_owned();
        let captured = self
            .capture(&rec, &store, SnapshotStore::new_id("cont"), Operation::Snapshot, move |m| {
                m.names = vec![name];
                m.metadata.insert(REASON_KEY.into(), reason.as_str().into());
                m.metadata.insert(FROM_KEY.into(), source);
                if let StopReason::Exited(code) = reason {
                    m.metadata.insert(EXIT_CODE_KEY.into(), code.to_string());
                }
            })
            .await;
        match captured {
            Ok(m) => {
                tracing::info!(sandbox = id, snapshot = %m.snapshot_id, reason = reason.as_str(), "continuation captured")
            }
            Err(e) => tracing::warn!(sandbox = id, error = %e, "continuation capture failed"),
        }
    }
}
