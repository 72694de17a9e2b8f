//! `GET /files` (download) and `POST /files` (multipart or octet-stream upload, optionally
//! gzipped), with token-or-signature auth, atomic writes (temp file, fsync, rename),
//! ownership by the resolved user and `X-Metadata-*` → `user.e2b.*` xattrs.

use std::collections::{BTreeMap, HashSet};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, Multipart, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use firkin_wire::signature::{self, FileOperation, SignatureRejection};
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use crate::auth;
use crate::context::{AgentConfig, ConfigCell};
use crate::filesystem::{chown_to, ensure_dirs, xattr, UPLOAD_TEMP_PREFIX};
use crate::http_error::json_error;
use crate::user::{SandboxUser, UserError};

/// Metadata limits (envd's).
const MAX_METADATA_KEY: usize = 246;
const MAX_METADATA_TOTAL: usize = 4096;
const DOWNLOAD_CHUNK: usize = 64 * 1024;

#[derive(Debug, Default, Deserialize)]
pub struct FilesQuery {
    path: Option<String>,
    username: Option<String>,
    signature: Option<String>,
    signature_expiration: Option<i64>,
}

/// Errors of the `/files` routes; [`FilesError::status`] is the single status mapping.
#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    #[error("agent not initialised")]
    NotInitialised,
    #[error("unauthorized access, invalid or missing access token")]
    Unauthorized,
    #[error("{}", SignatureRejection::Mismatch.message())]
    BadSignature,
    #[error("{}", SignatureRejection::Expired.message())]
    ExpiredSignature,
    #[error(transparent)]
    BadUser(#[from] UserError),
    #[error("path is required")]
    MissingPath,
    #[error("path '{}' does not exist", .0.display())]
    NotFound(PathBuf),
    #[error("path '{}' is a directory", .0.display())]
    IsDirectory(PathBuf),
    #[error("path '{}' appears more than once in the upload", .0.display())]
    DuplicatePath(PathBuf),
    #[error("invalid metadata: {0}")]
    BadMetadata(String),
    #[error("invalid upload body: {0}")]
    BadBody(String),
    #[error("no files in the upload")]
    NoFiles,
    #[error("{op} '{}': {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl FilesError {
    fn io(op: &'static str, path: &Path, source: io::Error) -> Self {
        FilesError::Io { op, path: path.into(), source }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            FilesError::NotInitialised => StatusCode::SERVICE_UNAVAILABLE,
            FilesError::Unauthorized
            | FilesError::BadSignature
            | FilesError::ExpiredSignature
            | FilesError::BadUser(_) => StatusCode::UNAUTHORIZED,
            FilesError::NotFound(_) => StatusCode::NOT_FOUND,
            FilesError::MissingPath
            | FilesError::IsDirectory(_)
            | FilesError::DuplicatePath(_)
            | FilesError::BadMetadata(_)
            | FilesError::BadBody(_)
            | FilesError::NoFiles => StatusCode::BAD_REQUEST,
            FilesError::Io { source, .. } => match source.raw_os_error() {
                Some(libc::ENOSPC | libc::EDQUOT) => StatusCode::INSUFFICIENT_STORAGE,
                Some(libc::ENOTDIR | libc::EISDIR) => StatusCode::BAD_REQUEST,
                Some(libc::EACCES | libc::EPERM | libc::EROFS) => StatusCode::FORBIDDEN,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            },
        }
    }
}

impl IntoResponse for FilesError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!("files: {self}");
        }
        json_error(status, self.to_string())
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Token header, or a valid signature for `op` on the query's path and username.
fn authorize(
    config: &AgentConfig,
    headers: &HeaderMap,
    q: &FilesQuery,
    op: FileOperation,
) -> Result<(), FilesError> {
    if auth::token_matches(headers, &config.access_token) {
        return Ok(());
    }
    let presented = q.signature.as_deref().ok_or(FilesError::Unauthorized)?;
    signature::verify(
        presented,
        q.path.as_deref().unwrap_or(""),
        op,
        q.username.as_deref().unwrap_or(""),
        &config.access_token,
        q.signature_expiration,
        unix_now(),
    )
    .map_err(|r| match r {
        SignatureRejection::Mismatch => FilesError::BadSignature,
        SignatureRejection::Expired => FilesError::ExpiredSignature,
    })
}

