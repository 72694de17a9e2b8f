//! Template routes: `GET /templates` and `GET /templates/{id}` (E2B's listing shape plus
//! firkin's build details), `DELETE /templates/{id}` (a template or a snapshot, as in E2B), and
//! the firkin build route `POST /firkin/v1/templates` (body: a template spec). A build answers
//! 201 with the template, or, with `Accept: application/x-ndjson`, streams progress lines
//! (`{"type":"progress",...}`) and ends with `{"type":"done","template":{...}}` or
//! `{"type":"error","code":...,"message":...}`.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use firkin_core::runtime::{BuildProgress, ProgressFn};
use firkin_core::snapshot::SnapshotManifest;
use firkin_core::template::TemplateSpec;
use firkin_wire::agent::ENVD_VERSION;
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::wire::parse_json;
use crate::AppState;

/// A template as listed: E2B's `Template` fields plus firkin's.
fn render(m: &SnapshotManifest) -> Value {
    let t = m.template.as_ref();
    let name = t.map(|t| t.name.clone()).unwrap_or_else(|| m.template_id.clone());
    let created = firkin_core::timefmt::rfc3339(m.created_at);
    let size: u64 = m.files.iter().map(|f| f.size).sum();
    json!({
        "templateID": name,
        "buildID": m.snapshot_id,
        "aliases": [name],
        "cpuCount": m.cpu_count,
        "memoryMB": m.memory_mb,
        "diskSizeMB": m.disk_size_mb,
        "public": false,
        "createdAt": created,
        "updatedAt": created,
        "buildCount": 1,
        "spawnCount": 0,
        "lastSpawnedAt": null,
        "envdVersion": ENVD_VERSION,
        "buildStatus": "ready",
        "builtin": t.is_some_and(|t| t.builtin),
        "rootfs": m.rootfs,
        "specSha256": t.map(|t| t.spec_sha256.clone()),
        "buildMs": t.map(|t| t.build_ms),
        "startCmd": t.and_then(|t| t.start_cmd.clone()),
        "artifactBytes": size,
    })
}

pub async fn list(State(st): State<AppState>) -> Json<Vec<Value>> {
    Json(st.runtime.list_templates().iter().map(render).collect())
}

pub async fn get_one(State(st): State<AppState>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    st.runtime
        .list_templates()
        .iter()
        .find(|m| m.template.as_ref().is_some_and(|t| t.name == id) || m.snapshot_id == id)
        .map(|m| Json(render(m)))
        .ok_or_else(|| ApiError::not_found(format!("template '{id}' not found")))
}

/// Deletes a user template, else a snapshot, by id or name.
pub async fn delete(State(st): State<AppState>, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    if st.runtime.delete_template(&id)? {
        return Ok(StatusCode::NO_CONTENT);
    }
    st.runtime.delete_snapshot(&id)?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn build(
    State(st): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let spec: TemplateSpec = parse_json(&body)?;
    spec.validate().map_err(|e| ApiError::bad_request(format!("invalid template spec: {e}")))?;
    let streaming = headers
        .get("accept")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/x-ndjson"));
    if !streaming {
        let name = spec.name.clone();
        let log: ProgressFn = Arc::new(
            move |p: BuildProgress| tracing::info!(template = %name, phase = p.phase, phases = p.phases, "{}", p.message),
        );
        let m = st.runtime.build_template(spec, log).await?;
        return Ok((StatusCode::CREATED, Json(render(&m))).into_response());
    }
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Value>();
    let progress_tx = tx.clone();
    let progress: ProgressFn = Arc::new(move |p: BuildProgress| {
        let _ = progress_tx
            .send(json!({"type": "progress", "phase": p.phase, "phases": p.phases, "message": p.message}));
    });
    let runtime = st.runtime.clone();
    // The build runs to completion even if the client goes away (nothing half-built is left
    // either way: a failed or finished build removes its sandbox).
    tokio::spawn(async move {
        let last = match runtime.build_template(spec, progress).await {
            Ok(m) => json!({"type": "done", "template": render(&m)}),
            Err(e) => {
                let e = ApiError::from(e);
                json!({"type": "error", "code": e.status.as_u16(), "message": e.message})
            }
        };
        let _ = tx.send(last);
    });
    let lines = futures_util::stream::unfold(rx, |mut rx| async move {
        let v = rx.recv().await?;
        let mut line = serde_json::to_vec(&v).unwrap_or_default();
        line.push(b'\n');
        Some((Ok::<_, std::convert::Infallible>(Bytes::from(line)), rx))
    });
    let mut resp = Response::new(Body::from_stream(lines));
    resp.headers_mut().insert("content-type", HeaderValue::from_static("application/x-ndjson"));
    Ok(resp)
}
