//! Start-up reconciliation. Paused sandboxes whose checkpoint image is intact are re-adopted
//! (they stay paused and can be resumed); everything else an earlier server left (records of
//! running sandboxes, runsc sandboxes, namespaces, run dirs, half-written images) is cleaned.
//! Re-adopting sandboxes that were running is future work.

use std::sync::Arc;

use super::Runtime;
use crate::admission::{Class, Resources};
use crate::ids::SandboxId;
use crate::lifecycle::SandboxState;
use crate::record::SandboxRecord;

/// What reconciliation found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReconcileReport {
    /// Paused sandboxes kept.
    pub adopted_paused: usize,
    /// Records removed (running or unusable).
    pub records_removed: usize,
    pub engine_sandboxes: usize,
    pub namespaces: usize,
}

impl Runtime {
    /// Re-adopts paused sandboxes and cleans leftovers of an earlier server. Call before serving.
    pub async fn reconcile(&self) -> ReconcileReport {
        let layout = self.inner.config.layout.clone();
        let engine = Arc::clone(&self.inner.engine);
        let network = Arc::clone(&self.inner.network);
        let res = tokio::task::spawn_blocking(move || {
            let mut report = ReconcileReport::default();
            let mut keep = Vec::new();
            if let Ok(rd) = std::fs::read_dir(layout.sandboxes_dir()) {
                for entry in rd.flatten() {
                    let path = entry.path();
                    let rec: Option<SandboxRecord> =
                        std::fs::read(&path).ok().and_then(|b| serde_json::from_slice(&b).ok());
                    match rec {
                        Some(rec)
                            if rec.state == SandboxState::Paused
                                && layout.pause_image(rec.id.as_str()).join("checkpoint.img").is_file() =>
                        {
                            keep.push(rec);
                        }
                        Some(rec) => {
                            let _ = engine.destroy(&rec.id);
                            let _ = network.detach(&rec.id, rec.net_slot.unwrap_or(0));
                            let _ = std::fs::remove_dir_all(layout.pause_image(rec.id.as_str()));
                            let _ = std::fs::remove_file(&path);
                            report.records_removed += 1;
                        }
                        None => {
                            let _ = std::fs::remove_file(&path);
                            report.records_removed += 1;
                        }
                    }
                }
            }
            // Images without a kept record (or half-written temp dirs) are garbage.
            if let Ok(rd) = std::fs::read_dir(layout.paused_dir()) {
                for entry in rd.flatten() {
                    let name = entry.file_name().to_string_lossy().into_owned();
                    if !keep.iter().any(|r| r.id.as_str() == name) {
                        let _ = std::fs::remove_dir_all(entry.path());
                    }
                }
            }
            // Snapshot and template staging dirs of checkpoints that never got published.
            for dir in [layout.snapshot_images_dir(), layout.templates_dir()] {
                for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                    if entry.file_name().to_string_lossy().starts_with('.') {
                        let _ = std::fs::remove_dir_all(entry.path());
                    }
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
            (report, keep)
        })
        .await;
        let (mut report, keep) = res.unwrap_or_default();
        for mut rec in keep {
            let want = Resources::new(rec.cpu_count, rec.memory_mb, rec.disk_size_mb);
            match self.inner.admission.reserve(want, Class::Paused, std::time::Duration::ZERO).await {
                Ok(grant) => rec.reservation = Some(grant.id),
                Err(e) => {
                    tracing::warn!(sandbox = %rec.id, error = %e, "no capacity recorded for a re-adopted paused sandbox")
                }
            }
            rec.net_slot = None;
            self.table().insert(rec.id.clone(), rec);
            report.adopted_paused += 1;
        }
        if report != ReconcileReport::default() {
            tracing::info!(?report, "reconciled state left by an earlier server");
        }
        report
    }
}
