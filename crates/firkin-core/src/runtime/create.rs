//! `create`: resolve the template or snapshot → check the request → check out a warm sandbox,
//! or claim capacity and a network slot and restore the checkpoint (through `boot`) → expose.
//! What a starting sandbox holds is owned by its [`Claim`]; any failure releases all of it.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use time::OffsetDateTime;

use super::boot::{BootPlan, SandboxSize};
use super::claim::{Claim, Held};
use super::error::Operation;
use super::warm::WarmEntry;
use super::{Runtime, RuntimeError};
use crate::ids::{generate_secret, SandboxId};
use crate::lifecycle::{LifecycleEvent, SandboxState};
use crate::network::EgressPolicy;
use crate::record::{OnTimeout, SandboxRecord, RECORD_FORMAT};
use crate::samples::SampleName;
use crate::snapshot::SnapshotManifest;

/// A validated-by-the-runtime create request (front ends fill it from their wire format).
#[derive(Debug, Clone, Default)]
pub struct CreateSandbox {
    pub template_id: String,
    pub metadata: BTreeMap<String, String>,
    pub env_vars: BTreeMap<String, String>,
    pub timeout: Option<Duration>,
    pub cpu_count: Option<u32>,
    pub memory_mb: Option<u32>,
    pub on_timeout: Option<OnTimeout>,
    pub auto_resume: bool,
    /// The egress policy; `None` keeps the template's or snapshot's.
    pub egress: Option<EgressPolicy>,
    /// E2B `allowPublicTraffic=false`: the sandbox's ports need a traffic access token.
    pub private_traffic: bool,
}

/// What a sandbox starts from: a rootfs (boot; template builds only) or a checkpoint image of a
/// template or snapshot (restore, the create path).
pub(super) struct Source {
    pub template_id: String,
    /// Cached rootfs directory name (`cache/rootfs/<name>`).
    pub rootfs_name: String,
    pub image: Option<std::path::PathBuf>,
    pub restored_token: Option<String>,
    pub base_env: BTreeMap<String, String>,
    /// Metadata carried over from the artifact (a continuation's reason and source).
    pub base_metadata: BTreeMap<String, String>,
    pub workdir: Option<String>,
    /// The artifact's egress policy (inherited unless the create sets one).
    pub egress: EgressPolicy,
    pub cpu_count: Option<u32>,
    pub memory_mb: Option<u32>,
    pub disk_mb: Option<u32>,
    /// A sandbox the server runs for itself (never listed).
    pub internal: bool,
}

impl Source {
    /// Restoring a published artifact (template or snapshot).
    fn restore(m: &SnapshotManifest, image: std::path::PathBuf, template_id: String) -> Source {
        Source {
            template_id,
            rootfs_name: m.rootfs.clone(),
            image: Some(image),
            restored_token: Some(m.access_token.clone()),
            base_env: m.env_vars.clone(),
            base_metadata: m
                .metadata
                .iter()
                .filter(|(k, _)| k.starts_with("firkin.continuation."))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            workdir: m.workdir.clone(),
            egress: m.egress.clone(),
            cpu_count: Some(m.cpu_count),
            memory_mb: Some(m.memory_mb),
            disk_mb: Some(m.disk_size_mb),
            internal: false,
        }
    }
}

impl Runtime {
    /// Creates and starts a sandbox by restoring a checkpoint; returns its record once the agent
    /// answers. `templateID` names a built template (built-ins are built on first need) or a
    /// snapshot (by id or name).
    pub async fn create(&self, req: CreateSandbox) -> Result<SandboxRecord, RuntimeError> {
        self.check_request(&req)?;
        if let Some(m) = self.template_artifact(&req.template_id).await? {
            let image = self.inner.template_store.image_dir(&m.snapshot_id);
            let source = Source::restore(&m, image, req.template_id.clone());
            if let Some(entry) = self.checkout_warm(&req.template_id, &m) {
                match self.adopt_warm(&req, &source, entry).await {
                    Ok(rec) => return Ok(rec),
                    Err(e) => tracing::warn!(error = %e, "warm checkout failed; restoring instead"),
                }
            }
            return self.launch(req, source).await;
        }
        if let Some(m) = self.inner.snapshots.find(&req.template_id) {
            let verify = self.inner.snapshots.verify(&m, &self.inner.agent_sha256);
            verify.map_err(|source| RuntimeError::Snapshot { source })?;
            let image = self.inner.snapshots.image_dir(&m.snapshot_id);
            let template_id = m.snapshot_id.clone();
            return self.launch(req, Source::restore(&m, image, template_id)).await;
        }
        Err(crate::template::TemplateError::NotFound(req.template_id).into())
    }

