//! Snapshots and fork. A snapshot checkpoints a running sandbox and leaves it running (it is
//! `snapshotting`, with no traffic routed, for the duration of the save); the image is published
//! with a manifest and an integrity record. Creating from a snapshot restores the image as a new,
//! independent sandbox; fork is a snapshot restored N times.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use time::OffsetDateTime;

use super::error::Operation;
use super::{CreateSandbox, Runtime, RuntimeError};
use crate::lifecycle::{LifecycleEvent, SandboxState};
use crate::record::SandboxRecord;
use crate::samples::SampleName;
use crate::snapshot::{SnapshotManifest, SnapshotStore, SNAPSHOT_FORMAT};

/// How many fork children restore at once.
const FORK_PARALLEL: usize = 4;

impl Runtime {
    /// Snapshots a running sandbox, which keeps running. `memory: Some(false)` (filesystem-only
    /// snapshots) is not supported.
    pub async fn create_snapshot(
        &self,
        id: &str,
        name: Option<String>,
        memory: Option<bool>,
    ) -> Result<SnapshotManifest, RuntimeError> {
        if memory == Some(false) {
            return Err(RuntimeError::Unsupported { feature: "filesystem-only snapshots (memory=false)" });
        }
        if let Some(n) = &name {
            let ok = !n.is_empty()
                && n.len() <= 128
                && n.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:/".contains(&b));
            if !ok {
                return Err(RuntimeError::InvalidRequest(format!("invalid snapshot name {n:?}")));
            }
        }
        let rec = self.get_visible(id)?;
        if rec.state != SandboxState::Running {
            return Err(RuntimeError::Transition {
                id: id.to_owned(),
                source: crate::lifecycle::TransitionError {
                    from: rec.state,
                    event: LifecycleEvent::BeginSnapshot,
                },
            });
        }
        let store = Arc::clone(&self.inner.snapshots);
        let names: Vec<String> = name.into_iter().collect();
        self.capture(&rec, &store, SnapshotStore::new_id("snap"), Operation::Snapshot, |m| m.names = names)
            .await
    }

    /// Checkpoints a running sandbox (which keeps running; no traffic is routed to it while the
    /// image is saved) into `store` as artifact `artifact_id`, proven restorable, with a manifest
    /// describing the sandbox that `customize` may amend before it is published.
    pub(super) async fn capture(
        &self,
        rec: &SandboxRecord,
        store: &Arc<SnapshotStore>,
        artifact_id: String,
        op: Operation,
        customize: impl FnOnce(&mut SnapshotManifest),
    ) -> Result<SnapshotManifest, RuntimeError> {
        self.check_disk_floor(super::disk::DiskOp::SnapshotSave, &store.staging_dir(&artifact_id))?;
        let rec = self.transition(&rec.id, LifecycleEvent::BeginSnapshot)?;
        let started = Instant::now();
        self.cut_traffic(&rec.id, super::Cut::Streams);
        self.wait_for_quiet(&rec).await;
        let saved = self.checkpoint_proven(&rec, &store.staging_dir(&artifact_id), op).await;
        self.transition(
            &rec.id,
            if saved.is_ok() { LifecycleEvent::SnapshotDone } else { LifecycleEvent::Fail },
        )?;
        let files = saved?;
        let mut manifest = SnapshotManifest {
            format: SNAPSHOT_FORMAT,
            snapshot_id: artifact_id.clone(),
            names: Vec::new(),
            source_sandbox_id: rec.id.to_string(),
            template_id: rec.template_id.clone(),
            created_at: OffsetDateTime::now_utc(),
            cpu_count: rec.cpu_count,
            memory_mb: rec.memory_mb,
            disk_size_mb: rec.disk_size_mb,
            env_vars: rec.env_vars.clone(),
            metadata: rec.metadata.clone(),
            access_token: rec.access_token.clone(),
            agent_sha256: self.inner.agent_sha256.clone(),
            files: Vec::new(),
            rootfs: rec.rootfs.clone(),
            rootfs_id: self.inner.templates.rootfs(&rec.rootfs).map(|r| r.id).unwrap_or_default(),
            workdir: rec.workdir.clone(),
            egress: rec.egress.clone(),
            template: None,
        };
        customize(&mut manifest);
        let store = Arc::clone(store);
        let published = tokio::task::spawn_blocking(move || store.publish_digested(manifest, files))
            .await
            .map_err(|e| RuntimeError::Internal(format!("snapshot publish task: {e}")))?
            .map_err(|source| RuntimeError::Snapshot { source })?;
        self.inner.samples.record(SampleName::SnapshotSave, started.elapsed());
        tracing::info!(sandbox = %rec.id, artifact = %artifact_id, took = ?started.elapsed(), "checkpoint saved");
        Ok(published)
    }

    /// Snapshots, newest first; optionally only those of one source sandbox or with one name.
    pub fn list_snapshots(&self, source: Option<&str>, name: Option<&str>) -> Vec<SnapshotManifest> {
        self.inner
            .snapshots
            .list()
            .into_iter()
            .filter(|m| source.is_none_or(|s| m.source_sandbox_id == s))
            .filter(|m| name.is_none_or(|n| m.snapshot_id == n || m.names.iter().any(|x| x == n)))
            .collect()
    }

    /// Deletes a snapshot by id or name.
    pub fn delete_snapshot(&self, id: &str) -> Result<(), RuntimeError> {
        if self.inner.snapshots.delete(id) {
            Ok(())
        } else {
            Err(RuntimeError::SnapshotNotFound(id.to_owned()))
        }
    }

    /// Forks a running sandbox into `count` independent children (each its own copy of memory,
    /// processes and filesystem). Per-child failures are reported in place.
    pub async fn fork(
        &self,
        id: &str,
        count: usize,
        timeout: Option<Duration>,
    ) -> Result<Vec<Result<SandboxRecord, RuntimeError>>, RuntimeError> {
        if count == 0 || count > 64 {
            return Err(RuntimeError::InvalidRequest(format!("fork count must be 1..=64, got {count}")));
        }
        let source = self.get_visible(id)?;
        let snap = self.create_snapshot(id, None, None).await?;
        // Children restore a few at a time: restores overlap their I/O and agent start-up,
        // and the bound keeps a large fork from crowding out other creates.
        let one_child = |_| {
            let req = CreateSandbox {
                template_id: snap.snapshot_id.clone(),
                metadata: source.metadata.clone(),
                timeout,
                on_timeout: Some(source.on_timeout),
                ..Default::default()
            };
            let template_id = source.template_id.clone();
            async move {
                self.create(req).await.map(|mut r| {
                    // Children report the source's template, as E2B does.
                    let _ = self.update(&r.id, |x| x.template_id = template_id.clone());
                    r.template_id = template_id;
                    r
                })
            }
        };
        let children: Vec<_> =
            futures_util::stream::iter(0..count).map(one_child).buffered(FORK_PARALLEL).collect().await;
        if let Err(e) = self.delete_snapshot(&snap.snapshot_id) {
            tracing::warn!(sandbox = id, snapshot = %snap.snapshot_id, error = %e, "removing the fork's snapshot failed");
        }
        Ok(children)
    }
}
