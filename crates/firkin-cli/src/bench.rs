//! `firkin bench`: lifecycle latency percentiles with an in-run baseline, written as JSON.
//!
//! `firkin bench create` measures create → first stdout byte of `echo` through the real runtime
//! and agent, and, in the same run, raw `runsc run` of the same rootfs printing `echo` (the
//! engine's floor on this machine).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use clap::{Args, ValueEnum};
use firkin_core::config::Layout;
use firkin_core::runtime::{CreateSandbox, Runtime};
use firkin_core::samples::percentile;
use firkin_core::template::BASE_ROOTFS;
use firkin_wire::agent::ENVD_PORT;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::json;
use tokio::io::AsyncReadExt;

use crate::setup::HostArgs;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Scenario {
    /// Create a sandbox and wait for the first stdout byte of `echo`.
    Create,
    /// Pause and resume one sandbox (with a running process) repeatedly.
    Pause,
    /// Fork one sandbox into `--children` copies, repeatedly.
    Fork,
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
struct Series {
    name: &'static str,
    secs: Vec<f64>,
    failures: usize,
}

impl Series {
    fn new(name: &'static str) -> Series {
        Series { name, secs: Vec::new(), failures: 0 }
    }

    fn summary(&self) -> serde_json::Value {
        let ms = |p| percentile(&self.secs, p).map(|s| (s * 1e5).round() / 100.0);
        json!({
            "name": self.name,
            "runs": self.secs.len(),
            "failures": self.failures,
            "p50_ms": ms(50.0),
            "p95_ms": ms(95.0),
            "p99_ms": ms(99.0),
            "min_ms": self.secs.iter().cloned().reduce(f64::min).map(|s| s * 1e3),
            "max_ms": self.secs.iter().cloned().reduce(f64::max).map(|s| s * 1e3),
        })
    }

    fn print(&self) {
        let s = self.summary();
        println!(
            "{:<34} n={:<4} fail={:<3} p50={:>8.1}ms p95={:>8.1}ms p99={:>8.1}ms",
            self.name,
            self.secs.len(),
            self.failures,
            s["p50_ms"].as_f64().unwrap_or(f64::NAN),
            s["p95_ms"].as_f64().unwrap_or(f64::NAN),
            s["p99_ms"].as_f64().unwrap_or(f64::NAN),
        );
    }
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let runtime = args.host.runtime()?;
    runtime.reconcile().await;
    let mut all = Vec::new();
    match args.scenario {
        Scenario::Create => {
            // Interleave the baseline and the measured path so drift hits both equally.
            let mut base = Baseline::new(&args.host.runsc);
            let mut create = Series::new("firkin.create_to_first_stdout");
            let mut kill = Series::new("firkin.kill");
            for i in 0..args.runs {
                base.sample(i).await;
                match create_to_first_stdout(&runtime).await {
                    Ok((d, id, kd)) => {
                        create.secs.push(d.as_secs_f64());
                        kill.secs.push(kd.as_secs_f64());
                        tracing::debug!(sandbox = %id, "bench iteration done");
                    }
                    Err(e) => {
                        create.failures += 1;
                        tracing::warn!(error = %e, "create iteration failed");
                    }
                }
                if (i + 1) % 10 == 0 {
                    eprintln!("  {}/{} iterations", i + 1, args.runs);
                }
            }
            all.extend([base.series, create, kill]);
        }
        Scenario::Pause => {
            let mut base = Baseline::new(&args.host.runsc);
            let mut pause = Series::new("firkin.pause");
            let mut resume = Series::new("firkin.resume");
            let mut first = Series::new("firkin.resume_to_first_stdout");
            let rec = long_lived_sandbox(&runtime).await?;
            let id = rec.id.to_string();
            first_stdout(rec.agent_ip, &rec.access_token, "nohup sleep 100000 >/dev/null 2>&1 &").await?;
            for i in 0..args.runs {
                base.sample(i).await;
                let t = Instant::now();
                if let Err(e) = runtime.pause(&id).await {
                    pause.failures += 1;
                    tracing::warn!(error = %e, "pause failed");
                    break;
                }
                pause.secs.push(t.elapsed().as_secs_f64());
                let t = Instant::now();
                match runtime.connect(&id, Some(Duration::from_secs(3600))).await {
                    Ok(out) => {
                        resume.secs.push(t.elapsed().as_secs_f64());
                        match first_stdout(out.record.agent_ip, &out.record.access_token, "echo firkin").await
                        {
                            Ok(()) => first.secs.push(t.elapsed().as_secs_f64()),
                            Err(_) => first.failures += 1,
                        }
                    }
                    Err(e) => {
                        resume.failures += 1;
                        tracing::warn!(error = %e, "resume failed");
                        break;
                    }
                }
                if (i + 1) % 10 == 0 {
                    eprintln!("  {}/{} cycles", i + 1, args.runs);
                }
            }
            runtime.kill_and_wait(&id).await?;
            all.extend([base.series, pause, resume, first]);
        }
        Scenario::Fork => {
            let mut base = Baseline::new(&args.host.runsc);
            let mut fork = Series::new("firkin.fork");
            let rec = long_lived_sandbox(&runtime).await?;
            let id = rec.id.to_string();
            for i in 0..args.runs {
                base.sample(i).await;
                let t = Instant::now();
                let kids = runtime.fork(&id, args.children, Some(Duration::from_secs(600))).await?;
                let elapsed = t.elapsed();
                if kids.iter().all(Result::is_ok) {
                    fork.secs.push(elapsed.as_secs_f64());
                } else {
                    fork.failures += 1;
                }
                for kid in kids.into_iter().flatten() {
                    let _ = runtime.kill(kid.id.as_str()).await;
                }
                runtime.drain_teardowns().await;
                eprintln!("  {}/{} forks of {}", i + 1, args.runs, args.children);
            }
            runtime.kill_and_wait(&id).await?;
            all.extend([base.series, fork]);
        }
    }
    println!("firkin bench ({} runs each)", args.runs);
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

/// The in-run engine floor: raw `runsc run` of the base rootfs printing `echo`.
struct Baseline {
    runsc: PathBuf,
    rootfs: PathBuf,
    scratch: PathBuf,
    series: Series,
}

impl Baseline {
    fn new(runsc: &std::path::Path) -> Baseline {
        let layout = Layout::from_env();
        Baseline {
            runsc: runsc.to_owned(),
            rootfs: layout.rootfs_dir(BASE_ROOTFS),
            scratch: layout.state_dir.join("run").join("bench"),
            series: Series::new("baseline.raw_runsc_run_echo"),
        }
    }

    async fn sample(&mut self, i: usize) {
        match raw_runsc_echo(&self.runsc, &self.rootfs, &self.scratch, i).await {
            Ok(d) => self.series.secs.push(d.as_secs_f64()),
            Err(e) => {
                self.series.failures += 1;
                tracing::warn!(error = %e, "baseline run failed");
            }
        }
    }
}

/// A base sandbox that lives for the whole bench.
async fn long_lived_sandbox(rt: &Runtime) -> anyhow::Result<firkin_core::record::SandboxRecord> {
    let req = CreateSandbox {
        template_id: "base".into(),
        timeout: Some(Duration::from_secs(3600)),
        ..Default::default()
    };
    Ok(rt.create(req).await?)
}

/// Creates a sandbox, runs `echo` through the agent, returns (create → first stdout, id, kill time).
async fn create_to_first_stdout(rt: &Runtime) -> anyhow::Result<(Duration, String, Duration)> {
    let t0 = Instant::now();
    let rec = rt
        .create(CreateSandbox {
            template_id: "base".into(),
            timeout: Some(Duration::from_secs(120)),
            ..Default::default()
        })
        .await?;
    let result = first_stdout(rec.agent_ip, &rec.access_token, "echo firkin").await;
    let elapsed = t0.elapsed();
    let tk = Instant::now();
    rt.kill_and_wait(rec.id.as_str()).await?;
    let kd = tk.elapsed();
    result?;
    Ok((elapsed, rec.id.to_string(), kd))
}

/// Starts `script` via envd `Process/Start` and waits for a stdout data event (or, for a
/// script that prints nothing, the end of its stream).
async fn first_stdout(ip: std::net::Ipv4Addr, token: &str, script: &str) -> anyhow::Result<()> {
    let msg = json!({"process": {"cmd": "/bin/bash", "args": ["-l", "-c", script]}, "stdin": false});
    let payload = serde_json::to_vec(&msg)?;
    let mut frame = Vec::with_capacity(payload.len() + 5);
    frame.push(0u8);
    frame.extend_from_slice(&u32::try_from(payload.len())?.to_be_bytes());
    frame.extend_from_slice(&payload);
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let req = http::Request::post(format!("http://{ip}:{ENVD_PORT}/process.Process/Start"))
        .header("content-type", "application/connect+json")
        .header("connect-protocol-version", "1")
        .header("x-access-token", token)
        .body(Full::new(Bytes::from(frame)))?;
    let resp = client.request(req).await?;
    anyhow::ensure!(resp.status().is_success(), "Start answered {}", resp.status());
    let mut body = resp.into_body();
    let mut buf: Vec<u8> = Vec::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            buf.extend_from_slice(&data);
        }
        while buf.len() >= 5 {
            let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
            if buf.len() < 5 + len {
                break;
            }
            let flags = buf[0];
            let v: serde_json::Value = serde_json::from_slice(&buf[5..5 + len]).unwrap_or_default();
            buf.drain(..5 + len);
            if flags & 0x02 != 0 {
                anyhow::ensure!(v.get("error").is_none(), "stream failed: {v}");
                return Ok(());
            }
            if v["event"]["data"]["stdout"].is_string() {
                return Ok(());
            }
        }
    }
    anyhow::bail!("stream closed before stdout")
}

