//! Async admission on top of the [`Ledger`]: admit, evict warm and admit, wait in a bounded queue
//! until capacity is released (bounded by the caller's deadline), or reject.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::ledger::{Decision, Ledger, LedgerError, ReservationId};
use super::{Class, Resource, Resources};

/// Why a request was not admitted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdmissionError {
    #[error("request needs more {resource} than this host has (requested {requested:?}, host capacity {capacity:?})")]
    TooLarge { resource: Resource, requested: Resources, capacity: Resources },
    #[error("admission queue is full ({max} requests already waiting for capacity)")]
    QueueFull { max: usize },
    #[error("no capacity became free within {waited:?} (requested {requested:?}, free {free:?})")]
    TimedOut { waited: Duration, requested: Resources, free: Resources },
}

impl AdmissionError {
    /// Stable reason label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            AdmissionError::TooLarge { .. } => "too_large",
            AdmissionError::QueueFull { .. } => "queue_full",
            AdmissionError::TimedOut { .. } => "timed_out",
        }
    }
}

/// A granted reservation, plus warm reservations evicted to make room (the caller destroys
/// those sandboxes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub id: ReservationId,
    pub evicted: Vec<ReservationId>,
}

/// Point-in-time view for gauges.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AdmissionStats {
    pub capacity: Resources,
    pub used: Resources,
    pub active: usize,
    pub warm: usize,
    pub paused: usize,
    pub waiting: usize,
    pub rejected: BTreeMap<&'static str, u64>,
}

struct State {
    ledger: Ledger,
    waiting: usize,
    rejected: BTreeMap<&'static str, u64>,
}

/// The admission controller.
pub struct Admission {
    state: Mutex<State>,
    released: Notify,
    max_waiting: usize,
}

