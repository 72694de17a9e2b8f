//! firkin's HTTP edge. One listener serves the E2B control plane (REST, `X-API-KEY`) and
//! sandbox traffic (envd, code interpreter, user ports), told apart by [`dispatch::classify`].
//! Handlers only parse and render; every operation goes through [`firkin_core::runtime::Runtime`].

pub mod control;
pub mod dispatch;
pub mod error;
pub mod list_query;
pub mod network;
pub mod proxy;
pub mod templates;
pub mod wire;

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::Router;
use firkin_core::runtime::Runtime;
use tower::ServiceExt;

use crate::dispatch::Destination;
use crate::error::ApiError;

/// Shared state of the HTTP edge.
#[derive(Clone)]
pub struct AppState {
    pub runtime: Runtime,
    pub api_key: String,
    pub upstream: proxy::UpstreamClient,
    control: Router,
}

impl AppState {
    pub fn new(runtime: Runtime, api_key: String) -> AppState {
        let mut st =
            AppState { runtime, api_key, upstream: proxy::upstream_client(), control: Router::new() };
        st.control = control::router(st.clone());
        st
    }
}

/// The whole application: everything goes through [`dispatch`].
pub fn app(state: AppState) -> Router {
    Router::new().fallback(dispatch).with_state(state)
}

/// Paths of the control plane that need no API key.
const PUBLIC_PATHS: &[&str] = &["/health", "/metrics"];

async fn dispatch(State(st): State<AppState>, req: Request) -> Response {
    let started = std::time::Instant::now();
    let (method, path) = (req.method().clone(), req.uri().path().to_owned());
    match dispatch::classify(req.headers(), req.uri().path(), req.uri().query()) {
        Destination::Sandbox { id, port } => {
            let resp = proxy::to_sandbox(&st, &id, port, req).await;
            tracing::debug!(sandbox = %id, port, %method, path, status = resp.status().as_u16(),
                ms = started.elapsed().as_millis() as u64, "sandbox request");
            resp
        }
        Destination::SignedFiles => proxy::signed_files(&st, req).await,
        Destination::BadRoute(msg) => ApiError::bad_request(msg).into_response(),
        Destination::ControlPlane => {
            let resp = control_plane(&st, req).await;
            // Time to the response head (streamed bodies continue after this). Probes and
            // scrapes are frequent: debug only.
            let (status, ms) = (resp.status().as_u16(), started.elapsed().as_millis() as u64);
            if PUBLIC_PATHS.contains(&path.as_str()) {
                tracing::debug!(%method, path, status, ms, "api request");
            } else {
                tracing::info!(%method, path, status, ms, "api request");
            }
            resp
        }
    }
}

async fn control_plane(st: &AppState, req: Request) -> Response {
    if !PUBLIC_PATHS.contains(&req.uri().path()) {
        let key = req.headers().get("x-api-key").and_then(|v| v.to_str().ok());
        match key {
            None => return ApiError::unauthorized("missing X-API-KEY header").into_response(),
            Some(k) if k != st.api_key => return ApiError::unauthorized("invalid API key").into_response(),
            Some(_) => {}
        }
    }
    match st.control.clone().oneshot(req).await {
        Ok(resp) => resp,
        Err(never) => match never {},
    }
}
