//! The `/init`, `/health` and `/envs` routes: `/init` builds the sandbox-wide configuration
//! (access token, env vars, default user and workdir; held in `crate::context`) from the host's
//! request and publishes the env vars and the access token to in-sandbox services (the code
//! interpreter; see docs/security.md, "The code interpreter's access token").
//!
//! `/init` comes after every boot or restore (and, for warm-pool entries, once more at
//! checkout), so it is also where a restored sandbox stops being a copy of its source: a new
//! sandbox id gets its own boot id (`crate::identity`), and `/etc/resolv.conf` is pointed at
//! the current default gateway (`crate::resolv`). Neither needs anything new in the request.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use firkin_wire::agent::{
    InitRequest, InitResponse, AGENT_PROTOCOL_HEADER, AGENT_PROTOCOL_VERSION, ENVD_VERSION, START_EXIT_HEADER,
};

use crate::auth;
use crate::context::{AgentConfig, ConfigCell};
use crate::http_error::json_error;
use crate::process::ProcessService;
use crate::user::SandboxUser;

/// The user processes run as when the host names none.
pub const FALLBACK_DEFAULT_USER: &str = "user";

/// Why an init request was refused.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("init: default user '{0}' does not exist")]
    UnknownUser(String),
}

fn build_config(req: InitRequest) -> Result<AgentConfig, InitError> {
    let user = match &req.default_user {
        Some(name) if !name.is_empty() => {
            SandboxUser::lookup(name).map_err(|_| InitError::UnknownUser(name.clone()))?
        }
        // The conventional `user` may be missing in custom images; fall back to root then.
        _ => SandboxUser::lookup(FALLBACK_DEFAULT_USER)
            .or_else(|_| SandboxUser::lookup("root"))
            .map_err(|_| InitError::UnknownUser(FALLBACK_DEFAULT_USER.into()))?,
    };
    let default_workdir = match req.default_workdir {
        Some(dir) if !dir.is_empty() => crate::paths::resolve(&dir, &user.home),
        _ => user.home.clone(),
    };
    Ok(AgentConfig {
        sandbox_id: req.sandbox_id,
        access_token: req.access_token,
        env_vars: req.env_vars,
        default_user: user.name,
        default_workdir,
    })
}

fn protocol_header() -> (&'static str, HeaderValue) {
    (AGENT_PROTOCOL_HEADER, HeaderValue::from(AGENT_PROTOCOL_VERSION))
}

/// `GET /health`: 204 always, with the agent protocol header, and the start command's exit
/// code once it has ended.
pub async fn health(State(processes): State<Arc<ProcessService>>) -> Response {
    let mut resp = (StatusCode::NO_CONTENT, [protocol_header()]).into_response();
    if let Some(code) = processes.start_exit() {
        resp.headers_mut().insert(START_EXIT_HEADER, HeaderValue::from(code));
    }
    resp
}

/// `POST /init`.
pub async fn init(
    State(cell): State<Arc<ConfigCell>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if let Some(current) = cell.get() {
        if !auth::token_matches(&headers, &current.access_token) {
            return auth::unauthorized();
        }
    }
    let req: InitRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return json_error(StatusCode::BAD_REQUEST, format!("init: invalid body: {e}")),
    };
    match build_config(req) {
        Ok(config) => {
            tracing::info!(
                sandbox = %config.sandbox_id,
                user = %config.default_user,
                workdir = %config.default_workdir.display(),
                "initialised"
            );
            publish_envs(&config.env_vars);
            publish_token(&config);
            crate::identity::refresh_for(&config.sandbox_id);
            crate::resolv::refresh();
            cell.set(config);
            let resp = InitResponse {
                protocol: AGENT_PROTOCOL_VERSION,
                agent_version: env!("CARGO_PKG_VERSION").to_string(),
                envd_version: ENVD_VERSION.to_string(),
            };
            (StatusCode::OK, [protocol_header()], Json(resp)).into_response()
        }
        Err(e) => json_error(StatusCode::BAD_REQUEST, e.to_string()),
    }
}

