//! The cap on a sandbox's host log, `run/sandboxes/<id>/sandbox.log`: PID 1's stdout and stderr
//! and runsc's own output (see `engine::runsc`). Root inside a sandbox can write to
//! `/proc/1/fd/2` without bound (520 MB/s measured), so a log over [`LOG_CAP`] is cut down to a
//! marker line saying how much was dropped and its last [`KEEP_TAIL`] bytes (what `boot` shows
//! when an agent does not answer, and what a failed runsc start printed last).
//!
//! The engine opens the log with `O_APPEND`, so writers carry on at the new end after a cut; a
//! writer at a fixed offset would keep the file's apparent size and leave a hole.

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::time::Duration;

use crate::config::Layout;
use crate::ids::SandboxId;
use crate::runtime::Runtime;

/// Size above which a sandbox log is cut.
pub(crate) const LOG_CAP: u64 = 8 * 1024 * 1024;
/// How much of the end of a cut log is kept.
const KEEP_TAIL: u64 = 64 * 1024;
/// How often the logs are checked: a log can outgrow [`LOG_CAP`] by what its sandbox writes in
/// this time (root wrote 520 MB/s into `/proc/1/fd/2`), so far more often than agents are
/// probed. A check is one `stat` per sandbox.
const CHECK_EVERY: Duration = Duration::from_millis(250);

impl Runtime {
    /// Holds the log of every sandbox in the table (running, paused, being created or built) to
    /// [`LOG_CAP`], forever. Warm-pool entries are not in the table and not checked: no caller
    /// runs anything in them until they are checked out, and then they are.
    pub(in crate::runtime) async fn log_cap_loop(&self) {
        // Sandboxes whose log was cut already: one writing without end is reported once.
        let mut cut = BTreeSet::new();
        loop {
            tokio::time::sleep(CHECK_EVERY).await;
            let ids: Vec<SandboxId> = self.table().keys().cloned().collect();
            let layout = self.inner.config.layout.clone();
            // Off the async threads: cutting a large file frees its blocks, which takes a while.
            match tokio::task::spawn_blocking(move || cap_logs(&layout, &ids, cut)).await {
                Ok(still_cut) => cut = still_cut,
                Err(e) => {
                    tracing::warn!(error = %e, "capping sandbox logs failed");
                    cut = BTreeSet::new();
                }
            }
        }
    }
}

/// One round of [`Runtime::log_cap_loop`] over `ids`; returns the updated set of cut logs.
fn cap_logs(layout: &Layout, ids: &[SandboxId], mut cut: BTreeSet<SandboxId>) -> BTreeSet<SandboxId> {
    cut.retain(|id| ids.contains(id));
    for id in ids {
        let log = layout.sandbox_run_dir(id.as_str()).join("sandbox.log");
        match cap_log(&log, LOG_CAP) {
            Ok(None) => {}
            Ok(Some(dropped)) if cut.insert(id.clone()) => {
                tracing::warn!(sandbox = %id, dropped, cap = LOG_CAP, "sandbox log over its cap; cut");
            }
            Ok(Some(dropped)) => tracing::debug!(sandbox = %id, dropped, "sandbox log cut again"),
            Err(e) => {
                tracing::warn!(sandbox = %id, error = %e, log = %log.display(), "capping the sandbox log")
            }
        }
    }
    cut
}

/// Cuts the log at `path` down to a marker and its last lines if it is over `cap`. Returns the
/// number of bytes dropped, `None` when the log is within the cap or does not exist.
pub(crate) fn cap_log(path: &Path, cap: u64) -> io::Result<Option<u64>> {
    // A stat first: this runs every CHECK_EVERY for every sandbox, and almost always finds
    // nothing.
    match std::fs::metadata(path) {
        Ok(meta) if meta.len() <= cap => return Ok(None),
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    }
    let mut file = OpenOptions::new().read(true).append(true).open(path)?;
    let len = file.metadata()?.len();
    let tail = read_tail(&mut file, len, KEEP_TAIL.min(cap / 2))?;
    // What the sandbox writes between the read above and the cut is lost with the rest.
    file.set_len(0)?;
    let dropped = len - tail.len() as u64;
    let marker = format!(
        "[firkin: {dropped} bytes of this log dropped at {}: it grew past its {} MiB cap]\n",
        crate::timefmt::rfc3339(time::OffsetDateTime::now_utc()),
        cap / (1024 * 1024)
    );
    // One append, so that the marker and the kept lines stay together.
    file.write_all(&[marker.as_bytes(), &tail].concat())?;
    Ok(Some(dropped))
}

/// The last `keep` bytes of the file (of length `len`), from the first line start within them.
fn read_tail(file: &mut File, len: u64, keep: u64) -> io::Result<Vec<u8>> {
    file.seek(SeekFrom::Start(len.saturating_sub(keep)))?;
    let mut tail = Vec::new();
    file.take(keep).read_to_end(&mut tail)?;
    if len > keep {
        let start = tail.iter().position(|b| *b == b'\n').map_or(tail.len(), |i| i + 1);
        tail.drain(..start);
    }
    Ok(tail)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Removes its directory when dropped.
    struct Scratch(std::path::PathBuf);

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn log_with(tag: &str, lines: usize) -> (Scratch, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("firkin-logcap-{}-{tag}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("sandbox.log");
        let mut f = File::create(&path).unwrap();
        for i in 0..lines {
            writeln!(f, "line {i:06} of a chatty sandbox").unwrap();
        }
        (Scratch(dir), path)
    }

    #[test]
    fn a_log_within_the_cap_is_left_alone() {
        let (_dir, path) = log_with("small", 10);
        let before = std::fs::read(&path).unwrap();
        assert_eq!(cap_log(&path, 1024).unwrap(), None);
        assert_eq!(std::fs::read(&path).unwrap(), before);
        assert_eq!(cap_log(&path.with_extension("missing"), 1024).unwrap(), None);
    }

    #[test]
    fn a_log_over_the_cap_keeps_a_marker_and_whole_last_lines() {
        let (_dir, path) = log_with("cut", 5000); // 32 bytes a line
        let dropped = cap_log(&path, 4096).unwrap().expect("cut");
        let text = std::fs::read_to_string(&path).unwrap();
        let mut lines = text.lines();
        let marker = lines.next().unwrap();
        assert!(marker.starts_with(&format!("[firkin: {dropped} bytes of this log dropped")), "{marker}");
        let kept: Vec<&str> = lines.collect();
        assert!(kept.len() > 10 && kept.iter().all(|l| l.starts_with("line ")), "{kept:?}");
        assert_eq!(*kept.last().unwrap(), "line 004999 of a chatty sandbox");
        assert!(text.len() as u64 <= 2048 + 200);
        assert_eq!(dropped + (text.len() - marker.len() - 1) as u64, 5000 * 32);
    }

    #[test]
    fn writers_in_append_mode_continue_at_the_new_end() {
        let (_dir, path) = log_with("append", 5000);
        let mut writer = OpenOptions::new().append(true).open(&path).unwrap();
        cap_log(&path, 4096).unwrap().expect("cut");
        writer.write_all(b"after the cut\n").unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert!(meta.len() < 4096, "{}", meta.len());
        assert!(std::fs::read_to_string(&path)
            .unwrap()
            .ends_with("line 004999 of a chatty sandbox\nafter the cut\n"));
    }
}
