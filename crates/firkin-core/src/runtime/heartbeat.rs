//! Heartbeats and stuck-sandbox cleanup. Every running sandbox's agent is probed periodically;
//! each answer refreshes the sandbox's heartbeat marker (`run/sandboxes/<id>/heartbeat`, the
//! unix time of the last answer). A sandbox whose agent has not answered for `stuck_after` is
//! stuck (its sentry hung, its processes stopped from outside, its network gone): it is killed
//! and everything it held is released. The same probe reports when a template's start command
//! has exited (see [`super::continuation`]). Beside the probes, a task holds every sandbox's
//! host log to its cap ([`logcap`]).

mod logcap;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::Runtime;
use crate::ids::SandboxId;
use crate::lifecycle::SandboxState;

/// How long one probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// How often engine sandboxes are checked against the table.
const ORPHAN_SWEEP: Duration = Duration::from_secs(30);
/// An engine sandbox nothing accounts for is removed once it has been seen this long (longer
/// than any create, probe or refill takes between starting it and recording it).
const ORPHAN_GRACE: Duration = Duration::from_secs(60);

impl Runtime {
    /// The probe interval for a stuck threshold.
    fn heartbeat_interval(&self) -> Duration {
        (self.inner.config.stuck_after / 4).clamp(Duration::from_millis(500), Duration::from_secs(10))
    }

    pub(super) async fn heartbeat_loop(&self) {
        let mut last_ok: BTreeMap<SandboxId, Instant> = BTreeMap::new();
        let mut sightings: BTreeMap<String, Instant> = BTreeMap::new();
        // Its own task: a probe round takes up to PROBE_TIMEOUT and a sweep runs runsc, and a
        // log must not grow unchecked meanwhile.
        let logs = self.clone();
        tokio::spawn(async move { logs.log_cap_loop().await });
        let mut last_sweep = Instant::now();
        loop {
            tokio::time::sleep(self.heartbeat_interval()).await;
            if last_sweep.elapsed() >= ORPHAN_SWEEP {
                last_sweep = Instant::now();
                self.sweep_orphans(&mut sightings).await;
            }
            let running: Vec<(SandboxId, std::net::Ipv4Addr)> = self
                .table()
                .values()
                .filter(|r| r.state == SandboxState::Running && !r.internal)
                .map(|r| (r.id.clone(), r.agent_ip))
                .collect();
            last_ok.retain(|id, _| running.iter().any(|(r, _)| r == id));
            let probes = running.iter().map(|(id, ip)| {
                let agent = self.inner.agent.clone();
                async move { (id.clone(), agent.wait_ready(*ip, PROBE_TIMEOUT).await.ok()) }
            });
            let now = Instant::now();
            for (id, health) in futures_util::future::join_all(probes).await {
                let seen = *last_ok.entry(id.clone()).or_insert(now);
                if let Some(code) = health.and_then(|h| h.start_exit) {
                    self.start_exited(id.as_str(), code).await;
                    if self.get(&id).is_err() {
                        last_ok.remove(&id);
                        continue; // ended: no marker to refresh
                    }
                }
                if health.is_some() {
                    last_ok.insert(id.clone(), now);
                    let marker = self.inner.config.layout.sandbox_run_dir(id.as_str()).join("heartbeat");
                    let stamp = time::OffsetDateTime::now_utc().unix_timestamp().to_string();
                    let _ = crate::atomic::write_atomic(&marker, stamp.as_bytes());
                } else if now.duration_since(seen) >= self.inner.config.stuck_after {
                    // Only if it is still running (not paused or killed in the meantime).
                    if self.get(&id).is_ok_and(|r| r.state == SandboxState::Running) {
                        tracing::warn!(sandbox = %id, silent = ?now.duration_since(seen), "sandbox stuck (no heartbeat); killing it");
                        if let Err(e) = self.kill(id.as_str()).await {
                            tracing::warn!(sandbox = %id, error = %e, "killing a stuck sandbox failed");
                        }
                    }
                    last_ok.remove(&id);
                }
            }
        }
    }

    /// Removes engine sandboxes under this server's root that no record, warm entry or
    /// operation in flight has accounted for since [`ORPHAN_GRACE`] (e.g. a restore that an
    /// earlier server started just before it was killed, completed after the reconciliation).
    async fn sweep_orphans(&self, sightings: &mut BTreeMap<String, Instant>) {
        let now = Instant::now();
        let unaccounted = self.unaccounted_engine_sandboxes().await;
        sightings.retain(|n, _| unaccounted.contains(n));
        for n in &unaccounted {
            sightings.entry(n.clone()).or_insert(now);
        }
        let old: Vec<String> = sightings
            .iter()
            .filter(|(_, seen)| now.duration_since(**seen) >= ORPHAN_GRACE)
            .map(|(n, _)| n.clone())
            .collect();
        self.destroy_orphans(old).await;
    }
}