fn query_user(config: &AgentConfig, q: &FilesQuery) -> Result<SandboxUser, FilesError> {
    let name = q.username.as_deref().filter(|n| !n.is_empty()).unwrap_or(&config.default_user);
    Ok(SandboxUser::lookup(name)?)
}

fn config_of(cell: &ConfigCell) -> Result<Arc<AgentConfig>, FilesError> {
    cell.get().ok_or(FilesError::NotInitialised)
}

/// `GET /files`.
pub async fn download(
    State(cell): State<Arc<ConfigCell>>,
    Query(q): Query<FilesQuery>,
    headers: HeaderMap,
) -> Response {
    let config = match config_of(&cell) {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    match download_inner(&config, &q, &headers) {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

fn download_inner(config: &AgentConfig, q: &FilesQuery, headers: &HeaderMap) -> Result<Response, FilesError> {
    authorize(config, headers, q, FileOperation::Read)?;
    let user = query_user(config, q)?;
    let raw = q.path.as_deref().filter(|p| !p.is_empty()).ok_or(FilesError::MissingPath)?;
    let path = crate::paths::resolve(raw, &user.home);
    let meta = match std::fs::metadata(&path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(FilesError::NotFound(path)),
        Err(e) => return Err(FilesError::io("stat", &path, e)),
    };
    if meta.is_dir() {
        return Err(FilesError::IsDirectory(path));
    }
    let file = std::fs::File::open(&path).map_err(|e| FilesError::io("open", &path, e))?;
    let gzip = headers
        .get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|e| e.trim().split(';').next() == Some("gzip")));

    let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(8);
    tokio::task::spawn_blocking(move || {
        let sink = ChannelWriter { tx: tx.clone() };
        let result = if gzip {
            let mut enc = flate2::write::GzEncoder::new(sink, flate2::Compression::fast());
            copy_file(file, &mut enc).and_then(|()| enc.finish().map(|_| ()))
        } else {
            let mut sink = sink;
            copy_file(file, &mut sink)
        };
        if let Err(e) = result {
            let _ = tx.blocking_send(Err(e));
        }
    });
    let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
    let mut response = Response::new(body);
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    if gzip {
        h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    } else if let Ok(v) = HeaderValue::from_str(&meta.len().to_string()) {
        h.insert(header::CONTENT_LENGTH, v);
    }
    Ok(response)
}

fn copy_file(mut file: std::fs::File, sink: &mut impl Write) -> io::Result<()> {
    let mut buf = vec![0u8; DOWNLOAD_CHUNK];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return sink.flush();
        }
        sink.write_all(&buf[..n])?;
    }
}

/// Blocking writer that forwards each write as one body chunk.
struct ChannelWriter {
    tx: mpsc::Sender<io::Result<Bytes>>,
}

impl Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.tx
            .blocking_send(Ok(Bytes::copy_from_slice(buf)))
            .map_err(|_| io::Error::from(io::ErrorKind::BrokenPipe))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// `X-Metadata-<Key>` headers, keys lowercased, validated against envd's limits.
pub fn metadata_from_headers(headers: &HeaderMap) -> Result<BTreeMap<String, String>, FilesError> {
    let mut out = BTreeMap::new();
    let mut total = 0;
    for (name, value) in headers {
        let Some(key) = name.as_str().strip_prefix("x-metadata-") else {
            continue;
        };
        let key = key.to_ascii_lowercase();
        let value = value
            .to_str()
            .ok()
            .filter(|v| v.bytes().all(|b| (0x20..0x7f).contains(&b)))
            .ok_or_else(|| FilesError::BadMetadata(format!("value of '{key}' is not printable ASCII")))?;
        if key.is_empty() || key.len() > MAX_METADATA_KEY {
            return Err(FilesError::BadMetadata(format!("key '{key}' is empty or too long")));
        }
        total += key.len() + value.len();
        if total > MAX_METADATA_TOTAL {
            return Err(FilesError::BadMetadata("metadata exceeds 4096 bytes".into()));
        }
        out.insert(key, value.to_string());
    }
    Ok(out)
}

