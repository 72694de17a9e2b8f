//! Host -> agent commands and file writes over envd's own surface (Connect `process.Process/Start`
//! and `POST /files`), used by template builds to run setup steps inside a live sandbox.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use base64::Engine as _;
use bytes::{Buf, Bytes, BytesMut};
use firkin_wire::agent::{ENVD_PORT, START_TAG};
use http_body_util::{BodyExt, Full};

use super::{AgentClient, AgentError};

/// Keep at most this much of each output stream (the tail).
const OUTPUT_TAIL: usize = 64 << 10;
const STREAM_CONTENT_TYPE: &str = "application/connect+json";
const FLAG_END_STREAM: u8 = 0x02;

/// A command to run inside the sandbox with `bash -lc`.
#[derive(Debug, Clone)]
pub struct Command<'a> {
    pub user: &'a str,
    pub cmd: &'a str,
    pub env: &'a BTreeMap<String, String>,
    pub cwd: Option<&'a str>,
}

/// What a finished command printed and how it ended.
#[derive(Debug, Clone, Default)]
pub struct ExecOutput {
    pub exit_code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl ExecOutput {
    /// The last lines of both streams, for error messages.
    pub fn tail(&self, lines: usize) -> String {
        let both = format!("{}{}", self.stdout, self.stderr);
        let v: Vec<&str> = both.lines().collect();
        v[v.len().saturating_sub(lines)..].join("\n")
    }
}

fn push_tail(buf: &mut Vec<u8>, data: &[u8]) {
    buf.extend_from_slice(data);
    if buf.len() > OUTPUT_TAIL {
        buf.drain(..buf.len() - OUTPUT_TAIL);
    }
}

fn basic_auth(user: &str) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:")))
}

impl AgentClient {
    fn start_request(
        &self,
        addr: Ipv4Addr,
        token: &str,
        command: &Command<'_>,
        timeout: Option<Duration>,
        tag: Option<&str>,
    ) -> Result<http::Request<Full<Bytes>>, String> {
        let mut body = serde_json::json!({
            "process": {
                "cmd": "/bin/bash",
                "args": ["-lc", command.cmd],
                "envs": command.env,
                "cwd": command.cwd,
            },
            "stdin": false,
        });
        if let Some(tag) = tag {
            body["tag"] = tag.into();
        }
        let payload = serde_json::to_vec(&body).map_err(|e| e.to_string())?;
        let len = u32::try_from(payload.len()).map_err(|_| "request too large".to_owned())?;
        let mut framed = Vec::with_capacity(payload.len() + 5);
        framed.push(0u8);
        framed.extend_from_slice(&len.to_be_bytes());
        framed.extend_from_slice(&payload);
        let mut b = http::Request::post(format!("http://{addr}:{ENVD_PORT}/process.Process/Start"))
            .header("content-type", STREAM_CONTENT_TYPE)
            .header("x-access-token", token)
            .header("authorization", basic_auth(command.user));
        if let Some(t) = timeout {
            b = b.header("connect-timeout-ms", t.as_millis().to_string());
        }
        b.body(Full::new(Bytes::from(framed))).map_err(|e| e.to_string())
    }

    /// Runs a command to completion (killed by the agent at `timeout`).
    pub async fn exec(
        &self,
        addr: Ipv4Addr,
        token: &str,
        command: &Command<'_>,
        timeout: Duration,
    ) -> Result<ExecOutput, AgentError> {
        let call = |detail: String| AgentError::Call { addr, route: "process.Start", detail };
        let req = self.start_request(addr, token, command, Some(timeout), None).map_err(call)?;
        let run = async {
            let resp = self.client.request(req).await.map_err(|e| e.to_string())?;
            if !resp.status().is_success() {
                let status = resp.status();
                let body = resp.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                return Err(format!("status {status}: {}", String::from_utf8_lossy(&body)));
            }
            let mut body = resp.into_body();
            let mut buf = BytesMut::new();
            let (mut out, mut err) = (Vec::new(), Vec::new());
            let mut exit: Option<i32> = None;
            loop {
                while let Some((flags, msg)) = next_envelope(&mut buf) {
                    let v: serde_json::Value = serde_json::from_slice(&msg).map_err(|e| e.to_string())?;
                    if flags & FLAG_END_STREAM != 0 {
                        if let Some(e) = v.get("error") {
                            return Err(format!("stream error: {e}"));
                        }
                        let exit_code = exit.ok_or("stream ended without an end event")?;
                        return Ok(ExecOutput {
                            exit_code,
                            stdout: String::from_utf8_lossy(&out).into_owned(),
                            stderr: String::from_utf8_lossy(&err).into_owned(),
                        });
                    }
                    let event = &v["event"];
                    if let Some(data) = event.get("data") {
                        for (key, sink) in [("stdout", &mut out), ("stderr", &mut err)] {
                            if let Some(b64) = data.get(key).and_then(|s| s.as_str()) {
                                let bytes = base64::engine::general_purpose::STANDARD
                                    .decode(b64)
                                    .map_err(|e| e.to_string())?;
                                push_tail(sink, &bytes);
                            }
                        }
                    } else if let Some(end) = event.get("end") {
                        let code = end.get("exitCode").and_then(|c| c.as_i64()).unwrap_or(0);
                        exit = Some(i32::try_from(code).unwrap_or(-1));
                    }
                }
                if !read_frame(&mut body, &mut buf).await? {
                    return Err("stream closed without an end-of-stream frame".into());
                }
            }
        };
        tokio::time::timeout(timeout + Duration::from_secs(5), run)
            .await
            .map_err(|_| call(format!("no end of command within {timeout:?}")))?
            .map_err(call)
    }

