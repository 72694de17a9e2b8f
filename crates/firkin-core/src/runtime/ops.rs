//! Runtime operations on existing sandboxes: get, kill, timeouts, connect, routing lookups.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use firkin_wire::signature::{self, FileOperation};
use time::OffsetDateTime;

use super::{Cut, Runtime, RuntimeError};
use crate::admission::ledger::ReservationId;
use crate::atomic::write_json_atomic;
use crate::ids::SandboxId;
use crate::lifecycle::{LifecycleEvent, SandboxState};
use crate::record::SandboxRecord;
use crate::samples::SampleName;

/// Where sandbox traffic for one sandbox goes.
#[derive(Debug, Clone)]
pub struct SandboxRoute {
    pub id: SandboxId,
    pub agent_ip: Ipv4Addr,
    pub access_token: String,
    /// Requests to the sandbox's own ports must carry this (E2B `allowPublicTraffic=false`).
    pub traffic_access_token: Option<String>,
    /// Changes when traffic must stop (pause, kill): the proxy then ends the stream.
    pub cut: tokio::sync::watch::Receiver<u64>,
}

/// What a killed sandbox still holds, between the kill and its teardown.
struct Killed {
    id: SandboxId,
    slot: Option<u32>,
    reservation: Option<ReservationId>,
    started: Instant,
}

/// Result of `connect`: the record and whether it had to be resumed.
#[derive(Debug, Clone)]
pub struct ConnectOutcome {
    pub record: SandboxRecord,
    pub resumed: bool,
}

impl Runtime {
    fn parse_id(id: &str) -> Result<SandboxId, RuntimeError> {
        SandboxId::parse(id).map_err(|_| RuntimeError::SandboxNotFound(id.to_owned()))
    }

    /// A sandbox in the table, in any state (creating ones included).
    pub fn get(&self, id: &SandboxId) -> Result<SandboxRecord, RuntimeError> {
        self.table().get(id).cloned().ok_or_else(|| RuntimeError::SandboxNotFound(id.to_string()))
    }

    /// Looks a sandbox up by its wire id; creating/killed ones are not found.
    pub fn get_visible(&self, id: &str) -> Result<SandboxRecord, RuntimeError> {
        let rec = self.get(&Self::parse_id(id)?)?;
        if rec.state.e2b_name().is_none() {
            return Err(RuntimeError::SandboxNotFound(id.to_owned()));
        }
        Ok(rec)
    }

    pub(super) fn update(&self, id: &SandboxId, f: impl FnOnce(&mut SandboxRecord)) -> Option<SandboxRecord> {
        let mut t = self.table();
        let rec = t.get_mut(id)?;
        f(rec);
        Some(rec.clone())
    }

    pub(super) fn persist(&self, id: &SandboxId) -> Result<(), RuntimeError> {
        let rec = self.get(id)?;
        write_json_atomic(&self.inner.config.layout.sandbox_record(id.as_str()), &rec)?;
        Ok(())
    }

    /// Applies a lifecycle event and persists the new state.
    pub(super) fn transition(
        &self,
        id: &SandboxId,
        event: LifecycleEvent,
    ) -> Result<SandboxRecord, RuntimeError> {
        let rec = {
            let mut t = self.table();
            let rec = t.get_mut(id).ok_or_else(|| RuntimeError::SandboxNotFound(id.to_string()))?;
            rec.state = rec
                .state
                .apply(event)
                .map_err(|source| RuntimeError::Transition { id: id.to_string(), source })?;
            rec.clone()
        };
        if rec.state != SandboxState::Killed {
            write_json_atomic(&self.inner.config.layout.sandbox_record(id.as_str()), &rec)?;
        }
        Ok(rec)
    }

    /// Kills a sandbox: it is unreachable when this returns; the engine teardown (runsc delete
    /// takes about a second) finishes in the background and is awaited at shutdown.
    pub async fn kill(&self, id: &str) -> Result<(), RuntimeError> {
        let killed = self.begin_kill(id)?;
        let rt = self.clone();
        self.track_teardown(tokio::spawn(async move { rt.finish_kill(killed).await }));
        Ok(())
    }

