//! The HTTP application: the state shared by all handlers and the route table.

use std::sync::Arc;

use axum::extract::FromRef;
use axum::routing::{get, post};
use axum::Router;

use crate::context::ConfigCell;
use crate::filesystem::FilesystemService;
use crate::process::ProcessService;
use crate::reaper::Reaper;
use crate::{auth, files, init, metrics, rpc};

/// State shared by all handlers. Each handler extracts only the parts it uses (through the
/// `FromRef` impls below), so handler modules never name this type.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<ConfigCell>,
    pub processes: Arc<ProcessService>,
    pub filesystem: Arc<FilesystemService>,
}

impl FromRef<AppState> for Arc<ConfigCell> {
    fn from_ref(state: &AppState) -> Self {
        state.config.clone()
    }
}

impl FromRef<AppState> for Arc<ProcessService> {
    fn from_ref(state: &AppState) -> Self {
        state.processes.clone()
    }
}

impl FromRef<AppState> for Arc<FilesystemService> {
    fn from_ref(state: &AppState) -> Self {
        state.filesystem.clone()
    }
}

impl AppState {
    pub fn new(reaper: Arc<Reaper>) -> Self {
        Self {
            config: Arc::new(ConfigCell::default()),
            processes: Arc::new(ProcessService::new(reaper)),
            filesystem: Arc::new(FilesystemService::default()),
        }
    }
}

/// All envd routes behind the init/token gate.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/health", get(init::health))
        .route(firkin_wire::agent::INIT_PATH, post(init::init))
        .route("/envs", get(init::envs))
        .route("/metrics", get(metrics::metrics))
        .route("/files", get(files::download).post(files::upload))
        .route("/process.Process/{method}", post(rpc::process_rpc))
        .route("/filesystem.Filesystem/{method}", post(rpc::filesystem_rpc))
        .layer(axum::middleware::from_fn_with_state(state.config.clone(), auth::gate))
        .with_state(state)
}