    /// Validates, reserves, and boots or restores one sandbox from `source`. Everything it holds
    /// until it runs is owned by a [`Claim`], so a failure anywhere releases all of it.
    pub(super) async fn launch(
        &self,
        req: CreateSandbox,
        source: Source,
    ) -> Result<SandboxRecord, RuntimeError> {
        let cfg = &self.inner.config;
        self.check_request(&req)?;
        let timeout = self.checked_timeout(req.timeout)?;
        let size = self.sandbox_size(&req, &source)?;
        if let Some(image) = &source.image {
            self.check_disk_floor(super::disk::DiskOp::Restore, image)?;
        }
        let id = SandboxId::generate();
        let op = if source.internal { Operation::TemplateBuild } else { Operation::Create };
        let want = self.footprint(size);
        let mut claim = Claim::active(self, &id, op, want).await?;
        let held = claim.held();
        self.table().insert(id.clone(), self.new_record(&id, &req, &source, size, held, timeout));
        claim.recorded();
        let plan = BootPlan {
            rootfs: cfg.layout.rootfs_dir(&source.rootfs_name),
            size,
            image: source.image,
            restored_token: source.restored_token,
            egress: req.egress.unwrap_or(source.egress),
        };
        let booted = self.boot_and_init(&mut claim, plan).await;
        if let Err(e) = &booted {
            tracing::warn!(sandbox = %id, error = %e, "{op} failed; cleaning up");
        }
        let health = claim.or_release(booted).await?;
        claim.commit();
        self.update(&id, |r| r.start_ended = health.start_exit.is_some());
        self.expose(&id, timeout, None)
    }

    /// The validated size of a new sandbox: a restored image keeps the resources it was taken
    /// with; otherwise the request's (the template's), or the server's defaults.
    fn sandbox_size(&self, req: &CreateSandbox, source: &Source) -> Result<SandboxSize, RuntimeError> {
        let cfg = &self.inner.config;
        let cpu_count = source.cpu_count.or(req.cpu_count).unwrap_or(cfg.default_cpu_count);
        if cpu_count == 0 || cpu_count > cfg.max_cpu_count {
            return Err(RuntimeError::InvalidRequest(format!(
                "cpuCount must be 1..={}, got {cpu_count}",
                cfg.max_cpu_count
            )));
        }
        let memory_mb = source.memory_mb.or(req.memory_mb).unwrap_or(cfg.default_memory_mb);
        if !(128..=cfg.max_memory_mb).contains(&memory_mb) {
            return Err(RuntimeError::InvalidRequest(format!(
                "memoryMB must be 128..={}, got {memory_mb}",
                cfg.max_memory_mb
            )));
        }
        let disk_mb = source.disk_mb.unwrap_or(cfg.disk_size_mb);
        Ok(SandboxSize { cpu_count, memory_mb, disk_mb })
    }

    /// Makes a started sandbox visible: `Running`, with its full timeout counted from now (a
    /// create that took long still gets all of it), and its freshness sync started.
    fn expose(
        &self,
        id: &SandboxId,
        timeout: Duration,
        warm_checkout: Option<Instant>,
    ) -> Result<SandboxRecord, RuntimeError> {
        let rec = self.transition(id, LifecycleEvent::Ready)?;
        let rec = self.update(id, |r| r.end_at = OffsetDateTime::now_utc() + timeout).unwrap_or(rec);
        match warm_checkout {
            Some(t) => {
                self.inner.samples.record(SampleName::WarmPoolCheckout, t.elapsed());
                tracing::info!(sandbox = %id, template = %rec.template_id, took = ?t.elapsed(), "sandbox running (warm pool)");
            }
            None => tracing::info!(sandbox = %id, template = %rec.template_id, "sandbox running"),
        }
        self.start_freshness_sync(id);
        Ok(self.get(id).unwrap_or(rec))
    }

