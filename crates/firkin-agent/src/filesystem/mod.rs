//! The `filesystem.Filesystem` service: Stat, MakeDir, Move, ListDir, Remove and the watchers.
//! Paths are resolved against the calling user's home; directories created on the user's behalf
//! are chowned to that user.

pub mod entry;
pub mod watch;
pub mod xattr;

use std::io;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::{json, Value};

use self::watch::{WatchError, WatcherTable};
use crate::connect::{Code, ConnectError};
use crate::context::RequestUserError;
use crate::json;
use crate::user::SandboxUser;

#[derive(Debug, Default, Deserialize)]
pub struct PathRequest {
    #[serde(default, deserialize_with = "json::nullable")]
    pub path: String,
}

#[derive(Debug, Default, Deserialize)]
pub struct MoveRequest {
    #[serde(default, deserialize_with = "json::nullable")]
    pub source: String,
    #[serde(default, deserialize_with = "json::nullable")]
    pub destination: String,
}

#[derive(Debug, Default, Deserialize)]
pub struct ListDirRequest {
    #[serde(default, deserialize_with = "json::nullable")]
    pub path: String,
    #[serde(default, deserialize_with = "json::u32_or_zero")]
    pub depth: u32,
}

#[derive(Debug, Default, Deserialize)]
pub struct WatchRequest {
    #[serde(default, deserialize_with = "json::nullable")]
    pub path: String,
    #[serde(default, deserialize_with = "json::nullable")]
    pub recursive: bool,
    #[serde(default, rename = "includeEntry", alias = "include_entry", deserialize_with = "json::nullable")]
    pub include_entry: bool,
    #[serde(
        default,
        rename = "allowNetworkMounts",
        alias = "allow_network_mounts",
        deserialize_with = "json::nullable"
    )]
    pub allow_network_mounts: bool,
}

#[derive(Debug, Default, Deserialize)]
pub struct WatcherIdRequest {
    #[serde(default, rename = "watcherId", alias = "watcher_id", deserialize_with = "json::nullable")]
    pub watcher_id: String,
}

