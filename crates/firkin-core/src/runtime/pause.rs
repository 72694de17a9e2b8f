//! Pause and resume with E2B semantics. Pause checkpoints the whole sandbox (memory, processes,
//! overlay filesystem) into `snapshots/paused/<id>`, stops it, frees its network slot and shrinks
//! its reservation to disk only. Resume restores that image into a fresh namespace and address;
//! processes keep their pids, open files, env and cwd.

use std::sync::Arc;
use std::time::{Duration, Instant};

use time::OffsetDateTime;

use serde::{Deserialize, Serialize};

use super::boot::{BootPlan, SandboxSize};
use super::claim::{Claim, Held};
use super::error::Operation;
use super::{Runtime, RuntimeError};
use crate::admission::Class;
use crate::atomic::write_json_atomic;
use crate::engine::AfterCheckpoint;
use crate::ids::SandboxId;
use crate::lifecycle::{LifecycleEvent, SandboxState};
use crate::record::SandboxRecord;
use crate::samples::SampleName;
use crate::snapshot::{change_stamps, check_dir, digest_dir, ChangeStamp, FileDigest, MANIFEST};

/// How many checkpoints a pause takes before giving up (see `checkpoint_verified`).
const CHECKPOINT_ATTEMPTS: u32 = 3;
/// How long a verification restore has to answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest a pause waits for client connections into the sandbox to close.
const QUIET_TIMEOUT: Duration = Duration::from_secs(3);
/// Extra time after the last connection closed before the checkpoint. It was 250 ms while the
/// agent still registered connections with epoll: checkpointing right after it closed one
/// left the restored agent hung (runsc 2024-07-29's epoll bug, docs/design.md). The agent now
/// serves connections on blocking threads, and by the time the host sees a connection closed
/// the agent has closed its end too; the probe restore catches anything else.
const SETTLE: Duration = Duration::from_millis(20);

/// Version of the pause image record format.
const PAUSE_IMAGE_FORMAT: u32 = 1;
/// Name of the record written beside a pause image.
const IMAGE_RECORD: &str = "image.json";

/// What a pause image must match to be restored.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PauseImageRecord {
    format: u32,
    agent_sha256: String,
    files: Vec<FileDigest>,
    /// The files' change stamps when they were hashed. Unchanged stamps mean unchanged files,
    /// so resume re-hashes only a file that was touched since (records without stamps, from
    /// older servers, are hashed in full).
    #[serde(default)]
    stamps: Vec<ChangeStamp>,
}

impl Runtime {
    /// Checks a pause image against its record: sizes always, digests when a file changed since
    /// it was hashed.
    fn check_pause_image(&self, image: &std::path::Path) -> Result<(), String> {
        let bytes = std::fs::read(image.join(IMAGE_RECORD)).map_err(|e| format!("{IMAGE_RECORD}: {e}"))?;
        let rec: PauseImageRecord =
            serde_json::from_slice(&bytes).map_err(|e| format!("{IMAGE_RECORD}: {e}"))?;
        if rec.format != PAUSE_IMAGE_FORMAT {
            return Err(format!("unknown image record format {}", rec.format));
        }
        if rec.agent_sha256 != self.inner.agent_sha256 {
            return Err("taken with a different firkin-agent build".into());
        }
        let full = rec.stamps.is_empty() || change_stamps(image, &rec.files) != rec.stamps;
        check_dir(image, &rec.files, full)
    }

