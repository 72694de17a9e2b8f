//! Request authentication: the `X-Access-Token` gate in front of every route. (The
//! `Authorization: Basic` header that selects the user of an RPC is read in `crate::context`.)

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::Response;

use crate::context::ConfigCell;
use crate::http_error::json_error;

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

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

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
