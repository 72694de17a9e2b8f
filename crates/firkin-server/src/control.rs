//! Control-plane routes (E2B REST). Handlers parse, call the runtime, and render.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use firkin_core::record::OnTimeout;
use firkin_core::runtime::{CreateSandbox, RuntimeError};

use crate::error::ApiError;
use crate::list_query::list_query;
use crate::wire::{
    parse_json, parse_json_or_default, seconds, ConnectBody, ForkBody, NewSandbox, PauseBody, SandboxListing,
    SandboxMetric, SandboxResponse, SnapshotBody, SnapshotListing, TimeoutBody,
};
use crate::AppState;

/// The control-plane router (auth is checked by the dispatcher before it gets here).
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/v2/sandboxes", post(create).get(list))
        .route("/sandboxes", post(create).get(list))
        .route("/sandboxes/{id}", get(detail).delete(kill))
        .route("/sandboxes/{id}/timeout", post(set_timeout))
        .route("/v2/sandboxes/{id}/connect", post(connect))
        .route("/sandboxes/{id}/connect", post(connect))
        .route("/sandboxes/{id}/resume", post(connect))
        .route("/sandboxes/{id}/pause", post(pause))
        .route("/sandboxes/{id}/metrics", get(sandbox_metrics))
        .route("/sandboxes/{id}/snapshots", post(create_snapshot))
        .route("/sandboxes/{id}/fork", post(fork))
        .route("/sandboxes/{id}/network", put(update_network))
        .route("/snapshots", get(list_snapshots))
        .route("/templates", get(crate::templates::list))
        .route("/templates/{id}", get(crate::templates::get_one).delete(crate::templates::delete))
        .route("/firkin/v1/templates", post(crate::templates::build))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .with_state(state)
}

/// Answers 501 naming an option of the request that firkin does not implement.
fn refuse(unsupported: Option<&'static str>) -> Result<(), ApiError> {
    match unsupported {
        Some(feature) => Err(RuntimeError::Unsupported { feature }.into()),
        None => Ok(()),
    }
}

async fn create(State(st): State<AppState>, body: Bytes) -> Result<Response, ApiError> {
    let req: NewSandbox = parse_json(&body)?;
    if req.template_id.trim().is_empty() {
        return Err(ApiError::bad_request("templateID must not be empty"));
    }
    refuse(req.unsupported())?;
    let timeout = req.timeout.map(|t| seconds("timeout", t)).transpose()?;
    let create = CreateSandbox {
        template_id: req.template_id,
        metadata: req.metadata.unwrap_or_default(),
        env_vars: req.env_vars.unwrap_or_default(),
        timeout,
        cpu_count: req.cpu_count,
        memory_mb: req.memory_mb,
        on_timeout: req.auto_pause.map(|p| if p { OnTimeout::Pause } else { OnTimeout::Kill }),
        auto_resume: req.auto_resume.is_some_and(|a| a.enabled),
        egress: crate::network::create_policy(req.network.as_ref(), req.allow_internet_access)?,
        private_traffic: req.network.as_ref().and_then(|n| n.allow_public_traffic) == Some(false),
    };
    let rec = st.runtime.create(create).await?;
    let domain = st.runtime.config().domain.clone();
    Ok((StatusCode::CREATED, Json(SandboxResponse::from_record(&rec, domain))).into_response())
}

async fn list(
    State(st): State<AppState>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let q = list_query(&params)?;
    let page = st.runtime.list(&q);
    let items: Vec<SandboxListing> = page.items.iter().map(SandboxListing::listed).collect();
    let mut resp = Json(items).into_response();
    if let Some(tok) = page.next_cursor {
        if let Ok(v) = HeaderValue::from_str(&tok) {
            resp.headers_mut().insert("x-next-token", v);
        }
    }
    Ok(resp)
}

