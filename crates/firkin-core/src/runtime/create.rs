//! `create`: validate → reserve an id and a network slot → attach network → boot → readiness
//! probe → init the agent → expose. Any failure after the slot is taken undoes everything.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use firkin_wire::agent::{InitRequest, AGENT_PROTOCOL_VERSION};
use time::OffsetDateTime;

use super::{Runtime, RuntimeError};
use crate::admission::{Class, Resources};
use crate::engine::BootSpec;
use crate::ids::{generate_secret, SandboxId};
use crate::lifecycle::{LifecycleEvent, SandboxState};
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
    pub allow_internet_access: Option<bool>,
}

/// How to start one sandbox's engine side.
pub(super) struct BootPlan {
    pub rootfs: std::path::PathBuf,
    pub slot: u32,
    pub cpu: u32,
    pub mem: u32,
    /// Restore this checkpoint image instead of booting.
    pub image: Option<std::path::PathBuf>,
    /// The token the restored agent already holds.
    pub restored_token: Option<String>,
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
    pub cpu_count: Option<u32>,
    pub memory_mb: Option<u32>,
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
            cpu_count: Some(m.cpu_count),
            memory_mb: Some(m.memory_mb),
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

    /// Validates, reserves, and boots or restores one sandbox from `source`.
    pub(super) async fn launch(
        &self,
        req: CreateSandbox,
        source: Source,
    ) -> Result<SandboxRecord, RuntimeError> {
        let cfg = &self.inner.config;
        self.check_request(&req)?;
        let timeout = self.clamp_timeout(req.timeout)?;
        // A restored image keeps the resources it was taken with.
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

        if let Some(image) = &source.image {
            self.check_disk_floor(super::disk::DiskOp::Restore, image)?;
        }
        let id = SandboxId::generate();
        let want = Resources::new(cpu_count, memory_mb, cfg.disk_size_mb);
        let grant = self.inner.admission.reserve(want, Class::Active, cfg.admission_wait).await?;
        self.discard_evicted(&grant.evicted);
        let Some(slot) = self.slots().take() else {
            let _ = self.inner.admission.release(grant.id);
            return Err(RuntimeError::Network {
                id: id.to_string(),
                source: crate::network::NetworkError::Exhausted(super::NET_SLOTS),
            });
        };
        let record = self.new_record(&id, &req, &source, (cpu_count, memory_mb), (slot, grant.id), timeout);
        self.table().insert(id.clone(), record);

        let booted = self
            .boot_and_init(
                &id,
                BootPlan {
                    rootfs: cfg.layout.rootfs_dir(&source.rootfs_name),
                    slot,
                    cpu: cpu_count,
                    mem: memory_mb,
                    image: source.image,
                    restored_token: source.restored_token,
                },
            )
            .await;
        match booted {
            Ok(health) => {
                let _ = self.update(&id, |r| r.start_ended = health.start_exit.is_some());
            }
            Err(e) => {
                tracing::warn!(sandbox = %id, error = %e, "create failed; cleaning up");
                self.teardown(&id, Some(slot)).await;
                self.table().remove(&id);
                let _ = self.inner.admission.release(grant.id);
                let _ = std::fs::remove_file(self.inner.config.layout.sandbox_record(id.as_str()));
                return Err(e);
            }
        }
        let rec = self.transition(&id, LifecycleEvent::Ready)?;
        // A create that took long still gets its full timeout from now.
        let rec = self.update(&id, |r| r.end_at = OffsetDateTime::now_utc() + timeout).unwrap_or(rec);
        tracing::info!(sandbox = %id, template = %rec.template_id, "sandbox running");
        self.start_freshness_sync(&id);
        Ok(self.get(&id).unwrap_or(rec))
    }

