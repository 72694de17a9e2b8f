//! Start-up reconciliation after an earlier server stopped (or crashed). Paused sandboxes whose
//! checkpoint image is intact are re-adopted (they stay paused and can be resumed). Sandboxes
//! that were running when the server died are re-adopted as running if their runsc sandbox is
//! still there and their agent answers at its address; everything else an earlier server left
//! (records, runsc sandboxes, namespaces, run dirs, half-written images) is cleaned.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::boot::SandboxSize;
use super::claim::{Claim, ReadoptError};
use super::Runtime;
use crate::admission::Class;
use crate::config::Layout;
use crate::engine::Engine;
use crate::ids::SandboxId;
use crate::lifecycle::SandboxState;
use crate::network::Network;
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

/// What an earlier server left that is worth keeping.
#[derive(Default)]
struct Kept {
    /// Paused sandboxes with an intact-looking image.
    paused: Vec<SandboxRecord>,
    /// Running sandboxes whose engine sandbox is still there (their agent is asked next).
    running: Vec<SandboxRecord>,
}

impl Kept {
    /// True for an engine sandbox, namespace or run dir named after a kept running sandbox.
    fn owns(&self, name: &str) -> bool {
        self.running.iter().any(|r| name.ends_with(r.id.as_str()))
    }
}

/// The host-side passes of reconciliation (blocking I/O; run off the async runtime).
struct Sweep {
    layout: Layout,
    engine: Arc<dyn Engine>,
    network: Arc<dyn Network>,
}

impl Sweep {
    /// All passes, in order: records first (they decide what is kept), then everything that
    /// is not kept.
    fn run(&self) -> (ReconcileReport, Kept) {
        // A restore or boot an earlier server started just before it died must finish (or
        // fail) before its sandbox is looked for.
        self.engine.settle(Duration::from_secs(15));
        let mut report = ReconcileReport::default();
        let alive: HashSet<String> = self.engine.list().unwrap_or_default().into_iter().collect();
        let kept = self.sort_records(&alive, &mut report);
        self.remove_unkept_pause_images(&kept);
        self.remove_staging_dirs();
        report.engine_sandboxes = self.remove_unkept_engine_sandboxes(&alive, &kept);
        report.namespaces = self.remove_unkept_namespaces(&kept);
        self.remove_unkept_run_dirs(&kept);
        (report, kept)
    }

    /// Keeps paused records with an image and running ones whose engine sandbox is alive;
    /// removes the others together with what they held.
    fn sort_records(&self, alive: &HashSet<String>, report: &mut ReconcileReport) -> Kept {
        let mut kept = Kept::default();
        for entry in read_dir_entries(&self.layout.sandboxes_dir()) {
            let path = entry.path();
            let rec: Option<SandboxRecord> =
                std::fs::read(&path).ok().and_then(|b| serde_json::from_slice(&b).ok());
            match rec {
                Some(rec) if self.has_pause_image(&rec) => kept.paused.push(rec),
                Some(rec)
                    if rec.state == SandboxState::Running
                        && !rec.internal
                        && rec.net_slot.is_some()
                        && alive.contains(rec.id.as_str()) =>
                {
                    kept.running.push(rec);
                }
                Some(rec) => {
                    self.destroy(&rec.id, rec.net_slot.unwrap_or(0));
                    remove_dir(&self.layout.pause_image(rec.id.as_str()));
                    remove_file(&path);
                    report.records_removed += 1;
                }
                None => {
                    remove_file(&path);
                    report.records_removed += 1;
                }
            }
        }
        kept
    }

    fn has_pause_image(&self, rec: &SandboxRecord) -> bool {
        rec.state == SandboxState::Paused
            && self.layout.pause_image(rec.id.as_str()).join("checkpoint.img").is_file()
    }

    /// Pause images without a kept record (or half-written temp dirs) are garbage.
    fn remove_unkept_pause_images(&self, kept: &Kept) {
        for entry in read_dir_entries(&self.layout.paused_dir()) {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !kept.paused.iter().any(|r| r.id.as_str() == name) {
                remove_dir(&entry.path());
            }
        }
    }

    /// Snapshot and template staging dirs of checkpoints that never got published.
    fn remove_staging_dirs(&self) {
        for dir in [self.layout.snapshot_images_dir(), self.layout.templates_dir()] {
            for entry in read_dir_entries(&dir) {
                if entry.file_name().to_string_lossy().starts_with('.') {
                    remove_dir(&entry.path());
                }
            }
        }
    }

    fn remove_unkept_engine_sandboxes(&self, alive: &HashSet<String>, kept: &Kept) -> usize {
        let mut removed = 0;
        for id in alive.iter().filter(|n| !kept.owns(n)).filter_map(|n| SandboxId::parse(n).ok()) {
            if let Err(e) = self.engine.destroy(&id) {
                tracing::warn!(sandbox = %id, error = %e, "removing a leftover engine sandbox failed");
            }
            removed += 1;
        }
        removed
    }

