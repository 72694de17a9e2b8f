//! The bench scenarios. Each returns its series, baselines first.

use std::sync::Arc;
use std::time::{Duration, Instant};

use firkin_core::config::Layout;
use firkin_core::runtime::{BuildProgress, ProgressFn, Runtime};
use firkin_core::template::TemplateSpec;

use super::baseline::{Baseline, RestoreBaseline};
use super::probe::{create_to_first_stdout, first_stdout, long_lived_sandbox, request, run_code};
use super::{progress, BenchArgs, Series};

/// A user template equivalent to `base` but without a warm pool: every create of it restores.
const COLD_TEMPLATE: &str = "bench-cold";
/// A template with room for 500 MB of dirty memory.
const DIRTY_TEMPLATE: &str = "bench-dirty";

async fn build(rt: &Runtime, name: &str, memory_mb: Option<u32>) -> anyhow::Result<()> {
    let spec = TemplateSpec { memory_mb, ..TemplateSpec::new(name, "base") };
    let quiet: ProgressFn = Arc::new(|_: BuildProgress| {});
    rt.build_template(spec, quiet).await?;
    Ok(())
}

/// One timed pause and resume of `id`; `between` runs after the pause (unmeasured). Returns the
/// resumed record and when the resume began, or `None` (recorded as a failure) when either step
/// failed.
pub(super) async fn pause_resume(
    rt: &Runtime,
    id: &str,
    (pause, resume): (&mut Series, &mut Series),
    between: impl FnOnce(),
) -> Option<(firkin_core::record::SandboxRecord, Instant)> {
    let t = Instant::now();
    if let Err(e) = rt.pause(id).await {
        pause.fail("pause", e);
        return None;
    }
    pause.push(t.elapsed());
    between();
    let t = Instant::now();
    match rt.connect(id, Some(Duration::from_secs(3600))).await {
        Ok(out) => {
            resume.push(t.elapsed());
            Some((out.record, t))
        }
        Err(e) => {
            resume.fail("resume", e);
            None
        }
    }
}

