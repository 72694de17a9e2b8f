//! Connect RPC dispatch: decodes requests of `process.Process` and `filesystem.Filesystem`
//! according to each method's kind (unary, server-streaming, client-streaming), calls the
//! services and encodes their answers.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap};
use axum::response::Response;
use futures_util::StreamExt;
use serde::de::DeserializeOwned;

use crate::connect::{
    self, unary_response, Code, ConnectError, EnvelopeDecoder, FramingError, UNARY_CONTENT_TYPE,
};
use crate::context::{CallContext, ConfigCell};
use crate::filesystem::{self, watch, FilesystemService};
use crate::process::{self, ProcessService, StreamDeadline};

/// Largest unary request body accepted.
const MAX_UNARY_BODY: usize = 64 << 20;

fn bad_request(what: impl std::fmt::Display) -> ConnectError {
    ConnectError::new(Code::InvalidArgument, format!("invalid request: {what}"))
}

fn decode<T: DeserializeOwned>(payload: &[u8]) -> Result<T, ConnectError> {
    let payload: &[u8] = if payload.iter().all(u8::is_ascii_whitespace) { b"{}" } else { payload };
    serde_json::from_slice(payload).map_err(bad_request)
}

async fn unary_body<T: DeserializeOwned>(body: Body) -> Result<T, ConnectError> {
    let bytes = axum::body::to_bytes(body, MAX_UNARY_BODY).await.map_err(bad_request)?;
    decode(&bytes)
}

/// Reads the single message of a server-streaming request (enveloped; a bare JSON body from a
/// non-Connect client is tolerated).
async fn stream_request<T: DeserializeOwned>(headers: &HeaderMap, body: Body) -> Result<T, ConnectError> {
    let bytes = axum::body::to_bytes(body, MAX_UNARY_BODY).await.map_err(bad_request)?;
    let is_plain_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with(UNARY_CONTENT_TYPE));
    if is_plain_json {
        return decode(&bytes);
    }
    let mut decoder = EnvelopeDecoder::default();
    decoder.push(&bytes);
    let envelope = decoder.next_envelope()?.ok_or(FramingError::Truncated(bytes.len()))?;
    decode(&envelope.payload)
}

fn unimplemented(service: &str, method: &str) -> ConnectError {
    ConnectError::new(Code::Unimplemented, format!("{service}/{method} is not implemented"))
}

fn context(cell: &ConfigCell, headers: HeaderMap) -> Result<CallContext, ConnectError> {
    let config = cell.get().ok_or_else(|| ConnectError::new(Code::Unavailable, "agent not initialised"))?;
    Ok(CallContext::new(config, headers))
}

/// `POST /process.Process/{method}`.
pub async fn process_rpc(
    State(cell): State<Arc<ConfigCell>>,
    State(svc): State<Arc<ProcessService>>,
    Path(method): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let ctx = match context(&cell, headers) {
        Ok(c) => c,
        Err(e) => return connect::unary_error(&e),
    };
    match method.as_str() {
        "Start" => {
            let req = match stream_request(ctx.headers(), body).await {
                Ok(r) => r,
                Err(e) => return connect::stream_error(e),
            };
            // Taken before the spawn, so the stream's deadline passes no later than the kill.
            let deadline = StreamDeadline::after(ctx.timeout(), "the process was killed");
            match svc.start(&ctx, req) {
                Ok((entry, sub)) => {
                    let (writer, response) = connect::stream_response();
                    tokio::spawn(process::stream_events(writer, entry, sub, ctx.keepalive(), deadline));
                    response
                }
                Err(e) => connect::stream_error(e.into()),
            }
        }
        "Connect" => {
            let req = match stream_request(ctx.headers(), body).await {
                Ok(r) => r,
                Err(e) => return connect::stream_error(e),
            };
            let deadline = StreamDeadline::after(ctx.timeout(), "the process keeps running");
            match svc.connect(req) {
                Ok((entry, sub)) => {
                    let (writer, response) = connect::stream_response();
                    tokio::spawn(process::stream_events(writer, entry, sub, ctx.keepalive(), deadline));
                    response
                }
                Err(e) => connect::stream_error(e.into()),
            }
        }
        "StreamInput" => stream_input(svc, body).await,
        "List" => match unary_body::<serde_json::Value>(body).await {
            Ok(_) => connect::unary_ok(&svc.list()),
            Err(e) => connect::unary_error(&e),
        },
        "SendInput" => match unary_body(body).await {
            Ok(req) => unary_response(svc.send_input(req).await.map_err(ConnectError::from)),
            Err(e) => connect::unary_error(&e),
        },
        "SendSignal" => match unary_body(body).await {
            Ok(req) => unary_response(svc.send_signal(req).map_err(ConnectError::from)),
            Err(e) => connect::unary_error(&e),
        },
        "CloseStdin" => match unary_body(body).await {
            Ok(req) => unary_response(svc.close_stdin(req).await.map_err(ConnectError::from)),
            Err(e) => connect::unary_error(&e),
        },
        "Update" => match unary_body(body).await {
            Ok(req) => unary_response(svc.update(req).map_err(ConnectError::from)),
            Err(e) => connect::unary_error(&e),
        },
        other => connect::unary_error(&unimplemented("process.Process", other)),
    }
}

