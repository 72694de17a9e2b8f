//! Sandbox traffic: forwards bytes to the agent (or a user port) inside the sandbox's network
//! namespace, streaming both ways. The server never re-implements envd.

use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use firkin_core::runtime::SandboxRoute;
use firkin_wire::agent::{ENVD_PORT, INIT_PATH};
use firkin_wire::signature::FileOperation;
use http_body_util::BodyExt;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::error::{port_not_open, sandbox_not_found, ApiError};
use crate::AppState;

/// The upstream HTTP client shared by all proxied requests.
pub type UpstreamClient = Client<HttpConnector, Body>;

/// Upstream connections are not pooled: an idle keep-alive connection open inside a sandbox
/// when it is checkpointed leaves the restored agent unable to serve (seen with runsc
/// 2024-07-29 and `--net-disconnect-ok`). A new connection over the veth costs well under a
/// millisecond.
pub fn upstream_client() -> UpstreamClient {
    let mut conn = HttpConnector::new();
    conn.set_connect_timeout(Some(Duration::from_secs(5)));
    conn.set_nodelay(true);
    Client::builder(TokioExecutor::new()).pool_max_idle_per_host(0).build(conn)
}

const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
    "e2b-sandbox-id",
    "e2b-sandbox-port",
    // The sandbox's own servers never see the traffic token.
    "e2b-traffic-access-token",
];

/// Proxies a request for sandbox `id`, port `port`.
pub async fn to_sandbox(st: &AppState, id: &str, port: u16, req: Request) -> Response {
    let Some(route) = st.runtime.route_or_resume(id).await else {
        return sandbox_not_found(id);
    };
    if port == ENVD_PORT && req.uri().path() == INIT_PATH {
        return ApiError::not_found("no such route").into_response();
    }
    if let Some(refusal) =
        traffic_token_refusal(&route, port, &req).or_else(|| sync_refusal(st, &route, port, &req))
    {
        return refused(req, refusal).await;
    }
    forward(st, &route, port, req).await
}

/// A private sandbox's own ports (every port but envd's, which checks its own token) answer
/// only requests that carry its traffic access token.
fn traffic_token_refusal(route: &SandboxRoute, port: u16, req: &Request) -> Option<Response> {
    let want = route.traffic_access_token.as_deref().filter(|_| port != ENVD_PORT)?;
    let status = match req.headers().get(TRAFFIC_TOKEN_HEADER) {
        None => StatusCode::UNAUTHORIZED,
        Some(got) if firkin_wire::signature::constant_time_eq(got.as_bytes(), want.as_bytes()) => {
            return None
        }
        Some(_) => StatusCode::FORBIDDEN,
    };
    let message = format!(
        "sandbox {} is private (allowPublicTraffic=false): port {port} needs a valid {TRAFFIC_TOKEN_HEADER} header",
        route.id
    );
    Some(ApiError::new(status, message).into_response())
}

/// The header that carries a private sandbox's traffic access token.
pub const TRAFFIC_TOKEN_HEADER: &str = "e2b-traffic-access-token";

/// Longest request body read (and dropped) before a refusal is sent.
const REFUSED_BODY_LIMIT: usize = 16 << 20;

/// Answers `refusal` once the request's body has been read: a client still writing its body
/// when the answer and the connection's close arrive sees a broken pipe, not the refusal (seen
/// with the SDK's uploads). A body over the limit is not waited for.
async fn refused(req: Request, refusal: Response) -> Response {
    let drained = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        axum::body::to_bytes(req.into_body(), REFUSED_BODY_LIMIT),
    )
    .await;
    if !matches!(drained, Ok(Ok(_))) {
        tracing::debug!("refused request's body not read to its end");
    }
    refusal
}

/// Files-API writes: uploads and the filesystem RPCs that change something.
fn is_files_write(port: u16, req: &Request) -> bool {
    let path = req.uri().path();
    port == ENVD_PORT
        && ((req.method() == axum::http::Method::POST && path == "/files")
            || matches!(
                path,
                "/filesystem.Filesystem/MakeDir"
                    | "/filesystem.Filesystem/Move"
                    | "/filesystem.Filesystem/Remove"
            ))
}

/// Refuses a files-API write while the sandbox's freshness sync runs (503, retry) or after it
/// failed (409, with the sync's error). Reads always pass.
fn sync_refusal(st: &AppState, route: &SandboxRoute, port: u16, req: &Request) -> Option<Response> {
    use firkin_core::runtime::freshness::SyncState;
    if !is_files_write(port, req) {
        return None;
    }
    let (status, connect_code, message) = match st.runtime.sync_state(route.id.as_str())? {
        SyncState::Running { checkout } => (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            format!("freshness sync of {checkout} is still running; writes are refused until it finishes"),
        ),
        SyncState::Failed { checkout, error } => (
            axum::http::StatusCode::CONFLICT,
            "aborted",
            format!("freshness sync of {checkout} failed, so writes are refused: {error}"),
        ),
    };
    let body = if req.uri().path() == "/files" {
        serde_json::json!({"code": status.as_u16(), "message": message})
    } else {
        serde_json::json!({"code": connect_code, "message": message})
    };
    let mut resp = (status, axum::Json(body)).into_response();
    if status == axum::http::StatusCode::SERVICE_UNAVAILABLE {
        resp.headers_mut().insert("retry-after", HeaderValue::from_static("1"));
    }
    Some(resp)
}

