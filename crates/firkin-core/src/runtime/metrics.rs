//! Sandbox metrics (E2B `get_metrics(start, end)`): each running sandbox is measured every
//! [`SAMPLE_EVERY`] and on request, and a bounded history per sandbox answers time ranges. A
//! range before the sandbox existed is empty, as in E2B. The history goes with the sandbox.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use time::OffsetDateTime;

use super::{Runtime, RuntimeError};
use crate::agent_client::AgentMetrics;
use crate::ids::SandboxId;
use crate::lifecycle::SandboxState;
use crate::record::SandboxRecord;

/// How often running sandboxes are measured in the background.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(5);
/// Samples kept per sandbox (30 minutes at [`SAMPLE_EVERY`]).
const KEPT: usize = 360;

/// One measurement of one sandbox.
#[derive(Debug, Clone)]
pub struct MetricSample {
    pub at: OffsetDateTime,
    pub metrics: AgentMetrics,
}

/// Recent samples per sandbox; pure.
#[derive(Debug, Default)]
pub(super) struct MetricHistory {
    by_sandbox: BTreeMap<SandboxId, VecDeque<MetricSample>>,
}

impl MetricHistory {
    pub fn push(&mut self, id: &SandboxId, sample: MetricSample) {
        let q = self.by_sandbox.entry(id.clone()).or_default();
        if q.len() == KEPT {
            q.pop_front();
        }
        q.push_back(sample);
    }

    /// Samples taken within `[start, end]` (unix seconds, each bound optional), oldest first.
    pub fn range(&self, id: &SandboxId, start: Option<i64>, end: Option<i64>) -> Vec<MetricSample> {
        let within = |s: &&MetricSample| {
            let t = s.at.unix_timestamp();
            start.is_none_or(|b| t >= b) && end.is_none_or(|b| t <= b)
        };
        self.by_sandbox.get(id).map(|q| q.iter().filter(within).cloned().collect()).unwrap_or_default()
    }

    pub fn forget(&mut self, id: &SandboxId) {
        self.by_sandbox.remove(id);
    }
}

impl Runtime {
    fn history(&self) -> std::sync::MutexGuard<'_, MetricHistory> {
        self.inner.metrics.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The sandbox's samples within `[start, end]` (unix seconds); a running sandbox is
    /// measured now first. Paused sandboxes answer from their history.
    pub async fn metrics(
        &self,
        id: &str,
        start: Option<i64>,
        end: Option<i64>,
    ) -> Result<Vec<MetricSample>, RuntimeError> {
        let rec = self.get_visible(id)?;
        if rec.state == SandboxState::Running {
            let metrics = self.measure(&rec).await?;
            self.history().push(&rec.id, MetricSample { at: OffsetDateTime::now_utc(), metrics });
        }
        Ok(self.history().range(&rec.id, start, end))
    }

    /// Drops a sandbox's history (it is gone).
    pub(super) fn forget_metrics(&self, id: &SandboxId) {
        self.history().forget(id);
    }

    /// Measures every running sandbox every [`SAMPLE_EVERY`], for the history.
    pub(super) async fn metrics_loop(&self) {
        loop {
            tokio::time::sleep(SAMPLE_EVERY).await;
            let running: Vec<SandboxRecord> = self
                .table()
                .values()
                .filter(|r| r.state == SandboxState::Running && !r.internal)
                .cloned()
                .collect();
            let taken = futures_util::future::join_all(running.iter().map(|r| self.measure(r))).await;
            let at = OffsetDateTime::now_utc();
            // Killed meanwhile: no history to keep (the table is read before the history is
            // locked: never both at once).
            let alive: Vec<bool> = running.iter().map(|r| self.table().contains_key(&r.id)).collect();
            let mut history = self.history();
            for ((rec, m), alive) in running.iter().zip(taken).zip(alive) {
                if let (Ok(metrics), true) = (m, alive) {
                    history.push(&rec.id, MetricSample { at, metrics });
                }
            }
        }
    }

    /// One measurement: the agent's view, with disk, CPU and memory as the host accounts them.
    async fn measure(&self, rec: &SandboxRecord) -> Result<AgentMetrics, RuntimeError> {
        let mut m = self
            .inner
            .agent
            .metrics(rec.agent_ip, &rec.access_token)
            .await
            .map_err(|source| RuntimeError::Agent { id: rec.id.to_string(), source })?;
        // Disk: the sandbox's own disk (inside, gVisor's overlay reports no real size).
        if let Some(d) = self.inner.engine.disk_usage(&rec.id) {
            m.disk_used = d.used;
            m.disk_total = d.total;
        }
        // CPU and memory as the sandbox's cgroup accounts them: two readings 200 ms apart for
        // the CPU share.
        let cg_id = rec.id.to_string();
        let Some(before) = crate::engine::cgroup::usage(&cg_id) else { return Ok(m) };
        let t0 = Instant::now();
        tokio::time::sleep(Duration::from_millis(200)).await;
        if let Some(after) = crate::engine::cgroup::usage(&cg_id) {
            let wall = u64::try_from(t0.elapsed().as_nanos()).unwrap_or(u64::MAX);
            m.cpu_count = rec.cpu_count;
            m.cpu_used_pct =
                crate::engine::cgroup::cpu_percent(before.cpu_ns, after.cpu_ns, wall, rec.cpu_count);
            m.mem_used = after.memory_bytes;
            // The sandbox's memory, not the host cgroup's limit: that one has headroom above
            // it as a backstop for the agent's own OOM killer.
            m.mem_total = u64::from(rec.memory_mb) << 20;
        }
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(unix: i64) -> MetricSample {
        MetricSample {
            at: OffsetDateTime::from_unix_timestamp(unix).unwrap(),
            metrics: AgentMetrics::default(),
        }
    }

    #[test]
    fn ranges_select_by_time_and_history_is_bounded() {
        let id = SandboxId::generate();
        let mut h = MetricHistory::default();
        for t in 0..(KEPT as i64 + 10) {
            h.push(&id, at(1_000 + t));
        }
        assert_eq!(h.range(&id, None, None).len(), KEPT);
        assert_eq!(h.range(&id, None, None)[0].at.unix_timestamp(), 1_010, "the oldest went first");
        let window: Vec<i64> =
            h.range(&id, Some(1_100), Some(1_102)).iter().map(|s| s.at.unix_timestamp()).collect();
        assert_eq!(window, [1_100, 1_101, 1_102]);
        assert!(h.range(&id, Some(0), Some(999)).is_empty(), "before the sandbox existed");
        h.forget(&id);
        assert!(h.range(&id, None, None).is_empty());
    }
}
