//! Snapshot artifacts: a checkpoint image directory plus a versioned `manifest.json` holding
//! what a restore needs (resources, env, the agent token it was taken with) and an integrity
//! record (size + SHA-256 of every file). Published atomically (temp dir, fsync, rename);
//! verified before restore; a mismatch is moved to quarantine and never restored.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::atomic::write_json_atomic;
use crate::config::Layout;
use crate::digest::sha256_file;

/// Version of the snapshot manifest format. 2 added `rootfs`, `rootfsId`, `workdir` and
/// `template`; format-1 manifests are still read (their rootfs was `base-v1`).
pub const SNAPSHOT_FORMAT: u32 = 2;
const READABLE_FORMATS: std::ops::RangeInclusive<u32> = 1..=SNAPSHOT_FORMAT;
/// Name of the manifest file inside a published image directory.
pub const MANIFEST: &str = "manifest.json";

/// Size and digest of one artifact file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileDigest {
    pub name: String,
    pub size: u64,
    pub sha256: String,
}

/// Everything known about a snapshot.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotManifest {
    pub format: u32,
    pub snapshot_id: String,
    pub names: Vec<String>,
    pub source_sandbox_id: String,
    pub template_id: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    pub cpu_count: u32,
    pub memory_mb: u32,
    pub disk_size_mb: u32,
    pub env_vars: BTreeMap<String, String>,
    pub metadata: BTreeMap<String, String>,
    /// The token the agent inside the image holds (needed to re-initialise it).
    pub access_token: String,
    /// Digest of the agent binary the image was taken with: a restore needs the same one.
    pub agent_sha256: String,
    pub files: Vec<FileDigest>,
    /// The cached rootfs the image's memory overlay sits on.
    #[serde(default = "crate::template::default_rootfs")]
    pub rootfs: String,
    /// Identity of that rootfs build (SHA-256 of its `.firkin-rootfs.json`); empty if unknown.
    #[serde(default)]
    pub rootfs_id: String,
    /// Default working directory for commands in sandboxes restored from this image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workdir: Option<String>,
    /// The source sandbox's egress policy: sandboxes made from this artifact inherit it unless
    /// their create says otherwise. Absent = open.
    #[serde(default, skip_serializing_if = "crate::network::EgressPolicy::is_open")]
    pub egress: crate::network::EgressPolicy,
    /// Set on template artifacts: what was built and from which spec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<crate::template::TemplateInfo>,
}

/// Snapshot store failures, naming the snapshot.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot {id}: {op}: {source}")]
    Io { id: String, op: &'static str, source: std::io::Error },
    #[error("snapshot {id} failed its integrity check ({detail}); moved to quarantine")]
    Integrity { id: String, detail: String },
    #[error(
        "snapshot {id} was taken with a different firkin-agent build; it cannot be restored by this one"
    )]
    AgentMismatch { id: String },
}

/// An on-disk store of checkpoint artifacts: one for snapshots, one for templates.
#[derive(Debug)]
pub struct SnapshotStore {
    /// Published artifacts live in `root/<id>/`; staging in `root/.<id>.tmp`.
    root: PathBuf,
    quarantine: PathBuf,
    /// Artifacts fully hashed since this process started, with each file's change stamp then:
    /// re-hashing gigabytes on every create is waste, but a file changed since is re-hashed.
    verified: Mutex<HashMap<String, Vec<ChangeStamp>>>,
}

/// What tells that a file changed without reading it: size, inode and ctime (which no
/// ordinary write can leave unchanged or set back).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeStamp {
    size: u64,
    ino: u64,
    ctime: (i64, i64),
}

/// The change stamps of `files` in `dir` (a missing file gets a stamp no file matches).
pub fn change_stamps(dir: &Path, files: &[FileDigest]) -> Vec<ChangeStamp> {
    use std::os::unix::fs::MetadataExt;
    files
        .iter()
        .map(|f| match fs::metadata(dir.join(&f.name)) {
            Ok(md) => ChangeStamp { size: md.len(), ino: md.ino(), ctime: (md.ctime(), md.ctime_nsec()) },
            Err(_) => ChangeStamp { size: u64::MAX, ino: 0, ctime: (0, 0) },
        })
        .collect()
}

/// Size and SHA-256 of every file in `dir` (sorted by name, `skip` left out), fsyncing each.
pub fn digest_dir(dir: &Path, skip: &[&str]) -> std::io::Result<Vec<FileDigest>> {
    let mut entries: Vec<_> = fs::read_dir(dir)?.flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    let mut files = Vec::new();
    for entry in entries {
        let name = entry.file_name().to_string_lossy().into_owned();
        if skip.contains(&name.as_str()) {
            continue;
        }
        let (size, sha256) = sha256_file(&entry.path())?;
        fs::File::open(entry.path())?.sync_all()?;
        files.push(FileDigest { name, size, sha256 });
    }
    Ok(files)
}