/// A file being uploaded: written to a temp file beside the target, renamed over it on commit.
struct PendingFile {
    target: PathBuf,
    tmp: PathBuf,
    file: Option<tokio::fs::File>,
    /// The target existed before the upload (it is being overwritten).
    existed: bool,
}

impl PendingFile {
    async fn begin(target: PathBuf, user: &SandboxUser) -> Result<Self, FilesError> {
        let existing = std::fs::metadata(&target).ok();
        if existing.as_ref().is_some_and(|m| m.is_dir()) {
            return Err(FilesError::IsDirectory(target));
        }
        let parent = target.parent().unwrap_or(Path::new("/")).to_path_buf();
        ensure_dirs(&parent, user).map_err(|e| FilesError::io("create parent of", &target, e))?;
        let name = target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let tmp = parent.join(format!("{UPLOAD_TEMP_PREFIX}{:016x}.{name}", rand::random::<u64>()));
        let existed = existing.is_some();
        let mode = existing.map_or(0o644, |m| m.mode() & 0o7777);
        let std_file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
            .map_err(|e| FilesError::io("create", &target, e))?;
        // The umask may have narrowed the requested mode.
        let _ = std_file.set_permissions(std::fs::Permissions::from_mode(mode));
        Ok(Self { target, tmp, file: Some(tokio::fs::File::from_std(std_file)), existed })
    }

    async fn write(&mut self, data: &[u8]) -> Result<(), FilesError> {
        if let Some(f) = self.file.as_mut() {
            f.write_all(data).await.map_err(|e| FilesError::io("write", &self.target, e))?;
        }
        Ok(())
    }

    async fn commit(
        mut self,
        user: &SandboxUser,
        metadata: &BTreeMap<String, String>,
    ) -> Result<(), FilesError> {
        let target = self.target.clone();
        let mut file = self.file.take().ok_or(FilesError::NoFiles)?;
        file.flush().await.map_err(|e| FilesError::io("write", &target, e))?;
        file.sync_all().await.map_err(|e| FilesError::io("fsync", &target, e))?;
        drop(file);
        chown_to(&self.tmp, user).map_err(|e| FilesError::io("chown", &target, e))?;
        for (k, v) in metadata {
            if let Err(e) = xattr::set(&self.tmp, k, v) {
                // Filesystems without user xattrs: keep going, metadata is still echoed.
                tracing::debug!("xattr {k} on {}: {e}", target.display());
            }
        }
        std::fs::rename(&self.tmp, &target).map_err(|e| FilesError::io("rename", &target, e))?;
        self.tmp = PathBuf::new();
        announce_write(&target, self.existed);
        Ok(())
    }
}