    /// Pauses a running sandbox. A paused (or pausing) one is [`RuntimeError::AlreadyPaused`].
    pub async fn pause(&self, id: &str) -> Result<(), RuntimeError> {
        let rec = self.get_visible(id)?;
        if matches!(rec.state, SandboxState::Paused | SandboxState::Pausing) {
            return Err(RuntimeError::AlreadyPaused(id.to_owned()));
        }
        let image = self.inner.config.layout.pause_image(rec.id.as_str());
        self.check_disk_floor(super::disk::DiskOp::SnapshotSave, &image)?;
        let rec = self.transition(&rec.id, LifecycleEvent::BeginPause)?;
        let started = Instant::now();
        // No new traffic is routed while pausing; end the streams in flight and give the agent
        // a moment to see them close, so no client connection is open inside the checkpoint.
        self.cut_traffic(&rec.id, super::Cut::Streams);
        self.wait_for_quiet(&rec).await;
        tracing::debug!(sandbox = %rec.id, ms = started.elapsed().as_millis() as u64, "pause: traffic quiet");
        if let Err(e) = self.checkpoint_verified(&rec).await {
            tracing::warn!(sandbox = %rec.id, error = %e, "pause failed; sandbox keeps running");
            return Err(match self.transition(&rec.id, LifecycleEvent::Fail) {
                Ok(_) => e,
                Err(undo) => RuntimeError::WithCleanup { error: Box::new(e), cleanup: undo.to_string() },
            });
        }
        // The image is published; stop the engine sandbox and free what a paused one does not need.
        // `runsc delete` takes about a second: finish it in the background, holding the
        // sandbox's engine lock so a resume waits for it.
        let guard = self.engine_lock(&rec.id).lock_owned().await;
        let rt = self.clone();
        let (tid, slot) = (rec.id.clone(), rec.net_slot);
        self.track_teardown(tokio::spawn(async move {
            // A failed part was logged by the teardown; the pause has already succeeded.
            let _ = rt.teardown(&tid, slot).await;
            drop(guard);
        }));
        let want = self.footprint(SandboxSize::of_record(&rec));
        if let Some(r) = rec.reservation {
            if let Err(e) = self.inner.admission.reclassify(r, Class::Paused, want) {
                tracing::error!(sandbox = %rec.id, error = %e, "capacity reclassify on pause failed");
            }
        }
        self.update(&rec.id, |r| {
            r.net_slot = None;
            r.agent_ip = std::net::Ipv4Addr::UNSPECIFIED;
        });
        self.transition(&rec.id, LifecycleEvent::Paused)?;
        self.inner.samples.record(SampleName::SnapshotSave, started.elapsed());
        tracing::info!(sandbox = %rec.id, took = ?started.elapsed(), "sandbox paused");
        Ok(())
    }