async fn detail(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<SandboxListing>, ApiError> {
    let rec = st.runtime.get_visible(&id)?;
    Ok(Json(SandboxListing::detail(&rec, st.runtime.config().domain.clone())))
}

async fn kill(State(st): State<AppState>, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    st.runtime.stop(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `PUT /sandboxes/{id}/network`: replaces the egress policy; omitted fields are cleared.
async fn update_network(
    State(st): State<AppState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    let b: crate::network::NetworkBody = parse_json(&body)?;
    refuse(b.unsupported())?;
    if b.allow_public_traffic.is_some() {
        return Err(ApiError::bad_request("allowPublicTraffic is set at create only"));
    }
    let policy = b.policy(b.allow_internet_access)?;
    st.runtime.update_network(&id, policy).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn set_timeout(
    State(st): State<AppState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    let b: TimeoutBody = parse_json(&body)?;
    let t = b.timeout.ok_or_else(|| ApiError::bad_request("timeout is required"))?;
    st.runtime.set_timeout(&id, seconds("timeout", t)?)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn connect(
    State(st): State<AppState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let b: ConnectBody = parse_json_or_default(&body)?;
    refuse(b.unsupported())?;
    let timeout = b.timeout.map(|t| seconds("timeout", t)).transpose()?;
    let out = st.runtime.connect(&id, timeout).await?;
    let status = if out.resumed { StatusCode::CREATED } else { StatusCode::OK };
    let domain = st.runtime.config().domain.clone();
    Ok((status, Json(SandboxResponse::from_record(&out.record, domain))).into_response())
}

async fn pause(
    State(st): State<AppState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    let b: PauseBody = parse_json_or_default(&body)?;
    refuse(b.unsupported())?;
    st.runtime.pause(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// One current sample (no history is kept yet): `[SandboxMetric]`.
/// `GET /sandboxes/{id}/metrics?start=&end=` (unix seconds, both optional).
async fn sandbox_metrics(
    State(st): State<AppState>,
    Path(id): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Vec<SandboxMetric>>, ApiError> {
    let bound = |name: &str| -> Result<Option<i64>, ApiError> {
        params
            .get(name)
            .map(|v| {
                v.parse::<i64>()
                    .map_err(|_| ApiError::bad_request(format!("{name} must be unix seconds, got {v:?}")))
            })
            .transpose()
    };
    let samples = st.runtime.metrics(&id, bound("start")?, bound("end")?).await?;
    Ok(Json(samples.iter().map(SandboxMetric::from_sample).collect()))
}

async fn create_snapshot(
    State(st): State<AppState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let b: SnapshotBody = parse_json_or_default(&body)?;
    let m = st.runtime.create_snapshot(&id, b.name, b.memory).await?;
    Ok((StatusCode::CREATED, Json(SnapshotListing::from_manifest(&m))).into_response())
}

async fn list_snapshots(
    State(st): State<AppState>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let all = st.runtime.list_snapshots(
        params.get("sandboxID").map(String::as_str).filter(|s| !s.is_empty()),
        params.get("name").map(String::as_str).filter(|s| !s.is_empty()),
    );
    let offset: usize = match params.get("nextToken").filter(|t| !t.is_empty()) {
        None => 0,
        Some(t) => t.parse().map_err(|_| ApiError::bad_request(format!("invalid nextToken {t:?}")))?,
    };
    let limit: usize = match params.get("limit") {
        None => usize::MAX,
        Some(l) => l.parse().map_err(|_| ApiError::bad_request(format!("invalid limit {l:?}")))?,
    };
    let page: Vec<SnapshotListing> =
        all.iter().skip(offset).take(limit).map(SnapshotListing::from_manifest).collect();
    let mut resp = Json(&page).into_response();
    let next = offset.saturating_add(page.len());
    if next < all.len() {
        resp.headers_mut().insert("x-next-token", HeaderValue::from(next));
    }
    Ok(resp)
}

async fn fork(State(st): State<AppState>, Path(id): Path<String>, body: Bytes) -> Result<Response, ApiError> {
    let b: ForkBody = parse_json_or_default(&body)?;
    let count =
        usize::try_from(b.count.unwrap_or(1)).map_err(|_| ApiError::bad_request("count must be positive"))?;
    let timeout = b.timeout.map(|t| seconds("timeout", t)).transpose()?;
    let domain = st.runtime.config().domain.clone();
    let children = st.runtime.fork(&id, count, timeout).await?;
    let items: Vec<serde_json::Value> = children
        .into_iter()
        .map(|c| match c {
            Ok(rec) => serde_json::json!({"sandbox": SandboxResponse::from_record(&rec, domain.clone())}),
            Err(e) => {
                let e = ApiError::from(e);
                serde_json::json!({"error": {"code": e.status.as_u16(), "message": e.message}})
            }
        })
        .collect();
    Ok((StatusCode::CREATED, Json(items)).into_response())
}

async fn health() -> StatusCode {
    StatusCode::OK
}

async fn metrics(State(st): State<AppState>) -> Response {
    let mut text = st.runtime.samples().prometheus();
    text.push_str("# HELP firkin_sandboxes Sandboxes by lifecycle state.\n# TYPE firkin_sandboxes gauge\n");
    for (state, n) in st.runtime.count_by_state() {
        text.push_str(&format!("firkin_sandboxes{{state=\"{state:?}\"}} {n}\n"));
    }
    let a = st.runtime.admission_stats();
    text.push_str("# HELP firkin_capacity Host capacity handed out by the admission ledger.\n# TYPE firkin_capacity gauge\n");
    text.push_str(
        "# HELP firkin_capacity_used Capacity currently reserved.\n# TYPE firkin_capacity_used gauge\n",
    );
    for (res, cap, used) in [
        ("milli_cpu", a.capacity.milli_cpu, a.used.milli_cpu),
        ("memory_mb", a.capacity.memory_mb, a.used.memory_mb),
        ("disk_mb", a.capacity.disk_mb, a.used.disk_mb),
    ] {
        text.push_str(&format!("firkin_capacity{{resource=\"{res}\"}} {cap}\nfirkin_capacity_used{{resource=\"{res}\"}} {used}\n"));
    }
    text.push_str(
        "# HELP firkin_reservations Capacity reservations by class.\n# TYPE firkin_reservations gauge\n",
    );
    for (class, n) in [("active", a.active), ("warm", a.warm), ("paused", a.paused)] {
        text.push_str(&format!("firkin_reservations{{class=\"{class}\"}} {n}\n"));
    }
    text.push_str("# HELP firkin_warm_pool_ready Pre-restored sandboxes ready for checkout, by template.\n# TYPE firkin_warm_pool_ready gauge\n");
    for (template, n) in st.runtime.warm_stats().ready {
        text.push_str(&format!("firkin_warm_pool_ready{{template=\"{template}\"}} {n}\n"));
    }
    text.push_str(&format!("# HELP firkin_admission_queue_depth Creates waiting for capacity.\n# TYPE firkin_admission_queue_depth gauge\nfirkin_admission_queue_depth {}\n", a.waiting));
    text.push_str("# HELP firkin_admission_rejected_total Creates rejected by admission, by reason.\n# TYPE firkin_admission_rejected_total counter\n");
    for (reason, n) in &a.rejected {
        text.push_str(&format!("firkin_admission_rejected_total{{reason=\"{reason}\"}} {n}\n"));
    }
    text.push_str("# HELP firkin_sandbox_network_bytes_total Bytes through a running sandbox's interface since it last started or resumed.\n# TYPE firkin_sandbox_network_bytes_total counter\n");
    for (id, t) in st.runtime.network_traffic() {
        for (direction, n) in [("out", t.out_bytes), ("in", t.in_bytes)] {
            text.push_str(&format!(
                "firkin_sandbox_network_bytes_total{{sandbox=\"{id}\",direction=\"{direction}\"}} {n}\n"
            ));
        }
    }
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("text/plain; version=0.0.4"));
    (headers, text).into_response()
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such route")
}