impl Drop for PendingFile {
    fn drop(&mut self) {
        if !self.tmp.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// Watchers see the rename into place as a CREATE of the target (the temp file's own events
/// are hidden). envd writes in place — it creates the file, gives it to the user, then writes
/// the bytes — so clients expect CREATE, CHMOD, WRITE for a new file. The rename gives the
/// first; re-applying the mode the file already has raises the inotify `IN_ATTRIB` (CHMOD), and
/// truncating it to its own length is a content no-op that raises `IN_MODIFY` (WRITE). A new
/// empty file gets no WRITE: envd writes no bytes to it.
fn announce_write(target: &Path, existed: bool) {
    let Ok(file) = std::fs::OpenOptions::new().write(true).open(target) else {
        return;
    };
    let Ok(meta) = file.metadata() else {
        return;
    };
    let _ = file.set_permissions(meta.permissions());
    if existed || meta.len() > 0 {
        let _ = file.set_len(meta.len());
    }
}

/// Incremental gunzip for uploads sent with `Content-Encoding: gzip`.
struct Gunzip {
    decoder: flate2::write::GzDecoder<Vec<u8>>,
}

impl Gunzip {
    fn new() -> Self {
        Self { decoder: flate2::write::GzDecoder::new(Vec::new()) }
    }

    fn feed(&mut self, data: &[u8]) -> Result<Vec<u8>, FilesError> {
        self.decoder.write_all(data).map_err(|e| FilesError::BadBody(format!("gzip: {e}")))?;
        Ok(std::mem::take(self.decoder.get_mut()))
    }

    fn finish(self) -> Result<Vec<u8>, FilesError> {
        self.decoder.finish().map_err(|e| FilesError::BadBody(format!("gzip: {e}")))
    }
}

fn result_item(path: &Path, metadata: &BTreeMap<String, String>) -> serde_json::Value {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let mut item = json!({ "name": name, "type": "file", "path": path.display().to_string() });
    if !metadata.is_empty() {
        item["metadata"] = json!(metadata);
    }
    item
}

/// `POST /files`.
pub async fn upload(State(cell): State<Arc<ConfigCell>>, req: Request) -> Response {
    let config = match config_of(&cell) {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    let q: FilesQuery = Query::try_from_uri(req.uri()).map(|Query(q)| q).unwrap_or_default();
    match upload_inner(&config, q, req).await {
        Ok(items) => (StatusCode::OK, axum::Json(items)).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn upload_inner(
    config: &AgentConfig,
    q: FilesQuery,
    req: Request,
) -> Result<Vec<serde_json::Value>, FilesError> {
    authorize(config, req.headers(), &q, FileOperation::Write)?;
    let user = query_user(config, &q)?;
    let metadata = metadata_from_headers(req.headers())?;
    let gzipped = is_gzip_encoded(req.headers());
    let multipart = is_multipart(req.headers());
    let query_path =
        q.path.as_deref().filter(|p| !p.is_empty()).map(|p| crate::paths::resolve(p, &user.home));

    if !multipart {
        let target = query_path.ok_or(FilesError::MissingPath)?;
        let gunzip = gzipped.then(Gunzip::new);
        upload_body(req.into_body(), &target, gunzip, &user, &metadata).await?;
        return Ok(vec![result_item(&target, &metadata)]);
    }
    let req = if gzipped { gunzip_request(req).await? } else { req };
    upload_multipart(req, query_path.as_deref(), &user, &metadata).await
}

/// Whether the upload body is sent with `Content-Encoding: gzip`.
fn is_gzip_encoded(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("gzip"))
}

/// Whether the upload body is `multipart/form-data` (else it is the file's bytes).
fn is_multipart(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("multipart/form-data"))
}

/// Writes a whole request body (gunzipped as it streams in, when `gunzip` is given) to
/// `target`.
async fn upload_body(
    body: Body,
    target: &Path,
    mut gunzip: Option<Gunzip>,
    user: &SandboxUser,
    metadata: &BTreeMap<String, String>,
) -> Result<(), FilesError> {
    let mut pending = PendingFile::begin(target.to_path_buf(), user).await?;
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| FilesError::BadBody(e.to_string()))?;
        match gunzip.as_mut() {
            Some(g) => pending.write(&g.feed(&chunk)?).await?,
            None => pending.write(&chunk).await?,
        }
    }
    if let Some(g) = gunzip {
        pending.write(&g.finish()?).await?;
    }
    pending.commit(user, metadata).await
}

/// A gzipped multipart request with its body decompressed (in memory: the multipart parser
/// needs the plain bytes) and `Content-Encoding` removed.
async fn gunzip_request(req: Request) -> Result<Request, FilesError> {
    let (mut parts, body) = req.into_parts();
    let compressed =
        axum::body::to_bytes(body, usize::MAX).await.map_err(|e| FilesError::BadBody(e.to_string()))?;
    let mut plain = Vec::new();
    flate2::read::GzDecoder::new(&compressed[..])
        .read_to_end(&mut plain)
        .map_err(|e| FilesError::BadBody(format!("gzip: {e}")))?;
    parts.headers.remove(header::CONTENT_ENCODING);
    Ok(Request::from_parts(parts, Body::from(plain)))
}

/// Writes every `file` field of a multipart upload: to `query_path` when given, else to the
/// field's file name (resolved against the user's home). A path may appear only once.
async fn upload_multipart(
    req: Request,
    query_path: Option<&Path>,
    user: &SandboxUser,
    metadata: &BTreeMap<String, String>,
) -> Result<Vec<serde_json::Value>, FilesError> {
    let mut multipart =
        Multipart::from_request(req, &()).await.map_err(|e| FilesError::BadBody(e.body_text()))?;
    let mut seen = HashSet::new();
    let mut items = Vec::new();
    while let Some(mut field) =
        multipart.next_field().await.map_err(|e| FilesError::BadBody(e.body_text()))?
    {
        if field.name() != Some("file") {
            continue;
        }
        let target = match (query_path, field.file_name()) {
            (Some(p), _) => p.to_path_buf(),
            (None, Some(name)) if !name.is_empty() => crate::paths::resolve(name, &user.home),
            _ => return Err(FilesError::MissingPath),
        };
        if !seen.insert(target.clone()) {
            return Err(FilesError::DuplicatePath(target));
        }
        let mut pending = PendingFile::begin(target.clone(), user).await?;
        while let Some(chunk) = field.chunk().await.map_err(|e| FilesError::BadBody(e.body_text()))? {
            pending.write(&chunk).await?;
        }
        pending.commit(user, metadata).await?;
        items.push(result_item(&target, metadata));
    }
    if items.is_empty() {
        return Err(FilesError::NoFiles);
    }
    Ok(items)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filesystem::watch::{self, EventType};
    use std::time::Duration;

    #[test]
    fn metadata_headers_are_lowercased_and_validated() {
        let mut h = HeaderMap::new();
        h.insert("x-metadata-Owner", HeaderValue::from_static("alice"));
        h.insert("x-other", HeaderValue::from_static("x"));
        let m = metadata_from_headers(&h).unwrap();
        assert_eq!(m.get("owner").map(String::as_str), Some("alice"));
        assert_eq!(m.len(), 1);
        let mut h = HeaderMap::new();
        h.insert("x-metadata-big", HeaderValue::from_str(&"a".repeat(5000)).unwrap());
        assert!(metadata_from_headers(&h).is_err());
    }

    #[test]
    fn gunzip_is_incremental() {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(b"hello world").unwrap();
        let gz = enc.finish().unwrap();
        let mut g = Gunzip::new();
        let mut out = Vec::new();
        for b in gz.chunks(3) {
            out.extend(g.feed(b).unwrap());
        }
        out.extend(g.finish().unwrap());
        assert_eq!(out, b"hello world");
    }

    #[test]
    fn error_statuses() {
        assert_eq!(FilesError::NotFound("/x".into()).status(), StatusCode::NOT_FOUND);
        assert_eq!(FilesError::IsDirectory("/x".into()).status(), StatusCode::BAD_REQUEST);
        let nospc = FilesError::io("write", Path::new("/x"), io::Error::from_raw_os_error(libc::ENOSPC));
        assert_eq!(nospc.status(), StatusCode::INSUFFICIENT_STORAGE);
    }

    /// The user the agent runs as, so the test needs no particular account.
    fn current_user(home: &Path) -> SandboxUser {
        SandboxUser {
            name: "test".into(),
            uid: nix::unistd::getuid(),
            gid: nix::unistd::getgid(),
            home: home.to_path_buf(),
        }
    }

    async fn upload_and_watch(dir: &Path, name: &str, data: &[u8]) -> Vec<EventType> {
        let mut watch = watch::start(dir, false, false).unwrap();
        let user = current_user(dir);
        let mut pending = PendingFile::begin(dir.join(name), &user).await.unwrap();
        pending.write(data).await.unwrap();
        pending.commit(&user, &BTreeMap::new()).await.unwrap();
        let mut seen = Vec::new();
        while let Ok(Some(ev)) = tokio::time::timeout(Duration::from_millis(300), watch.events.recv()).await {
            assert_eq!(ev.name, name, "only the target's events are shown");
            seen.push(ev.event_type);
        }
        seen
    }

    #[tokio::test]
    async fn an_upload_is_seen_by_watchers_as_envds_in_place_write() {
        let dir = std::env::temp_dir().join(format!("firkin-upload-watch-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        use EventType::{Chmod, Create, Write};
        assert_eq!(upload_and_watch(&dir, "new.txt", b"hello").await, vec![Create, Chmod, Write]);
        assert_eq!(upload_and_watch(&dir, "empty.txt", b"").await, vec![Create, Chmod]);
        // Overwriting differs from envd (whose in-place write shows no CREATE): the rename
        // into place is a CREATE of the name.
        assert_eq!(upload_and_watch(&dir, "new.txt", b"again").await, vec![Create, Chmod, Write]);
        assert_eq!(std::fs::read(dir.join("new.txt")).unwrap(), b"again");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
