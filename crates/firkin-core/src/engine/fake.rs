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
        let mut fail = self
            .fail_next_boot
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if std::mem::take(&mut *fail) {
            return Err(EngineError::Runsc {
                id: spec.id.clone(),
                op: "run",
                detail: "injected failure".into(),
            });
        }
        self.running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(spec.id.to_string());
        Ok(())
    }

    fn destroy(&self, id: &SandboxId) -> Result<(), EngineError> {
        self.running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id.as_str());
        Ok(())
    }

    fn list(&self) -> Result<Vec<String>, EngineError> {
        Ok(self
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect())
    }

    fn describe(&self) -> String {
        "fake engine".into()
    }
}
