//! The claim guard: everything one sandbox holds while it is being started, before it is
//! committed into its record — its capacity reservation, its network slot, the engine sandbox
//! and namespace once their start has begun, and a `Creating` record. A claim that is not
//! committed releases all of it, so the steps of create, warm refill, resume, checkpoint probes
//! and re-adoption fail with a plain `?`; nothing is released by hand in an error arm.
//!
//! Two ways to give a claim up: [`Claim::or_release`] at the end of an operation's fallible
//! part releases and waits for the teardown before the error is returned (the caller sees a
//! failure only when nothing is held any more); dropping the claim (a warm entry leaving the
//! pool, a probe sandbox, a cancelled request) releases the same things, the engine teardown in
//! a background task that shutdown waits for. Either way the slot and the reservation go back
//! only after the engine side is gone, so neither is handed out while the old namespace exists.

use std::time::Duration;

use super::error::{CleanupError, Operation};
use super::{Runtime, RuntimeError};
use crate::admission::ledger::ReservationId;
use crate::admission::{Class, Resources};
use crate::ids::SandboxId;
use crate::network::NetworkError;

/// What a committed claim handed over to the sandbox's record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Held {
    pub slot: u32,
    pub reservation: Option<ReservationId>,
}

/// What one starting sandbox holds; released on drop unless committed.
pub(super) struct Claim {
    h: Holdings,
    committed: bool,
}

/// The holdings of a claim, and what releasing them needs.
#[derive(Clone)]
struct Holdings {
    rt: Runtime,
    id: SandboxId,
    op: Operation,
    slot: u32,
    reservation: Option<ReservationId>,
    /// The engine sandbox and its namespace may exist: tear them down before releasing.
    engine: bool,
    /// A `Creating` record of this sandbox is in the table (and perhaps on disk): remove it.
    record: bool,
    /// The sandbox id outlives this claim (a resume): the teardown holds the sandbox's engine
    /// lock, so the next resume of it waits until the old namespace is gone.
    shared_id: bool,
}

impl Claim {
    /// Reserves `want` for active work (waiting in the admission queue for at most the
    /// configured time, evicting warm entries first) and takes a network slot.
    pub async fn active(
        rt: &Runtime,
        id: &SandboxId,
        op: Operation,
        want: Resources,
    ) -> Result<Claim, RuntimeError> {
        let grant = rt.inner.admission.reserve(want, Class::Active, rt.inner.config.admission_wait).await?;
        rt.discard_evicted(&grant.evicted);
        let Some(slot) = rt.slots().take() else {
            release_reservation(rt, id, op, grant.id);
            return Err(slots_exhausted(id, op));
        };
        Ok(Claim::holding(rt, id, op, slot, Some(grant.id)))
    }

    /// A warm-pool entry's claim: capacity only if it is free now (a refill never waits for or
    /// displaces anything), and a slot. `None` when either is not available.
    pub fn warm(rt: &Runtime, id: &SandboxId, want: Resources) -> Option<Claim> {
        let reservation = rt.inner.admission.try_reserve_now(want, Class::Warm)?;
        let Some(slot) = rt.slots().take() else {
            release_reservation(rt, id, Operation::WarmRefill, reservation);
            return None;
        };
        Some(Claim::holding(rt, id, Operation::WarmRefill, slot, Some(reservation)))
    }

    /// Only a network slot: checkpoint probes run under their source sandbox's capacity.
    pub fn slot_only(rt: &Runtime, id: &SandboxId, op: Operation) -> Option<Claim> {
        let slot = rt.slots().take()?;
        Some(Claim::holding(rt, id, op, slot, None))
    }

    /// Re-claims what a sandbox left running by an earlier server holds: its recorded slot and
    /// the capacity it needs now. A failed claim gives the slot back; removing the sandbox's
    /// engine side is reconciliation's.
    pub async fn readopt(
        rt: &Runtime,
        id: &SandboxId,
        slot: u32,
        want: Resources,
    ) -> Result<Claim, ReadoptError> {
        if !rt.slots().claim(slot) {
            return Err(ReadoptError::SlotTaken(slot));
        }
        let mut claim = Claim::holding(rt, id, Operation::Readopt, slot, None);
        let grant = rt.inner.admission.reserve(want, Class::Active, Duration::ZERO).await;
        claim.h.reservation = Some(grant.map_err(ReadoptError::Capacity)?.id);
        Ok(claim)
    }

    fn holding(
        rt: &Runtime,
        id: &SandboxId,
        op: Operation,
        slot: u32,
        reservation: Option<ReservationId>,
    ) -> Claim {
        let h = Holdings {
            rt: rt.clone(),
            id: id.clone(),
            op,
            slot,
            reservation,
            engine: false,
            record: false,
            shared_id: false,
        };
        Claim { h, committed: false }
    }

    /// The claim is for an existing sandbox (resume): see `shared_id`.
    pub fn for_existing_sandbox(mut self) -> Claim {
        self.h.shared_id = true;
        self
    }

    /// The same holdings, now for another operation (a warm entry checked out by a create).
    pub fn now_for(mut self, op: Operation) -> Claim {
        self.h.op = op;
        self
    }

    pub fn id(&self) -> &SandboxId {
        &self.h.id
    }

    pub fn op(&self) -> Operation {
        self.h.op
    }

