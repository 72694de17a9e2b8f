//! Per-sandbox disks. runsc keeps a sandbox's root-filesystem overlay in a filestore file in
//! the directory `--overlay2=root:dir=…` names; firkin makes that directory the mount point of
//! the sandbox's own sparse ext4 image, loop-mounted. So what a sandbox writes goes to host disk,
//! not sandbox memory, and the image's size is a hard limit: past it the sandbox gets ENOSPC and
//! nothing else breaks; deleting a file gives the space back (gVisor punches holes).
//!
//! An image is a sparse copy of a blank one made once per size (`mkfs.ext4` without a journal:
//! the disk never outlives its engine sandbox, a restore makes a fresh one), so a new disk costs
//! a sparse copy and a loop mount (≈ 30 ms here) and only the blocks written use host space.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::ids::SandboxId;

/// Where one sandbox's disk failed.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("disk of sandbox {id}: {step}: {detail}")]
    Step { id: String, step: &'static str, detail: String },
}

/// The disks of one server (`run/disks/`: `<id>.img` and its mount point `<id>/`).
#[derive(Debug)]
pub struct Disks {
    dir: PathBuf,
}

/// Bytes used and total of a mounted disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskUsage {
    pub used: u64,
    pub total: u64,
}

impl Disks {
    pub fn new(dir: PathBuf) -> Disks {
        Disks { dir }
    }

    /// The filestore directory of `id` (its disk's mount point).
    pub fn mount_dir(&self, id: &SandboxId) -> PathBuf {
        self.dir.join(id.as_str())
    }

    fn image(&self, id: &SandboxId) -> PathBuf {
        self.dir.join(format!("{id}.img"))
    }

    /// Makes and mounts a fresh disk of `size_mb` for `id` (replacing any left from an earlier
    /// attempt); returns its mount point.
    pub fn create(&self, id: &SandboxId, size_mb: u32) -> Result<PathBuf, DiskError> {
        let step =
            |step: &'static str| move |detail: String| DiskError::Step { id: id.to_string(), step, detail };
        self.remove(id)?;
        let blank = self.blank(size_mb).map_err(step("making a blank image"))?;
        let (image, mnt) = (self.image(id), self.mount_dir(id));
        run(Command::new("cp").arg("--sparse=always").arg("--reflink=auto").arg(&blank).arg(&image))
            .map_err(step("copying the blank image"))?;
        std::fs::create_dir_all(&mnt).map_err(|e| step("creating the mount point")(e.to_string()))?;
        let mounted = run(Command::new("mount")
            .args(["-t", "ext4", "-o", "loop,noatime,nosuid,nodev"])
            .arg(&image)
            .arg(&mnt));
        if let Err(detail) = mounted {
            // Leave nothing half-made behind.
            let _ = self.remove(id);
            return Err(step("mounting")(detail));
        }
        Ok(mnt)
    }

    /// Unmounts and deletes the disk of `id`; a disk that is not there is fine.
    pub fn remove(&self, id: &SandboxId) -> Result<(), DiskError> {
        let step =
            |step: &'static str| move |detail: String| DiskError::Step { id: id.to_string(), step, detail };
        let mnt = self.mount_dir(id);
        if is_mount_point(&mnt) {
            // Detach: the loop device goes once the last user (a dying gofer) lets go.
            nix::mount::umount2(&mnt, nix::mount::MntFlags::MNT_DETACH)
                .map_err(|e| step("unmounting")(e.to_string()))?;
        }
        for gone in [std::fs::remove_dir(&mnt), std::fs::remove_file(self.image(id))] {
            match gone {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(step("deleting")(e.to_string()))
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Ids that have a disk (an image or a mount point), for reconciliation.
    pub fn list(&self) -> Vec<String> {
        let Ok(rd) = std::fs::read_dir(&self.dir) else { return Vec::new() };
        let mut ids: Vec<String> = rd
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with("blank-") && !n.starts_with('.'))
            .map(|n| n.strip_suffix(".img").map(str::to_owned).unwrap_or(n))
            .filter(|n| SandboxId::parse(n).is_ok())
            .collect();
        ids.sort();
        ids.dedup();
        ids
    }

    /// Space used and total of `id`'s mounted disk.
    pub fn usage(&self, id: &SandboxId) -> Option<DiskUsage> {
        let mnt = self.mount_dir(id);
        if !is_mount_point(&mnt) {
            return None;
        }
        let st = nix::sys::statvfs::statvfs(&mnt).ok()?;
        let frag = st.fragment_size();
        let total = st.blocks() * frag;
        Some(DiskUsage { used: total.saturating_sub(st.blocks_free() * frag), total })
    }

    /// The blank image of `size_mb`, made once (temp file, then rename).
    fn blank(&self, size_mb: u32) -> Result<PathBuf, String> {
        let path = self.dir.join(format!("blank-{size_mb}.img"));
        if path.is_file() {
            return Ok(path);
        }
        std::fs::create_dir_all(&self.dir).map_err(|e| e.to_string())?;
        let tmp = self.dir.join(format!(".blank-{size_mb}.{}.tmp", std::process::id()));
        let made = std::fs::File::create(&tmp)
            .and_then(|f| f.set_len(u64::from(size_mb) << 20))
            .map_err(|e| e.to_string())
            .and_then(|()| {
                run(Command::new("mkfs.ext4")
                    .args(["-q", "-F", "-m", "0", "-O", "^has_journal"])
                    .args(["-E", "lazy_itable_init=1,nodiscard"])
                    .arg(&tmp))
            })
            .and_then(|()| std::fs::rename(&tmp, &path).map_err(|e| e.to_string()));
        if made.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        made.map(|()| path)
    }
}

/// True when `path` is a mount point (it and its parent are on different devices).
fn is_mount_point(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let (Ok(me), Some(Ok(parent))) = (std::fs::metadata(path), path.parent().map(std::fs::metadata)) else {
        return false;
    };
    me.dev() != parent.dev()
}

/// Runs a helper program; its stderr is the error.
fn run(cmd: &mut Command) -> Result<(), String> {
    let out = cmd.stdin(Stdio::null()).output().map_err(|e| format!("spawning: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    Err(format!("{}: {}", out.status, String::from_utf8_lossy(&out.stderr).trim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_ids_with_images_or_mount_points_only() {
        let dir = std::env::temp_dir().join(format!("firkin-disks-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("aaaaaaaaaaaaaaaaaaaa")).unwrap();
        std::fs::write(dir.join("bbbbbbbbbbbbbbbbbbbb.img"), b"").unwrap();
        std::fs::write(dir.join("aaaaaaaaaaaaaaaaaaaa.img"), b"").unwrap();
        std::fs::write(dir.join("blank-1024.img"), b"").unwrap();
        std::fs::write(dir.join(".blank-1024.7.tmp"), b"").unwrap();
        let disks = Disks::new(dir.clone());
        assert_eq!(disks.list(), vec!["aaaaaaaaaaaaaaaaaaaa", "bbbbbbbbbbbbbbbbbbbb"]);
        let id = SandboxId::parse("aaaaaaaaaaaaaaaaaaaa").unwrap();
        assert_eq!(disks.usage(&id), None, "not mounted");
        disks.remove(&id).unwrap();
        assert_eq!(disks.list(), vec!["bbbbbbbbbbbbbbbbbbbb"]);
        let _ = std::fs::remove_dir_all(dir);
    }
}
