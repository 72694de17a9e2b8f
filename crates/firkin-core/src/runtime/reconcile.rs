//! Start-up reconciliation after an earlier server stopped (or crashed). Paused sandboxes whose
//! checkpoint image is intact are re-adopted (they stay paused and can be resumed). Sandboxes
//! that were running when the server died are re-adopted as running if their runsc sandbox is
//! still there and their agent answers at its address; everything else an earlier server left
//! (records, runsc sandboxes, namespaces, run dirs, half-written images) is cleaned.

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
    /// Running sandboxes kept (their engine sandbox survived the server and answers).
    pub adopted_running: usize,
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
            // A restore or boot an earlier server started just before it died must finish (or
            // fail) before its sandbox is looked for.
            engine.settle(std::time::Duration::from_secs(15));
            let mut report = ReconcileReport::default();
            let mut keep = Vec::new();
            let mut running = Vec::new();
            let alive: std::collections::HashSet<String> =
                engine.list().unwrap_or_default().into_iter().collect();
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
                        Some(rec)
                            if rec.state == SandboxState::Running
                                && !rec.internal
                                && rec.net_slot.is_some()
                                && alive.contains(rec.id.as_str()) =>
                        {
                            running.push(rec);
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
            let adopted = |name: &str| running.iter().any(|r: &SandboxRecord| name.ends_with(r.id.as_str()));
            for name in alive.iter().filter(|n| !adopted(n)) {
                if let Ok(id) = SandboxId::parse(name) {
                    let _ = engine.destroy(&id);
                    report.engine_sandboxes += 1;
                }
            }
            for ns in network.list_namespaces().into_iter().filter(|n| !adopted(n)) {
                if network.remove_namespace(&ns).is_ok() {
                    report.namespaces += 1;
                }
            }
            for entry in std::fs::read_dir(layout.state_dir.join("run").join("sandboxes"))
                .into_iter()
                .flatten()
                .flatten()
            {
                if !adopted(&entry.file_name().to_string_lossy()) {
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
            (report, keep, running)
        })
        .await;
        let (mut report, keep, running) = res.unwrap_or_default();
        for rec in running {
            if self.readopt_running(rec).await {
                report.adopted_running += 1;
            } else {
                report.records_removed += 1;
            }
        }
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
            tracing::info!(
                adopted_running = report.adopted_running,
                adopted_paused = report.adopted_paused,
                "re-adopted sandboxes"
            );
            tracing::info!(?report, "reconciled state left by an earlier server");
        }
        report
    }

    /// Keeps a sandbox that was running when the server died, if its agent answers; otherwise
    /// removes everything it held. Returns whether it was kept.
    async fn readopt_running(&self, mut rec: SandboxRecord) -> bool {
        let slot = rec.net_slot.unwrap_or(0);
        let answers =
            self.inner.agent.wait_ready(rec.agent_ip, std::time::Duration::from_secs(3)).await.is_ok();
        let claimed = answers && self.slots().claim(slot);
        let want = Resources::new(rec.cpu_count, rec.memory_mb, rec.disk_size_mb);
        let grant = if claimed {
            self.inner.admission.reserve(want, Class::Active, std::time::Duration::ZERO).await.ok()
        } else {
            None
        };
        let Some(grant) = grant else {
            tracing::warn!(sandbox = %rec.id, answers, claimed, "running sandbox left by an earlier server is not usable; removing it");
            if claimed {
                self.slots().release(slot);
            }
            let engine = Arc::clone(&self.inner.engine);
            let network = Arc::clone(&self.inner.network);
            let layout = self.inner.config.layout.clone();
            let id = rec.id.clone();
            let _ = tokio::task::spawn_blocking(move || {
                let _ = engine.destroy(&id);
                let _ = network.detach(&id, slot);
                let _ = std::fs::remove_dir_all(layout.sandbox_run_dir(id.as_str()));
                let _ = std::fs::remove_file(layout.sandbox_record(id.as_str()));
            })
            .await;
            return false;
        };
        rec.reservation = Some(grant.id);
        tracing::info!(sandbox = %rec.id, "re-adopted a running sandbox");
        self.table().insert(rec.id.clone(), rec);
        true
    }
}
