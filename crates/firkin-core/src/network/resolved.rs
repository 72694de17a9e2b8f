//! Addresses opened for sandboxes by their domain rules, remembered per sandbox id so they can
//! be opened again wherever the sandbox runs next: after a resume (a new address and a new
//! set) or a server restart (a new table). Its processes may still hold those addresses from
//! an earlier lookup. Pure logic; the firewall applies it.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

/// Resolved addresses by sandbox id, each with the moment it closes.
#[derive(Debug, Default)]
pub struct Resolved {
    by_sandbox: BTreeMap<String, BTreeMap<Ipv4Addr, Instant>>,
}

impl Resolved {
    /// Notes that `addrs` are open for sandbox `id` for `secs` from `now` (a later deadline
    /// replaces an earlier one, never the reverse).
    pub fn record(&mut self, id: &str, addrs: &[Ipv4Addr], secs: u32, now: Instant) {
        self.prune(now);
        let until = now + Duration::from_secs(u64::from(secs));
        let open = self.by_sandbox.entry(id.to_owned()).or_default();
        for a in addrs {
            let t = open.entry(*a).or_insert(until);
            *t = (*t).max(until);
        }
    }

    /// The addresses still open for `id`, with the whole seconds left (at least 1).
    pub fn open_for(&mut self, id: &str, now: Instant) -> Vec<(Ipv4Addr, u32)> {
        self.prune(now);
        let left = |t: &Instant| u32::try_from(t.duration_since(now).as_secs().max(1)).unwrap_or(u32::MAX);
        self.by_sandbox.get(id).map(|m| m.iter().map(|(a, t)| (*a, left(t))).collect()).unwrap_or_default()
    }

    /// Drops what has closed (and sandboxes left with nothing).
    fn prune(&mut self, now: Instant) {
        self.by_sandbox.retain(|_, m| {
            m.retain(|_, t| *t > now);
            !m.is_empty()
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_latest_deadline_and_forgets_what_closed() {
        let t0 = Instant::now();
        let (a, b) = (Ipv4Addr::new(198, 18, 0, 10), Ipv4Addr::new(198, 18, 0, 11));
        let mut r = Resolved::default();
        r.record("s1", &[a], 300, t0);
        r.record("s1", &[a, b], 60, t0);
        assert_eq!(r.open_for("s1", t0), [(a, 300), (b, 60)]);
        assert_eq!(r.open_for("s1", t0 + Duration::from_secs(100)), [(a, 200)]);
        assert!(r.open_for("s2", t0).is_empty());
        assert!(r.open_for("s1", t0 + Duration::from_secs(301)).is_empty());
        assert!(r.by_sandbox.is_empty());
    }
}