    /// Starts a template's start command (tagged [`START_TAG`], so the agent reports its exit)
    /// and leaves it running (the agent keeps it after we hang up). Returns its pid.
    pub async fn spawn_start(
        &self,
        addr: Ipv4Addr,
        token: &str,
        command: &Command<'_>,
    ) -> Result<u32, AgentError> {
        let call = |detail: String| AgentError::Call { addr, route: "process.Start", detail };
        let req = self.start_request(addr, token, command, None, Some(START_TAG)).map_err(call)?;
        let run = async {
            let resp = self.client.request(req).await.map_err(|e| e.to_string())?;
            if !resp.status().is_success() {
                return Err(format!("status {}", resp.status()));
            }
            let mut body = resp.into_body();
            let mut buf = BytesMut::new();
            loop {
                while let Some((flags, msg)) = next_envelope(&mut buf) {
                    let v: serde_json::Value = serde_json::from_slice(&msg).map_err(|e| e.to_string())?;
                    if flags & FLAG_END_STREAM != 0 {
                        return Err(format!("process did not start: {v}"));
                    }
                    if let Some(pid) = v["event"]["start"]["pid"].as_u64() {
                        // Dropping the body hangs up; the process keeps running.
                        return u32::try_from(pid).map_err(|e| e.to_string());
                    }
                }
                if !read_frame(&mut body, &mut buf).await? {
                    return Err("stream closed before the start event".into());
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(30), run)
            .await
            .map_err(|_| call("no start event within 30s".into()))?
            .map_err(call)
    }

    /// Writes one file inside the sandbox as `user` (parents created), via `POST /files`.
    pub async fn upload(
        &self,
        addr: Ipv4Addr,
        token: &str,
        user: &str,
        path: &str,
        contents: Bytes,
    ) -> Result<(), AgentError> {
        let call = |detail: String| AgentError::Call { addr, route: "POST /files", detail };
        let boundary = format!("firkin-{:016x}", rand::random::<u64>());
        let mut body = Vec::with_capacity(contents.len() + 256);
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{}\"\r\n\
                 Content-Type: application/octet-stream\r\n\r\n",
                path.replace('"', "%22")
            )
            .as_bytes(),
        );
        body.extend_from_slice(&contents);
        body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        let mut url = url_path_query(addr, path);
        url.push_str(&format!("&username={user}"));
        let req = http::Request::post(url)
            .header("content-type", format!("multipart/form-data; boundary={boundary}"))
            .header("x-access-token", token)
            .body(Full::new(Bytes::from(body)));
        let _: serde_json::Value = self.call_json(addr, req, Duration::from_secs(60)).await.map_err(call)?;
        Ok(())
    }
}

/// `http://addr:port/files?path=<percent-encoded path>`.
fn url_path_query(addr: Ipv4Addr, path: &str) -> String {
    let mut enc = String::with_capacity(path.len());
    for b in path.bytes() {
        if b.is_ascii_alphanumeric() || b"/-_.~".contains(&b) {
            enc.push(b as char);
        } else {
            enc.push_str(&format!("%{b:02X}"));
        }
    }
    format!("http://{addr}:{ENVD_PORT}/files?path={enc}")
}

/// Appends the next body frame's data to `buf`; `false` at the end of the body.
async fn read_frame(body: &mut hyper::body::Incoming, buf: &mut BytesMut) -> Result<bool, String> {
    match body.frame().await {
        Some(Ok(frame)) => {
            if let Ok(data) = frame.into_data() {
                buf.extend_from_slice(&data);
            }
            Ok(true)
        }
        Some(Err(e)) => Err(e.to_string()),
        None => Ok(false),
    }
}

/// Splits one Connect envelope off the front of `buf`, if complete.
fn next_envelope(buf: &mut BytesMut) -> Option<(u8, Bytes)> {
    if buf.len() < 5 {
        return None;
    }
    let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
    if buf.len() < 5 + len {
        return None;
    }
    let flags = buf[0];
    buf.advance(5);
    Some((flags, buf.split_to(len).freeze()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_split_and_tails_are_bounded() {
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&[0, 0, 0, 0, 2, b'{', b'}', 2, 0, 0]);
        assert_eq!(next_envelope(&mut buf), Some((0, Bytes::from_static(b"{}"))));
        assert_eq!(next_envelope(&mut buf), None, "incomplete header");
        let mut t = Vec::new();
        push_tail(&mut t, &vec![b'a'; OUTPUT_TAIL + 10]);
        assert_eq!(t.len(), OUTPUT_TAIL);
        assert_eq!(url_path_query(Ipv4Addr::LOCALHOST, "/a b"), "http://127.0.0.1:49983/files?path=/a%20b");
    }
}
