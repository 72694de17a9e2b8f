//! An in-memory engine for unit tests of the runtime's pure logic.

use std::collections::BTreeSet;
use std::sync::Mutex;

use super::{BootSpec, Engine, EngineError};
use crate::ids::SandboxId;

/// Records booted sandboxes; can be told to fail the next boot.
#[derive(Debug, Default)]
pub struct FakeEngine {
    pub running: Mutex<BTreeSet<String>>,
    pub fail_next_boot: Mutex<bool>,
}

impl Engine for FakeEngine {
    fn boot(&self, spec: &BootSpec) -> Result<(), EngineError> {
        let mut fail = self.fail_next_boot.lock().unwrap_or_else(|e| e.into_inner());
        if std::mem::take(&mut *fail) {
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
        leave_running: bool,
    ) -> Result<(), EngineError> {
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
        if !leave_running {
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