/// `StreamInput`: consumes envelopes as they arrive, writing each input in order.
async fn stream_input(svc: Arc<ProcessService>, body: Body) -> Response {
    let mut decoder = EnvelopeDecoder::default();
    let mut target = None;
    let mut stream = body.into_data_stream();
    let result: Result<(), ConnectError> = async {
        'read: while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(bad_request)?;
            decoder.push(&chunk);
            while let Some(envelope) = decoder.next_envelope()? {
                if envelope.is_end_stream() {
                    break 'read;
                }
                let msg = decode(&envelope.payload)?;
                svc.stream_input_message(&mut target, msg).await?;
            }
        }
        decoder.finish()?;
        Ok(())
    }
    .await;
    let (writer, response) = connect::stream_response();
    tokio::spawn(async move {
        match result {
            Ok(()) => {
                if writer.send(&serde_json::json!({})).await {
                    writer.finish(Ok(())).await;
                }
            }
            Err(e) => writer.finish(Err(e)).await,
        }
    });
    response
}

/// `POST /filesystem.Filesystem/{method}`.
pub async fn filesystem_rpc(
    State(cell): State<Arc<ConfigCell>>,
    State(svc): State<Arc<FilesystemService>>,
    Path(method): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let ctx = match context(&cell, headers) {
        Ok(c) => c,
        Err(e) => return connect::unary_error(&e),
    };
    if method == "WatchDir" {
        let result = async {
            let req: filesystem::WatchRequest = stream_request(ctx.headers(), body).await?;
            let user = ctx.user().map_err(filesystem::FsError::from)?;
            Ok::<_, ConnectError>(svc.watch(&user, &req)?)
        }
        .await;
        return match result {
            Ok(w) => {
                let (writer, response) = connect::stream_response();
                tokio::spawn(watch::stream(writer, w, ctx.keepalive()));
                response
            }
            Err(e) => connect::stream_error(e),
        };
    }
    let user = match ctx.user() {
        Ok(u) => u,
        Err(e) => return connect::unary_error(&filesystem::FsError::from(e).into()),
    };
    let result: Result<serde_json::Value, ConnectError> = async {
        // Decode asynchronously, then do the (blocking) filesystem work off the reactor.
        let call: Box<dyn FnOnce() -> Result<serde_json::Value, filesystem::FsError> + Send> =
            match method.as_str() {
                "Stat" => {
                    let req = unary_body(body).await?;
                    Box::new(move || svc.stat(&user, req))
                }
                "MakeDir" => {
                    let req = unary_body(body).await?;
                    Box::new(move || svc.make_dir(&user, req))
                }
                "Move" => {
                    let req = unary_body(body).await?;
                    Box::new(move || svc.move_entry(&user, req))
                }
                "ListDir" => {
                    let req = unary_body(body).await?;
                    Box::new(move || svc.list_dir(&user, req))
                }
                "Remove" => {
                    let req = unary_body(body).await?;
                    Box::new(move || svc.remove(&user, req))
                }
                "CreateWatcher" => {
                    let req = unary_body(body).await?;
                    Box::new(move || svc.create_watcher(&user, req))
                }
                "GetWatcherEvents" => {
                    let req = unary_body(body).await?;
                    Box::new(move || svc.get_watcher_events(req))
                }
                "RemoveWatcher" => {
                    let req = unary_body(body).await?;
                    Box::new(move || svc.remove_watcher(req))
                }
                other => return Err(unimplemented("filesystem.Filesystem", other)),
            };
        tokio::task::spawn_blocking(call)
            .await
            .map_err(|e| ConnectError::new(Code::Internal, format!("filesystem task failed: {e}")))?
            .map_err(ConnectError::from)
    }
    .await;
    unary_response(result)
}
