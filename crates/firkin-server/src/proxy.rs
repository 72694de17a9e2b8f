//! Sandbox traffic: forwards bytes to the agent (or a user port) inside the sandbox's network
//! namespace, streaming both ways. The server never re-implements envd.

use std::time::Duration;

use axum::body::{Body, Bytes};
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
        None => ApiError::unauthorized(signed_url_refusal(expiration, unix_now())).into_response(),
    }
}

/// Why no sandbox took a signed `/files` URL. An expiry in the past is said as envd says it
/// (clients match on it); the signature itself cannot be checked once no sandbox accepts it.
fn signed_url_refusal(expiration: Option<i64>, now: i64) -> &'static str {
    match expiration {
        Some(exp) if exp < now => firkin_wire::signature::SignatureRejection::Expired.message(),
        _ => "invalid signature (or the sandbox is gone)",
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Streams `body` until it ends or the sandbox's traffic is cut (pause, snapshot, kill).
/// Dropping the upstream body mid-stream closes that connection to the agent.
///
/// A cut stream never ends as if it had completed: a Connect streaming response (`connect`)
/// cut between two messages ends with an end-of-stream error frame — `unavailable` when the
/// sandbox is gone (`gone()`: killed or expired), `canceled` when it is only paused or
/// snapshotted — and any other response, or one cut inside a message, is aborted, so the client
/// sees a broken stream rather than a short but well-formed one.
fn cuttable(
    body: Body,
    mut cut: tokio::sync::watch::Receiver<u64>,
    connect: bool,
    gone: impl Fn() -> bool + Send + Sync + 'static,
) -> Body {
    cut.borrow_and_update();
    let state = CutState { body, cut, framing: connect.then(EnvelopeTracker::default), gone: Box::new(gone) };
    let frames = futures_util::stream::unfold(Some(state), |state| async move {
        let mut state = state?;
        loop {
            tokio::select! {
                frame = state.body.frame() => match frame {
                    None => return None,
                    Some(Err(e)) => return Some((Err(e), None)),
                    Some(Ok(f)) => {
                        if let Ok(data) = f.into_data() {
                            if let Some(framing) = state.framing.as_mut() {
                                framing.feed(&data);
                            }
                            return Some((Ok(data), Some(state)));
                        }
                        // Trailers are not forwarded over HTTP/1.1.
                    }
                },
                _ = state.cut.changed() => return state.ending().map(|last| (last, None)),
            }
        }
    });
    Body::from_stream(frames)
}

/// A proxied response body that the sandbox's traffic cut may end.
struct CutState {
    body: Body,
    cut: tokio::sync::watch::Receiver<u64>,
    /// Message framing seen so far, for Connect streaming responses only.
    framing: Option<EnvelopeTracker>,
    gone: Box<dyn Fn() -> bool + Send + Sync>,
}

impl CutState {
    /// The last item of a body whose traffic was cut: nothing when the Connect stream had
    /// already completed, its end-of-stream error frame when it is between messages, else an
    /// error that aborts the response.
    fn ending(&self) -> Option<Result<Bytes, axum::Error>> {
        match &self.framing {
            Some(f) if f.at_boundary() && f.ended => None,
            Some(f) if f.at_boundary() => Some(Ok(cut_end_stream((self.gone)()))),
            _ => Some(Err(axum::Error::new(std::io::Error::new(
                std::io::ErrorKind::ConnectionAborted,
                "the sandbox's traffic was cut while the response was streaming",
            )))),
        }
    }
}

/// Whether a response is a Connect streaming response (enveloped messages).
fn is_connect_stream(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.trim_start().to_ascii_lowercase().starts_with("application/connect+"))
}

