//! Starting, restoring, initialising and tearing down one sandbox's engine side: the network
//! namespace and address, the runsc sandbox (a cold boot for template builds, a checkpoint
//! restore for everything else), the readiness probe, and `/init` of the agent. Create, the warm
//! pool, resume, checkpoint probes and template builds all start sandboxes through here; what
//! a sandbox holds while it starts is owned by a [`super::claim::Claim`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use firkin_wire::agent::{InitRequest, AGENT_PROTOCOL_VERSION};
use time::OffsetDateTime;

use super::claim::Claim;
use super::error::CleanupError;
use super::{Runtime, RuntimeError};
use crate::agent_client::AgentHealth;
use crate::engine::BootSpec;
use crate::ids::SandboxId;
use crate::network::{EgressPolicy, NetAttachment};
use crate::samples::SampleName;

/// How to start one sandbox's engine side (the claim says which sandbox, slot and operation).
pub(super) struct BootPlan {
    pub rootfs: std::path::PathBuf,
    pub size: SandboxSize,
    /// Restore this checkpoint image instead of booting.
    pub image: Option<std::path::PathBuf>,
    /// The token the restored agent already holds.
    pub restored_token: Option<String>,
    /// In force from before the engine starts.
    pub egress: EgressPolicy,
}

/// CPUs, memory and disk of one sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct SandboxSize {
    pub cpu_count: u32,
    pub memory_mb: u32,
    /// The disk's size: a limit (the ledger holds `disk_reserve_mb` of it).
    pub disk_mb: u32,
}

impl SandboxSize {
    pub fn of_record(rec: &crate::record::SandboxRecord) -> SandboxSize {
        SandboxSize { cpu_count: rec.cpu_count, memory_mb: rec.memory_mb, disk_mb: rec.disk_size_mb }
    }

    pub fn of_artifact(m: &crate::snapshot::SnapshotManifest) -> SandboxSize {
        SandboxSize { cpu_count: m.cpu_count, memory_mb: m.memory_mb, disk_mb: m.disk_size_mb }
    }
}

/// The `/init` that gives sandbox `id`'s agent `token`, `env` and `workdir` (default: the
/// user's home), as user `user`.
pub(super) fn init_request(
    id: &SandboxId,
    token: &str,
    env: &std::collections::BTreeMap<String, String>,
    workdir: Option<&str>,
) -> InitRequest {
    InitRequest {
        protocol: AGENT_PROTOCOL_VERSION,
        sandbox_id: id.to_string(),
        access_token: token.to_owned(),
        env_vars: env.clone(),
        default_user: Some("user".into()),
        default_workdir: Some(workdir.unwrap_or("/home/user").to_owned()),
        timestamp_ms: u64::try_from(OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000)
            .unwrap_or(0),
    }
}

/// A sandbox whose engine side runs and whose agent answers, not yet initialised.
pub(super) struct Started {
    /// The sandbox's address, where its agent answers.
    pub ip: std::net::Ipv4Addr,
    pub health: AgentHealth,
}

impl Runtime {
    /// Attaches the network and boots (or restores) the engine sandbox of `claim`; does not
    /// wait for it. From here on, dropping the claim tears the engine side down.
    async fn start_engine(&self, claim: &mut Claim, plan: BootPlan) -> Result<NetAttachment, RuntimeError> {
        claim.engine_starting();
        let BootPlan { rootfs, size, image, egress, .. } = plan;
        let (id, op, slot) = (claim.id().clone(), claim.op(), claim.slot());
        let cfg = &self.inner.config;
        let network = Arc::clone(&self.inner.network);
        let engine = Arc::clone(&self.inner.engine);
        let run_dir = cfg.layout.sandbox_run_dir(id.as_str());
        let agent_path = cfg.agent_path.clone();
        let max_processes = cfg.process_limit(size.memory_mb);
        tokio::task::spawn_blocking(move || -> Result<_, RuntimeError> {
            let t = Instant::now();
            let att = network
                .attach(&id, slot, &egress)
                .map_err(|source| RuntimeError::Network { op, id: id.to_string(), source })?;
            tracing::debug!(sandbox = %id, ms = t.elapsed().as_millis() as u64, "network attached");
            let t = Instant::now();
            let spec = BootSpec {
                id: id.clone(),
                rootfs,
                netns_path: att.netns_path.clone(),
                agent_path,
                run_dir,
                cpu_count: size.cpu_count,
                memory_mb: size.memory_mb,
                disk_mb: size.disk_mb,
                max_processes,
            };
            match &image {
                None => engine.boot(&spec),
                Some(img) => engine.restore(&spec, img),
            }
            .map_err(|source| RuntimeError::Engine { op, id: id.to_string(), source })?;
            tracing::debug!(sandbox = %id, ms = t.elapsed().as_millis() as u64, restore = image.is_some(), "engine started");
            Ok(att)
        })
        .await
        .map_err(|e| RuntimeError::Internal(format!("{op} of sandbox {}: boot task: {e}", claim.id())))?
    }

