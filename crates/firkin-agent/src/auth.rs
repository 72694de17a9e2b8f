//! Request authentication: the `X-Access-Token` gate in front of every route, and the
//! `Authorization: Basic base64("<user>:")` header that selects the user of an RPC.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use base64::Engine;

use crate::http_error::json_error;
use crate::init::ConfigCell;
use crate::user::{SandboxUser, UserError};

/// Header carrying the sandbox access token.
pub const ACCESS_TOKEN_HEADER: &str = "x-access-token";

/// The 401 answered for a missing or wrong token.
pub fn unauthorized() -> Response {
    json_error(StatusCode::UNAUTHORIZED, "unauthorized access, invalid or missing access token")
}

/// Whether the request carries `token` (an empty token means no auth is required).
pub fn token_matches(headers: &HeaderMap, token: &str) -> bool {
    if token.is_empty() {
        return true;
    }
    headers
        .get(ACCESS_TOKEN_HEADER)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|presented| constant_time_eq(presented.as_bytes(), token.as_bytes()))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Middleware: 503 until initialised; then the token check, except for routes that do their
/// own (`/health`, `/init`, `/files`).
pub async fn gate(State(cell): State<Arc<ConfigCell>>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    if path == "/health" || path == firkin_wire::agent::INIT_PATH {
        return next.run(req).await;
    }
    let Some(config) = cell.get() else {
        return json_error(StatusCode::SERVICE_UNAVAILABLE, "agent not initialised");
    };
    if path == "/files" || token_matches(req.headers(), &config.access_token) {
        next.run(req).await
    } else {
        unauthorized()
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

/// The username named by a Basic `Authorization` header, if any.
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

    #[test]
    fn token_check() {
        let mut h = HeaderMap::new();
        assert!(token_matches(&h, ""));
        assert!(!token_matches(&h, "t"));
        h.insert(ACCESS_TOKEN_HEADER, HeaderValue::from_static("t"));
        assert!(token_matches(&h, "t"));
        assert!(!token_matches(&h, "u"));
    }
}