/// Waits (unmeasured) until `template`'s warm pool has an entry.
async fn pool_ready(rt: &Runtime, template: &str) -> anyhow::Result<()> {
    let t = Instant::now();
    while rt.warm_stats().ready.get(template).copied().unwrap_or(0) == 0 {
        anyhow::ensure!(t.elapsed() < Duration::from_secs(60), "warm pool of {template} did not refill");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

pub async fn create(rt: &Runtime, args: &BenchArgs) -> anyhow::Result<Vec<Series>> {
    let mut run_base = Baseline::new(&args.host.runsc);
    let mut restore_base = RestoreBaseline::prepare(&args.host.runsc).await?;
    build(rt, COLD_TEMPLATE, None).await?;
    rt.set_warm_target("base", 2);
    rt.start_warm_pool();
    let mut cold = Series::new("firkin.create_cold_restore_to_first_stdout");
    let mut warm = Series::new("firkin.create_warm_pool_to_first_stdout");
    let mut kill = Series::new("firkin.kill");
    for i in 0..args.runs {
        run_base.sample(i).await;
        restore_base.sample(i).await;
        match create_to_first_stdout(rt, COLD_TEMPLATE).await {
            Ok((d, _, kd)) => {
                cold.push(d);
                kill.push(kd);
            }
            Err(e) => cold.fail("cold create", e),
        }
        pool_ready(rt, "base").await?;
        match create_to_first_stdout(rt, "base").await {
            Ok((d, _, _)) => warm.push(d),
            Err(e) => warm.fail("warm create", e),
        }
        progress(i, args.runs, "iterations");
    }
    let _ = rt.delete_template(COLD_TEMPLATE);
    Ok(vec![run_base.series, restore_base.finish(), cold, warm, kill])
}

pub async fn pause(rt: &Runtime, args: &BenchArgs) -> anyhow::Result<Vec<Series>> {
    let mut restore_base = RestoreBaseline::prepare(&args.host.runsc).await?;
    let mut pause = Series::new("firkin.pause");
    let mut resume = Series::new("firkin.resume");
    let mut first = Series::new("firkin.resume_to_first_stdout");
    let rec = long_lived_sandbox(rt).await?;
    let id = rec.id.to_string();
    first_stdout(rec.agent_ip, &rec.access_token, "nohup sleep 100000 >/dev/null 2>&1 &").await?;
    for i in 0..args.runs {
        restore_base.sample(i).await;
        let Some((rec, resumed_at)) = pause_resume(rt, &id, (&mut pause, &mut resume), || {}).await else {
            break;
        };
        match first_stdout(rec.agent_ip, &rec.access_token, "echo firkin").await {
            Ok(()) => first.push(resumed_at.elapsed()),
            Err(e) => first.fail("first stdout", e),
        }
        progress(i, args.runs, "cycles");
    }
    rt.kill_and_wait(&id).await?;
    Ok(vec![restore_base.finish(), pause, resume, first])
}

pub async fn fork(rt: &Runtime, args: &BenchArgs) -> anyhow::Result<Vec<Series>> {
    let mut restore_base = RestoreBaseline::prepare(&args.host.runsc).await?;
    let mut fork = Series::new(format!("firkin.fork_of_{}", args.children));
    let rec = long_lived_sandbox(rt).await?;
    let id = rec.id.to_string();
    for i in 0..args.runs {
        restore_base.sample(i).await;
        let t = Instant::now();
        let kids = rt.fork(&id, args.children, Some(Duration::from_secs(600))).await?;
        let elapsed = t.elapsed();
        match kids.iter().find_map(|k| k.as_ref().err()) {
            None => fork.push(elapsed),
            Some(e) => fork.fail("fork child", e),
        }
        for kid in kids.into_iter().flatten() {
            let _ = rt.kill(kid.id.as_str()).await;
        }
        rt.drain_teardowns().await;
        progress(i, args.runs, "forks");
    }
    rt.kill_and_wait(&id).await?;
    Ok(vec![restore_base.finish(), fork])
}

/// Sum of the file sizes in a directory, in MB.
pub(super) fn dir_mb(dir: &std::path::Path) -> f64 {
    let bytes: u64 = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum();
    (bytes as f64 / 1e6 * 10.0).round() / 10.0
}

pub async fn dirty(rt: &Runtime, args: &BenchArgs) -> anyhow::Result<Vec<Series>> {
    let layout = Layout::from_env();
    let mut restore_base = RestoreBaseline::prepare(&args.host.runsc).await?;
    build(rt, DIRTY_TEMPLATE, Some(2048)).await?;
    let cycles = (args.runs / 10).max(3);
    let mut out = Vec::new();
    for mb in [10u32, 100, 500] {
        let rec = rt.create(request(DIRTY_TEMPLATE, 3600)).await?;
        let id = rec.id.to_string();
        // Random bytes (incompressible), held by a process, marked once allocated.
        let hold = format!(
            "nohup python3 -c \"import os,time; b=bytearray(os.urandom({mb}<<20)); open('/tmp/dirty-ready','w').close(); time.sleep(10**6)\" >/dev/null 2>&1 &"
        );
        first_stdout(rec.agent_ip, &rec.access_token, &hold).await?;
        first_stdout(
            rec.agent_ip,
            &rec.access_token,
            "while [ ! -e /tmp/dirty-ready ]; do sleep 0.1; done; echo ok",
        )
        .await?;
        let mut pause = Series::new(format!("firkin.pause_dirty_{mb}mb"));
        let mut resume = Series::new(format!("firkin.resume_dirty_{mb}mb"));
        let mut sizes = Vec::new();
        for i in 0..cycles {
            restore_base.sample(i).await;
            let image = layout.pause_image(&id);
            let between = || sizes.push(dir_mb(&image));
            if pause_resume(rt, &id, (&mut pause, &mut resume), between).await.is_none() {
                break;
            }
        }
        let image_mb = sizes.iter().cloned().fold(0.0, f64::max);
        resume.extra.insert("image_mb".into(), image_mb.into());
        pause.extra.insert("image_mb".into(), image_mb.into());
        eprintln!("  dirty {mb} MB: {cycles} cycles, image {image_mb} MB");
        rt.kill_and_wait(&id).await?;
        out.extend([pause, resume]);
    }
    let _ = rt.delete_template(DIRTY_TEMPLATE);
    let mut all = vec![restore_base.finish()];
    all.extend(out);
    Ok(all)
}

pub async fn code(rt: &Runtime, args: &BenchArgs) -> anyhow::Result<Vec<Series>> {
    const TEMPLATE: &str = "code-interpreter-v1";
    let mut restore_base = RestoreBaseline::prepare(&args.host.runsc).await?;
    rt.prepare_builtin_templates().await;
    let mut first_cold = Series::new("firkin.code_create_cold_to_first_result");
    let mut first_warm = Series::new("firkin.code_create_warm_pool_to_first_result");
    let mut warm_cell = Series::new("firkin.run_code_1_plus_1_warm_context");
    let create_and_run = |rt: Runtime| async move {
        let t0 = Instant::now();
        let rec = rt.create(request(TEMPLATE, 300)).await?;
        let text = run_code(rec.agent_ip, &rec.access_token, "1+1").await;
        let d = t0.elapsed();
        rt.kill(rec.id.as_str()).await?;
        anyhow::ensure!(text? == "2", "1+1 was not 2");
        anyhow::Ok(d)
    };
    let cycles = (args.runs / 4).max(5);
    for i in 0..cycles {
        restore_base.sample(i).await;
        match create_and_run(rt.clone()).await {
            Ok(d) => first_cold.push(d),
            Err(e) => first_cold.fail("create + run_code", e),
        }
        rt.drain_teardowns().await;
        progress(i, cycles, "cold creates");
    }
    rt.set_warm_target(TEMPLATE, 1);
    rt.start_warm_pool();
    for i in 0..cycles {
        pool_ready(rt, TEMPLATE).await?;
        match create_and_run(rt.clone()).await {
            Ok(d) => first_warm.push(d),
            Err(e) => first_warm.fail("warm create + run_code", e),
        }
        progress(i, cycles, "warm-pool creates");
    }
    rt.set_warm_target(TEMPLATE, 0);
    let sbx = rt.create(request(TEMPLATE, 3600)).await?;
    for i in 0..args.runs {
        let t = Instant::now();
        match run_code(sbx.agent_ip, &sbx.access_token, "1+1").await {
            Ok(text) if text == "2" => warm_cell.push(t.elapsed()),
            Ok(text) => warm_cell.fail("run_code", format!("1+1 gave {text}")),
            Err(e) => warm_cell.fail("run_code", e),
        }
        progress(i, args.runs, "cells");
    }
    rt.kill_and_wait(sbx.id.as_str()).await?;
    Ok(vec![restore_base.finish(), first_cold, first_warm, warm_cell])
}
