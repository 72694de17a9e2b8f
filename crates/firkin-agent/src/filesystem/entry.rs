//! `EntryInfo`: what the SDK learns about a file — type, permission bits and Go's
//! `ls`-style mode string, owner/group names, modification time, symlink target and metadata.

use std::collections::BTreeMap;
use std::fs::Metadata;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use serde::Serialize;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::xattr;
use crate::json;
use crate::user::{group_name, owner_name};

/// Go `io/fs` mode bits (all listed for reference; Linux files never carry some of them).
#[allow(dead_code)]
pub mod go_mode {
    pub const DIR: u32 = 1 << 31;
    pub const APPEND: u32 = 1 << 30;
    pub const EXCLUSIVE: u32 = 1 << 29;
    pub const TEMPORARY: u32 = 1 << 28;
    pub const SYMLINK: u32 = 1 << 27;
    pub const DEVICE: u32 = 1 << 26;
    pub const NAMED_PIPE: u32 = 1 << 25;
    pub const SOCKET: u32 = 1 << 24;
    pub const SETUID: u32 = 1 << 23;
    pub const SETGID: u32 = 1 << 22;
    pub const CHAR_DEVICE: u32 = 1 << 21;
    pub const STICKY: u32 = 1 << 20;
    pub const IRREGULAR: u32 = 1 << 19;
}

/// Converts a Unix `st_mode` into Go's `FileMode` (as `os.Lstat` does on Linux).
pub fn go_file_mode(st_mode: u32) -> u32 {
    let mut mode = st_mode & 0o777;
    match st_mode & libc::S_IFMT {
        libc::S_IFDIR => mode |= go_mode::DIR,
        libc::S_IFLNK => mode |= go_mode::SYMLINK,
        libc::S_IFBLK => mode |= go_mode::DEVICE,
        libc::S_IFCHR => mode |= go_mode::DEVICE | go_mode::CHAR_DEVICE,
        libc::S_IFIFO => mode |= go_mode::NAMED_PIPE,
        libc::S_IFSOCK => mode |= go_mode::SOCKET,
        _ => {}
    }
    if st_mode & libc::S_ISUID != 0 {
        mode |= go_mode::SETUID;
    }
    if st_mode & libc::S_ISGID != 0 {
        mode |= go_mode::SETGID;
    }
    if st_mode & libc::S_ISVTX != 0 {
        mode |= go_mode::STICKY;
    }
    mode
}

/// Go's `FileMode.String()`, e.g. `drwxr-xr-x`, `-rw-r--r--`, `Lrwxrwxrwx`.
pub fn go_mode_string(mode: u32) -> String {
    const TYPE_CHARS: &[u8] = b"dalTLDpSugct?";
    let mut out = String::with_capacity(12);
    for (i, c) in TYPE_CHARS.iter().enumerate() {
        if mode & (1 << (31 - i)) != 0 {
            out.push(char::from(*c));
        }
    }
    if out.is_empty() {
        out.push('-');
    }
    const RWX: &[u8] = b"rwxrwxrwx";
    for (i, c) in RWX.iter().enumerate() {
        out.push(if mode & (1 << (8 - i)) != 0 { char::from(*c) } else { '-' });
    }
    out
}

/// The proto `FileType` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum FileType {
    #[serde(rename = "FILE_TYPE_UNSPECIFIED")]
    Unspecified,
    #[serde(rename = "FILE_TYPE_FILE")]
    File,
    #[serde(rename = "FILE_TYPE_DIRECTORY")]
    Directory,
    #[serde(rename = "FILE_TYPE_SYMLINK")]
    Symlink,
}

fn type_of(ft: std::fs::FileType) -> FileType {
    if ft.is_dir() {
        FileType::Directory
    } else if ft.is_symlink() {
        FileType::Symlink
    } else if ft.is_file() || ft.is_fifo() || ft.is_socket() || ft.is_char_device() || ft.is_block_device() {
        FileType::File
    } else {
        FileType::Unspecified
    }
}

