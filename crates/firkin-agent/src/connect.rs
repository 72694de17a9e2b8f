//! Connect protocol (JSON codec) framing: error codes and their HTTP statuses, the 5-byte
//! envelope used by streaming calls, and the axum responses for unary and streaming replies.
//!
//! This is the one place where a Connect [`Code`] is mapped to an HTTP status.

use std::convert::Infallible;

use axum::body::Body;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde::Serialize;
use serde_json::json;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;

/// Content type of streaming requests and responses.
pub const STREAM_CONTENT_TYPE: &str = "application/connect+json";
/// Content type of unary requests and responses.
pub const UNARY_CONTENT_TYPE: &str = "application/json";
/// Envelope flag: the payload is compressed (never produced, rejected on input).
pub const FLAG_COMPRESSED: u8 = 0x01;
/// Envelope flag: end-of-stream message.
pub const FLAG_END_STREAM: u8 = 0x02;
/// Largest envelope payload accepted from a client.
pub const MAX_ENVELOPE_LEN: usize = 64 << 20;

/// Connect error codes (the full set, though the agent does not produce all of them).
#[allow(dead_code)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    Canceled,
    Unknown,
    InvalidArgument,
    DeadlineExceeded,
    NotFound,
    AlreadyExists,
    PermissionDenied,
    ResourceExhausted,
    FailedPrecondition,
    Aborted,
    OutOfRange,
    Unimplemented,
    Internal,
    Unavailable,
    DataLoss,
    Unauthenticated,
}

impl Code {
    /// The wire name (`"not_found"`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Code::Canceled => "canceled",
            Code::Unknown => "unknown",
            Code::InvalidArgument => "invalid_argument",
            Code::DeadlineExceeded => "deadline_exceeded",
            Code::NotFound => "not_found",
            Code::AlreadyExists => "already_exists",
            Code::PermissionDenied => "permission_denied",
            Code::ResourceExhausted => "resource_exhausted",
            Code::FailedPrecondition => "failed_precondition",
            Code::Aborted => "aborted",
            Code::OutOfRange => "out_of_range",
            Code::Unimplemented => "unimplemented",
            Code::Internal => "internal",
            Code::Unavailable => "unavailable",
            Code::DataLoss => "data_loss",
            Code::Unauthenticated => "unauthenticated",
        }
    }

    /// HTTP status of a unary error response carrying this code (Connect spec table).
    pub fn http_status(self) -> StatusCode {
        match self {
            Code::Canceled => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
            Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
            Code::InvalidArgument | Code::OutOfRange => StatusCode::BAD_REQUEST,
            Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
            Code::NotFound => StatusCode::NOT_FOUND,
            Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
            Code::PermissionDenied => StatusCode::FORBIDDEN,
            Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
            Code::FailedPrecondition => StatusCode::BAD_REQUEST,
            Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
            Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        }
    }
}

/// An error as it goes on the wire: a code and a human-readable message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectError {
    pub code: Code,
    pub message: String,
}

impl ConnectError {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }

    fn to_json(&self) -> serde_json::Value {
        json!({ "code": self.code.as_str(), "message": self.message })
    }
}

/// Problems decoding enveloped request bodies.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FramingError {
    #[error("compressed envelopes are not supported")]
    Compressed,
    #[error("envelope of {0} bytes exceeds the limit")]
    TooLarge(usize),
    #[error("request body ended inside an envelope ({0} bytes left over)")]
    Truncated(usize),
}

impl From<FramingError> for ConnectError {
    fn from(e: FramingError) -> Self {
        ConnectError::new(Code::InvalidArgument, e.to_string())
    }
}

/// One decoded envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub flags: u8,
    pub payload: Bytes,
}

impl Envelope {
    pub fn is_end_stream(&self) -> bool {
        self.flags & FLAG_END_STREAM != 0
    }
}

/// Frames `payload` with `flags`.
pub fn encode_envelope(flags: u8, payload: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(5 + payload.len());
    out.put_u8(flags);
    // Payloads are bounded by memory far below 4 GiB; saturate rather than wrap just in case.
    out.put_u32(u32::try_from(payload.len()).unwrap_or(u32::MAX));
    out.put_slice(payload);
    out.freeze()
}

/// Frames a data message.
pub fn message_envelope<T: Serialize>(msg: &T) -> Bytes {
    let payload = serde_json::to_vec(msg).unwrap_or_else(|_| b"{}".to_vec());
    encode_envelope(0, &payload)
}

/// Frames the end-of-stream message, `{}` on success or `{"error":{...}}`.
pub fn end_stream_envelope(result: Result<(), &ConnectError>) -> Bytes {
    let body = match result {
        Ok(()) => json!({}),
        Err(e) => json!({ "error": e.to_json() }),
    };
    encode_envelope(FLAG_END_STREAM, body.to_string().as_bytes())
}

/// Incremental envelope decoder: push bytes as they arrive, pull complete envelopes.
#[derive(Debug, Default)]
pub struct EnvelopeDecoder {
    buf: BytesMut,
}