    pub fn slot(&self) -> u32 {
        self.h.slot
    }

    pub fn reservation(&self) -> Option<ReservationId> {
        self.h.reservation
    }

    /// The engine side is about to be started: from now on a release tears it down.
    pub fn engine_starting(&mut self) {
        self.h.engine = true;
    }

    /// A `Creating` record was put into the table: a release removes it (and its file).
    pub fn recorded(&mut self) {
        self.h.record = true;
    }

    /// The ledger evicted the reservation for active work: there is nothing left to release.
    pub fn reservation_evicted(&mut self) {
        self.h.reservation = None;
    }

    /// Hands everything over to the sandbox's record: nothing is released on drop.
    pub fn commit(mut self) -> Held {
        self.committed = true;
        self.held()
    }

    /// What the claim holds now (what its record will carry once committed).
    pub fn held(&self) -> Held {
        Held { slot: self.h.slot, reservation: self.h.reservation }
    }

    /// Like [`Claim::commit`], and releases `old`, the reservation this one replaces (a resumed
    /// sandbox's disk-only paused reservation).
    pub fn commit_replacing(self, old: Option<ReservationId>) -> Held {
        if let Some(old) = old {
            release_reservation(&self.h.rt, &self.h.id, self.h.op, old);
        }
        self.commit()
    }
}

impl Claim {
    /// Passes `result` through. On an error, first releases everything the claim holds and
    /// waits for the teardown, so the caller sees the error only once nothing is held any
    /// more; a failed cleanup is kept beside the error.
    pub async fn or_release<T>(&mut self, result: Result<T, RuntimeError>) -> Result<T, RuntimeError> {
        let error = match result {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        let Some(release) = self.disarm() else { return Err(error) };
        match release.run().await {
            Ok(()) => Err(error),
            Err(cleanup) => {
                Err(RuntimeError::WithCleanup { error: Box::new(error), cleanup: cleanup.to_string() })
            }
        }
    }

    /// What is left to release, once; the claim holds nothing afterwards.
    fn disarm(&mut self) -> Option<Holdings> {
        if std::mem::replace(&mut self.committed, true) {
            return None;
        }
        Some(self.h.clone())
    }
}

impl Holdings {
    /// Removes the record, tears the engine side down (under the sandbox's engine lock when the
    /// id outlives the claim), then returns the slot and the capacity.
    async fn run(self) -> Result<(), CleanupError> {
        let Holdings { rt, id, op, slot, reservation, engine, record, shared_id } = self;
        if record {
            rt.forget_record(&id);
        }
        let mut cleaned = Ok(());
        if engine {
            let lock = shared_id.then(|| rt.engine_lock(&id));
            let _guard = match &lock {
                Some(lock) => Some(lock.lock().await),
                None => None,
            };
            cleaned = rt.teardown(&id, Some(slot)).await;
        } else {
            rt.slots().release(slot);
        }
        if let Some(r) = reservation {
            release_reservation(&rt, &id, op, r);
        }
        cleaned
    }
}

impl Drop for Claim {
    /// The backstop for paths that give a claim up without [`Claim::or_release`] (a warm entry
    /// leaving the pool, a probe, a cancelled request): what needs no engine teardown is
    /// released at once, the rest in a tracked background task.
    fn drop(&mut self) {
        let Some(mut release) = self.disarm() else { return };
        // The record goes at once: the sandbox must not be seen while its teardown runs.
        if std::mem::take(&mut release.record) {
            release.rt.forget_record(&release.id);
        }
        if !release.engine {
            // Nothing in it awaits: run it to completion here.
            release_now(release);
            return;
        }
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(sandbox = %release.id, op = %release.op, "no async runtime to tear down; reconciliation will");
            return;
        };
        let rt = release.rt.clone();
        rt.track_teardown(handle.spawn(async move {
            // Already logged by the teardown, sandbox by sandbox.
            let _ = release.run().await;
        }));
    }
}

/// Runs a release that has no engine side (and no record left), without an async runtime.
fn release_now(release: Holdings) {
    let Holdings { rt, id, op, slot, reservation, .. } = release;
    rt.slots().release(slot);
    if let Some(r) = reservation {
        release_reservation(&rt, &id, op, r);
    }
}

/// Why a sandbox left running by an earlier server could not be re-claimed.
#[derive(Debug, thiserror::Error)]
pub(super) enum ReadoptError {
    #[error("its agent does not answer: {0}")]
    Silent(crate::agent_client::AgentError),
    #[error("its network slot {0} is taken")]
    SlotTaken(u32),
    #[error("no capacity for it: {0}")]
    Capacity(crate::admission::queue::AdmissionError),
}

/// Returns a reservation to the ledger; a failure (a double release) is a bug worth a log line,
/// never a reason to fail the operation.
fn release_reservation(rt: &Runtime, id: &SandboxId, op: Operation, r: ReservationId) {
    if let Err(e) = rt.inner.admission.release(r) {
        tracing::error!(sandbox = %id, %op, error = %e, "capacity release failed");
    }
}

fn slots_exhausted(id: &SandboxId, op: Operation) -> RuntimeError {
    RuntimeError::Network { op, id: id.to_string(), source: NetworkError::Exhausted(super::NET_SLOTS) }
}