/// `EntryInfo` in proto3 JSON form.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EntryInfo {
    pub name: String,
    #[serde(rename = "type")]
    pub file_type: FileType,
    pub path: String,
    #[serde(serialize_with = "json::int64_as_string", skip_serializing_if = "json::is_zero_i64")]
    pub size: i64,
    #[serde(skip_serializing_if = "json::is_zero_u32")]
    pub mode: u32,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub permissions: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub owner: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub group: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub modified_time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub symlink_target: Option<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
}

fn rfc3339(meta: &Metadata) -> Option<String> {
    let nanos = i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec());
    OffsetDateTime::from_unix_timestamp_nanos(nanos).ok().and_then(|t| t.format(&Rfc3339).ok())
}

/// Builds the entry for `path` from its `lstat` data, as envd does. `mode` carries only the
/// permission bits (Go's `FileMode.Perm()`); `permissions` is the full `ls`-style string of the
/// entry itself. A symlink is reported with its target's type and permission bits and the fully
/// resolved target path in `symlinkTarget`; a dangling one has no type (`FILE_TYPE_UNSPECIFIED`,
/// which the SDK's `list()` leaves out), mode 0, and its own path as the target.
pub fn from_metadata(path: &Path, meta: &Metadata) -> EntryInfo {
    let (file_type, mode, symlink_target) = if meta.file_type().is_symlink() {
        let resolved = std::fs::canonicalize(path).ok();
        let (file_type, mode) = match resolved.as_deref().map(std::fs::metadata) {
            Some(Ok(target)) => (type_of(target.file_type()), target.mode() & 0o777),
            _ => (FileType::Unspecified, 0),
        };
        let shown = resolved.unwrap_or_else(|| path.to_path_buf());
        (file_type, mode, Some(shown.display().to_string()))
    } else {
        (type_of(meta.file_type()), meta.mode() & 0o777, None)
    };
    EntryInfo {
        name: path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "/".into()),
        file_type,
        path: path.display().to_string(),
        size: i64::try_from(meta.size()).unwrap_or(i64::MAX),
        mode,
        permissions: go_mode_string(go_file_mode(meta.mode())),
        owner: owner_name(meta.uid()),
        group: group_name(meta.gid()),
        modified_time: rfc3339(meta),
        symlink_target,
        metadata: xattr::read_metadata(path),
    }
}

/// `lstat`s `path` and builds its entry.
pub fn stat(path: &Path) -> io::Result<EntryInfo> {
    let meta = std::fs::symlink_metadata(path)?;
    Ok(from_metadata(path, &meta))
}

/// Entries below `root` up to `depth` levels (1 = direct children), depth-first in name order,
/// not descending into symlinks. `shown_root` is the path the entries are reported under.
pub fn walk(root: &Path, shown_root: &Path, depth: u32) -> io::Result<Vec<EntryInfo>> {
    let mut out = Vec::new();
    walk_into(root, shown_root, depth, &mut out)?;
    Ok(out)
}