impl EnvelopeDecoder {
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Returns the next complete envelope, or `None` if more bytes are needed.
    pub fn next_envelope(&mut self) -> Result<Option<Envelope>, FramingError> {
        if self.buf.len() < 5 {
            return Ok(None);
        }
        let flags = self.buf[0];
        let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
        if flags & FLAG_COMPRESSED != 0 {
            return Err(FramingError::Compressed);
        }
        if len > MAX_ENVELOPE_LEN {
            return Err(FramingError::TooLarge(len));
        }
        if self.buf.len() < 5 + len {
            return Ok(None);
        }
        self.buf.advance(5);
        let payload = self.buf.split_to(len).freeze();
        Ok(Some(Envelope { flags, payload }))
    }

    /// Call at end of input: errors if a partial envelope is pending.
    pub fn finish(&self) -> Result<(), FramingError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(FramingError::Truncated(self.buf.len()))
        }
    }
}

/// Unary success: 200 with the JSON message.
pub fn unary_ok<T: Serialize>(msg: &T) -> Response {
    let body = serde_json::to_vec(msg).unwrap_or_else(|_| b"{}".to_vec());
    (StatusCode::OK, [(header::CONTENT_TYPE, HeaderValue::from_static(UNARY_CONTENT_TYPE))], body)
        .into_response()
}

/// Unary failure: the code's HTTP status with `{"code","message"}`.
pub fn unary_error(err: &ConnectError) -> Response {
    (
        err.code.http_status(),
        [(header::CONTENT_TYPE, HeaderValue::from_static(UNARY_CONTENT_TYPE))],
        err.to_json().to_string(),
    )
        .into_response()
}

/// Converts a unary handler result into a response.
pub fn unary_response<T: Serialize>(result: Result<T, ConnectError>) -> Response {
    match result {
        Ok(msg) => unary_ok(&msg),
        Err(e) => unary_error(&e),
    }
}

/// The producer half of a server-streaming response.
///
/// Each [`StreamWriter::send`] becomes one chunk on the wire, so messages are flushed one by one.
/// Dropping the writer without calling [`StreamWriter::finish`] ends the body without an
/// end-stream frame, which only happens when the client is already gone.
pub struct StreamWriter {
    tx: mpsc::Sender<Bytes>,
}

impl StreamWriter {
    /// Sends one message; returns `false` once the client has gone away.
    pub async fn send<T: Serialize>(&self, msg: &T) -> bool {
        self.tx.send(message_envelope(msg)).await.is_ok()
    }

    /// Sends the end-stream frame and closes the body.
    pub async fn finish(self, result: Result<(), ConnectError>) {
        let _ = self.tx.send(end_stream_envelope(result.as_ref().map(|_| ()))).await;
    }

    /// Resolves when the client has dropped the response body.
    pub async fn closed(&self) {
        self.tx.closed().await;
    }
}

/// Creates a streaming response (200, `application/connect+json`) and its writer.
pub fn stream_response() -> (StreamWriter, Response) {
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    let stream = ReceiverStream::new(rx).map(Ok::<Bytes, Infallible>);
    let response = Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, STREAM_CONTENT_TYPE)
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response());
    (StreamWriter { tx }, response)
}

/// A streaming response that consists only of the end-stream frame carrying `err`.
pub fn stream_error(err: ConnectError) -> Response {
    let (writer, response) = stream_response();
    tokio::spawn(writer.finish(Err(err)));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_round_trip_across_split_chunks() {
        let a = encode_envelope(0, br#"{"a":1}"#);
        let b = end_stream_envelope(Ok(()));
        let mut all = a.to_vec();
        all.extend_from_slice(&b);
        let mut dec = EnvelopeDecoder::default();
        let mut got = Vec::new();
        for byte in all {
            dec.push(&[byte]);
            while let Some(env) = dec.next_envelope().unwrap() {
                got.push(env);
            }
        }
        dec.finish().unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(&got[0].payload[..], br#"{"a":1}"#);
        assert!(!got[0].is_end_stream());
        assert!(got[1].is_end_stream());
        assert_eq!(&got[1].payload[..], b"{}");
    }

    #[test]
    fn header_is_flag_then_big_endian_length() {
        let e = encode_envelope(2, b"xyz");
        assert_eq!(&e[..5], &[2, 0, 0, 0, 3]);
    }

    #[test]
    fn compressed_and_truncated_are_rejected() {
        let mut dec = EnvelopeDecoder::default();
        dec.push(&[1, 0, 0, 0, 0]);
        assert_eq!(dec.next_envelope(), Err(FramingError::Compressed));
        let mut dec = EnvelopeDecoder::default();
        dec.push(&[0, 0, 0, 0, 9, b'{']);
        assert_eq!(dec.next_envelope(), Ok(None));
        assert_eq!(dec.finish(), Err(FramingError::Truncated(6)));
    }

    #[test]
    fn end_stream_error_shape() {
        let err = ConnectError::new(Code::NotFound, "nope");
        let e = end_stream_envelope(Err(&err));
        let v: serde_json::Value = serde_json::from_slice(&e[5..]).unwrap();
        assert_eq!(v, json!({"error":{"code":"not_found","message":"nope"}}));
    }

    #[test]
    fn status_mapping() {
        assert_eq!(Code::NotFound.http_status(), StatusCode::NOT_FOUND);
        assert_eq!(Code::AlreadyExists.http_status(), StatusCode::CONFLICT);
        assert_eq!(Code::Canceled.http_status().as_u16(), 499);
        assert_eq!(Code::Unauthenticated.http_status(), StatusCode::UNAUTHORIZED);
    }
}
