//! Directory watching over inotify (via `notify`): translation of raw events into
//! `FilesystemEvent`s, the `WatchDir` stream, and the polled watchers of
//! `CreateWatcher` / `GetWatcherEvents` / `RemoveWatcher`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use notify::event::{ModifyKind, RenameMode};
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use serde::Serialize;
use serde_json::json;
use tokio::sync::mpsc;

use super::entry::{self, EntryInfo};
use crate::connect::StreamWriter;

/// The proto `EventType` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum EventType {
    #[serde(rename = "EVENT_TYPE_CREATE")]
    Create,
    #[serde(rename = "EVENT_TYPE_WRITE")]
    Write,
    #[serde(rename = "EVENT_TYPE_REMOVE")]
    Remove,
    #[serde(rename = "EVENT_TYPE_RENAME")]
    Rename,
    #[serde(rename = "EVENT_TYPE_CHMOD")]
    Chmod,
}

/// `FilesystemEvent`.
#[derive(Debug, Clone, Serialize)]
pub struct FilesystemEvent {
    pub name: String,
    #[serde(rename = "type")]
    pub event_type: EventType,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entry: Option<EntryInfo>,
}

/// Maps a notify event kind to the envd (fsnotify) event type; `None` for ignored kinds.
/// A move shows up as RENAME for the old name and CREATE for the new one, like fsnotify.
pub fn map_kind(kind: &EventKind) -> Option<EventType> {
    match kind {
        EventKind::Create(_) => Some(EventType::Create),
        EventKind::Remove(_) => Some(EventType::Remove),
        EventKind::Modify(ModifyKind::Name(RenameMode::From)) => Some(EventType::Rename),
        EventKind::Modify(ModifyKind::Name(RenameMode::To)) => Some(EventType::Create),
        EventKind::Modify(ModifyKind::Name(_)) => None,
        EventKind::Modify(ModifyKind::Metadata(_)) => Some(EventType::Chmod),
        EventKind::Modify(_) => Some(EventType::Write),
        EventKind::Access(_) | EventKind::Any | EventKind::Other => None,
    }
}

/// Errors starting or using a watcher.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("watch {path}: directory not found")]
    NotFound { path: PathBuf },
    #[error("watch {path}: path is not a directory")]
    NotADirectory { path: PathBuf },
    #[error("watch {path}: {source}")]
    Notify {
        path: PathBuf,
        #[source]
        source: notify::Error,
    },
    #[error("watcher '{0}' not found")]
    UnknownWatcher(String),
}

/// A running watch: dropping it stops watching.
pub struct DirWatch {
    _watcher: RecommendedWatcher,
    pub events: mpsc::UnboundedReceiver<FilesystemEvent>,
}

/// Starts watching `root`.
pub fn start(root: &Path, recursive: bool, include_entry: bool) -> Result<DirWatch, WatchError> {
    match std::fs::metadata(root) {
        Err(_) => return Err(WatchError::NotFound { path: root.into() }),
        Ok(m) if !m.is_dir() => return Err(WatchError::NotADirectory { path: root.into() }),
        Ok(_) => {}
    }
    let (tx, rx) = mpsc::unbounded_channel();
    let base = root.to_path_buf();
    let handler = move |res: notify::Result<notify::Event>| {
        let Ok(event) = res else {
            return;
        };
        let Some(event_type) = map_kind(&event.kind) else {
            return;
        };
        for path in &event.paths {
            let Ok(rel) = path.strip_prefix(&base) else {
                continue;
            };
            if super::is_upload_temp(rel) {
                continue;
            }
            let name = rel.display().to_string();
            if name.is_empty() {
                continue; // the watched directory itself
            }
            let entry = (include_entry
                && matches!(event_type, EventType::Create | EventType::Write | EventType::Chmod))
            .then(|| entry::stat(path).ok())
            .flatten();
            let _ = tx.send(FilesystemEvent { name, event_type, entry });
        }
    };
    let notify_err = |source| WatchError::Notify { path: root.into(), source };
    let mut watcher = notify::recommended_watcher(handler).map_err(notify_err)?;
    let mode = if recursive { RecursiveMode::Recursive } else { RecursiveMode::NonRecursive };
    watcher.watch(root, mode).map_err(notify_err)?;
    Ok(DirWatch { _watcher: watcher, events: rx })
}

/// Writes the `WatchDir` stream until the client goes away.
pub async fn stream(writer: StreamWriter, mut watch: DirWatch, keepalive: Duration) {
    if !writer.send(&json!({ "start": {} })).await {
        return;
    }
    loop {
        tokio::select! {
            ev = watch.events.recv() => match ev {
                Some(ev) => {
                    if !writer.send(&json!({ "filesystem": ev })).await {
                        return;
                    }
                }
                None => {
                    writer.finish(Ok(())).await;
                    return;
                }
            },
            _ = tokio::time::sleep(keepalive) => {
                if !writer.send(&json!({ "keepalive": {} })).await {
                    return;
                }
            }
            _ = writer.closed() => return,
        }
    }
}

/// Watchers polled with `GetWatcherEvents`.
#[derive(Default)]
pub struct WatcherTable {
    watchers: Mutex<HashMap<String, DirWatch>>,
}

impl WatcherTable {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, DirWatch>> {
        match self.watchers.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Registers `watch` and returns its id.
    pub fn add(&self, watch: DirWatch) -> String {
        let id = format!("{:032x}", rand::random::<u128>());
        self.lock().insert(id.clone(), watch);
        id
    }

    /// Events since the previous poll.
    pub fn drain(&self, id: &str) -> Result<Vec<FilesystemEvent>, WatchError> {
        let mut watchers = self.lock();
        let watch = watchers.get_mut(id).ok_or_else(|| WatchError::UnknownWatcher(id.to_string()))?;
        let mut out = Vec::new();
        while let Ok(ev) = watch.events.try_recv() {
            out.push(ev);
        }
        Ok(out)
    }

    /// Stops and forgets a watcher.
    pub fn remove(&self, id: &str) -> Result<(), WatchError> {
        self.lock().remove(id).map(|_| ()).ok_or_else(|| WatchError::UnknownWatcher(id.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{CreateKind, DataChange, MetadataKind, RemoveKind};

    #[test]
    fn kinds_map_like_fsnotify() {
        assert_eq!(map_kind(&EventKind::Create(CreateKind::File)), Some(EventType::Create));
        assert_eq!(map_kind(&EventKind::Modify(ModifyKind::Data(DataChange::Any))), Some(EventType::Write));
        assert_eq!(
            map_kind(&EventKind::Modify(ModifyKind::Metadata(MetadataKind::Any))),
            Some(EventType::Chmod)
        );
        assert_eq!(map_kind(&EventKind::Modify(ModifyKind::Name(RenameMode::From))), Some(EventType::Rename));
        assert_eq!(map_kind(&EventKind::Modify(ModifyKind::Name(RenameMode::Both))), None);
        assert_eq!(map_kind(&EventKind::Remove(RemoveKind::File)), Some(EventType::Remove));
    }
}