/// Routes a signed `/files` URL that came without routing headers.
pub async fn signed_files(st: &AppState, req: Request) -> Response {
    let op = if req.method() == axum::http::Method::GET { FileOperation::Read } else { FileOperation::Write };
    let params: std::collections::HashMap<String, String> = req
        .uri()
        .query()
        .map(|q| {
            q.split('&')
                .filter_map(|kv| {
                    let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                    let dec =
                        |s: &str| urlencoding::decode(&s.replace('+', " ")).ok().map(|c| c.into_owned());
                    Some((dec(k)?, dec(v)?))
                })
                .collect()
        })
        .unwrap_or_default();
    let path = params.get("path").map(String::as_str).unwrap_or("");
    let username = params.get("username").map(String::as_str).unwrap_or("");
    let signature = params.get("signature").map(String::as_str).unwrap_or("");
    let expiration = match params.get("signature_expiration").map(|s| s.parse::<i64>()) {
        None => None,
        Some(Ok(e)) => Some(e),
        Some(Err(_)) => return ApiError::bad_request("invalid signature_expiration").into_response(),
    };
    match st.runtime.route_by_file_signature(path, op, username, signature, expiration) {
        Some(route) => match sync_refusal(st, &route, ENVD_PORT, &req) {
            Some(refusal) => refused(req, refusal).await,
            None => forward(st, &route, ENVD_PORT, req).await,
        },
        None => ApiError::unauthorized("invalid or expired file URL signature (or the sandbox is gone)")
            .into_response(),
    }
}

/// Streams `body` until it ends or the sandbox's traffic is cut (pause, kill). Dropping the
/// upstream body mid-stream closes that connection to the agent.
fn cuttable(body: Body, mut cut: tokio::sync::watch::Receiver<u64>) -> Body {
    cut.borrow_and_update();
    let frames = futures_util::stream::unfold(Some((body, cut)), |state| async move {
        let (mut body, mut cut) = state?;
        loop {
            tokio::select! {
                frame = body.frame() => match frame {
                    None => return None,
                    Some(Err(e)) => return Some((Err(e), None)),
                    Some(Ok(f)) => {
                        if let Ok(data) = f.into_data() {
                            return Some((Ok(data), Some((body, cut))));
                        }
                        // Trailers are not forwarded over HTTP/1.1.
                    }
                },
                _ = cut.changed() => return None,
            }
        }
    });
    Body::from_stream(frames)
}

async fn forward(st: &AppState, route: &SandboxRoute, port: u16, req: Request) -> Response {
    let (mut parts, body) = req.into_parts();
    let pq = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let uri: Uri = match format!("http://{}:{port}{pq}", route.agent_ip).parse() {
        Ok(u) => u,
        Err(e) => return ApiError::bad_request(format!("invalid request path: {e}")).into_response(),
    };
    parts.uri = uri;
    parts.version = axum::http::Version::HTTP_11;
    for h in HOP_BY_HOP {
        parts.headers.remove(*h);
    }
    if let Ok(v) = HeaderValue::from_str(&format!("{}:{port}", route.agent_ip)) {
        parts.headers.insert(header::HOST, v);
    }
    let upstream = axum::http::Request::from_parts(parts, body);
    match st.upstream.request(upstream).await {
        Ok(resp) => {
            let (mut parts, body) = resp.into_parts();
            for h in HOP_BY_HOP {
                parts.headers.remove(*h);
            }
            Response::from_parts(parts, cuttable(Body::new(body), route.cut.clone()))
        }
        Err(e) if e.is_connect() => {
            // The sandbox may have been killed while the request was in flight.
            if st.runtime.route(route.id.as_str()).is_none() {
                return sandbox_not_found(route.id.as_str());
            }
            port_not_open(route.id.as_str(), port)
        }
        Err(e) => {
            tracing::warn!(sandbox = %route.id, error = %e, "proxy request failed");
            if st.runtime.route(route.id.as_str()).is_none() {
                return sandbox_not_found(route.id.as_str());
            }
            ApiError::new(
                axum::http::StatusCode::BAD_GATEWAY,
                format!("sandbox {} did not answer: {e}", route.id),
            )
            .into_response()
        }
    }
}
