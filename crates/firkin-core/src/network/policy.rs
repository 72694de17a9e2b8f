//! A sandbox's egress policy (E2B `allow_internet_access`, `network.allowOut`/`denyOut`):
//! parsing, and the decisions that do not need the kernel. Pure logic.
//!
//! Semantics, as E2B documents them: with no rules every destination is allowed; `denyOut`
//! blocks CIDRs or addresses; `allowOut` (CIDRs, addresses, domains, `*.domain`) wins over
//! `denyOut`; `allow_internet_access=false` is a deny of `0.0.0.0/0`. Domains hold through DNS:
//! the addresses a sandbox resolves for an allowed name are opened for that sandbox.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Most rules a policy may hold (allow and deny together): each becomes a set element.
pub const MAX_RULES: usize = 1000;

/// An IPv4 network (`a.b.c.d/len`; an address alone is a /32).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cidr {
    addr: Ipv4Addr,
    len: u8,
}

impl Cidr {
    /// The network `addr/len` with host bits cleared.
    pub fn new(addr: Ipv4Addr, len: u8) -> Cidr {
        let len = len.min(32);
        let mask = if len == 0 { 0 } else { u32::MAX << (32 - u32::from(len)) };
        Cidr { addr: Ipv4Addr::from(u32::from(addr) & mask), len }
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        Cidr::new(ip, self.len).addr == self.addr
    }

    /// `0.0.0.0/0`.
    pub fn is_everything(&self) -> bool {
        self.len == 0
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.len == 32 {
            write!(f, "{}", self.addr)
        } else {
            write!(f, "{}/{}", self.addr, self.len)
        }
    }
}

impl FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Cidr, String> {
        let (addr, len) = match s.split_once('/') {
            Some((a, l)) => (a, l.parse::<u8>().ok().filter(|l| *l <= 32).ok_or("bad prefix length")?),
            None => (s, 32),
        };
        let addr = Ipv4Addr::from_str(addr).map_err(|_| "not an IPv4 address")?;
        Ok(Cidr::new(addr, len))
    }
}

/// A domain rule: `example.com` (that name) or `*.example.com` (any name under it).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DomainRule {
    /// Lower case, no trailing dot, without the `*.`.
    name: String,
    wildcard: bool,
}

impl DomainRule {
    /// Whether `qname` (any case, trailing dot allowed) is covered by this rule.
    pub fn matches(&self, qname: &str) -> bool {
        let q = qname.trim_end_matches('.').to_ascii_lowercase();
        if self.wildcard {
            q.len() > self.name.len()
                && q.ends_with(&self.name)
                && q[..q.len() - self.name.len()].ends_with('.')
        } else {
            q == self.name
        }
    }

    fn parse(s: &str) -> Option<DomainRule> {
        let (wildcard, rest) = match s.strip_prefix("*.") {
            Some(r) => (true, r),
            None => (false, s),
        };
        let name = rest.trim_end_matches('.').to_ascii_lowercase();
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        let valid = name.len() <= 253 && name.contains('.') && name.split('.').all(label_ok);
        // A dotted quad is an address, not a name; all-numeric last labels are not TLDs.
        let numeric_tld = name.rsplit('.').next().is_some_and(|t| t.bytes().all(|b| b.is_ascii_digit()));
        (valid && !numeric_tld).then_some(DomainRule { name, wildcard })
    }
}

impl fmt::Display for DomainRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.wildcard {
            write!(f, "*.{}", self.name)
        } else {
            f.write_str(&self.name)
        }
    }
}

/// Why a policy was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("{field}: {entry:?} is not an IPv4 address, CIDR or domain name")]
    Unparsable { field: &'static str, entry: String },
    #[error("denyOut: {0:?} is a domain; denyOut takes IPv4 addresses and CIDRs only")]
    DomainInDeny(String),
    #[error("{field}: IPv6 ({entry:?}) is not supported; sandboxes have IPv4 networking only")]
    Ipv6 { field: &'static str, entry: String },
    #[error("network policy: at most {MAX_RULES} allowOut and denyOut entries in total")]
    TooMany,
}

/// One sandbox's egress policy, as persisted in its record and its snapshots.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EgressPolicy {
    /// `allow_internet_access=false`: no egress unless `allow_out` names it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_internet: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty", with = "as_strings")]
    pub allow_cidrs: Vec<Cidr>,
    #[serde(default, skip_serializing_if = "Vec::is_empty", with = "as_strings")]
    pub allow_domains: Vec<DomainRule>,
    #[serde(default, skip_serializing_if = "Vec::is_empty", with = "as_strings")]
    pub deny_cidrs: Vec<Cidr>,
}