/// The Connect end-of-stream frame (flag 0x02) ending a stream that a cut interrupted. When the
/// sandbox is gone the code is `unavailable`, worded so the SDK probes the sandbox (it then
/// reports it killed); a pause or snapshot is `canceled`, which the SDK reports as a request
/// ended by the server while in flight.
fn cut_end_stream(gone: bool) -> Bytes {
    let (code, message) = if gone {
        (
            "unavailable",
            "the sandbox was killed while this stream was open, so the stream ended before completing",
        )
    } else {
        (
            "canceled",
            "the sandbox was paused or snapshotted while this stream was open, so the stream was ended",
        )
    };
    let payload = serde_json::json!({"error": {"code": code, "message": message}}).to_string();
    let mut frame = Vec::with_capacity(5 + payload.len());
    frame.push(CONNECT_END_STREAM);
    frame.extend_from_slice(&u32::try_from(payload.len()).unwrap_or(u32::MAX).to_be_bytes());
    frame.extend_from_slice(payload.as_bytes());
    Bytes::from(frame)
}

/// Connect envelope flag of the end-of-stream message.
const CONNECT_END_STREAM: u8 = 0x02;

/// Follows the 5-byte-header envelopes of a Connect stream as its bytes pass, so a cut can
/// tell whether it falls between two messages.
#[derive(Debug, Default)]
struct EnvelopeTracker {
    header: [u8; 5],
    header_len: usize,
    /// Payload bytes of the current envelope still to come.
    remaining: usize,
    /// The end-of-stream envelope has started.
    ended: bool,
}

