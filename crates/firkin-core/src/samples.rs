//! Lifecycle latency samples under their stable names, exported to `/metrics` and bench reports.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

/// The stable sample names of the architecture contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SampleName {
    ColdTemplateBuild,
    SnapshotSave,
    WarmSnapshotRestore,
    ReadyProbe,
    WarmPoolCheckout,
    CommandStart,
    FirstStdoutByte,
    ResumeToFirstStdout,
    FreshnessSync,
    KillDelete,
    /// Boot of a sandbox without a snapshot (engine start + ready probe).
    ColdBoot,
}

impl SampleName {
    pub fn as_str(self) -> &'static str {
        match self {
            SampleName::ColdTemplateBuild => "cold_template_build",
            SampleName::SnapshotSave => "snapshot_save",
            SampleName::WarmSnapshotRestore => "warm_snapshot_restore",
            SampleName::ReadyProbe => "ready_probe",
            SampleName::WarmPoolCheckout => "warm_pool_checkout",
            SampleName::CommandStart => "command_start",
            SampleName::FirstStdoutByte => "first_stdout_byte",
            SampleName::ResumeToFirstStdout => "start.resume_to_first_stdout_ms",
            SampleName::FreshnessSync => "freshness_sync",
            SampleName::KillDelete => "kill_delete",
            SampleName::ColdBoot => "cold_boot",
        }
    }
}

/// Histogram bucket upper bounds, in seconds.
pub const BUCKETS: &[f64] = &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// Keep at most this many raw samples per name (for percentiles).
const MAX_RAW: usize = 4096;

#[derive(Debug, Default, Clone)]
pub struct Series {
    pub count: u64,
    pub sum_secs: f64,
    pub bucket_counts: Vec<u64>,
    pub recent: Vec<f64>,
}

/// Thread-safe sample recorder.
#[derive(Debug, Default)]
pub struct Samples {
    series: Mutex<BTreeMap<SampleName, Series>>,
}

impl Samples {
    pub fn record(&self, name: SampleName, d: Duration) {
        let secs = d.as_secs_f64();
        let mut map = self.series.lock().unwrap_or_else(|e| e.into_inner());
        let s = map
            .entry(name)
            .or_insert_with(|| Series { bucket_counts: vec![0; BUCKETS.len()], ..Default::default() });
        s.count += 1;
        s.sum_secs += secs;
        for (i, b) in BUCKETS.iter().enumerate() {
            if secs <= *b {
                s.bucket_counts[i] += 1;
            }
        }
        if s.recent.len() >= MAX_RAW {
            s.recent.remove(0);
        }
        s.recent.push(secs);
    }

    pub fn snapshot(&self) -> BTreeMap<SampleName, Series> {
        self.series.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Prometheus text exposition of every series as a histogram `firkin_lifecycle_seconds`.
    pub fn prometheus(&self) -> String {
        let mut out = String::from(
            "# HELP firkin_lifecycle_seconds Lifecycle step latency by stable sample name.\n# TYPE firkin_lifecycle_seconds histogram\n",
        );
        for (name, s) in self.snapshot() {
            let n = name.as_str();
            for (i, b) in BUCKETS.iter().enumerate() {
                out.push_str(&format!(
                    "firkin_lifecycle_seconds_bucket{{sample=\"{n}\",le=\"{b}\"}} {}\n",
                    s.bucket_counts[i]
                ));
            }
            out.push_str(&format!(
                "firkin_lifecycle_seconds_bucket{{sample=\"{n}\",le=\"+Inf\"}} {}\n",
                s.count
            ));
            out.push_str(&format!("firkin_lifecycle_seconds_sum{{sample=\"{n}\"}} {}\n", s.sum_secs));
            out.push_str(&format!("firkin_lifecycle_seconds_count{{sample=\"{n}\"}} {}\n", s.count));
        }
        out
    }
}

/// Percentile (nearest-rank) of `values`, which need not be sorted. `p` in 0..=100.
pub fn percentile(values: &[f64], p: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let rank = ((p / 100.0) * v.len() as f64).ceil().max(1.0) as usize;
    Some(v[rank.min(v.len()) - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), Some(50.0));
        assert_eq!(percentile(&v, 95.0), Some(95.0));
        assert_eq!(percentile(&v, 99.0), Some(99.0));
        assert_eq!(percentile(&[], 50.0), None);
        assert_eq!(percentile(&[3.0], 99.0), Some(3.0));
    }

    #[test]
    fn histogram_counts_and_exports() {
        let s = Samples::default();
        s.record(SampleName::ReadyProbe, Duration::from_millis(20));
        s.record(SampleName::ReadyProbe, Duration::from_millis(300));
        let text = s.prometheus();
        assert!(text.contains("firkin_lifecycle_seconds_count{sample=\"ready_probe\"} 2"));
        assert!(text.contains("firkin_lifecycle_seconds_bucket{sample=\"ready_probe\",le=\"0.025\"} 1"));
        assert!(text.contains("firkin_lifecycle_seconds_bucket{sample=\"ready_probe\",le=\"0.5\"} 2"));
    }
}
