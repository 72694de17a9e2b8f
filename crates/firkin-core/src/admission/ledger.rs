//! The capacity ledger: pure bookkeeping with typed errors. No I/O, no clocks.

use std::collections::BTreeMap;

use super::{Class, Resource, Resources};

/// Identifies one reservation in this server's ledger (not meaningful across restarts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReservationId(u64);

impl std::fmt::Display for ReservationId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// Outcome of asking for capacity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Reserved.
    Admitted(ReservationId),
    /// Fits once these warm reservations are evicted (the caller evicts, then retries).
    EvictWarm(Vec<ReservationId>),
    /// Fits after active/paused work ends: wait.
    Wait,
    /// Can never fit on this host.
    TooLarge(Resource),
}

/// Ledger misuse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LedgerError {
    #[error("capacity ledger: release of unknown reservation {0} (double release?)")]
    UnknownReservation(ReservationId),
}

#[derive(Debug, Clone)]
struct Entry {
    class: Class,
    amount: Resources,
}

/// Host capacity and who holds what.
#[derive(Debug, Clone)]
pub struct Ledger {
    capacity: Resources,
    entries: BTreeMap<ReservationId, Entry>,
    next: ReservationId,
}

impl Ledger {
    pub fn new(capacity: Resources) -> Ledger {
        Ledger { capacity, entries: BTreeMap::new(), next: ReservationId(1) }
    }

    pub fn capacity(&self) -> Resources {
        self.capacity
    }

    /// What a reservation of `class` actually holds of `req`.
    fn charge(class: Class, req: Resources) -> Resources {
        match class {
            Class::Active | Class::Warm => req,
            Class::Paused => Resources { milli_cpu: 0, memory_mb: 0, disk_mb: req.disk_mb },
        }
    }

    pub fn used(&self) -> Resources {
        self.entries.values().fold(Resources::default(), |acc, e| acc.add(&e.amount))
    }

    pub fn used_by(&self, class: Class) -> Resources {
        self.entries
            .values()
            .filter(|e| e.class == class)
            .fold(Resources::default(), |acc, e| acc.add(&e.amount))
    }

    pub fn count(&self, class: Class) -> usize {
        self.entries.values().filter(|e| e.class == class).count()
    }

    pub fn free(&self) -> Resources {
        self.capacity.saturating_sub(&self.used())
    }

    /// Decides on `req` for `class`. Only `Admitted` changes the ledger.
    pub fn try_reserve(&mut self, req: Resources, class: Class) -> Decision {
        let amount = Self::charge(class, req);
        if let Some(r) = amount.first_excess(&self.capacity) {
            return Decision::TooLarge(r);
        }
        if amount.fits_in(&self.free()) {
            let id = self.next;
            self.next = ReservationId(id.0 + 1);
            self.entries.insert(id, Entry { class, amount });
            return Decision::Admitted(id);
        }
        if class == Class::Active {
            // Active work wins: would evicting warm entries (oldest first) make room?
            let mut freed = self.free();
            let mut victims = Vec::new();
            for (id, e) in self.entries.iter().filter(|(_, e)| e.class == Class::Warm) {
                freed = freed.add(&e.amount);
                victims.push(*id);
                if amount.fits_in(&freed) {
                    return Decision::EvictWarm(victims);
                }
            }
        }
        Decision::Wait
    }

    /// Returns a reservation's capacity. Releasing twice is an error, never a double credit.
    pub fn release(&mut self, id: ReservationId) -> Result<Resources, LedgerError> {
        self.entries.remove(&id).map(|e| e.amount).ok_or(LedgerError::UnknownReservation(id))
    }

    /// Re-labels a reservation (warm → active on checkout; active → paused on pause). Moving to
    /// a class that holds more (paused → active) is not a promotion: reserve anew.
    pub fn reclassify(&mut self, id: ReservationId, class: Class, req: Resources) -> Result<(), LedgerError> {
        let e = self.entries.get_mut(&id).ok_or(LedgerError::UnknownReservation(id))?;
        e.class = class;
        e.amount = Self::charge(class, req);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host() -> Ledger {
        Ledger::new(Resources::new(4, 4096, 10_000))
    }

    fn sbx() -> Resources {
        Resources::new(2, 1024, 1000)
    }

    #[test]
    fn admits_until_full_then_waits() {
        let mut l = host();
        assert!(matches!(l.try_reserve(sbx(), Class::Active), Decision::Admitted(_)));
        assert!(matches!(l.try_reserve(sbx(), Class::Active), Decision::Admitted(_)));
        assert_eq!(l.try_reserve(sbx(), Class::Active), Decision::Wait);
        assert_eq!(l.free().milli_cpu, 0);
    }

    #[test]
    fn too_large_names_the_resource() {
        let mut l = host();
        assert_eq!(l.try_reserve(Resources::new(8, 1, 1), Class::Active), Decision::TooLarge(Resource::Cpu));
        assert_eq!(
            l.try_reserve(Resources::new(1, 9000, 1), Class::Active),
            Decision::TooLarge(Resource::Memory)
        );
        assert_eq!(
            l.try_reserve(Resources::new(1, 1, 20_000), Class::Active),
            Decision::TooLarge(Resource::Disk)
        );
        assert_eq!(l.used(), Resources::default());
    }

    #[test]
    fn warm_entries_are_evicted_before_active_waits() {
        let mut l = host();
        let Decision::Admitted(w1) = l.try_reserve(sbx(), Class::Warm) else { panic!() };
        let Decision::Admitted(_a) = l.try_reserve(sbx(), Class::Active) else { panic!() };
        assert_eq!(l.try_reserve(sbx(), Class::Active), Decision::EvictWarm(vec![w1]));
        // A warm refill never evicts anything.
        assert_eq!(l.try_reserve(sbx(), Class::Warm), Decision::Wait);
        l.release(w1).unwrap();
        assert!(matches!(l.try_reserve(sbx(), Class::Active), Decision::Admitted(_)));
    }

    #[test]
    fn release_is_exactly_once() {
        let mut l = host();
        let Decision::Admitted(id) = l.try_reserve(sbx(), Class::Active) else { panic!() };
        assert_eq!(l.release(id), Ok(sbx()));
        assert_eq!(l.release(id), Err(LedgerError::UnknownReservation(id)));
        assert_eq!(l.used(), Resources::default());
    }

    #[test]
    fn paused_holds_disk_only_and_checkout_promotes() {
        let mut l = host();
        let Decision::Admitted(id) = l.try_reserve(sbx(), Class::Active) else { panic!() };
        l.reclassify(id, Class::Paused, sbx()).unwrap();
        assert_eq!(l.used(), Resources { milli_cpu: 0, memory_mb: 0, disk_mb: 1000 });
        let Decision::Admitted(w) = l.try_reserve(sbx(), Class::Warm) else { panic!() };
        l.reclassify(w, Class::Active, sbx()).unwrap();
        assert_eq!(l.count(Class::Active), 1);
        assert_eq!(l.count(Class::Warm), 0);
    }
}