impl Admission {
    pub fn new(capacity: Resources, max_waiting: usize) -> Admission {
        Admission {
            state: Mutex::new(State { ledger: Ledger::new(capacity), waiting: 0, rejected: BTreeMap::new() }),
            released: Notify::new(),
            max_waiting,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn reject(st: &mut State, e: AdmissionError) -> AdmissionError {
        *st.rejected.entry(e.reason()).or_insert(0) += 1;
        e
    }

    /// Reserves `req` for `class`, waiting at most `max_wait` for capacity.
    pub async fn reserve(
        &self,
        req: Resources,
        class: Class,
        max_wait: Duration,
    ) -> Result<Grant, AdmissionError> {
        let start = Instant::now();
        let mut queued = false;
        let result = loop {
            // Decide under the lock; wait (if needed) after it is released.
            let notified = self.released.notified();
            tokio::pin!(notified);
            let remaining = {
                let mut st = self.lock();
                match st.ledger.try_reserve(req, class) {
                    Decision::Admitted(id) => break Ok(Grant { id, evicted: Vec::new() }),
                    Decision::EvictWarm(victims) => {
                        for v in &victims {
                            let _ = st.ledger.release(*v);
                        }
                        match st.ledger.try_reserve(req, class) {
                            Decision::Admitted(id) => break Ok(Grant { id, evicted: victims }),
                            _ => continue,
                        }
                    }
                    Decision::TooLarge(resource) => {
                        let capacity = st.ledger.capacity();
                        break Err(Self::reject(
                            &mut st,
                            AdmissionError::TooLarge { resource, requested: req, capacity },
                        ));
                    }
                    Decision::Wait => {
                        if !queued {
                            if st.waiting >= self.max_waiting {
                                break Err(Self::reject(
                                    &mut st,
                                    AdmissionError::QueueFull { max: self.max_waiting },
                                ));
                            }
                            st.waiting += 1;
                            queued = true;
                        }
                        let remaining = max_wait.saturating_sub(start.elapsed());
                        if remaining.is_zero() {
                            let free = st.ledger.free();
                            break Err(Self::reject(
                                &mut st,
                                AdmissionError::TimedOut { waited: start.elapsed(), requested: req, free },
                            ));
                        }
                        // Register for the wake-up before unlocking so a release in between is not missed.
                        notified.as_mut().enable();
                        remaining
                    }
                }
            };
            let _ = tokio::time::timeout(remaining, notified).await;
        };
        if queued {
            self.lock().waiting -= 1;
        }
        result
    }

    /// Reserves `req` for `class` only if it fits now, evicting nothing (warm-pool refills:
    /// they never wait and never displace anything).
    pub fn try_reserve_now(&self, req: Resources, class: Class) -> Option<ReservationId> {
        match self.lock().ledger.try_reserve(req, class) {
            Decision::Admitted(id) => Some(id),
            _ => None,
        }
    }

    /// Returns a reservation's capacity and wakes waiters. A second release is an error.
    pub fn release(&self, id: ReservationId) -> Result<Resources, LedgerError> {
        let r = self.lock().ledger.release(id);
        if r.is_ok() {
            self.released.notify_waiters();
        }
        r
    }

    /// Re-labels a reservation (warm → active, active → paused). Wakes waiters when it shrinks.
    pub fn reclassify(&self, id: ReservationId, class: Class, req: Resources) -> Result<(), LedgerError> {
        self.lock().ledger.reclassify(id, class, req)?;
        self.released.notify_waiters();
        Ok(())
    }

    pub fn stats(&self) -> AdmissionStats {
        let st = self.lock();
        AdmissionStats {
            capacity: st.ledger.capacity(),
            used: st.ledger.used(),
            active: st.ledger.count(Class::Active),
            warm: st.ledger.count(Class::Warm),
            paused: st.ledger.count(Class::Paused),
            waiting: st.waiting,
            rejected: st.rejected.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn sbx() -> Resources {
        Resources::new(1, 100, 10)
    }

    #[tokio::test]
    async fn release_wakes_a_waiter() {
        let adm = Arc::new(Admission::new(Resources::new(1, 1000, 1000), 4));
        let first = adm.reserve(sbx(), Class::Active, Duration::ZERO).await.unwrap();
        let a2 = Arc::clone(&adm);
        let waiter =
            tokio::spawn(async move { a2.reserve(sbx(), Class::Active, Duration::from_secs(5)).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(adm.stats().waiting, 1);
        adm.release(first.id).unwrap();
        let second = waiter.await.unwrap().unwrap();
        assert_ne!(second.id, first.id);
        assert_eq!(adm.stats().waiting, 0);
        assert!(adm.release(first.id).is_err(), "no double release");
    }

    #[tokio::test]
    async fn full_queue_and_timeouts_reject_cleanly() {
        let adm = Arc::new(Admission::new(Resources::new(1, 1000, 1000), 1));
        let _held = adm.reserve(sbx(), Class::Active, Duration::ZERO).await.unwrap();
        let a2 = Arc::clone(&adm);
        let waiter =
            tokio::spawn(async move { a2.reserve(sbx(), Class::Active, Duration::from_millis(300)).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        let full = adm.reserve(sbx(), Class::Active, Duration::from_secs(5)).await.unwrap_err();
        assert_eq!(full, AdmissionError::QueueFull { max: 1 });
        let timed_out = waiter.await.unwrap().unwrap_err();
        assert!(matches!(timed_out, AdmissionError::TimedOut { .. }));
        let big =
            adm.reserve(Resources::new(2, 1, 1), Class::Active, Duration::from_secs(5)).await.unwrap_err();
        assert!(matches!(big, AdmissionError::TooLarge { resource: Resource::Cpu, .. }));
        let stats = adm.stats();
        assert_eq!(stats.rejected.get("queue_full"), Some(&1));
        assert_eq!(stats.rejected.get("timed_out"), Some(&1));
        assert_eq!(stats.rejected.get("too_large"), Some(&1));
        assert_eq!(stats.waiting, 0);
    }

    #[tokio::test]
    async fn active_request_evicts_warm_instead_of_waiting() {
        let adm = Admission::new(Resources::new(1, 1000, 1000), 4);
        let warm = adm.reserve(sbx(), Class::Warm, Duration::ZERO).await.unwrap();
        let active = adm.reserve(sbx(), Class::Active, Duration::ZERO).await.unwrap();
        assert_eq!(active.evicted, vec![warm.id]);
        assert!(adm.release(warm.id).is_err(), "evicted reservation is already released");
        adm.release(active.id).unwrap();
        assert_eq!(adm.stats().used, Resources::default());
    }
}
