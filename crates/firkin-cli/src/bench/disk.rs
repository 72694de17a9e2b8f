//! The `disk` scenario: what a sandbox's disk costs. For 100 MB, 1 GB and 2 GB of data written
//! to its disk: the write itself, pause and resume (the checkpoint carries the overlay, so the
//! image grows with the data), and a fork into two children — with the raw `runsc restore`
//! baseline sampled in between, so drift hits both.

use std::time::{Duration, Instant};

use firkin_core::config::Layout;
use firkin_core::runtime::Runtime;

use super::baseline::RestoreBaseline;
use super::probe::{first_stdout, request};
use super::scenarios::{dir_mb, pause_resume};
use super::{BenchArgs, Series};

/// Data sizes written to the disk, in MB.
const SIZES_MB: [u32; 3] = [100, 1024, 2048];

pub async fn disk(rt: &Runtime, args: &BenchArgs) -> anyhow::Result<Vec<Series>> {
    let mut restore_base = RestoreBaseline::prepare(&args.host.runsc).await?;
    let cycles = (args.runs / 10).max(3);
    let mut out = Vec::new();
    for mb in SIZES_MB {
        let mut series = DiskSeries::new(mb);
        for i in 0..cycles {
            restore_base.sample(i).await;
            if let Err(e) = one_cycle(rt, mb, &mut series).await {
                series.write.fail("disk cycle", e);
            }
        }
        eprintln!("  disk {mb} MB: {cycles} cycles, pause image {} MB", series.image_mb);
        out.extend(series.finish());
    }
    let mut all = vec![restore_base.finish()];
    all.extend(out);
    Ok(all)
}

/// The series of one data size.
struct DiskSeries {
    write: Series,
    pause: Series,
    resume: Series,
    fork: Series,
    image_mb: f64,
}

impl DiskSeries {
    fn new(mb: u32) -> DiskSeries {
        DiskSeries {
            write: Series::new(format!("firkin.disk_write_{mb}mb")),
            pause: Series::new(format!("firkin.pause_disk_{mb}mb")),
            resume: Series::new(format!("firkin.resume_disk_{mb}mb")),
            fork: Series::new(format!("firkin.fork_of_2_disk_{mb}mb")),
            image_mb: 0.0,
        }
    }

    fn finish(mut self) -> [Series; 4] {
        for s in [&mut self.pause, &mut self.resume] {
            s.extra.insert("image_mb".into(), self.image_mb.into());
        }
        [self.write, self.pause, self.resume, self.fork]
    }
}

/// One sandbox: write `mb` of random data, pause and resume it, fork it into two, kill all.
async fn one_cycle(rt: &Runtime, mb: u32, s: &mut DiskSeries) -> anyhow::Result<()> {
    let rec = rt.create(request("base", 3600)).await?;
    let id = rec.id.to_string();
    let t = Instant::now();
    let write = format!("head -c {mb}M /dev/urandom > /home/user/data && sync && echo done");
    first_stdout(rec.agent_ip, &rec.access_token, &write).await?;
    s.write.push(t.elapsed());
    let image = Layout::from_env().pause_image(&id);
    let mut image_mb = 0.0;
    pause_resume(rt, &id, (&mut s.pause, &mut s.resume), || image_mb = dir_mb(&image)).await;
    s.image_mb = f64::max(s.image_mb, image_mb);
    let t = Instant::now();
    let kids = rt.fork(&id, 2, Some(Duration::from_secs(600))).await;
    match &kids {
        Ok(k) if k.iter().all(Result::is_ok) => s.fork.push(t.elapsed()),
        Ok(k) => s.fork.fail(
            "fork child",
            k.iter().find_map(|r| r.as_ref().err()).map(ToString::to_string).unwrap_or_default(),
        ),
        Err(e) => s.fork.fail("fork", e),
    }
    for kid in kids.into_iter().flatten().flatten() {
        rt.kill(kid.id.as_str()).await?;
    }
    rt.kill_and_wait(&id).await?;
    rt.drain_teardowns().await;
    Ok(())
}