    /// Kills a sandbox and waits until everything it held is released.
    pub async fn kill_and_wait(&self, id: &str) -> Result<(), RuntimeError> {
        let killed = self.begin_kill(id)?;
        self.finish_kill(killed).await;
        Ok(())
    }

    /// The fast half of a kill: the sandbox leaves the table and its traffic is cut.
    fn begin_kill(&self, id: &str) -> Result<Killed, RuntimeError> {
        let id = Self::parse_id(id)?;
        let started = Instant::now();
        let rec = self.transition(&id, LifecycleEvent::Kill).map_err(|e| match e {
            RuntimeError::Transition { id, .. } => RuntimeError::SandboxNotFound(id),
            other => other,
        })?;
        // Gone from every lookup before the slow part, so traffic gets 502 at once, and
        // streams already proxied end now rather than when the engine stops.
        self.forget_record(&id);
        self.cut_traffic(&id, Cut::AndForget);
        self.inner.syncs.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
        self.forget_metrics(&id);
        tracing::info!(sandbox = %id, "sandbox killed");
        Ok(Killed { id, slot: rec.net_slot, reservation: rec.reservation, started })
    }

    /// The slow half of a kill: the engine side, the pause image and the capacity.
    async fn finish_kill(&self, killed: Killed) {
        let Killed { id, slot, reservation, started } = killed;
        let lock = self.engine_lock(&id);
        let guard = lock.lock().await;
        // A failed part was logged by the teardown; the kill has already succeeded.
        let _ = self.teardown(&id, slot).await;
        drop(guard);
        self.inner.engine_locks.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
        super::boot::remove_dir_logged(&self.inner.config.layout.pause_image(id.as_str()), &id);
        if let Some(r) = reservation {
            if let Err(e) = self.inner.admission.release(r) {
                tracing::error!(sandbox = %id, error = %e, "capacity release failed");
            }
        }
        self.inner.samples.record(SampleName::KillDelete, started.elapsed());
    }