impl EgressPolicy {
    /// Builds a policy from E2B's fields. `allow_internet_access: Some(false)` denies
    /// everything not allowed; `Some(true)`/`None` adds nothing.
    pub fn from_e2b(
        allow_internet_access: Option<bool>,
        allow_out: &[String],
        deny_out: &[String],
    ) -> Result<EgressPolicy, PolicyError> {
        if allow_out.len() + deny_out.len() > MAX_RULES {
            return Err(PolicyError::TooMany);
        }
        let mut p = EgressPolicy { no_internet: allow_internet_access == Some(false), ..Default::default() };
        for entry in allow_out {
            match parse_entry("allowOut", entry)? {
                Entry::Cidr(c) => p.allow_cidrs.push(c),
                Entry::Domain(d) => p.allow_domains.push(d),
            }
        }
        for entry in deny_out {
            match parse_entry("denyOut", entry)? {
                Entry::Cidr(c) if c.is_everything() => p.no_internet = true,
                Entry::Cidr(c) => p.deny_cidrs.push(c),
                Entry::Domain(_) => return Err(PolicyError::DomainInDeny(entry.clone())),
            }
        }
        p.allow_cidrs.sort();
        p.allow_cidrs.dedup();
        p.allow_domains.sort();
        p.allow_domains.dedup();
        p.deny_cidrs.sort();
        p.deny_cidrs.dedup();
        Ok(p)
    }

    /// No rule at all: every (public) destination is allowed and nothing per-sandbox is needed.
    pub fn is_open(&self) -> bool {
        *self == EgressPolicy::default()
    }

    /// Whether a name may be resolved: always, unless egress is closed by default and no
    /// domain rule covers it (then a lookup would only be a way to leak data out).
    pub fn may_resolve(&self, qname: &str) -> bool {
        !self.no_internet || self.allows_domain(qname)
    }

    /// Whether resolved addresses of `qname` are to be opened for this sandbox.
    pub fn allows_domain(&self, qname: &str) -> bool {
        self.allow_domains.iter().any(|d| d.matches(qname))
    }

    /// E2B's `allowOut`, as strings (addresses and CIDRs first, then domains).
    pub fn allow_out(&self) -> Vec<String> {
        let cidrs = self.allow_cidrs.iter().map(ToString::to_string);
        cidrs.chain(self.allow_domains.iter().map(ToString::to_string)).collect()
    }

    /// E2B's `denyOut`, as strings (`0.0.0.0/0` when internet access is off).
    pub fn deny_out(&self) -> Vec<String> {
        let all = self.no_internet.then(|| "0.0.0.0/0".to_owned());
        all.into_iter().chain(self.deny_cidrs.iter().map(ToString::to_string)).collect()
    }
}

enum Entry {
    Cidr(Cidr),
    Domain(DomainRule),
}

fn parse_entry(field: &'static str, entry: &str) -> Result<Entry, PolicyError> {
    let e = entry.trim();
    if e.contains(':') {
        return Err(PolicyError::Ipv6 { field, entry: entry.to_owned() });
    }
    if let Ok(c) = e.parse::<Cidr>() {
        return Ok(Entry::Cidr(c));
    }
    DomainRule::parse(e)
        .map(Entry::Domain)
        .ok_or_else(|| PolicyError::Unparsable { field, entry: entry.to_owned() })
}

/// Serialises a list of rules as their text forms (the record stays readable and E2B-shaped).
mod as_strings {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer, T: std::fmt::Display>(v: &[T], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(ToString::to_string))
    }

    pub fn deserialize<'de, D: Deserializer<'de>, T: super::FromText>(d: D) -> Result<Vec<T>, D::Error> {
        Vec::<String>::deserialize(d)?
            .iter()
            .map(|s| T::from_text(s).ok_or_else(|| serde::de::Error::custom(format!("bad rule {s:?}"))))
            .collect()
    }
}