fn walk_into(dir: &Path, shown: &Path, depth: u32, out: &mut Vec<EntryInfo>) -> io::Result<()> {
    if depth == 0 {
        return Ok(());
    }
    let mut names: Vec<_> = std::fs::read_dir(dir)?.filter_map(|e| e.ok().map(|e| e.file_name())).collect();
    names.sort();
    for name in names {
        let real: PathBuf = dir.join(&name);
        let shown_path = shown.join(&name);
        let Ok(meta) = std::fs::symlink_metadata(&real) else {
            continue; // vanished meanwhile
        };
        let mut entry = from_metadata(&real, &meta);
        entry.path = shown_path.display().to_string();
        out.push(entry);
        if meta.is_dir() && depth > 1 {
            // Unreadable subdirectories are skipped rather than failing the whole listing.
            let _ = walk_into(&real, &shown_path, depth - 1, out);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_mode_bits_and_strings() {
        let dir = go_file_mode(libc::S_IFDIR | 0o755);
        assert_eq!(dir, go_mode::DIR | 0o755);
        assert_eq!(go_mode_string(dir), "drwxr-xr-x");
        let file = go_file_mode(libc::S_IFREG | 0o644);
        assert_eq!(file, 420);
        assert_eq!(go_mode_string(file), "-rw-r--r--");
        let link = go_file_mode(libc::S_IFLNK | 0o777);
        assert_eq!(link, go_mode::SYMLINK | 0o777);
        assert_eq!(go_mode_string(link), "Lrwxrwxrwx");
        let tmp = go_file_mode(libc::S_IFDIR | libc::S_ISVTX | 0o777);
        assert_eq!(go_mode_string(tmp), "dtrwxrwxrwx");
        let suid = go_file_mode(libc::S_IFREG | libc::S_ISUID | 0o755);
        assert_eq!(go_mode_string(suid), "urwxr-xr-x");
        let null = go_file_mode(libc::S_IFCHR | 0o666);
        assert_eq!(go_mode_string(null), "Dcrw-rw-rw-");
    }

    #[test]
    fn entry_json_shape() {
        let dir = std::env::temp_dir().join(format!("firkin-entry-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("a.txt");
        std::fs::write(&file, b"hello").unwrap();
        std::os::unix::fs::symlink(&file, dir.join("link")).unwrap();
        let e = stat(&file).unwrap();
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["type"], "FILE_TYPE_FILE");
        assert_eq!(v["size"], "5");
        assert_eq!(v["name"], "a.txt");
        assert!(v["modifiedTime"].as_str().unwrap().ends_with('Z'));
        let listed = walk(&dir, &dir, 1).unwrap();
        assert_eq!(listed.len(), 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A scratch directory under the temp dir, removed on drop.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(tag: &str) -> Self {
            let dir = std::env::temp_dir().join(format!("firkin-entry-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            Self(std::fs::canonicalize(&dir).unwrap())
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn set_mode(path: &Path, mode: u32) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn mode_is_permission_bits_only() {
        let scratch = Scratch::new("mode");
        let sub = scratch.0.join("sub");
        std::fs::create_dir(&sub).unwrap();
        set_mode(&sub, 0o755);
        let d = stat(&sub).unwrap();
        assert_eq!((d.file_type, d.mode, d.permissions.as_str()), (FileType::Directory, 0o755, "drwxr-xr-x"));
        let sticky = scratch.0.join("sticky");
        std::fs::create_dir(&sticky).unwrap();
        set_mode(&sticky, 0o1777);
        let t = stat(&sticky).unwrap();
        assert_eq!((t.mode, t.permissions.as_str()), (0o777, "dtrwxrwxrwx"));
        let v = serde_json::to_value(&d).unwrap();
        assert_eq!(v["mode"], 0o755);
        assert!(v.get("symlinkTarget").is_none() && v.get("isSymlink").is_none());
    }

    #[test]
    fn symlinks_report_their_resolved_target() {
        let scratch = Scratch::new("links");
        let file = scratch.0.join("data.txt");
        std::fs::write(&file, b"0123456789").unwrap();
        set_mode(&file, 0o600);
        std::os::unix::fs::symlink("data.txt", scratch.0.join("rel")).unwrap();
        // A chain: the target shown is the final file, not the next link.
        std::os::unix::fs::symlink(scratch.0.join("rel"), scratch.0.join("chain")).unwrap();
        for name in ["rel", "chain"] {
            let e = stat(&scratch.0.join(name)).unwrap();
            assert_eq!(e.file_type, FileType::File, "{name}");
            assert_eq!(e.mode, 0o600, "{name}");
            assert_eq!(e.permissions, "Lrwxrwxrwx", "{name}");
            assert_eq!(e.symlink_target.as_deref(), Some(file.to_str().unwrap()), "{name}");
            assert_eq!(e.path, scratch.0.join(name).display().to_string());
        }
        std::os::unix::fs::symlink(&scratch.0, scratch.0.join("up")).unwrap();
        let up = stat(&scratch.0.join("up")).unwrap();
        assert_eq!(up.file_type, FileType::Directory);
        let dangling = scratch.0.join("dangling");
        std::os::unix::fs::symlink("missing", &dangling).unwrap();
        let d = stat(&dangling).unwrap();
        assert_eq!((d.file_type, d.mode), (FileType::Unspecified, 0));
        assert_eq!(d.symlink_target.as_deref(), Some(dangling.to_str().unwrap()));
    }
}