    /// The record of a new sandbox, `Creating`, holding `slot` and `reservation`.
    fn new_record(
        &self,
        id: &SandboxId,
        req: &CreateSandbox,
        source: &Source,
        (cpu_count, memory_mb): (u32, u32),
        (slot, reservation): (u32, u64),
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
            cpu_count,
            memory_mb,
            disk_size_mb: self.inner.config.disk_size_mb,
            access_token: generate_secret(),
            on_timeout: req.on_timeout.unwrap_or(OnTimeout::Kill),
            net_slot: Some(slot),
            agent_ip: std::net::Ipv4Addr::UNSPECIFIED,
            rootfs: source.rootfs_name.clone(),
            workdir: source.workdir.clone(),
            internal: source.internal,
            start_ended: false,
            auto_resume: req.auto_resume,
            reservation: Some(reservation),
        }
    }

    /// Turns a checked-out warm sandbox into the requested one: its record, then `/init` with
    /// this sandbox's token and env. On failure everything it held is released.
    async fn adopt_warm(
        &self,
        req: &CreateSandbox,
        source: &Source,
        e: super::warm::WarmEntry,
    ) -> Result<SandboxRecord, RuntimeError> {
        let started = Instant::now();
        let timeout = self.clamp_timeout(req.timeout)?;
        let cfg = &self.inner.config;
        let resources = (
            source.cpu_count.unwrap_or(cfg.default_cpu_count),
            source.memory_mb.unwrap_or(cfg.default_memory_mb),
        );
        let mut record = self.new_record(&e.id, req, source, resources, (e.slot, e.reservation), timeout);
        record.agent_ip = e.ip;
        record.start_ended = e.start_ended;
        self.table().insert(e.id.clone(), record);
        let init = async {
            self.persist(&e.id)?;
            self.init_agent(&e.id, source.restored_token.as_deref()).await
        };
        if let Err(err) = init.await {
            self.table().remove(&e.id);
            let _ = std::fs::remove_file(cfg.layout.sandbox_record(e.id.as_str()));
            self.discard(e, true);
            return Err(err);
        }
        let rec = self.transition(&e.id, LifecycleEvent::Ready)?;
        let rec = self.update(&e.id, |r| r.end_at = OffsetDateTime::now_utc() + timeout).unwrap_or(rec);
        self.inner.samples.record(SampleName::WarmPoolCheckout, started.elapsed());
        tracing::info!(sandbox = %e.id, template = %rec.template_id, took = ?started.elapsed(), "sandbox running (warm pool)");
        self.start_freshness_sync(&e.id);
        Ok(self.get(&e.id).unwrap_or(rec))
    }

    /// Checks what can be checked before the source is resolved (and perhaps built).
    fn check_request(&self, req: &CreateSandbox) -> Result<(), RuntimeError> {
        if req.auto_resume && req.on_timeout != Some(OnTimeout::Pause) {
            return Err(RuntimeError::InvalidRequest(
                "autoResume needs lifecycle on_timeout=pause (autoPause)".into(),
            ));
        }
        if req.allow_internet_access == Some(true) {
            return Err(RuntimeError::Unsupported {
                feature: "allow_internet_access=true (sandbox internet egress)",
            });
        }
        self.clamp_timeout(req.timeout)?;
        for key in req.env_vars.keys() {
            if key.is_empty() || key.contains('=') || key.contains('\0') {
                return Err(RuntimeError::InvalidRequest(format!("invalid envVars key {key:?}")));
            }
        }
        Ok(())
    }

    pub(super) fn clamp_timeout(&self, t: Option<Duration>) -> Result<Duration, RuntimeError> {
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

    /// Attaches the network and boots (or restores) the engine sandbox; does not wait for it.
    pub(super) async fn start_engine(
        &self,
        id: &SandboxId,
        plan: BootPlan,
    ) -> Result<crate::network::NetAttachment, RuntimeError> {
        let BootPlan { rootfs, slot, cpu, mem, image, .. } = plan;
        let cfg = &self.inner.config;
        let network = Arc::clone(&self.inner.network);
        let engine = Arc::clone(&self.inner.engine);
        let run_dir = cfg.layout.sandbox_run_dir(id.as_str());
        let agent_path = cfg.agent_path.clone();
        let boot_id = id.clone();
        tokio::task::spawn_blocking(move || -> Result<_, RuntimeError> {
            let t = Instant::now();
            let att = network
                .attach(&boot_id, slot)
                .map_err(|source| RuntimeError::Network { id: boot_id.to_string(), source })?;
            tracing::debug!(sandbox = %boot_id, ms = t.elapsed().as_millis() as u64, "network attached");
            let t = Instant::now();
            let spec = BootSpec {
                id: boot_id.clone(),
                rootfs,
                netns_path: att.netns_path.clone(),
                agent_path,
                run_dir,
                cpu_count: cpu,
                memory_mb: mem,
            };
            match &image {
                None => engine.boot(&spec),
                Some(img) => engine.restore(&spec, img),
            }
            .map_err(|source| RuntimeError::Engine { id: boot_id.to_string(), source })?;
            tracing::debug!(sandbox = %boot_id, ms = t.elapsed().as_millis() as u64, restore = image.is_some(), "engine started");
            Ok(att)
        })
        .await
        .map_err(|e| RuntimeError::Internal(format!("boot task: {e}")))?
    }

    /// Starts the engine sandbox and waits for its agent to answer, with no record and no
    /// `/init`: warm-pool entries and checkpoint probes. Returns its address and what its agent
    /// reported.
    pub(super) async fn start_unrecorded(
        &self,
        id: &SandboxId,
        plan: BootPlan,
        timeout: Duration,
    ) -> Result<(std::net::Ipv4Addr, crate::agent_client::AgentHealth), RuntimeError> {
        let att = self.start_engine(id, plan).await?;
        let health = self
            .inner
            .agent
            .wait_ready(att.sandbox_ip, timeout)
            .await
            .map_err(|source| RuntimeError::NotReady { id: id.to_string(), source })?;
        Ok((att.sandbox_ip, health))
    }

    /// Attaches the network and boots (or, with `image`, restores) the sandbox, then waits for
    /// its agent and initialises it. Returns the network slot's sandbox address.
    pub(super) async fn boot_and_init(
        &self,
        id: &SandboxId,
        plan: BootPlan,
    ) -> Result<crate::agent_client::AgentHealth, RuntimeError> {
        let cfg = &self.inner.config;
        let t_boot = Instant::now();
        let restored = plan.image.is_some();
        let restored_token = plan.restored_token.clone();
        let attach = self.start_engine(id, plan).await?;
        let ip = attach.sandbox_ip;
        self.update(id, |r| r.agent_ip = ip);
        self.persist(id)?;

        let t_probe = Instant::now();
        let health = self.inner.agent.wait_ready(ip, cfg.ready_timeout).await.map_err(|source| {
            let log = cfg.layout.sandbox_run_dir(id.as_str()).join("sandbox.log");
            let tail = std::fs::read_to_string(&log).unwrap_or_default();
            let tail: Vec<&str> = tail.lines().rev().take(8).collect();
            tracing::warn!(sandbox = %id, log = ?tail, "agent not ready; last lines of the sandbox log");
            RuntimeError::NotReady { id: id.to_string(), source }
        })?;
        self.inner.samples.record(SampleName::ReadyProbe, t_probe.elapsed());
        tracing::debug!(sandbox = %id, ms = t_probe.elapsed().as_millis() as u64, "agent answered");
        let t_init = Instant::now();
        // A restored agent already holds a token (its own, or its snapshot source's) and must
        // be shown it before it accepts this sandbox's.
        self.init_agent(id, restored_token.as_deref()).await?;
        tracing::debug!(sandbox = %id, ms = t_init.elapsed().as_millis() as u64, "agent initialised");
        let sample = if restored { SampleName::WarmSnapshotRestore } else { SampleName::ColdBoot };
        self.inner.samples.record(sample, t_boot.elapsed());
        Ok(health)
    }

    /// Sends `/init` with the record's token and env.
    pub(super) async fn init_agent(
        &self,
        id: &SandboxId,
        current_token: Option<&str>,
    ) -> Result<(), RuntimeError> {
        let rec = self.get(id)?;
        let req = InitRequest {
            protocol: AGENT_PROTOCOL_VERSION,
            sandbox_id: id.to_string(),
            access_token: rec.access_token.clone(),
            env_vars: rec.env_vars.clone(),
            default_user: Some("user".into()),
            default_workdir: Some(rec.workdir.clone().unwrap_or_else(|| "/home/user".into())),
            timestamp_ms: u64::try_from(OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000)
                .unwrap_or(0),
        };
        self.inner
            .agent
            .init(rec.agent_ip, &req, current_token)
            .await
            .map_err(|source| RuntimeError::NotReady { id: id.to_string(), source })?;
        Ok(())
    }

    /// Destroys the engine sandbox and its network, and releases the slot. Never fails: errors
    /// are logged, and reconciliation at the next start catches anything left.
    pub(super) async fn teardown(&self, id: &SandboxId, slot: Option<u32>) {
        let network = Arc::clone(&self.inner.network);
        let engine = Arc::clone(&self.inner.engine);
        let run_dir = self.inner.config.layout.sandbox_run_dir(id.as_str());
        let tid = id.clone();
        let res = tokio::task::spawn_blocking(move || {
            if let Err(e) = engine.destroy(&tid) {
                tracing::warn!(sandbox = %tid, error = %e, "engine destroy failed");
            }
            if let Err(e) = network.detach(&tid, slot.unwrap_or(0)) {
                tracing::warn!(sandbox = %tid, error = %e, "network detach failed");
            }
            let _ = std::fs::remove_dir_all(&run_dir);
        })
        .await;
        if let Err(e) = res {
            tracing::warn!(sandbox = %id, error = %e, "teardown task failed");
        }
        if let Some(slot) = slot {
            self.slots().release(slot);
        }
    }
}