    /// Removes a sandbox's record from the table and from disk.
    pub(super) fn forget_record(&self, id: &SandboxId) {
        self.table().remove(id);
        match std::fs::remove_file(self.inner.config.layout.sandbox_record(id.as_str())) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                tracing::warn!(sandbox = %id, error = %e, "removing the sandbox record failed");
            }
            _ => {}
        }
    }

    /// `endAt = now + timeout`.
    pub fn set_timeout(&self, id: &str, timeout: Duration) -> Result<SandboxRecord, RuntimeError> {
        let rec = self.get_visible(id)?;
        let timeout = self.checked_timeout(Some(timeout))?;
        let updated = self
            .update(&rec.id, |r| r.end_at = OffsetDateTime::now_utc() + timeout)
            .ok_or_else(|| RuntimeError::SandboxNotFound(id.to_owned()))?;
        self.persist(&rec.id)?;
        Ok(updated)
    }

    /// Connects to a sandbox: a paused one is resumed, a running one has its end time extended
    /// (never shortened). One in the middle of a pause, resume or snapshot is waited for first,
    /// as E2B does (a connect during an automatic pause resumes it once it is paused).
    pub async fn connect(&self, id: &str, timeout: Option<Duration>) -> Result<ConnectOutcome, RuntimeError> {
        let timeout = self.checked_timeout(timeout)?;
        let rec = self.settled(&self.get_visible(id)?.id, "connect").await?;
        if rec.state == SandboxState::Paused {
            match self.resume(rec, timeout).await {
                Ok(record) => return Ok(ConnectOutcome { record, resumed: true }),
                // Another request began resuming it meanwhile: wait for that one.
                Err(RuntimeError::Transition { source, .. }) if source.from == SandboxState::Resuming => {
                    let record = self.settled(&Self::parse_id(id)?, "connect").await?;
                    return Ok(ConnectOutcome { record, resumed: true });
                }
                Err(e) => return Err(e),
            }
        }
        let wanted = OffsetDateTime::now_utc() + timeout;
        let record = self.update(&rec.id, |r| {
            if wanted > r.end_at {
                r.end_at = wanted;
            }
        });
        let record = record.ok_or_else(|| RuntimeError::SandboxNotFound(id.to_owned()))?;
        self.persist(&record.id)?;
        Ok(ConnectOutcome { record, resumed: false })
    }

    /// The sandbox's record once it is running or paused: a pause, resume or snapshot in
    /// progress is waited for (bounded). `op` names the caller in a timeout error.
    pub(super) async fn settled(&self, id: &SandboxId, op: &str) -> Result<SandboxRecord, RuntimeError> {
        const SETTLE_TIMEOUT: Duration = Duration::from_secs(120);
        let deadline = Instant::now() + SETTLE_TIMEOUT;
        loop {
            let rec = self.get(id)?;
            match rec.state {
                SandboxState::Running | SandboxState::Paused => return Ok(rec),
                SandboxState::Killed => return Err(RuntimeError::SandboxNotFound(id.to_string())),
                other if Instant::now() > deadline => {
                    return Err(RuntimeError::Internal(format!(
                        "{op} of sandbox {id}: it stayed {other:?} for {}s",
                        SETTLE_TIMEOUT.as_secs()
                    )))
                }
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    /// Where to send traffic for `id`, if it is running.
    pub fn route(&self, id: &str) -> Option<SandboxRoute> {
        let id = SandboxId::parse(id).ok()?;
        let t = self.table();
        let rec = t.get(&id)?;
        if !rec.state.accepts_traffic() {
            return None;
        }
        Some(SandboxRoute {
            id: rec.id.clone(),
            agent_ip: rec.agent_ip,
            access_token: rec.access_token.clone(),
            traffic_access_token: rec.traffic_access_token.clone(),
            cut: self.traffic_watch(&rec.id),
        })
    }

    /// Like [`Runtime::route`], but a paused sandbox created with `autoResume` is resumed first
    /// (concurrent requests wait for the one resume). `None`: unknown, gone, or paused without
    /// auto-resume, or the resume failed.
    pub async fn route_or_resume(&self, id: &str) -> Option<SandboxRoute> {
        if let Some(r) = self.route(id) {
            return Some(r);
        }
        if !self.get_visible(id).ok()?.auto_resume {
            return None;
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match self.get_visible(id).ok()?.state {
                SandboxState::Paused => {
                    if let Err(e) = self.connect(id, None).await {
                        tracing::warn!(sandbox = id, error = %e, "auto-resume failed");
                    }
                }
                SandboxState::Running => return self.route(id),
                SandboxState::Resuming | SandboxState::Pausing | SandboxState::Snapshotting => {
                    tokio::time::sleep(Duration::from_millis(20)).await
                }
                _ => return None,
            }
            if let Some(r) = self.route(id) {
                return Some(r);
            }
            if Instant::now() > deadline {
                return None;
            }
        }
    }

    /// Finds the running sandbox whose token validates a signed `/files` URL.
    pub fn route_by_file_signature(
        &self,
        path: &str,
        op: FileOperation,
        username: &str,
        presented: &str,
        expiration: Option<i64>,
    ) -> Option<SandboxRoute> {
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let t = self.table();
        t.values()
            .filter(|r| r.state.accepts_traffic())
            .find(|r| {
                signature::verify(presented, path, op, username, &r.access_token, expiration, now).is_ok()
            })
            .map(|r| SandboxRoute {
                id: r.id.clone(),
                agent_ip: r.agent_ip,
                access_token: r.access_token.clone(),
                traffic_access_token: r.traffic_access_token.clone(),
                cut: self.traffic_watch(&r.id),
            })
    }

    /// Agent address of a running sandbox (for in-process clients such as `firkin bench`).
    pub fn agent_address(&self, id: &SandboxId) -> Option<Ipv4Addr> {
        self.agent_ip(id)
    }
}