/// Raw `runsc run` of the rootfs printing `echo`; time to the first stdout byte.
async fn raw_runsc_echo(
    runsc: &std::path::Path,
    rootfs: &std::path::Path,
    scratch: &std::path::Path,
    i: usize,
) -> anyhow::Result<Duration> {
    let bundle = scratch.join(format!("b{i}"));
    std::fs::create_dir_all(&bundle)?;
    let spec = json!({
        "ociVersion": "1.0.2",
        "process": {"terminal": false, "user": {"uid": 0, "gid": 0}, "args": ["/bin/echo", "firkin"], "env": ["PATH=/usr/bin:/bin"], "cwd": "/"},
        "root": {"path": rootfs, "readonly": true},
        "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"}],
        "linux": {"namespaces": [{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}]},
    });
    std::fs::write(bundle.join("config.json"), serde_json::to_vec(&spec)?)?;
    let root = scratch.join("runsc-root");
    let id = format!("firkinbench{i}x{}", std::process::id());
    let t0 = Instant::now();
    let mut child = tokio::process::Command::new(runsc)
        .arg(format!("--root={}", root.display()))
        .args(["--network=none", "run", "--bundle"])
        .arg(&bundle)
        .arg(&id)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("spawning runsc")?;
    let mut out = child.stdout.take().context("no stdout")?;
    let mut byte = [0u8; 1];
    let n = out.read(&mut byte).await?;
    let d = t0.elapsed();
    let status = child.wait().await?;
    let _ = std::fs::remove_dir_all(&bundle);
    anyhow::ensure!(n == 1 && status.success(), "raw runsc run failed: {status}");
    Ok(d)
}