    /// The record of a new sandbox, `Creating`, holding what its claim holds.
    fn new_record(
        &self,
        id: &SandboxId,
        req: &CreateSandbox,
        source: &Source,
        size: SandboxSize,
        held: Held,
        timeout: Duration,
    ) -> SandboxRecord {
        let now = OffsetDateTime::now_utc();
        SandboxRecord {
            format: RECORD_FORMAT,
            id: id.clone(),
            template_id: source.template_id.clone(),
            state: SandboxState::Creating,
            metadata: source.base_metadata.clone().into_iter().chain(req.metadata.clone()).collect(),
            env_vars: source.base_env.clone().into_iter().chain(req.env_vars.clone()).collect(),
            started_at: now,
            end_at: now + timeout,
            cpu_count: size.cpu_count,
            memory_mb: size.memory_mb,
            disk_size_mb: size.disk_mb,
            access_token: generate_secret(),
            on_timeout: req.on_timeout.unwrap_or(OnTimeout::Kill),
            net_slot: Some(held.slot),
            agent_ip: std::net::Ipv4Addr::UNSPECIFIED,
            rootfs: source.rootfs_name.clone(),
            workdir: source.workdir.clone(),
            internal: source.internal,
            start_ended: false,
            auto_resume: req.auto_resume,
            egress: req.egress.clone().unwrap_or_else(|| source.egress.clone()),
            traffic_access_token: req.private_traffic.then(generate_secret),
            reservation: held.reservation,
        }
    }

    /// Turns a checked-out warm sandbox into the requested one: its record, then `/init` with
    /// this sandbox's token and env. On failure the entry's claim releases everything.
    async fn adopt_warm(
        &self,
        req: &CreateSandbox,
        source: &Source,
        entry: WarmEntry,
    ) -> Result<SandboxRecord, RuntimeError> {
        let started = Instant::now();
        let timeout = self.checked_timeout(req.timeout)?;
        let cfg = &self.inner.config;
        let size = SandboxSize {
            cpu_count: source.cpu_count.unwrap_or(cfg.default_cpu_count),
            memory_mb: source.memory_mb.unwrap_or(cfg.default_memory_mb),
            disk_mb: source.disk_mb.unwrap_or(cfg.disk_size_mb),
        };
        let WarmEntry { claim, ip, start_ended, token, .. } = entry;
        let mut claim = claim.now_for(Operation::Create);
        let id = claim.id().clone();
        let held = claim.held();
        let mut record = self.new_record(&id, req, source, size, held, timeout);
        // The entry ran with an open policy; the sandbox's own is in force before `/init`.
        if !record.egress.is_open() {
            self.apply_egress(&id, held.slot, record.egress.clone(), Operation::Create).await?;
        }
        record.agent_ip = ip;
        record.start_ended = start_ended;
        self.table().insert(id.clone(), record);
        claim.recorded();
        self.persist(&id)?;
        // The entry was re-keyed after its restore (see `warm`): its agent holds `token`.
        self.init_agent(&id, Some(&token)).await?;
        claim.commit();
        self.expose(&id, timeout, Some(started))
    }

    /// Checks what can be checked before the source is resolved (and perhaps built).
    fn check_request(&self, req: &CreateSandbox) -> Result<(), RuntimeError> {
        if req.auto_resume && req.on_timeout != Some(OnTimeout::Pause) {
            return Err(RuntimeError::InvalidRequest(
                "autoResume needs lifecycle on_timeout=pause (autoPause)".into(),
            ));
        }
        self.checked_timeout(req.timeout)?;
        for key in req.env_vars.keys() {
            if key.is_empty() || key.contains('=') || key.contains('\0') {
                return Err(RuntimeError::InvalidRequest(format!("invalid envVars key {key:?}")));
            }
        }
        Ok(())
    }

    /// The requested timeout, or the default; one over the maximum is refused, not clamped.
    pub(super) fn checked_timeout(&self, t: Option<Duration>) -> Result<Duration, RuntimeError> {
        let cfg = &self.inner.config;
        let t = t.unwrap_or(cfg.default_timeout);
        if t > cfg.max_timeout {
            return Err(RuntimeError::InvalidRequest(format!(
                "timeout {}s exceeds the maximum of {}s",
                t.as_secs(),
                cfg.max_timeout.as_secs()
            )));
        }
        Ok(t)
    }
}