/// Checks `dir` against `files`: sizes always, contents too when `full`. Says what differs.
pub fn check_dir(dir: &Path, files: &[FileDigest], full: bool) -> Result<(), String> {
    for f in files {
        let path = dir.join(&f.name);
        match fs::metadata(&path) {
            Err(e) => return Err(format!("{}: {e}", f.name)),
            Ok(md) if md.len() != f.size => {
                return Err(format!("{}: size {} != recorded {}", f.name, md.len(), f.size))
            }
            Ok(_) if full => match sha256_file(&path) {
                Ok((_, d)) if d == f.sha256 => {}
                Ok(_) => return Err(format!("{}: sha256 differs from the record", f.name)),
                Err(e) => return Err(format!("{}: {e}", f.name)),
            },
            Ok(_) => {}
        }
    }
    Ok(())
}

impl SnapshotStore {
    /// The snapshot store (`create_snapshot`, fork).
    pub fn snapshots(layout: &Layout) -> SnapshotStore {
        SnapshotStore::at(layout.snapshot_images_dir(), layout.quarantine_dir())
    }

    /// The template store (built templates).
    pub fn templates(layout: &Layout) -> SnapshotStore {
        SnapshotStore::at(layout.templates_dir(), layout.quarantine_dir())
    }

    fn at(root: PathBuf, quarantine: PathBuf) -> SnapshotStore {
        SnapshotStore { root, quarantine, verified: Mutex::new(HashMap::new()) }
    }

    /// A fresh artifact id (`<prefix>-<16 random chars>`, valid as a template id).
    pub fn new_id(prefix: &str) -> String {
        let id = crate::ids::SandboxId::generate();
        format!("{prefix}-{}", &id.as_str()[..16])
    }

    /// Temp directory to checkpoint into before [`SnapshotStore::publish`].
    pub fn staging_dir(&self, id: &str) -> PathBuf {
        self.root.join(format!(".{id}.tmp"))
    }

    pub fn image_dir(&self, id: &str) -> PathBuf {
        self.root.join(id)
    }

    /// Hashes the staged files, writes the manifest and renames the directory into place.
    pub fn publish(&self, manifest: SnapshotManifest) -> Result<SnapshotManifest, SnapshotError> {
        let id = manifest.snapshot_id.clone();
        let files = digest_dir(&self.staging_dir(&id), &[MANIFEST]).map_err(|source| SnapshotError::Io {
            id,
            op: "hashing staged image",
            source,
        })?;
        self.publish_digested(manifest, files)
    }

    /// [`SnapshotStore::publish`] with the staged files already hashed (and fsynced) by
    /// [`digest_dir`], e.g. while the image was being proven restorable.
    pub fn publish_digested(
        &self,
        mut manifest: SnapshotManifest,
        files: Vec<FileDigest>,
    ) -> Result<SnapshotManifest, SnapshotError> {
        let id = manifest.snapshot_id.clone();
        let io = |op, source| SnapshotError::Io { id: id.clone(), op, source };
        let staged = self.staging_dir(&id);
        manifest.files = files;
        write_json_atomic(&staged.join(MANIFEST), &manifest).map_err(|e| io("writing manifest", e.source))?;
        let dest = self.image_dir(&id);
        fs::rename(&staged, &dest).map_err(|e| io("publishing", e))?;
        if let Ok(d) = fs::File::open(&self.root) {
            let _ = d.sync_all();
        }
        let stamps = change_stamps(&dest, &manifest.files);
        self.lock_verified().insert(id, stamps);
        Ok(manifest)
    }