    fn remove_unkept_namespaces(&self, kept: &Kept) -> usize {
        let unkept = self.network.list_namespaces().into_iter().filter(|n| !kept.owns(n));
        unkept.filter(|ns| self.network.remove_namespace(ns).is_ok()).count()
    }

    fn remove_unkept_run_dirs(&self, kept: &Kept) {
        for entry in read_dir_entries(&self.layout.state_dir.join("run").join("sandboxes")) {
            if !kept.owns(&entry.file_name().to_string_lossy()) {
                remove_dir(&entry.path());
            }
        }
    }

    /// Removes one sandbox's engine side and network (errors logged; nothing to retry).
    fn destroy(&self, id: &SandboxId, slot: u32) {
        if let Err(e) = self.engine.destroy(id) {
            tracing::debug!(sandbox = %id, error = %e, "engine destroy of a leftover failed");
        }
        if let Err(e) = self.network.detach(id, slot) {
            tracing::debug!(sandbox = %id, error = %e, "network detach of a leftover failed");
        }
    }
}

fn read_dir_entries(dir: &Path) -> impl Iterator<Item = std::fs::DirEntry> {
    std::fs::read_dir(dir).into_iter().flatten().flatten()
}

fn remove_dir(path: &Path) {
    match std::fs::remove_dir_all(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            tracing::warn!(path = %path.display(), error = %e, "removing a leftover directory failed");
        }
        _ => {}
    }
}

fn remove_file(path: &Path) {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            tracing::warn!(path = %path.display(), error = %e, "removing a leftover file failed");
        }
        _ => {}
    }
}

impl Runtime {
    /// Re-adopts paused and still-running sandboxes and cleans leftovers of an earlier server.
    /// Call before serving.
    pub async fn reconcile(&self) -> ReconcileReport {
        let sweep = Sweep {
            layout: self.inner.config.layout.clone(),
            engine: Arc::clone(&self.inner.engine),
            network: Arc::clone(&self.inner.network),
        };
        let (mut report, kept) = match tokio::task::spawn_blocking(move || sweep.run()).await {
            Ok(found) => found,
            Err(e) => {
                tracing::error!(error = %e, "reconciliation task failed; nothing re-adopted");
                return ReconcileReport::default();
            }
        };
        for rec in kept.running {
            if self.readopt_running(rec).await {
                report.adopted_running += 1;
            } else {
                report.records_removed += 1;
            }
        }
        for rec in kept.paused {
            self.readopt_paused(rec).await;
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

    /// Keeps a paused sandbox, with a disk-only `Paused` reservation.
    async fn readopt_paused(&self, mut rec: SandboxRecord) {
        let want = self.footprint(SandboxSize::of_record(&rec));
        match self.inner.admission.reserve(want, Class::Paused, Duration::ZERO).await {
            Ok(grant) => rec.reservation = Some(grant.id),
            Err(e) => {
                tracing::warn!(sandbox = %rec.id, error = %e, "no capacity recorded for a re-adopted paused sandbox")
            }
        }
        rec.net_slot = None;
        self.table().insert(rec.id.clone(), rec);
    }

    /// Keeps a sandbox that was running when the server died, if its agent answers and its
    /// slot and capacity can be claimed; otherwise removes everything it held. Returns whether
    /// it was kept.
    async fn readopt_running(&self, mut rec: SandboxRecord) -> bool {
        let slot = rec.net_slot.unwrap_or(0);
        let want = self.footprint(SandboxSize::of_record(&rec));
        let claimed = match self.inner.agent.wait_ready(rec.agent_ip, Duration::from_secs(3)).await {
            Ok(_) => Claim::readopt(self, &rec.id, slot, want).await,
            Err(e) => Err(ReadoptError::Silent(e)),
        };
        match claimed {
            Ok(claim) => {
                rec.reservation = claim.commit().reservation;
                tracing::info!(sandbox = %rec.id, "re-adopted a running sandbox");
                self.table().insert(rec.id.clone(), rec);
                true
            }
            Err(e) => {
                tracing::warn!(sandbox = %rec.id, error = %e, "running sandbox left by an earlier server is not usable; removing it");
                let sweep = Sweep {
                    layout: self.inner.config.layout.clone(),
                    engine: Arc::clone(&self.inner.engine),
                    network: Arc::clone(&self.inner.network),
                };
                let id = rec.id.clone();
                let removed = tokio::task::spawn_blocking(move || {
                    sweep.destroy(&id, slot);
                    remove_dir(&sweep.layout.sandbox_run_dir(id.as_str()));
                    remove_file(&sweep.layout.sandbox_record(id.as_str()));
                })
                .await;
                if let Err(e) = removed {
                    tracing::warn!(sandbox = %rec.id, error = %e, "removal task failed");
                }
                false
            }
        }
    }
}
