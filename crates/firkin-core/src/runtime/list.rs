//! Listing: filters and cursor pagination over the sandbox table. Pure logic.

use std::collections::BTreeMap;

use super::Runtime;
use crate::lifecycle::SandboxState;
use crate::record::SandboxRecord;

/// A list request. Empty filters match everything.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    /// Every pair must match exactly.
    pub metadata: BTreeMap<String, String>,
    /// E2B state names (`running`, `paused`); empty means both.
    pub states: Vec<String>,
    pub template: Option<String>,
    /// Page size; `None` means all.
    pub limit: Option<usize>,
    /// Opaque cursor from a previous page.
    pub cursor: Option<String>,
    /// Oldest first instead of newest first.
    pub ascending: bool,
    /// Only sandboxes started at or after this time.
    pub started_after: Option<time::OffsetDateTime>,
    /// Only sandboxes started at or before this time.
    pub started_before: Option<time::OffsetDateTime>,
}

/// One page of results.
#[derive(Debug, Clone)]
pub struct Page {
    pub items: Vec<SandboxRecord>,
    /// Present when more items follow.
    pub next_cursor: Option<String>,
}

fn sort_key(r: &SandboxRecord) -> (i128, String) {
    (r.started_at.unix_timestamp_nanos(), r.id.to_string())
}

fn cursor_of(r: &SandboxRecord) -> String {
    let (t, id) = sort_key(r);
    format!("{t}.{id}")
}

fn parse_cursor(c: &str) -> Option<(i128, String)> {
    let (t, id) = c.split_once('.')?;
    Some((t.parse().ok()?, id.to_owned()))
}

/// Applies `q` to `records`.
pub fn paginate(records: Vec<SandboxRecord>, q: &ListQuery) -> Page {
    let mut items: Vec<SandboxRecord> = records
        .into_iter()
        .filter(|r| {
            let Some(name) = r.state.e2b_name().filter(|_| !r.internal) else {
                return false;
            };
            (q.states.is_empty() || q.states.iter().any(|s| s == name))
                && q.template.as_ref().is_none_or(|t| &r.template_id == t)
                && q.metadata.iter().all(|(k, v)| r.metadata.get(k) == Some(v))
                && q.started_after.is_none_or(|t| r.started_at >= t)
                && q.started_before.is_none_or(|t| r.started_at <= t)
        })
        .collect();
    items.sort_by_key(sort_key);
    if !q.ascending {
        items.reverse();
    }
    if let Some(cursor) = q.cursor.as_deref().and_then(parse_cursor) {
        items.retain(|r| if q.ascending { sort_key(r) > cursor } else { sort_key(r) < cursor });
    }
    let mut next_cursor = None;
    if let Some(limit) = q.limit.filter(|l| *l > 0) {
        if items.len() > limit {
            items.truncate(limit);
            next_cursor = items.last().map(cursor_of);
        }
    }
    Page { items, next_cursor }
}

impl Runtime {
    pub fn list(&self, q: &ListQuery) -> Page {
        let records: Vec<SandboxRecord> = self.table().values().cloned().collect();
        paginate(records, q)
    }

    /// Counts by state, for gauges.
    pub fn count_by_state(&self) -> BTreeMap<SandboxState, usize> {
        let mut m = BTreeMap::new();
        for r in self.table().values() {
            *m.entry(r.state).or_insert(0) += 1;
        }
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::SandboxId;
    use crate::record::{OnTimeout, RECORD_FORMAT};
    use time::OffsetDateTime;

    fn rec(id: &str, secs: i64, state: SandboxState, meta: &[(&str, &str)]) -> SandboxRecord {
        let t = OffsetDateTime::from_unix_timestamp(1_700_000_000 + secs).unwrap();
        SandboxRecord {
            format: RECORD_FORMAT,
            id: SandboxId::parse(id).unwrap(),
            template_id: "base".into(),
            state,
            metadata: meta.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            env_vars: BTreeMap::new(),
            started_at: t,
            end_at: t,
            cpu_count: 1,
            memory_mb: 128,
            disk_size_mb: 1,
            access_token: "t".into(),
            traffic_access_token: None,
            egress: Default::default(),
            on_timeout: OnTimeout::Kill,
            net_slot: Some(0),
            agent_ip: std::net::Ipv4Addr::LOCALHOST,
            rootfs: "base-v1".into(),
            workdir: None,
            internal: false,
            start_ended: false,
            auto_resume: false,
            reservation: None,
        }
    }

    fn ids(p: &Page) -> Vec<String> {
        p.items.iter().map(|r| r.id.to_string()).collect()
    }

    #[test]
    fn newest_first_and_hides_creating() {
        let recs = vec![
            rec("a", 1, SandboxState::Running, &[]),
            rec("b", 2, SandboxState::Paused, &[]),
            rec("c", 3, SandboxState::Creating, &[]),
        ];
        assert_eq!(ids(&paginate(recs, &ListQuery::default())), vec!["b", "a"]);
    }

    #[test]
    fn filters_by_metadata_and_state() {
        let recs = vec![
            rec("a", 1, SandboxState::Running, &[("k", "v")]),
            rec("b", 2, SandboxState::Running, &[("k", "w")]),
            rec("c", 3, SandboxState::Paused, &[("k", "v")]),
        ];
        let q = ListQuery { metadata: [("k".into(), "v".into())].into(), ..Default::default() };
        assert_eq!(ids(&paginate(recs.clone(), &q)), vec!["c", "a"]);
        let q = ListQuery { states: vec!["running".into()], ..q };
        assert_eq!(ids(&paginate(recs, &q)), vec!["a"]);
    }

    #[test]
    fn filters_by_start_time_inclusively() {
        let recs: Vec<_> = (1..=4).map(|i| rec(&format!("s{i}"), i, SandboxState::Running, &[])).collect();
        let at = |secs: i64| Some(OffsetDateTime::from_unix_timestamp(1_700_000_000 + secs).unwrap());
        let q = ListQuery { started_after: at(2), ..Default::default() };
        assert_eq!(ids(&paginate(recs.clone(), &q)), vec!["s4", "s3", "s2"]);
        let q = ListQuery { started_before: at(3), ..q };
        assert_eq!(ids(&paginate(recs, &q)), vec!["s3", "s2"]);
    }

    #[test]
    fn cursor_pagination_visits_everything_once() {
        let recs: Vec<_> = (0..5).map(|i| rec(&format!("s{i}"), i, SandboxState::Running, &[])).collect();
        let mut q = ListQuery { limit: Some(2), ..Default::default() };
        let mut seen = Vec::new();
        loop {
            let page = paginate(recs.clone(), &q);
            seen.extend(ids(&page));
            match page.next_cursor {
                Some(c) => q.cursor = Some(c),
                None => break,
            }
        }
        assert_eq!(seen, vec!["s4", "s3", "s2", "s1", "s0"]);
    }
}
