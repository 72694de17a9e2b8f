//! `firkin bench`: lifecycle latency percentiles with in-run baselines, written as JSON.
//!
//! Scenarios (each interleaves its baselines with the measured path so drift hits both):
//! - `create`: create → first stdout byte of `echo`, cold (every create restores the template
//!   checkpoint) and from the warm pool; kill; baselines raw `runsc run` and raw `runsc restore`.
//! - `pause`: pause and resume of one sandbox with a running process; resume → first stdout.
//! - `fork`: fork of one sandbox into `--children` copies.
//! - `dirty`: restore time and image size against dirty memory (10, 100, 500 MB).
//! - `code`: `run_code("1+1")` on a warm context, and create → first `run_code` result.
//! - `disk`: writing 100 MB, 1 GB and 2 GB to a sandbox's disk, then pause, resume and a fork
//!   into two with that data on it.

mod baseline;
mod disk;
mod probe;
mod scenarios;

use anyhow::Context;
use std::path::PathBuf;

use clap::{Args, ValueEnum};
use firkin_core::samples::percentile;
use serde_json::json;

use crate::setup::HostArgs;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Scenario {
    /// Create (cold restore and warm pool) → first stdout byte of `echo`; kill.
    Create,
    /// Pause and resume one sandbox (with a running process) repeatedly.
    Pause,
    /// Fork one sandbox into `--children` copies, repeatedly.
    Fork,
    /// Restore time and checkpoint size against dirty memory of 10, 100 and 500 MB.
    Dirty,
    /// Code interpreter: `run_code("1+1")` warm, and create → first `run_code`.
    Code,
    /// The sandbox disk: write 100 MB / 1 GB / 2 GB, then pause, resume and fork with it.
    Disk,
}

#[derive(Args, Debug)]
pub struct BenchArgs {
    #[arg(value_enum, default_value = "create")]
    pub scenario: Scenario,
    /// Iterations per measured series.
    #[arg(long, short = 'n', default_value_t = 100)]
    pub runs: usize,
    /// Children per fork (fork scenario).
    #[arg(long, default_value_t = 10)]
    pub children: usize,
    /// Where to write the JSON report (default: bench-reports/<scenario>-<unix time>.json).
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub host: HostArgs,
}

/// A measured series.
pub struct Series {
    name: String,
    secs: Vec<f64>,
    failures: usize,
    /// Extra figures reported with the series (e.g. image size).
    extra: serde_json::Map<String, serde_json::Value>,
}

impl Series {
    pub fn new(name: impl Into<String>) -> Series {
        Series { name: name.into(), secs: Vec::new(), failures: 0, extra: serde_json::Map::new() }
    }

    pub fn push(&mut self, d: std::time::Duration) {
        self.secs.push(d.as_secs_f64());
    }

    pub fn fail(&mut self, what: &str, e: impl std::fmt::Display) {
        self.failures += 1;
        tracing::warn!(series = %self.name, error = %e, "{what} failed");
    }

    fn summary(&self) -> serde_json::Value {
        let ms = |p| percentile(&self.secs, p).map(|s| (s * 1e5).round() / 100.0);
        let mut v = json!({
            "name": self.name,
            "runs": self.secs.len(),
            "failures": self.failures,
            "p50_ms": ms(50.0),
            "p95_ms": ms(95.0),
            "p99_ms": ms(99.0),
            "min_ms": self.secs.iter().cloned().reduce(f64::min).map(|s| s * 1e3),
            "max_ms": self.secs.iter().cloned().reduce(f64::max).map(|s| s * 1e3),
        });
        if let Some(obj) = v.as_object_mut() {
            obj.extend(self.extra.clone());
        }
        v
    }

    fn print(&self) {
        let s = self.summary();
        let extra: Vec<String> = self.extra.iter().map(|(k, v)| format!("{k}={v}")).collect();
        println!(
            "{:<40} n={:<4} fail={:<3} p50={:>8.1}ms p95={:>8.1}ms p99={:>8.1}ms {}",
            self.name,
            self.secs.len(),
            self.failures,
            s["p50_ms"].as_f64().unwrap_or(f64::NAN),
            s["p95_ms"].as_f64().unwrap_or(f64::NAN),
            s["p99_ms"].as_f64().unwrap_or(f64::NAN),
            extra.join(" "),
        );
    }
}

/// Prints progress every tenth iteration.
pub fn progress(i: usize, runs: usize, what: &str) {
    if (i + 1).is_multiple_of(10) || i + 1 == runs {
        eprintln!("  {}/{} {what}", i + 1, runs);
    }
}

pub async fn run(mut args: BenchArgs) -> anyhow::Result<()> {
    // The scenarios manage warm pools themselves.
    args.host.warm_pool.clear();
    let runtime = args.host.runtime(None)?;
    runtime.reconcile().await;
    runtime.start_network().await.context("starting the sandbox network")?;
    let all = match args.scenario {
        Scenario::Create => scenarios::create(&runtime, &args).await?,
        Scenario::Pause => scenarios::pause(&runtime, &args).await?,
        Scenario::Fork => scenarios::fork(&runtime, &args).await?,
        Scenario::Dirty => scenarios::dirty(&runtime, &args).await?,
        Scenario::Code => scenarios::code(&runtime, &args).await?,
        Scenario::Disk => disk::disk(&runtime, &args).await?,
    };
    runtime.stop_warm_pool().await;
    runtime.kill_all().await;
    runtime.drain_teardowns().await;
    runtime.stop_network();
    println!("firkin bench {:?} ({} runs per series unless noted)", args.scenario, args.runs);
    for s in &all {
        s.print();
    }
    let report = json!({
        "format": 1,
        "scenario": format!("{:?}", args.scenario).to_lowercase(),
        "runs": args.runs,
        "children": args.children,
        "engine": runtime.engine_description(),
        "host": {"cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)},
        "series": all.iter().map(Series::summary).collect::<Vec<_>>(),
        "samples": runtime.samples().snapshot().iter().map(|(k, s)| json!({
            "name": k.as_str(), "count": s.count,
            "p50_ms": percentile(&s.recent, 50.0).map(|v| v * 1e3),
            "p95_ms": percentile(&s.recent, 95.0).map(|v| v * 1e3),
            "p99_ms": percentile(&s.recent, 99.0).map(|v| v * 1e3),
        })).collect::<Vec<_>>(),
        "finishedAt": firkin_core::timefmt::rfc3339(time::OffsetDateTime::now_utc()),
    });
    let out = args.out.unwrap_or_else(|| {
        let ts = time::OffsetDateTime::now_utc().unix_timestamp();
        PathBuf::from("bench-reports").join(format!("{:?}-{ts}.json", args.scenario).to_lowercase())
    });
    firkin_core::atomic::write_json_atomic(&out, &report)?;
    println!("report: {}", out.display());
    Ok(())
}
