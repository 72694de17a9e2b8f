//! The one place where errors become HTTP responses in E2B's JSON shape `{"code","message"}`.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use firkin_core::admission::queue::AdmissionError;
use firkin_core::runtime::{BuildError, RuntimeError};
use firkin_core::snapshot::SnapshotError;
use firkin_core::template::TemplateError;
use serde_json::json;

/// An error answered to a client.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// `Retry-After` seconds, for backpressure answers.
    pub retry_after: Option<u32>,
    /// `Should-Retry`, overriding the SDK's retry-by-status.
    pub should_retry: Option<bool>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError { status, message: message.into(), retry_after: None, should_retry: None }
    }
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }
    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, message)
    }
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"code": self.status.as_u16(), "message": self.message});
        let mut resp = (self.status, axum::Json(body)).into_response();
        if let Some(s) = self.retry_after {
            resp.headers_mut().insert("retry-after", HeaderValue::from(s));
        }
        if let Some(r) = self.should_retry {
            resp.headers_mut()
                .insert("should-retry", HeaderValue::from_static(if r { "true" } else { "false" }));
        }
        resp
    }
}

impl From<RuntimeError> for ApiError {
    fn from(e: RuntimeError) -> ApiError {
        // A failed cleanup does not change what the caller is told; the message keeps both.
        if let RuntimeError::Admission(a) = e.primary() {
            let mut err = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string());
            match a {
                AdmissionError::TooLarge { .. } => {
                    err.status = StatusCode::TOO_MANY_REQUESTS;
                    err.should_retry = Some(false);
                }
                AdmissionError::QueueFull { .. } | AdmissionError::TimedOut { .. } => {
                    err.retry_after = Some(1)
                }
            }
            tracing::warn!(error = %e, "create rejected by admission");
            return err;
        }
        let status = match e.primary() {
            RuntimeError::Template(TemplateError::NotFound(_)) => StatusCode::NOT_FOUND,
            RuntimeError::Template(TemplateError::RootfsMissing { .. }) => StatusCode::SERVICE_UNAVAILABLE,
            RuntimeError::Template(TemplateError::UnknownBase(_)) | RuntimeError::TemplateSpec(_) => {
                StatusCode::BAD_REQUEST
            }
            RuntimeError::Template(TemplateError::Stale { .. }) => StatusCode::CONFLICT,
            RuntimeError::Build(BuildError::StepFailed { .. } | BuildError::NotReady { .. }) => {
                StatusCode::BAD_REQUEST
            }
            RuntimeError::Build(BuildError::Step { .. }) => StatusCode::INTERNAL_SERVER_ERROR,
            RuntimeError::InvalidRequest(_) => StatusCode::BAD_REQUEST,
            RuntimeError::SandboxNotFound(_) => StatusCode::NOT_FOUND,
            RuntimeError::AlreadyPaused(_) => StatusCode::CONFLICT,
            RuntimeError::SnapshotNotFound(_) => StatusCode::NOT_FOUND,
            RuntimeError::Snapshot {
                source: SnapshotError::Integrity { .. } | SnapshotError::AgentMismatch { .. },
            } => StatusCode::CONFLICT,
            RuntimeError::Snapshot { source: SnapshotError::Io { .. } } => StatusCode::INTERNAL_SERVER_ERROR,
            RuntimeError::Transition { .. } => StatusCode::CONFLICT,
            RuntimeError::DiskFloor { .. } => StatusCode::INSUFFICIENT_STORAGE,
            RuntimeError::Unsupported { .. } => StatusCode::NOT_IMPLEMENTED,
            RuntimeError::Network { source: firkin_core::network::NetworkError::Exhausted(_), .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            RuntimeError::Engine { .. }
            | RuntimeError::Network { .. }
            | RuntimeError::HostNetwork(_)
            | RuntimeError::NotReady { .. }
            | RuntimeError::Agent { .. }
            | RuntimeError::Admission(_)
            | RuntimeError::Persist(_)
            | RuntimeError::Internal(_)
            | RuntimeError::WithCleanup { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        };
        if status.is_server_error() {
            tracing::error!(error = %e, "request failed");
        }
        ApiError::new(status, e.to_string())
    }
}

/// E2B's proxy answer for traffic to an unknown or dead sandbox (the SDK matches "was not found").
pub fn sandbox_not_found(id: &str) -> Response {
    let body = json!({"sandboxId": id, "message": "The sandbox was not found", "code": 502});
    let mut resp = (StatusCode::BAD_GATEWAY, axum::Json(body)).into_response();
    resp.headers_mut().insert("content-type", HeaderValue::from_static("application/json; charset=utf-8"));
    resp
}

/// A running sandbox whose port has no listener.
pub fn port_not_open(id: &str, port: u16) -> Response {
    let body = json!({
        "sandboxId": id,
        "port": port,
        "message": format!("The sandbox is running but port {port} is not open"),
        "code": 502,
    });
    (StatusCode::BAD_GATEWAY, axum::Json(body)).into_response()
}
