//! `process.Process` request and response messages in proto3 JSON form.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::json::{self, EnumValue};

/// `ProcessConfig`: what to run. Also echoed back by `List`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct ProcessConfig {
    #[serde(default, deserialize_with = "json::nullable")]
    pub cmd: String,
    #[serde(default, deserialize_with = "json::nullable", skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    #[serde(default, deserialize_with = "json::nullable", skip_serializing_if = "BTreeMap::is_empty")]
    pub envs: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
}

/// `ProcessSelector`: a oneof of `pid` and `tag`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Selector {
    #[serde(default, deserialize_with = "json::opt_u32")]
    pub pid: Option<u32>,
    #[serde(default)]
    pub tag: Option<String>,
}

/// `PTY.Size`.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
pub struct PtySize {
    #[serde(default, deserialize_with = "json::u32_or_zero")]
    pub cols: u32,
    #[serde(default, deserialize_with = "json::u32_or_zero")]
    pub rows: u32,
}

/// `PTY`.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
pub struct Pty {
    #[serde(default)]
    pub size: Option<PtySize>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct StartRequest {
    #[serde(default, deserialize_with = "json::nullable")]
    pub process: ProcessConfig,
    #[serde(default)]
    pub pty: Option<Pty>,
    #[serde(default)]
    pub tag: Option<String>,
    #[serde(default)]
    pub stdin: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct SelectorRequest {
    #[serde(default, deserialize_with = "json::nullable")]
    pub process: Selector,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct UpdateRequest {
    #[serde(default, deserialize_with = "json::nullable")]
    pub process: Selector,
    #[serde(default)]
    pub pty: Option<Pty>,
}

/// `ProcessInput`: a oneof of `stdin` and `pty` bytes.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ProcessInput {
    #[serde(default, deserialize_with = "json::opt_bytes")]
    pub stdin: Option<Vec<u8>>,
    #[serde(default, deserialize_with = "json::opt_bytes")]
    pub pty: Option<Vec<u8>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct SendInputRequest {
    #[serde(default, deserialize_with = "json::nullable")]
    pub process: Selector,
    #[serde(default)]
    pub input: Option<ProcessInput>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct SendSignalRequest {
    #[serde(default, deserialize_with = "json::nullable")]
    pub process: Selector,
    #[serde(default, deserialize_with = "json::nullable")]
    pub signal: EnumValue,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct StreamInputStart {
    #[serde(default, deserialize_with = "json::nullable")]
    pub process: Selector,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct StreamInputData {
    #[serde(default)]
    pub input: Option<ProcessInput>,
}

/// One message of the `StreamInput` client stream (a oneof).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct StreamInputRequest {
    #[serde(default)]
    pub start: Option<StreamInputStart>,
    #[serde(default)]
    pub data: Option<StreamInputData>,
}

/// `ProcessInfo` as listed by `List`.
#[derive(Debug, Clone, Serialize)]
pub struct ProcessInfo {
    pub config: ProcessConfig,
    pub pid: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
}

/// Which output a data event carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputKind {
    Stdout,
    Stderr,
    Pty,
}

impl OutputKind {
    fn field(self) -> &'static str {
        match self {
            OutputKind::Stdout => "stdout",
            OutputKind::Stderr => "stderr",
            OutputKind::Pty => "pty",
        }
    }
}

/// `ProcessEvent.EndEvent`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EndEvent {
    #[serde(skip_serializing_if = "json::is_zero_i32")]
    pub exit_code: i32,
    #[serde(skip_serializing_if = "json::is_false")]
    pub exited: bool,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `{"event":{"start":{"pid":N}}}`.
pub fn start_event(pid: u32) -> Value {
    json!({ "event": { "start": { "pid": pid } } })
}

/// `{"event":{"data":{"stdout"|"stderr"|"pty":"<b64>"}}}`.
pub fn data_event(kind: OutputKind, data: &[u8]) -> Value {
    let mut inner = serde_json::Map::new();
    inner.insert(kind.field().into(), Value::String(json::encode_bytes(data)));
    json!({ "event": { "data": inner } })
}

/// `{"event":{"end":{...}}}`.
pub fn end_event(end: &EndEvent) -> Value {
    json!({ "event": { "end": end } })
}

/// `{"event":{"keepalive":{}}}`.
pub fn keepalive_event() -> Value {
    json!({ "event": { "keepalive": {} } })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_request_from_sdk() {
        let r: StartRequest = serde_json::from_str(
            r#"{"process":{"cmd":"/bin/bash","args":["-l","-c","echo hi"],"envs":{"A":"b"},"cwd":"/tmp"},"stdin":false,"pty":{"size":{"cols":80,"rows":24}},"tag":"t"}"#,
        )
        .unwrap();
        assert_eq!(r.process.args.len(), 3);
        assert_eq!(r.stdin, Some(false));
        assert_eq!(r.pty.unwrap().size.unwrap().cols, 80);
        let r: StartRequest = serde_json::from_str(r#"{"process":{"cmd":"x"}}"#).unwrap();
        assert_eq!(r.stdin, None);
    }

    #[test]
    fn events_are_proto3_json() {
        assert_eq!(
            data_event(OutputKind::Stdout, b"hi\n").to_string(),
            r#"{"event":{"data":{"stdout":"aGkK"}}}"#
        );
        let end = EndEvent { exit_code: 0, exited: true, status: "exit status 0".into(), error: None };
        assert_eq!(
            end_event(&end).to_string(),
            r#"{"event":{"end":{"exited":true,"status":"exit status 0"}}}"#
        );
    }

    #[test]
    fn input_oneof() {
        let r: SendInputRequest =
            serde_json::from_str(r#"{"process":{"pid":"5"},"input":{"pty":"aGk"}}"#).unwrap();
        assert_eq!(r.process.pid, Some(5));
        let input = r.input.unwrap();
        assert_eq!(input.pty.as_deref(), Some(&b"hi"[..]));
        assert!(input.stdin.is_none());
    }
}
