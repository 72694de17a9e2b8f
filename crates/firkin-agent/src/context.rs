//! What the handlers share about a request, so they need not import each other: the sandbox
//! configuration set by `POST /init` ([`ConfigCell`] holding an [`AgentConfig`]), the user a
//! request runs as (named by a Basic `Authorization` header, else the default user; see
//! [`request_user`]) and the per-call data of an RPC ([`CallContext`]).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::http::HeaderMap;
use base64::Engine;

use crate::user::{SandboxUser, UserError};

/// Default `Keepalive-Ping-Interval` in seconds.
const DEFAULT_KEEPALIVE_SECS: u64 = 50;

/// Configuration in force after a successful `/init`.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub sandbox_id: String,
    /// Empty means "no token required" (matches envd without a token).
    pub access_token: String,
    pub env_vars: BTreeMap<String, String>,
    pub default_user: String,
    pub default_workdir: PathBuf,
}

impl AgentConfig {
    /// Default working directory for `user`: the configured one for the default user, else
    /// the user's home.
    pub fn workdir_for(&self, user: &SandboxUser) -> PathBuf {
        if user.name == self.default_user {
            self.default_workdir.clone()
        } else {
            user.home.clone()
        }
    }
}

/// Holder of the (possibly not yet set) configuration.
#[derive(Debug, Default)]
pub struct ConfigCell {
    inner: RwLock<Option<Arc<AgentConfig>>>,
}

impl ConfigCell {
    pub fn get(&self) -> Option<Arc<AgentConfig>> {
        match self.inner.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Puts `config` in force (done by `/init` only).
    pub fn set(&self, config: AgentConfig) {
        let mut guard = match self.inner.write() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        *guard = Some(Arc::new(config));
    }
}

/// Why the user of a request could not be determined.
#[derive(Debug, thiserror::Error)]
pub enum RequestUserError {
    #[error("invalid Authorization header: {0}")]
    BadHeader(&'static str),
    #[error(transparent)]
    User(#[from] UserError),
}

/// The username named by a Basic `Authorization` header (`base64("<user>:")`), if any.
pub fn basic_auth_username(headers: &HeaderMap) -> Result<Option<String>, RequestUserError> {
    let Some(value) = headers.get(axum::http::header::AUTHORIZATION) else {
        return Ok(None);
    };
    let text = value.to_str().map_err(|_| RequestUserError::BadHeader("not ASCII"))?;
    let Some(encoded) = text.strip_prefix("Basic ").or_else(|| text.strip_prefix("basic ")) else {
        return Err(RequestUserError::BadHeader("not Basic"));
    };
    let decoded = crate::json::decode_bytes(encoded)
        .or_else(|_| base64::engine::general_purpose::STANDARD.decode(encoded.trim()))
        .map_err(|_| RequestUserError::BadHeader("bad base64"))?;
    let text = String::from_utf8(decoded).map_err(|_| RequestUserError::BadHeader("not UTF-8"))?;
    let name = text.split(':').next().unwrap_or_default();
    Ok((!name.is_empty()).then(|| name.to_string()))
}

/// Resolves the user an RPC runs as: the Basic-auth user, else `default_user`.
pub fn request_user(headers: &HeaderMap, default_user: &str) -> Result<SandboxUser, RequestUserError> {
    let name = basic_auth_username(headers)?.unwrap_or_else(|| default_user.to_string());
    Ok(SandboxUser::lookup(&name)?)
}

/// Per-call data taken from the request headers and the agent configuration.
pub struct CallContext {
    pub config: Arc<AgentConfig>,
    headers: HeaderMap,
}

impl CallContext {
    pub fn new(config: Arc<AgentConfig>, headers: HeaderMap) -> Self {
        Self { config, headers }
    }

    /// The request headers of the call.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// The user the call runs as.
    pub fn user(&self) -> Result<SandboxUser, RequestUserError> {
        request_user(&self.headers, &self.config.default_user)
    }

    /// Silence after which a stream sends a keepalive message.
    pub fn keepalive(&self) -> Duration {
        let secs = self
            .headers
            .get("keepalive-ping-interval")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .filter(|s| *s > 0)
            .unwrap_or(DEFAULT_KEEPALIVE_SECS);
        Duration::from_secs(secs)
    }

    /// The `Connect-Timeout-Ms` deadline, if any.
    pub fn timeout(&self) -> Option<Duration> {
        self.headers
            .get("connect-timeout-ms")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .filter(|ms| *ms > 0)
            .map(Duration::from_millis)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn basic_header_parsing() {
        let mut h = HeaderMap::new();
        assert_eq!(basic_auth_username(&h).unwrap(), None);
        h.insert("authorization", HeaderValue::from_static("Basic cm9vdDo="));
        assert_eq!(basic_auth_username(&h).unwrap(), Some("root".into()));
        h.insert("authorization", HeaderValue::from_static("Bearer x"));
        assert!(basic_auth_username(&h).is_err());
    }
}
