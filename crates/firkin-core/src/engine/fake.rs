//! An in-memory engine for unit tests of the runtime's pure logic.

use std::collections::BTreeSet;
use std::sync::Mutex;

use super::{AfterCheckpoint, BootSpec, Engine, EngineError};
use crate::ids::SandboxId;

/// Records booted sandboxes; can be told to fail the next boot or checkpoint, or every destroy.
#[derive(Debug, Default)]
pub struct FakeEngine {
    pub running: Mutex<BTreeSet<String>>,
    pub fail_next_boot: Mutex<bool>,
    pub fail_next_checkpoint: Mutex<bool>,
    /// While set, `destroy` fails and leaves the sandbox running (as a hung `runsc delete`).
    pub fail_destroy: Mutex<bool>,
    /// How long each checkpoint takes (to catch requests in the middle of a pause).
    pub checkpoint_delay: Mutex<std::time::Duration>,
}

/// Takes a one-shot fault flag.
fn take(flag: &Mutex<bool>) -> bool {
    std::mem::take(&mut *flag.lock().unwrap_or_else(|e| e.into_inner()))
}

impl Engine for FakeEngine {
    fn boot(&self, spec: &BootSpec) -> Result<(), EngineError> {
        if take(&self.fail_next_boot) {
            return Err(EngineError::Runsc {
                id: spec.id.clone(),
                op: "run",
                detail: "injected failure".into(),
            });
        }
        self.running.lock().unwrap_or_else(|e| e.into_inner()).insert(spec.id.to_string());
        Ok(())
    }

    fn checkpoint(
        &self,
        id: &SandboxId,
        image_dir: &std::path::Path,
        after: AfterCheckpoint,
    ) -> Result<(), EngineError> {
        std::thread::sleep(*self.checkpoint_delay.lock().unwrap_or_else(|e| e.into_inner()));
        if take(&self.fail_next_checkpoint) {
            return Err(EngineError::Runsc {
                id: id.clone(),
                op: "checkpoint",
                detail: "injected failure".into(),
            });
        }
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        if !running.contains(id.as_str()) {
            return Err(EngineError::Runsc {
                id: id.clone(),
                op: "checkpoint",
                detail: "not running".into(),
            });
        }
        std::fs::create_dir_all(image_dir)
            .map_err(|source| EngineError::Bundle { id: id.clone(), source })?;
        std::fs::write(image_dir.join("checkpoint.img"), id.as_str())
            .map_err(|source| EngineError::Bundle { id: id.clone(), source })?;
        if after == AfterCheckpoint::Stop {
            running.remove(id.as_str());
        }
        Ok(())
    }

    fn restore(&self, spec: &BootSpec, image_dir: &std::path::Path) -> Result<(), EngineError> {
        if !image_dir.join("checkpoint.img").exists() {
            return Err(EngineError::Runsc { id: spec.id.clone(), op: "restore", detail: "no image".into() });
        }
        self.boot(spec)
    }

    fn destroy(&self, id: &SandboxId) -> Result<(), EngineError> {
        if *self.fail_destroy.lock().unwrap_or_else(|e| e.into_inner()) {
            return Err(EngineError::Runsc {
                id: id.clone(),
                op: "delete",
                detail: "injected failure".into(),
            });
        }
        self.running.lock().unwrap_or_else(|e| e.into_inner()).remove(id.as_str());
        Ok(())
    }

    fn list(&self) -> Result<Vec<String>, EngineError> {
        Ok(self.running.lock().unwrap_or_else(|e| e.into_inner()).iter().cloned().collect())
    }

    fn settle(&self, _timeout: std::time::Duration) -> bool {
        true
    }

    fn describe(&self) -> String {
        "fake engine".into()
    }
}
