//! The warm pool: per template, N sandboxes already restored from the template's checkpoint
//! and readiness-checked, held under `Warm` reservations. A create of that template checks one
//! out (a ledger promotion warm → active, then `/init` with the caller's token and env) instead
//! of restoring; a supervisor refills pools in the background and stops cleanly. Warm entries
//! never wait for or displace anything: active creates evict them first.
//!
//! A restored entry's agent holds the template's access token, which every sandbox ever
//! restored from that template was first shown and which the template's manifest stores. So
//! right after its readiness check an entry is re-keyed: `/init`, shown the template's token,
//! gives it a fresh random token of its own ([`WarmEntry::token`], known to the runtime only),
//! and the checkout's `/init` then presents that one. No entry waits in the pool answering to a
//! token any other party knows. The re-key `/init` carries the entry's id (the id a checkout
//! keeps), so the agent makes the entry's per-sandbox identity (boot id, resolv.conf) then.

use std::collections::{BTreeMap, VecDeque};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use super::boot::{init_request, BootPlan, SandboxSize};
use super::claim::Claim;
use super::{Runtime, RuntimeError};
use crate::admission::ledger::ReservationId;
use crate::admission::Class;
use crate::ids::{generate_secret, SandboxId};
use crate::snapshot::SnapshotManifest;

/// How often the supervisor re-checks pools when nothing wakes it.
const SWEEP: Duration = Duration::from_secs(2);
/// After a failed refill, wait this long before retrying that template.
const BACKOFF: Duration = Duration::from_secs(10);

/// One pre-restored sandbox. Dropping it tears the sandbox down and releases what it holds
/// (its claim).
pub(super) struct WarmEntry {
    /// Its id, slot and `Warm` reservation.
    pub claim: Claim,
    pub ip: Ipv4Addr,
    /// The template artifact it was restored from (a rebuilt template makes it stale).
    pub artifact: String,
    /// Its start command had ended by the time it answered.
    pub start_ended: bool,
    /// The token its agent holds since the re-key (the checkout's `/init` presents it).
    pub token: String,
}

/// Pool contents and supervisor state.
#[derive(Default)]
pub(super) struct WarmPools {
    /// Target depth per template (from the config; adjustable at run time).
    targets: Option<BTreeMap<String, usize>>,
    entries: BTreeMap<String, VecDeque<WarmEntry>>,
    stopped: bool,
    failed_at: BTreeMap<String, Instant>,
    supervisor: Option<tokio::task::JoinHandle<()>>,
}

/// Pool depth per template, for gauges.
#[derive(Debug, Clone, Default)]
pub struct WarmStats {
    pub ready: BTreeMap<String, usize>,
}

impl Runtime {
    fn pools(&self) -> std::sync::MutexGuard<'_, WarmPools> {
        self.inner.warm.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Ids of the warm entries.
    pub(super) fn warm_ids(&self) -> Vec<String> {
        self.pools().entries.values().flatten().map(|e| e.claim.id().to_string()).collect()
    }

    pub fn warm_stats(&self) -> WarmStats {
        let pools = self.pools();
        WarmStats { ready: pools.entries.iter().map(|(k, v)| (k.clone(), v.len())).collect() }
    }

    /// Starts the refill supervisor (a no-op loop when no pool is configured).
    pub fn start_warm_pool(&self) {
        let rt = self.clone();
        let handle = tokio::spawn(async move { rt.warm_supervisor().await });
        self.pools().supervisor = Some(handle);
    }

    /// Sets one template's pool depth (0 drains it) and wakes the supervisor.
    pub fn set_warm_target(&self, template: &str, depth: usize) {
        let drained: Vec<WarmEntry> = {
            let mut pools = self.pools();
            let targets = pools.targets.get_or_insert_with(|| self.inner.config.warm_pool.clone());
            targets.insert(template.to_owned(), depth);
            let queue = pools.entries.entry(template.to_owned()).or_default();
            let excess = queue.len().saturating_sub(depth);
            queue.drain(..excess).collect()
        };
        drop(drained);
        self.inner.warm_wake.notify_one();
    }

    async fn warm_supervisor(&self) {
        loop {
            let targets: Vec<(String, usize)> = {
                let mut pools = self.pools();
                if pools.stopped {
                    return;
                }
                let t = pools.targets.get_or_insert_with(|| self.inner.config.warm_pool.clone());
                t.iter().filter(|(_, n)| **n > 0).map(|(k, n)| (k.clone(), *n)).collect()
            };
            for (template, target) in &targets {
                if self.pools().stopped {
                    return;
                }
                let recently_failed =
                    self.pools().failed_at.get(template).is_some_and(|t| t.elapsed() < BACKOFF);
                if !recently_failed {
                    self.refill(template, *target).await;
                }
            }
            let _ = tokio::time::timeout(SWEEP, self.inner.warm_wake.notified()).await;
        }
    }

