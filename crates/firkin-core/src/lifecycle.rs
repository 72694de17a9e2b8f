//! The sandbox lifecycle state machine.
//!
//! ```text
//! creating     ──ready─────▶ running        creating     ──fail──────▶ killed
//! running      ──pause─────▶ pausing        pausing      ──paused────▶ paused
//! pausing      ──fail──────▶ running        paused       ──resume────▶ resuming
//! resuming     ──ready─────▶ running        resuming     ──fail──────▶ paused
//! running      ──snapshot──▶ snapshotting   snapshotting ──done/fail─▶ running
//! any state but killed ──kill──▶ killed
//! ```
//! A snapshot (and fork, a continuation capture, a template's checkpoint) leaves the sandbox
//! running; `snapshotting` only holds its traffic while the image is taken.
//! Every transition is explicit; an illegal one is a typed [`TransitionError`].

use serde::{Deserialize, Serialize};

/// Where a sandbox is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SandboxState {
    Creating,
    Running,
    Pausing,
    Paused,
    Resuming,
    /// Running, briefly frozen for a checkpoint that leaves it running (snapshot, fork).
    Snapshotting,
    Killed,
}

/// Something that happens to a sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LifecycleEvent {
    /// The engine started it and the agent answered.
    Ready,
    /// Creation or resume failed.
    Fail,
    BeginPause,
    Paused,
    BeginResume,
    BeginSnapshot,
    SnapshotDone,
    Kill,
}

/// An event that is not allowed in the current state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("sandbox lifecycle: cannot {event:?} while {from:?}")]
pub struct TransitionError {
    pub from: SandboxState,
    pub event: LifecycleEvent,
}

impl SandboxState {
    /// Applies `event`, returning the next state or a typed error.
    pub fn apply(self, event: LifecycleEvent) -> Result<SandboxState, TransitionError> {
        use LifecycleEvent as E;
        use SandboxState as S;
        let next = match (self, event) {
            (S::Creating, E::Ready) => S::Running,
            (S::Creating, E::Fail) => S::Killed,
            (S::Running, E::BeginPause) => S::Pausing,
            (S::Pausing, E::Paused) => S::Paused,
            (S::Pausing, E::Fail) => S::Running,
            (S::Paused, E::BeginResume) => S::Resuming,
            (S::Resuming, E::Ready) => S::Running,
            (S::Resuming, E::Fail) => S::Paused,
            (S::Running, E::BeginSnapshot) => S::Snapshotting,
            (S::Snapshotting, E::SnapshotDone | E::Fail) => S::Running,
            (S::Killed, _) => return Err(TransitionError { from: self, event }),
            (_, E::Kill) => S::Killed,
            _ => return Err(TransitionError { from: self, event }),
        };
        Ok(next)
    }

    /// The E2B-visible state name, for states the SDK may see (`running` / `paused`).
    pub fn e2b_name(self) -> Option<&'static str> {
        match self {
            SandboxState::Running | SandboxState::Pausing | SandboxState::Snapshotting => Some("running"),
            SandboxState::Paused | SandboxState::Resuming => Some("paused"),
            SandboxState::Creating | SandboxState::Killed => None,
        }
    }

    /// True when sandbox traffic may be proxied to the agent.
    pub fn accepts_traffic(self) -> bool {
        matches!(self, SandboxState::Running)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use LifecycleEvent as E;
    use SandboxState as S;

    #[test]
    fn happy_path_and_pause_cycle() {
        let s = S::Creating.apply(E::Ready).unwrap();
        assert_eq!(s, S::Running);
        let s = s.apply(E::BeginPause).unwrap().apply(E::Paused).unwrap();
        assert_eq!(s, S::Paused);
        let s = s.apply(E::BeginResume).unwrap().apply(E::Ready).unwrap();
        assert_eq!(s, S::Running);
        assert_eq!(s.apply(E::Kill).unwrap(), S::Killed);
    }

    #[test]
    fn illegal_transitions_are_typed_errors() {
        assert_eq!(S::Running.apply(E::Paused), Err(TransitionError { from: S::Running, event: E::Paused }));
        assert!(S::Killed.apply(E::Kill).is_err());
        assert!(S::Paused.apply(E::BeginPause).is_err());
        assert!(S::Creating.apply(E::BeginPause).is_err());
    }

    #[test]
    fn snapshots_return_to_running() {
        let s = S::Running.apply(E::BeginSnapshot).unwrap();
        assert_eq!(s, S::Snapshotting);
        assert!(!s.accepts_traffic());
        assert_eq!(s.e2b_name(), Some("running"));
        assert_eq!(s.apply(E::SnapshotDone).unwrap(), S::Running);
        assert_eq!(s.apply(E::Fail).unwrap(), S::Running);
        assert!(S::Paused.apply(E::BeginSnapshot).is_err());
    }

    #[test]
    fn failures_roll_back_to_the_stable_state() {
        assert_eq!(S::Creating.apply(E::Fail).unwrap(), S::Killed);
        assert_eq!(S::Pausing.apply(E::Fail).unwrap(), S::Running);
        assert_eq!(S::Resuming.apply(E::Fail).unwrap(), S::Paused);
    }

    #[test]
    fn e2b_names_are_only_running_or_paused() {
        for s in [S::Creating, S::Running, S::Pausing, S::Paused, S::Resuming, S::Killed] {
            if let Some(n) = s.e2b_name() {
                assert!(n == "running" || n == "paused");
            }
        }
        assert!(S::Running.accepts_traffic());
        assert!(!S::Paused.accepts_traffic());
    }
}