impl EnvelopeTracker {
    fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            if self.remaining > 0 {
                let n = self.remaining.min(data.len());
                self.remaining -= n;
                data = &data[n..];
                continue;
            }
            let n = (5 - self.header_len).min(data.len());
            self.header[self.header_len..self.header_len + n].copy_from_slice(&data[..n]);
            self.header_len += n;
            data = &data[n..];
            if self.header_len == 5 {
                let [flags, a, b, c, d] = self.header;
                self.ended |= flags & CONNECT_END_STREAM != 0;
                self.remaining = u32::from_be_bytes([a, b, c, d]) as usize;
                self.header_len = 0;
            }
        }
    }

    fn at_boundary(&self) -> bool {
        self.header_len == 0 && self.remaining == 0
    }
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
            let connect = is_connect_stream(&parts.headers);
            let (runtime, id) = (st.runtime.clone(), route.id.to_string());
            let gone = move || runtime.get_visible(&id).is_err();
            Response::from_parts(parts, cuttable(Body::new(body), route.cut.clone(), connect, gone))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(flags: u8, payload: &str) -> Vec<u8> {
        let mut out = vec![flags];
        out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        out.extend_from_slice(payload.as_bytes());
        out
    }

    /// A body fed chunk by chunk through a channel, and the cut signal of its sandbox.
    fn live_body() -> (tokio::sync::mpsc::Sender<Vec<u8>>, tokio::sync::watch::Sender<u64>, Body) {
        let (tx, rx) = tokio::sync::mpsc::channel::<Vec<u8>>(8);
        let chunks = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|c| (Ok::<_, std::io::Error>(c), rx))
        });
        let (cut, _) = tokio::sync::watch::channel(0u64);
        (tx, cut, Body::from_stream(chunks))
    }

    /// Sends `chunks`, then cuts, and returns what the client received (or the body's error).
    async fn cut_after(chunks: Vec<Vec<u8>>, connect: bool, gone: bool) -> Result<Vec<u8>, String> {
        let (tx, cut, upstream) = live_body();
        let body = cuttable(upstream, cut.subscribe(), connect, move || gone);
        let reader = tokio::spawn(async move {
            body.collect().await.map(|c| c.to_bytes().to_vec()).map_err(|e| e.to_string())
        });
        for c in chunks {
            tx.send(c).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        cut.send_modify(|epoch| *epoch += 1);
        let out = tokio::time::timeout(Duration::from_secs(5), reader).await.unwrap().unwrap();
        drop(tx);
        out
    }

    fn end_stream_error(bytes: &[u8]) -> (String, String) {
        assert_eq!(bytes[0], CONNECT_END_STREAM);
        let len = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]) as usize;
        assert_eq!(bytes.len(), 5 + len, "the error frame is the last thing sent");
        let v: serde_json::Value = serde_json::from_slice(&bytes[5..]).unwrap();
        (v["error"]["code"].as_str().unwrap().into(), v["error"]["message"].as_str().unwrap().into())
    }

    #[tokio::test]
    async fn a_kill_ends_a_connect_stream_with_unavailable_after_the_last_whole_message() {
        let start = envelope(0, r#"{"event":{"start":{"pid":7}}}"#);
        let out = cut_after(vec![start.clone()], true, true).await.unwrap();
        assert_eq!(&out[..start.len()], &start[..]);
        let (code, message) = end_stream_error(&out[start.len()..]);
        assert_eq!(code, "unavailable");
        // Not the proxy's "not found" / "port is not open" wording: the SDK must probe the
        // sandbox to learn that it is gone.
        assert!(message.contains("killed") && !message.contains("was not found"), "{message}");
    }

    #[tokio::test]
    async fn a_pause_ends_a_connect_stream_as_canceled() {
        let out = cut_after(vec![], true, false).await.unwrap();
        assert_eq!(end_stream_error(&out).0, "canceled");
    }

    #[tokio::test]
    async fn a_cut_inside_a_message_or_of_another_stream_aborts_it() {
        let msg = envelope(0, r#"{"event":{"keepalive":{}}}"#);
        // Cut after a header and part of the payload: appending a frame would corrupt it.
        assert!(cut_after(vec![msg[..8].to_vec()], true, true).await.is_err());
        // Cut inside the 5-byte header.
        assert!(cut_after(vec![msg[..3].to_vec()], true, true).await.is_err());
        // An NDJSON stream (code interpreter's /execute) has no error frame: it is aborted.
        assert!(cut_after(vec![b"{\"type\":\"stdout\"}\n".to_vec()], false, true).await.is_err());
    }

    #[tokio::test]
    async fn a_completed_connect_stream_is_left_alone() {
        let end = envelope(CONNECT_END_STREAM, "{}");
        let out = cut_after(vec![end.clone()], true, true).await.unwrap();
        assert_eq!(out, end);
    }

    #[tokio::test]
    async fn an_uncut_body_passes_through_whole() {
        let (tx, _cut, upstream) = live_body();
        let (_keep, rx) = tokio::sync::watch::channel(0u64);
        let body = cuttable(upstream, rx, true, || false);
        let msg = envelope(0, "{}");
        tx.send(msg[..2].to_vec()).await.unwrap();
        tx.send(msg[2..].to_vec()).await.unwrap();
        drop(tx);
        assert_eq!(body.collect().await.unwrap().to_bytes().to_vec(), msg);
    }

    #[test]
    fn tracker_follows_split_envelopes() {
        let mut t = EnvelopeTracker::default();
        let a = envelope(0, "abc");
        let b = envelope(CONNECT_END_STREAM, "{}");
        let all: Vec<u8> = a.iter().chain(b.iter()).copied().collect();
        for (i, byte) in all.iter().enumerate() {
            t.feed(&[*byte]);
            let boundary = i + 1 == a.len() || i + 1 == all.len();
            assert_eq!(t.at_boundary(), boundary, "after byte {i}");
        }
        assert!(t.ended);
    }

    #[test]
    fn connect_stream_content_types() {
        let mut h = axum::http::HeaderMap::new();
        assert!(!is_connect_stream(&h));
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/connect+json"));
        assert!(is_connect_stream(&h));
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        assert!(!is_connect_stream(&h));
    }

    #[test]
    fn expired_signed_urls_say_so() {
        assert_eq!(signed_url_refusal(Some(99), 100), "signature is already expired");
        assert_ne!(signed_url_refusal(Some(100), 100), "signature is already expired");
        assert_ne!(signed_url_refusal(None, 100), "signature is already expired");
    }
}
