//! Start-up reconciliation. Re-adoption of live sandboxes is not implemented yet, so every
//! leftover of an earlier server (records, runsc sandboxes, namespaces, run dirs) is cleaned.

use std::sync::Arc;

use super::Runtime;
use crate::ids::SandboxId;
use crate::record::SandboxRecord;

/// What reconciliation found and removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReconcileReport {
    pub records: usize,
    pub engine_sandboxes: usize,
    pub namespaces: usize,
}

impl Runtime {
    /// Cleans leftovers of an earlier server. Call before serving.
    pub async fn reconcile(&self) -> ReconcileReport {
        let layout = self.inner.config.layout.clone();
        let engine = Arc::clone(&self.inner.engine);
        let network = Arc::clone(&self.inner.network);
        let res = tokio::task::spawn_blocking(move || {
            let mut report = ReconcileReport::default();
            if let Ok(rd) = std::fs::read_dir(layout.sandboxes_dir()) {
                for entry in rd.flatten() {
                    let path = entry.path();
                    let rec: Option<SandboxRecord> =
                        std::fs::read(&path).ok().and_then(|b| serde_json::from_slice(&b).ok());
                    if let Some(rec) = rec {
                        let _ = engine.destroy(&rec.id);
                        let _ = network.detach(&rec.id, rec.net_slot.unwrap_or(0));
                    }
                    let _ = std::fs::remove_file(&path);
                    report.records += 1;
                }
            }
            for name in engine.list().unwrap_or_default() {
                if let Ok(id) = SandboxId::parse(&name) {
                    let _ = engine.destroy(&id);
                    report.engine_sandboxes += 1;
                }
            }
            for ns in network.list_namespaces() {
                if network.remove_namespace(&ns).is_ok() {
                    report.namespaces += 1;
                }
            }
            let _ = std::fs::remove_dir_all(layout.state_dir.join("run").join("sandboxes"));
            report
        })
        .await;
        let report = res.unwrap_or_default();
        if report != ReconcileReport::default() {
            tracing::info!(?report, "cleaned up leftovers of an earlier server");
        }
        report
    }
}