    /// Starts the engine sandbox and waits for its agent to answer, with no record and no
    /// `/init`: warm-pool entries and checkpoint probes.
    pub(super) async fn start_unrecorded(
        &self,
        claim: &mut Claim,
        plan: BootPlan,
        timeout: Duration,
    ) -> Result<Started, RuntimeError> {
        let att = self.start_engine(claim, plan).await?;
        let health = self
            .inner
            .agent
            .wait_ready(att.sandbox_ip, timeout)
            .await
            .map_err(|source| RuntimeError::NotReady { id: claim.id().to_string(), source })?;
        Ok(Started { ip: att.sandbox_ip, health })
    }

    /// Attaches the network and boots (or, with an image, restores) the sandbox of `claim`,
    /// whose record is in the table; records its address, waits for its agent and initialises
    /// it. Returns what the agent reported.
    pub(super) async fn boot_and_init(
        &self,
        claim: &mut Claim,
        plan: BootPlan,
    ) -> Result<AgentHealth, RuntimeError> {
        let cfg = &self.inner.config;
        let t_boot = Instant::now();
        let restored = plan.image.is_some();
        let restored_token = plan.restored_token.clone();
        let ip = self.start_engine(claim, plan).await?.sandbox_ip;
        let id = claim.id();
        self.update(id, |r| r.agent_ip = ip);
        self.persist(id)?;

        let t_probe = Instant::now();
        let health = self.inner.agent.wait_ready(ip, cfg.ready_timeout).await.map_err(|source| {
            self.log_sandbox_tail(id);
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

    /// Logs the last lines of a sandbox's own log (its PID 1's output): why it did not answer.
    fn log_sandbox_tail(&self, id: &SandboxId) {
        let log = self.inner.config.layout.sandbox_run_dir(id.as_str()).join("sandbox.log");
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(8).collect();
        tracing::warn!(sandbox = %id, log = ?tail, "agent not ready; last lines of the sandbox log");
    }

    /// Sends `/init` with the record's token and env.
    pub(super) async fn init_agent(
        &self,
        id: &SandboxId,
        current_token: Option<&str>,
    ) -> Result<(), RuntimeError> {
        let rec = self.get(id)?;
        let req = init_request(id, &rec.access_token, &rec.env_vars, rec.workdir.as_deref());
        self.send_init(id, rec.agent_ip, &req, current_token).await
    }

    /// Sends `req` to the agent at `ip`, which holds `current_token`.
    pub(super) async fn send_init(
        &self,
        id: &SandboxId,
        ip: std::net::Ipv4Addr,
        req: &InitRequest,
        current_token: Option<&str>,
    ) -> Result<(), RuntimeError> {
        self.inner
            .agent
            .init(ip, req, current_token)
            .await
            .map(|_| ())
            .map_err(|source| RuntimeError::NotReady { id: id.to_string(), source })
    }

    /// Destroys the engine sandbox and its network, and releases the slot. Whatever fails is
    /// logged and returned (reconciliation at the next start catches anything left); the slot
    /// is released either way.
    pub(super) async fn teardown(&self, id: &SandboxId, slot: Option<u32>) -> Result<(), CleanupError> {
        let network = Arc::clone(&self.inner.network);
        let engine = Arc::clone(&self.inner.engine);
        let run_dir = self.inner.config.layout.sandbox_run_dir(id.as_str());
        let tid = id.clone();
        let res = tokio::task::spawn_blocking(move || {
            let mut failed = Vec::new();
            if let Err(e) = engine.destroy(&tid) {
                tracing::warn!(sandbox = %tid, error = %e, "engine destroy failed");
                failed.push(format!("engine destroy: {e}"));
            }
            if let Err(e) = network.detach(&tid, slot.unwrap_or(0)) {
                tracing::warn!(sandbox = %tid, error = %e, "network detach failed");
                failed.push(format!("network detach: {e}"));
            }
            remove_dir_logged(&run_dir, &tid);
            failed
        })
        .await;
        if let Some(slot) = slot {
            self.slots().release(slot);
        }
        let failed = res.unwrap_or_else(|e| {
            tracing::warn!(sandbox = %id, error = %e, "teardown task failed");
            vec![format!("teardown task: {e}")]
        });
        if failed.is_empty() {
            Ok(())
        } else {
            Err(CleanupError { id: id.clone(), failed })
        }
    }
}

/// Removes a directory the runtime owns; one that is already gone is fine, anything else is
/// logged (reconciliation at the next start removes what is left).
pub(super) fn remove_dir_logged(dir: &std::path::Path, id: &SandboxId) {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            tracing::warn!(sandbox = %id, dir = %dir.display(), error = %e, "removing a directory failed");
        }
        _ => {}
    }
}