    /// Tops up one template's pool.
    async fn refill(&self, template: &str, target: usize) {
        let m = match self.template_artifact(template).await {
            Ok(Some(m)) => m,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(template, error = %e, "warm pool: template not available");
                self.pools().failed_at.insert(template.to_owned(), Instant::now());
                return;
            }
        };
        self.drop_stale(template, &m.snapshot_id);
        loop {
            let have = self.pools().entries.get(template).map_or(0, VecDeque::len);
            if have >= target || self.pools().stopped {
                return;
            }
            match self.restore_warm(&m).await {
                Ok(Some(entry)) => {
                    let mut pools = self.pools();
                    if pools.stopped {
                        drop(pools);
                        drop(entry);
                        return;
                    }
                    pools.entries.entry(template.to_owned()).or_default().push_back(entry);
                }
                // No free capacity: active work has it; try again later.
                Ok(None) => return,
                Err(e) => {
                    tracing::warn!(template, error = %e, "warm pool refill failed");
                    self.pools().failed_at.insert(template.to_owned(), Instant::now());
                    return;
                }
            }
        }
    }

    /// Restores one warm sandbox from `m`; `None` when there is no capacity for it now.
    async fn restore_warm(&self, m: &SnapshotManifest) -> Result<Option<WarmEntry>, RuntimeError> {
        let image = self.inner.template_store.image_dir(&m.snapshot_id);
        if let Err(e) = self.check_disk_floor(super::disk::DiskOp::WarmRefill, &image) {
            tracing::debug!(error = %e, "warm pool not refilled");
            return Ok(None);
        }
        let want = self.footprint(SandboxSize::of_artifact(m));
        let Some(mut claim) = Claim::warm(self, &SandboxId::generate(), want) else {
            return Ok(None);
        };
        let plan = BootPlan {
            rootfs: self.inner.config.layout.rootfs_dir(&m.rootfs),
            size: SandboxSize::of_artifact(m),
            image: Some(image),
            restored_token: Some(m.access_token.clone()),
            // Open until checked out: the checkout applies the creating request's policy.
            egress: crate::network::EgressPolicy::default(),
        };
        let started = self.start_unrecorded(&mut claim, plan, self.inner.config.ready_timeout).await;
        let started = claim.or_release(started).await?;
        let token = generate_secret();
        let rekeyed = self.rekey_warm(claim.id(), started.ip, m, &token).await;
        claim.or_release(rekeyed).await?;
        Ok(Some(WarmEntry {
            claim,
            ip: started.ip,
            artifact: m.snapshot_id.clone(),
            start_ended: started.health.start_exit.is_some(),
            token,
        }))
    }

    /// Gives the agent of a just-restored warm entry `token` in place of the template's (see
    /// the module docs), with the template's env and workdir until a checkout sets its own.
    async fn rekey_warm(
        &self,
        id: &SandboxId,
        ip: Ipv4Addr,
        m: &SnapshotManifest,
        token: &str,
    ) -> Result<(), RuntimeError> {
        let req = init_request(id, token, &m.env_vars, m.workdir.as_deref());
        self.send_init(id, ip, &req, Some(&m.access_token)).await
    }

    /// Takes a warm sandbox of `template` restored from artifact `m`, promoted to an active
    /// reservation. Wakes the supervisor to refill.
    pub(super) fn checkout_warm(&self, template: &str, m: &SnapshotManifest) -> Option<WarmEntry> {
        let entry = {
            let mut pools = self.pools();
            let queue = pools.entries.get_mut(template)?;
            let pos = queue.iter().position(|e| e.artifact == m.snapshot_id)?;
            queue.remove(pos)?
        };
        self.inner.warm_wake.notify_one();
        let want = self.footprint(SandboxSize::of_artifact(m));
        let promoted = match entry.claim.reservation() {
            Some(r) => self.inner.admission.reclassify(r, Class::Active, want),
            None => Ok(()),
        };
        if let Err(e) = promoted {
            // Evicted between the pop and the promotion: the ledger already dropped it.
            tracing::info!(sandbox = %entry.claim.id(), error = %e, "warm entry lost its reservation");
            let mut entry = entry;
            entry.claim.reservation_evicted();
            return None;
        }
        Some(entry)
    }

    /// Destroys the warm entries whose reservations the ledger evicted for active work.
    pub(super) fn discard_evicted(&self, evicted: &[ReservationId]) {
        if evicted.is_empty() {
            return;
        }
        let victims: Vec<WarmEntry> = {
            let mut pools = self.pools();
            let mut out = Vec::new();
            for queue in pools.entries.values_mut() {
                let (gone, kept): (VecDeque<_>, VecDeque<_>) = queue
                    .drain(..)
                    .partition(|e| e.claim.reservation().is_some_and(|r| evicted.contains(&r)));
                *queue = kept;
                out.extend(gone);
            }
            out
        };
        tracing::info!(evicted = victims.len(), "warm entries evicted for an active create");
        for mut v in victims {
            v.claim.reservation_evicted();
        }
    }

    /// Drops entries restored from an older artifact of `template`.
    fn drop_stale(&self, template: &str, artifact: &str) {
        let stale: Vec<WarmEntry> = {
            let mut pools = self.pools();
            let Some(queue) = pools.entries.get_mut(template) else { return };
            let (stale, fresh): (VecDeque<_>, VecDeque<_>) =
                queue.drain(..).partition(|e| e.artifact != artifact);
            *queue = fresh;
            stale.into()
        };
        drop(stale);
    }

    /// Stops the supervisor and destroys every warm entry (server shutdown).
    pub async fn stop_warm_pool(&self) {
        let supervisor = {
            let mut pools = self.pools();
            pools.stopped = true;
            pools.supervisor.take()
        };
        self.inner.warm_wake.notify_one();
        // Let a refill in flight finish (its entry is then discarded) before emptying the pool.
        if let Some(h) = supervisor {
            let _ = tokio::time::timeout(Duration::from_secs(60), h).await;
        }
        // Dropping the entries tears them down in the background; wait for that.
        let all = std::mem::take(&mut self.pools().entries);
        drop(all);
        self.drain_teardowns().await;
    }
}
