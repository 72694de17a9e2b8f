//! Address slots: slot `n` owns the /30 at `base + 4n` (host `.1`, sandbox `.2`).

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

/// Addresses of one slot.
pub fn slot_addrs(base: Ipv4Addr, slot: u32) -> (Ipv4Addr, Ipv4Addr) {
    let b = u32::from(base) + slot * 4;
    (Ipv4Addr::from(b + 1), Ipv4Addr::from(b + 2))
}

/// Hands out slots; pure logic.
#[derive(Debug)]
pub struct SlotAllocator {
    capacity: u32,
    used: BTreeSet<u32>,
    next: u32,
}

impl SlotAllocator {
    pub fn new(capacity: u32) -> SlotAllocator {
        SlotAllocator { capacity, used: BTreeSet::new(), next: 0 }
    }

    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    /// Takes a free slot, round-robin so a just-freed slot is not immediately reused.
    pub fn take(&mut self) -> Option<u32> {
        for i in 0..self.capacity {
            let s = (self.next + i) % self.capacity;
            if self.used.insert(s) {
                self.next = (s + 1) % self.capacity;
                return Some(s);
            }
        }
        None
    }

    /// Marks a slot used (when re-adopting). Returns false if it was already used.
    pub fn claim(&mut self, slot: u32) -> bool {
        slot < self.capacity && self.used.insert(slot)
    }

    pub fn release(&mut self, slot: u32) {
        self.used.remove(&slot);
    }

    pub fn in_use(&self) -> usize {
        self.used.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_disjoint_per_slot() {
        let base = Ipv4Addr::new(10, 210, 0, 0);
        assert_eq!(slot_addrs(base, 0), (Ipv4Addr::new(10, 210, 0, 1), Ipv4Addr::new(10, 210, 0, 2)));
        assert_eq!(slot_addrs(base, 64), (Ipv4Addr::new(10, 210, 1, 1), Ipv4Addr::new(10, 210, 1, 2)));
    }

    #[test]
    fn allocator_round_robins_and_exhausts() {
        let mut a = SlotAllocator::new(3);
        assert_eq!(a.take(), Some(0));
        assert_eq!(a.take(), Some(1));
        a.release(0);
        assert_eq!(a.take(), Some(2));
        assert_eq!(a.take(), Some(0));
        assert_eq!(a.take(), None);
        assert!(!a.claim(1));
        a.release(1);
        assert!(a.claim(1));
        assert_eq!(a.in_use(), 3);
    }
}