    fn lock_verified(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<ChangeStamp>>> {
        self.verified.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every published snapshot, newest first.
    pub fn list(&self) -> Vec<SnapshotManifest> {
        let mut out: Vec<SnapshotManifest> = fs::read_dir(&self.root)
            .map(|rd| {
                rd.flatten()
                    .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
                    .filter_map(|e| fs::read(e.path().join(MANIFEST)).ok())
                    .filter_map(|b| serde_json::from_slice::<SnapshotManifest>(&b).ok())
                    .filter(|m| READABLE_FORMATS.contains(&m.format))
                    .collect()
            })
            .unwrap_or_default();
        out.sort_by(|a, b| b.created_at.cmp(&a.created_at).then_with(|| b.snapshot_id.cmp(&a.snapshot_id)));
        out
    }

    /// Finds a snapshot by id or name (the newest with that name).
    pub fn find(&self, id_or_name: &str) -> Option<SnapshotManifest> {
        self.list()
            .into_iter()
            .find(|m| m.snapshot_id == id_or_name || m.names.iter().any(|n| n == id_or_name))
    }

    /// Deletes a snapshot; false when there is none.
    pub fn delete(&self, id_or_name: &str) -> bool {
        let Some(m) = self.find(id_or_name) else { return false };
        self.lock_verified().remove(&m.snapshot_id);
        fs::remove_dir_all(self.image_dir(&m.snapshot_id)).is_ok()
    }

    /// Checks the artifact against its record: sizes always, digests once per process. A
    /// mismatch quarantines the snapshot.
    pub fn verify(&self, m: &SnapshotManifest, agent_sha256: &str) -> Result<(), SnapshotError> {
        if m.agent_sha256 != agent_sha256 {
            return Err(SnapshotError::AgentMismatch { id: m.snapshot_id.clone() });
        }
        let dir = self.image_dir(&m.snapshot_id);
        let stamps = change_stamps(&dir, &m.files);
        let full = self.lock_verified().get(&m.snapshot_id) != Some(&stamps);
        if let Err(detail) = check_dir(&dir, &m.files, full) {
            self.quarantine(&m.snapshot_id);
            return Err(SnapshotError::Integrity { id: m.snapshot_id.clone(), detail });
        }
        if full {
            self.lock_verified().insert(m.snapshot_id.clone(), stamps);
        }
        Ok(())
    }

    /// Moves a snapshot out of the store into `quarantine/`.
    pub fn quarantine(&self, id: &str) {
        let q = &self.quarantine;
        let stamp = OffsetDateTime::now_utc().unix_timestamp();
        let moved = fs::create_dir_all(q)
            .and_then(|()| fs::rename(self.image_dir(id), q.join(format!("{id}.{stamp}"))));
        if let Err(e) = moved {
            tracing::warn!(snapshot = id, error = %e, "moving a snapshot to quarantine failed");
        }
        self.lock_verified().remove(id);
        tracing::error!(snapshot = id, "snapshot quarantined");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(tag: &str) -> (SnapshotStore, PathBuf) {
        let dir = std::env::temp_dir().join(format!("firkin-snap-test-{}-{tag}", std::process::id()));
        let layout = Layout { state_dir: dir.join("state"), cache_dir: dir.join("cache") };
        (SnapshotStore::snapshots(&layout), dir)
    }

    fn manifest(id: &str) -> SnapshotManifest {
        SnapshotManifest {
            format: SNAPSHOT_FORMAT,
            snapshot_id: id.into(),
            names: vec!["named".into()],
            source_sandbox_id: "src".into(),
            template_id: "base".into(),
            created_at: OffsetDateTime::now_utc(),
            cpu_count: 1,
            memory_mb: 128,
            disk_size_mb: 1,
            env_vars: BTreeMap::new(),
            metadata: BTreeMap::new(),
            access_token: "t".into(),
            agent_sha256: "agent".into(),
            files: vec![],
            rootfs: "base-v1".into(),
            rootfs_id: String::new(),
            workdir: None,
            egress: Default::default(),
            template: None,
        }
    }

    #[test]
    fn publish_find_verify_and_quarantine_on_tamper() {
        let (s, dir) = store("a");
        let staged = s.staging_dir("snap-1");
        fs::create_dir_all(&staged).unwrap();
        fs::write(staged.join("checkpoint.img"), b"image bytes").unwrap();
        let m = s.publish(manifest("snap-1")).unwrap();
        assert_eq!(m.files.len(), 1);
        assert!(!staged.exists());
        assert_eq!(s.find("named").unwrap().snapshot_id, "snap-1");
        assert!(s.verify(&m, "agent").is_ok());
        assert!(matches!(s.verify(&m, "other"), Err(SnapshotError::AgentMismatch { .. })));
        // The store hashed it once; a same-size mutation since changes its ctime and is re-hashed.
        let s2 = &s;
        fs::write(s.image_dir("snap-1").join("checkpoint.img"), b"IMAGE BYTES").unwrap();
        assert!(matches!(s2.verify(&m, "agent"), Err(SnapshotError::Integrity { .. })));
        assert!(s2.find("snap-1").is_none(), "quarantined snapshots are gone from the store");
        assert_eq!(fs::read_dir(&s.quarantine).unwrap().count(), 1);
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn truncation_is_caught_without_rehashing_and_delete_works() {
        let (s, dir) = store("b");
        fs::create_dir_all(s.staging_dir("snap-2")).unwrap();
        fs::write(s.staging_dir("snap-2").join("pages.img"), vec![7u8; 4096]).unwrap();
        let m = s.publish(manifest("snap-2")).unwrap();
        fs::write(s.image_dir("snap-2").join("pages.img"), vec![7u8; 100]).unwrap();
        assert!(matches!(s.verify(&m, "agent"), Err(SnapshotError::Integrity { .. })));
        assert!(!s.delete("snap-2"), "already quarantined");
        fs::create_dir_all(s.staging_dir("snap-3")).unwrap();
        s.publish(manifest("snap-3")).unwrap();
        assert!(s.delete("snap-3"));
        assert!(s.list().is_empty());
        let _ = fs::remove_dir_all(dir);
    }
}