    /// Waits until no client connection into the sandbox is open (bounded), so the checkpoint
    /// holds none: a connection open inside a checkpoint leaves the restored agent stuck.
    pub(super) async fn wait_for_quiet(&self, rec: &SandboxRecord) {
        let start = Instant::now();
        loop {
            let live = self.inner.network.live_connections(rec.agent_ip);
            if live == 0 {
                tokio::time::sleep(SETTLE).await;
                return;
            }
            if start.elapsed() >= QUIET_TIMEOUT {
                tracing::warn!(sandbox = %rec.id, live, "client connections still open at checkpoint");
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Checkpoints the sandbox into the pause staging directory, proven restorable, and
    /// publishes it with its integrity record.
    async fn checkpoint_verified(&self, rec: &SandboxRecord) -> Result<(), RuntimeError> {
        let image = self.inner.config.layout.pause_image(rec.id.as_str());
        let parent = image.parent().map(std::path::Path::to_path_buf).unwrap_or_default();
        let tmp = parent.join(format!(".{}.tmp", rec.id));
        let files = self.checkpoint_proven(rec, &tmp, Operation::Pause).await?;
        self.publish_pause_image(&rec.id, &tmp, &image, files).await
    }

    /// Checkpoints the sandbox (which keeps running) into `tmp` and proves the image restorable
    /// by restoring it once into a throwaway sandbox. An image whose restored agent does not
    /// answer is retaken (the source is still running). Used by pause, snapshots and templates.
    /// Returns the image files' digests (hashed and fsynced while the probe ran; the integrity
    /// record and manifest names are left out).
    ///
    /// Why: runsc 20240729 can carry a deleted epoll registration through a checkpoint, and a
    /// program that trips over it after restore (the agent did, before it stopped registering
    /// short-lived fds with epoll; see docs/design.md) never answers. Publishing such an image
    /// would lose the sandbox, so it is proven first; a sandbox whose retakes all fail keeps
    /// running and the operation fails.
    pub(super) async fn checkpoint_proven(
        &self,
        rec: &SandboxRecord,
        tmp: &std::path::Path,
        op: Operation,
    ) -> Result<Vec<FileDigest>, RuntimeError> {
        for attempt in 1..=CHECKPOINT_ATTEMPTS {
            let t = Instant::now();
            self.checkpoint_staged(&rec.id, tmp, op).await?;
            tracing::debug!(sandbox = %rec.id, ms = t.elapsed().as_millis() as u64, "checkpoint taken");
            let t = Instant::now();
            let dir = tmp.to_path_buf();
            let digest = tokio::task::spawn_blocking(move || digest_dir(&dir, &[IMAGE_RECORD, MANIFEST]));
            let (restorable, digest) = tokio::join!(self.probe_image(rec, tmp), digest);
            tracing::debug!(sandbox = %rec.id, ms = t.elapsed().as_millis() as u64, restorable, "checkpoint probed and hashed");
            if restorable {
                return digest.map_err(|e| RuntimeError::Internal(format!("hashing task: {e}")))?.map_err(
                    |e| {
                        RuntimeError::Internal(format!(
                            "checkpoint of {}: hashing {}: {e}",
                            rec.id,
                            tmp.display()
                        ))
                    },
                );
            }
            tracing::warn!(sandbox = %rec.id, attempt, "checkpoint did not restore to a live agent; retaking it");
            super::boot::remove_dir_logged(tmp, &rec.id);
            tokio::time::sleep(SETTLE).await;
        }
        Err(RuntimeError::Internal(format!(
            "checkpoint of {}: no restorable image after {CHECKPOINT_ATTEMPTS} attempts; the sandbox keeps running",
            rec.id
        )))
    }

    /// Checkpoints the sandbox, which keeps running, into `tmp` (emptied first).
    async fn checkpoint_staged(
        &self,
        id: &SandboxId,
        tmp: &std::path::Path,
        op: Operation,
    ) -> Result<(), RuntimeError> {
        let engine = Arc::clone(&self.inner.engine);
        let (cid, tmp) = (id.clone(), tmp.to_path_buf());
        tokio::task::spawn_blocking(move || -> Result<(), RuntimeError> {
            super::boot::remove_dir_logged(&tmp, &cid);
            std::fs::create_dir_all(&tmp).map_err(|e| {
                RuntimeError::Internal(format!("{op} of {cid}: creating {}: {e}", tmp.display()))
            })?;
            engine.checkpoint(&cid, &tmp, AfterCheckpoint::KeepRunning).map_err(|source| {
                super::boot::remove_dir_logged(&tmp, &cid);
                RuntimeError::Engine { op, id: cid.to_string(), source }
            })
        })
        .await
        .map_err(|e| RuntimeError::Internal(format!("{op} of {id}: checkpoint task: {e}")))?
    }

    /// Restores `image` into a throwaway sandbox and checks that its agent answers. The probe
    /// sandbox is torn down in the background when its claim drops.
    async fn probe_image(&self, rec: &SandboxRecord, image: &std::path::Path) -> bool {
        let Some(mut claim) = Claim::slot_only(self, &SandboxId::generate(), Operation::CheckpointProbe)
        else {
            tracing::warn!(sandbox = %rec.id, "no free network slot to verify the checkpoint; trusting it");
            return true;
        };
        let plan = BootPlan {
            rootfs: self.inner.config.layout.rootfs_dir(&rec.rootfs),
            size: SandboxSize::of_record(rec),
            image: Some(image.to_path_buf()),
            restored_token: None,
            egress: rec.egress.clone(),
        };
        match self.start_unrecorded(&mut claim, plan, PROBE_TIMEOUT).await {
            Ok(_) => true,
            Err(e) => {
                tracing::warn!(sandbox = %rec.id, error = %e, "checkpoint probe restore failed");
                false
            }
        }
    }

    /// Writes the integrity record into the staged image and renames it into place.
    async fn publish_pause_image(
        &self,
        id: &SandboxId,
        tmp: &std::path::Path,
        image: &std::path::Path,
        files: Vec<FileDigest>,
    ) -> Result<(), RuntimeError> {
        let agent_sha256 = self.inner.agent_sha256.clone();
        let (cid, tmp, image) = (id.clone(), tmp.to_path_buf(), image.to_path_buf());
        tokio::task::spawn_blocking(move || -> Result<(), RuntimeError> {
            let io = |what: &str, e: std::io::Error| {
                RuntimeError::Internal(format!("pause of {cid}: {what}: {e}"))
            };
            let stamps = change_stamps(&tmp, &files);
            let record = PauseImageRecord { format: PAUSE_IMAGE_FORMAT, agent_sha256, files, stamps };
            write_json_atomic(&tmp.join(IMAGE_RECORD), &record)
                .map_err(|e| io("writing image record", e.source))?;
            let _ = std::fs::remove_dir_all(&image);
            std::fs::rename(&tmp, &image).map_err(|e| io("publishing image", e))?;
            if let Some(parent) = image.parent() {
                if let Ok(d) = std::fs::File::open(parent) {
                    let _ = d.sync_all();
                }
            }
            Ok(())
        })
        .await
        .map_err(|e| RuntimeError::Internal(format!("pause of {id}: publish task: {e}")))?
    }

    /// Resumes a paused sandbox (called by `connect`). A failed resume leaves it paused.
    pub(super) async fn resume(
        &self,
        rec: SandboxRecord,
        timeout: Duration,
    ) -> Result<SandboxRecord, RuntimeError> {
        let id = rec.id.clone();
        let image = self.inner.config.layout.pause_image(id.as_str());
        self.check_pause_image_or_remove(&id, &image).await?;
        self.check_disk_floor(super::disk::DiskOp::Restore, &image)?;
        self.transition(&id, LifecycleEvent::BeginResume)?;
        let started = Instant::now();
        let held = match self.restore_paused(&rec, &image).await {
            Ok(held) => held,
            Err(e) => {
                tracing::warn!(sandbox = %id, error = %e, "resume failed; sandbox stays paused");
                self.update(&id, |r| r.agent_ip = std::net::Ipv4Addr::UNSPECIFIED);
                return Err(match self.transition(&id, LifecycleEvent::Fail) {
                    Ok(_) => e,
                    Err(undo) => RuntimeError::WithCleanup { error: Box::new(e), cleanup: undo.to_string() },
                });
            }
        };
        self.update(&id, |r| {
            r.net_slot = Some(held.slot);
            r.reservation = held.reservation;
            r.end_at = OffsetDateTime::now_utc() + timeout;
        });
        let rec = self.transition(&id, LifecycleEvent::Ready)?;
        super::boot::remove_dir_logged(&image, &id);
        tracing::info!(sandbox = %id, took = ?started.elapsed(), "sandbox resumed");
        Ok(rec)
    }

    /// Claims capacity and a slot for a paused sandbox and restores its image; on success the
    /// new active reservation replaces the paused one.
    async fn restore_paused(
        &self,
        rec: &SandboxRecord,
        image: &std::path::Path,
    ) -> Result<Held, RuntimeError> {
        let want = self.footprint(SandboxSize::of_record(rec));
        let mut claim = Claim::active(self, &rec.id, Operation::Resume, want).await?.for_existing_sandbox();
        // The pause's engine teardown may still be running.
        drop(self.engine_lock(&rec.id).lock().await);
        let plan = BootPlan {
            rootfs: self.inner.config.layout.rootfs_dir(&rec.rootfs),
            size: SandboxSize::of_record(rec),
            image: Some(image.to_path_buf()),
            restored_token: Some(rec.access_token.clone()),
            egress: rec.egress.clone(),
        };
        let restored = self.boot_and_init(&mut claim, plan).await;
        claim.or_release(restored).await?;
        Ok(claim.commit_replacing(rec.reservation))
    }

    /// A pause image that fails its integrity check can never come back: it is quarantined and
    /// the sandbox removed, and the resume fails with an integrity error.
    async fn check_pause_image_or_remove(
        &self,
        id: &SandboxId,
        image: &std::path::Path,
    ) -> Result<(), RuntimeError> {
        let Err(detail) = self.check_pause_image(image) else {
            return Ok(());
        };
        let q = self.inner.config.layout.quarantine_dir();
        let stamp = OffsetDateTime::now_utc().unix_timestamp();
        let moved = std::fs::create_dir_all(&q)
            .and_then(|()| std::fs::rename(image, q.join(format!("paused-{id}.{stamp}"))));
        if let Err(e) = moved {
            tracing::warn!(sandbox = %id, error = %e, "moving a bad pause image to quarantine failed");
        }
        tracing::error!(sandbox = %id, %detail, "pause image failed its integrity check; quarantined");
        let error = RuntimeError::Snapshot {
            source: crate::snapshot::SnapshotError::Integrity { id: format!("paused sandbox {id}"), detail },
        };
        Err(match self.kill(id.as_str()).await {
            Ok(()) => error,
            Err(cleanup) => {
                RuntimeError::WithCleanup { error: Box::new(error), cleanup: cleanup.to_string() }
            }
        })
    }
}