/// Errors of the filesystem service, each naming the operation and path.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    #[error("{op}: path '{}' not found", path.display())]
    NotFound { op: &'static str, path: PathBuf },
    #[error("directory already exists: {}", .0.display())]
    AlreadyExists(PathBuf),
    #[error("path already exists but it is not a directory: {}", .0.display())]
    ExistsNotDir(PathBuf),
    #[error("{op}: path is not a directory: {}", path.display())]
    NotADirectory { op: &'static str, path: PathBuf },
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Watch(#[from] WatchError),
    #[error(transparent)]
    User(#[from] RequestUserError),
}

impl FsError {
    fn io(op: &'static str, path: &Path, source: io::Error) -> Self {
        if source.kind() == io::ErrorKind::NotFound {
            FsError::NotFound { op, path: path.into() }
        } else {
            FsError::Io { op, path: path.into(), source }
        }
    }

    fn code(&self) -> Code {
        match self {
            FsError::NotFound { .. } => Code::NotFound,
            FsError::AlreadyExists(_) => Code::AlreadyExists,
            FsError::ExistsNotDir(_) | FsError::NotADirectory { .. } => Code::InvalidArgument,
            FsError::Io { source, .. } => match source.kind() {
                io::ErrorKind::PermissionDenied => Code::PermissionDenied,
                _ if source.raw_os_error() == Some(libc::ENOSPC) => Code::ResourceExhausted,
                _ if source.raw_os_error() == Some(libc::ENOTDIR) => Code::InvalidArgument,
                _ => Code::Internal,
            },
            FsError::Watch(WatchError::NotFound { .. } | WatchError::UnknownWatcher(_)) => Code::NotFound,
            FsError::Watch(WatchError::NotADirectory { .. }) => Code::InvalidArgument,
            FsError::Watch(WatchError::Notify { .. }) => Code::Internal,
            FsError::User(_) => Code::Unauthenticated,
        }
    }
}

impl From<FsError> for ConnectError {
    fn from(e: FsError) -> Self {
        ConnectError::new(e.code(), e.to_string())
    }
}

/// Name prefix of the temp files `/files` uploads write before renaming them into place.
/// Watchers hide paths carrying it, so clients only see events for the real file names.
pub const UPLOAD_TEMP_PREFIX: &str = ".firkin-upload-";

/// Whether `rel` (a path below a watched directory) names an in-flight upload temp file.
pub fn is_upload_temp(rel: &Path) -> bool {
    rel.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(UPLOAD_TEMP_PREFIX))
}

/// Creates `dir` and any missing parents, chowning each directory it creates to `user`.
pub fn ensure_dirs(dir: &Path, user: &SandboxUser) -> io::Result<()> {
    let mut missing = Vec::new();
    let mut cur = dir;
    while !cur.exists() {
        missing.push(cur.to_path_buf());
        match cur.parent() {
            Some(p) => cur = p,
            None => break,
        }
    }
    for d in missing.iter().rev() {
        match std::fs::create_dir(d) {
            Ok(()) => chown_to(d, user)?,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    if !dir.is_dir() {
        return Err(io::Error::from_raw_os_error(libc::ENOTDIR));
    }
    Ok(())
}

/// Gives `path` to `user` (no-op when the agent is not root).
pub fn chown_to(path: &Path, user: &SandboxUser) -> io::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(());
    }
    std::os::unix::fs::lchown(path, Some(user.uid.as_raw()), Some(user.gid.as_raw()))
}

/// The filesystem service state.
#[derive(Default)]
pub struct FilesystemService {
    watchers: WatcherTable,
}

impl FilesystemService {
    /// `Stat`.
    pub fn stat(&self, user: &SandboxUser, req: PathRequest) -> Result<Value, FsError> {
        let path = crate::paths::resolve(&req.path, &user.home);
        let entry = entry::stat(&path).map_err(|e| FsError::io("stat", &path, e))?;
        Ok(json!({ "entry": entry }))
    }

    /// `MakeDir`.
    pub fn make_dir(&self, user: &SandboxUser, req: PathRequest) -> Result<Value, FsError> {
        let path = crate::paths::resolve(&req.path, &user.home);
        match std::fs::metadata(&path) {
            Ok(m) if m.is_dir() => return Err(FsError::AlreadyExists(path)),
            Ok(_) => return Err(FsError::ExistsNotDir(path)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(FsError::io("make_dir", &path, e)),
        }
        ensure_dirs(&path, user).map_err(|e| FsError::io("make_dir", &path, e))?;
        let entry = entry::stat(&path).map_err(|e| FsError::io("make_dir", &path, e))?;
        Ok(json!({ "entry": entry }))
    }

    /// `Move`: rename, creating the destination's parent directories.
    pub fn move_entry(&self, user: &SandboxUser, req: MoveRequest) -> Result<Value, FsError> {
        let source = crate::paths::resolve(&req.source, &user.home);
        let destination = crate::paths::resolve(&req.destination, &user.home);
        std::fs::symlink_metadata(&source).map_err(|e| FsError::io("move", &source, e))?;
        if let Some(parent) = destination.parent() {
            ensure_dirs(parent, user).map_err(|e| FsError::io("move", parent, e))?;
        }
        std::fs::rename(&source, &destination).map_err(|e| FsError::io("move", &source, e))?;
        let entry = entry::stat(&destination).map_err(|e| FsError::io("move", &destination, e))?;
        Ok(json!({ "entry": entry }))
    }

    /// `ListDir`.
    pub fn list_dir(&self, user: &SandboxUser, req: ListDirRequest) -> Result<Value, FsError> {
        let path = crate::paths::resolve(&req.path, &user.home);
        let resolved = std::fs::canonicalize(&path).map_err(|e| FsError::io("list_dir", &path, e))?;
        if !resolved.is_dir() {
            return Err(FsError::NotADirectory { op: "list_dir", path });
        }
        let depth = req.depth.max(1);
        let entries = entry::walk(&resolved, &path, depth).map_err(|e| FsError::io("list_dir", &path, e))?;
        Ok(json!({ "entries": entries }))
    }

    /// `Remove`: recursive; a missing path is not an error.
    pub fn remove(&self, user: &SandboxUser, req: PathRequest) -> Result<Value, FsError> {
        let path = crate::paths::resolve(&req.path, &user.home);
        let result = match std::fs::symlink_metadata(&path) {
            Ok(m) if m.is_dir() => std::fs::remove_dir_all(&path),
            Ok(_) => std::fs::remove_file(&path),
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => Ok(json!({})),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(json!({})),
            Err(e) => Err(FsError::io("remove", &path, e)),
        }
    }

    /// Starts a watch for `WatchDir` / `CreateWatcher`.
    pub fn watch(&self, user: &SandboxUser, req: &WatchRequest) -> Result<watch::DirWatch, FsError> {
        let path = crate::paths::resolve(&req.path, &user.home);
        Ok(watch::start(&path, req.recursive, req.include_entry)?)
    }

    /// `CreateWatcher`.
    pub fn create_watcher(&self, user: &SandboxUser, req: WatchRequest) -> Result<Value, FsError> {
        let watch = self.watch(user, &req)?;
        let id = self.watchers.add(watch);
        Ok(json!({ "watcherId": id }))
    }

    /// `GetWatcherEvents`.
    pub fn get_watcher_events(&self, req: WatcherIdRequest) -> Result<Value, FsError> {
        let events = self.watchers.drain(&req.watcher_id)?;
        Ok(json!({ "events": events }))
    }

    /// `RemoveWatcher`.
    pub fn remove_watcher(&self, req: WatcherIdRequest) -> Result<Value, FsError> {
        self.watchers.remove(&req.watcher_id)?;
        Ok(json!({}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watch_request_accepts_both_spellings() {
        let a: WatchRequest =
            serde_json::from_str(r#"{"path":"/x","includeEntry":true,"recursive":true}"#).unwrap();
        assert!(a.include_entry && a.recursive);
        let b: WatchRequest = serde_json::from_str(r#"{"path":"/x","include_entry":true}"#).unwrap();
        assert!(b.include_entry);
        let w: WatcherIdRequest = serde_json::from_str(r#"{"watcher_id":"abc"}"#).unwrap();
        assert_eq!(w.watcher_id, "abc");
        let w: WatcherIdRequest = serde_json::from_str(r#"{"watcherId":"abc"}"#).unwrap();
        assert_eq!(w.watcher_id, "abc");
    }
}