/// Reading a persisted rule back.
trait FromText: Sized {
    fn from_text(s: &str) -> Option<Self>;
}

impl FromText for Cidr {
    fn from_text(s: &str) -> Option<Self> {
        s.parse().ok()
    }
}

impl FromText for DomainRule {
    fn from_text(s: &str) -> Option<Self> {
        DomainRule::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn parses_addresses_cidrs_and_domains() {
        let p = EgressPolicy::from_e2b(
            None,
            &strings(&["198.18.0.10", "198.18.1.7/24", "Web.Example.Test.", "*.wild.example.test"]),
            &strings(&["198.18.0.0/15"]),
        )
        .unwrap();
        assert_eq!(
            p.allow_out(),
            ["198.18.0.10", "198.18.1.0/24", "web.example.test", "*.wild.example.test"]
        );
        assert_eq!(p.deny_out(), ["198.18.0.0/15"]);
        assert!(!p.no_internet);
        assert!(!p.is_open());
        assert!(EgressPolicy::from_e2b(Some(true), &[], &[]).unwrap().is_open());
    }

    #[test]
    fn no_internet_is_a_deny_of_everything() {
        let a = EgressPolicy::from_e2b(Some(false), &[], &[]).unwrap();
        let b = EgressPolicy::from_e2b(None, &[], &strings(&["0.0.0.0/0"])).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.deny_out(), ["0.0.0.0/0"]);
        assert!(!a.may_resolve("web.example.test"));
    }

    #[test]
    fn refuses_what_it_cannot_honour() {
        let deny_domain = EgressPolicy::from_e2b(None, &[], &strings(&["example.com"]));
        assert_eq!(deny_domain, Err(PolicyError::DomainInDeny("example.com".into())));
        assert!(matches!(
            EgressPolicy::from_e2b(None, &strings(&["::1"]), &[]),
            Err(PolicyError::Ipv6 { field: "allowOut", .. })
        ));
        for bad in ["", "not a name", "1.2.3.4/33", "300.1.1.1", "localhost", "-a.example.com", "1.2.3"] {
            assert!(
                matches!(
                    EgressPolicy::from_e2b(None, &strings(&[bad]), &[]),
                    Err(PolicyError::Unparsable { .. })
                ),
                "{bad:?} was accepted"
            );
        }
        let many = vec!["1.1.1.1".to_owned(); MAX_RULES + 1];
        assert_eq!(EgressPolicy::from_e2b(None, &many, &[]), Err(PolicyError::TooMany));
    }

    #[test]
    fn domain_rules_match_names() {
        let exact = DomainRule::parse("example.test").unwrap();
        assert!(exact.matches("EXAMPLE.test."));
        assert!(!exact.matches("a.example.test"));
        let wild = DomainRule::parse("*.example.test").unwrap();
        assert!(wild.matches("a.example.test"));
        assert!(wild.matches("a.b.example.test"));
        assert!(!wild.matches("example.test"));
        assert!(!wild.matches("badexample.test"));
    }

    #[test]
    fn resolving_is_limited_only_when_egress_is_closed() {
        let closed = EgressPolicy::from_e2b(Some(false), &strings(&["*.example.test"]), &[]).unwrap();
        assert!(closed.may_resolve("web.example.test"));
        assert!(!closed.may_resolve("other.test"));
        let open_but_denied = EgressPolicy::from_e2b(None, &[], &strings(&["198.18.0.11"])).unwrap();
        assert!(open_but_denied.may_resolve("anything.test"));
    }

    #[test]
    fn cidrs_contain_and_round_trip_through_json() {
        let c: Cidr = "10.1.2.3/8".parse().unwrap();
        assert_eq!(c.to_string(), "10.0.0.0/8");
        assert!(c.contains(Ipv4Addr::new(10, 200, 0, 1)));
        assert!(!c.contains(Ipv4Addr::new(11, 0, 0, 1)));
        let p = EgressPolicy::from_e2b(Some(false), &strings(&["198.18.0.10", "*.a.test"]), &[]).unwrap();
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(serde_json::from_str::<EgressPolicy>(&json).unwrap(), p);
        assert_eq!(serde_json::to_string(&EgressPolicy::default()).unwrap(), "{}");
    }
}