/// Where in-sandbox services (the code interpreter) read the sandbox-wide env vars; they were
/// started before this sandbox existed (at template build), so they re-read it when it changes.
/// `FIRKIN_AGENT_ENVS_FILE` overrides it for host testing.
const ENVS_FILE: &str = "/run/firkin/envs.json";

/// Writes the env vars to [`ENVS_FILE`] atomically (temp file, fsync, rename), world-readable.
/// Best effort: a failure is logged, envd itself does not depend on the file.
fn publish_envs(vars: &std::collections::BTreeMap<String, String>) {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("FIRKIN_AGENT_ENVS_FILE")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| ENVS_FILE.into());
    let write = || -> std::io::Result<()> {
        let dir = path.parent().unwrap_or(std::path::Path::new("/"));
        std::fs::create_dir_all(dir)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
        let tmp = dir.join(".envs.json.tmp");
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&serde_json::to_vec(vars).map_err(std::io::Error::other)?)?;
        f.sync_all()?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644))?;
        std::fs::rename(&tmp, &path)
    };
    if let Err(e) = write() {
        tracing::warn!(path = %path.display(), error = %e, "cannot publish the sandbox env vars");
    }
}

/// Where in-sandbox services (the code interpreter, running as the default user) read the
/// sandbox's access token to check their own callers; rewritten at every `/init`, so a service
/// restored from a checkpoint sees the new sandbox's token as soon as `/init` has answered.
/// `FIRKIN_AGENT_TOKEN_FILE` overrides it for host testing.
const TOKEN_FILE: &str = "/run/firkin/access-token";

/// Writes the access token to [`TOKEN_FILE`] atomically, readable by root and the default
/// user's group only (0440, owner root): code running as that user may already do anything the
/// token allows, other accounts (a template's service users) may not. If it cannot be written,
/// the previous sandbox's file is removed, so the interpreter refuses everything (503) instead
/// of accepting a stale token.
fn publish_token(config: &AgentConfig) {
    let path = std::env::var_os("FIRKIN_AGENT_TOKEN_FILE")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| TOKEN_FILE.into());
    let group = SandboxUser::lookup(&config.default_user).ok().map(|u| u.gid);
    if let Err(e) = write_private(&path, config.access_token.as_bytes(), group) {
        tracing::error!(path = %path.display(), error = %e, "cannot publish the access token");
        if let Err(e) = std::fs::remove_file(&path) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::error!(path = %path.display(), error = %e, "cannot remove the stale token");
            }
        }
    }
}

/// Replaces `path` with `data` atomically: a fresh temp file (mode 0600 from its creation, so
/// the data is never readable by others), fsync, group `group` and mode 0440, rename.
fn write_private(
    path: &std::path::Path,
    data: &[u8],
    group: Option<nix::unistd::Gid>,
) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let dir = path.parent().unwrap_or(std::path::Path::new("/"));
    std::fs::create_dir_all(dir)?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp"));
    match std::fs::remove_file(&tmp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    if let Some(gid) = group {
        std::os::unix::fs::fchown(&f, None, Some(gid.as_raw()))?;
    }
    f.set_permissions(std::fs::Permissions::from_mode(0o440))?;
    std::fs::rename(&tmp, path)
}

/// `GET /envs`: the sandbox-wide env vars.
pub async fn envs(State(cell): State<Arc<ConfigCell>>) -> Response {
    let vars = cell.get().map(|c| c.env_vars.clone()).unwrap_or_default();
    Json(vars).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    #[test]
    fn private_files_are_replaced_atomically() {
        let dir = std::env::temp_dir().join(format!("firkin-init-test-{}", std::process::id()));
        let path = dir.join("access-token");
        write_private(&path, b"first", None).unwrap();
        let before = std::fs::metadata(&path).unwrap();
        assert_eq!(before.permissions().mode() & 0o777, 0o440);
        write_private(&path, b"second", None).unwrap();
        let after = std::fs::metadata(&path).unwrap();
        assert_ne!(before.ino(), after.ino(), "a reader must see a new inode");
        assert_eq!(std::fs::read(&path).unwrap(), b"second");
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1, "no temp file is left");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
