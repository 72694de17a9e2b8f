//! Host-side probes of a sandbox's agent used by the bench: first stdout byte of a command
//! (envd `Process/Start`) and a code-interpreter `/execute` round trip.

use std::time::{Duration, Instant};

use bytes::Bytes;
use firkin_core::runtime::{CreateSandbox, Runtime};
use firkin_wire::agent::ENVD_PORT;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::json;

/// A create of `template` that lives `timeout_secs`.
pub fn request(template: &str, timeout_secs: u64) -> CreateSandbox {
    CreateSandbox {
        template_id: template.into(),
        timeout: Some(Duration::from_secs(timeout_secs)),
        ..Default::default()
    }
}

/// A base sandbox that lives for the whole bench.
pub async fn long_lived_sandbox(rt: &Runtime) -> anyhow::Result<firkin_core::record::SandboxRecord> {
    let req = request("base", 3600);
    Ok(rt.create(req).await?)
}

/// Creates a sandbox of `template`, runs `echo` through the agent, returns
/// (create → first stdout, id, kill time).
pub async fn create_to_first_stdout(
    rt: &Runtime,
    template: &str,
) -> anyhow::Result<(Duration, String, Duration)> {
    let t0 = Instant::now();
    let rec = rt.create(request(template, 120)).await?;
    let result = first_stdout(rec.agent_ip, &rec.access_token, "echo firkin").await;
    let elapsed = t0.elapsed();
    let tk = Instant::now();
    rt.kill_and_wait(rec.id.as_str()).await?;
    let kd = tk.elapsed();
    result?;
    Ok((elapsed, rec.id.to_string(), kd))
}

/// Starts `script` via envd `Process/Start` and waits for a stdout data event (or, for a
/// script that prints nothing, the end of its stream).
pub async fn first_stdout(ip: std::net::Ipv4Addr, token: &str, script: &str) -> anyhow::Result<()> {
    let msg = json!({"process": {"cmd": "/bin/bash", "args": ["-l", "-c", script]}, "stdin": false});
    let payload = serde_json::to_vec(&msg)?;
    let mut frame = Vec::with_capacity(payload.len() + 5);
    frame.push(0u8);
    frame.extend_from_slice(&u32::try_from(payload.len())?.to_be_bytes());
    frame.extend_from_slice(&payload);
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let req = http::Request::post(format!("http://{ip}:{ENVD_PORT}/process.Process/Start"))
        .header("content-type", "application/connect+json")
        .header("connect-protocol-version", "1")
        .header("x-access-token", token)
        .body(Full::new(Bytes::from(frame)))?;
    let resp = client.request(req).await?;
    anyhow::ensure!(resp.status().is_success(), "Start answered {}", resp.status());
    let mut body = resp.into_body();
    let mut buf: Vec<u8> = Vec::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            buf.extend_from_slice(&data);
        }
        while buf.len() >= 5 {
            let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
            if buf.len() < 5 + len {
                break;
            }
            let flags = buf[0];
            let v: serde_json::Value = serde_json::from_slice(&buf[5..5 + len]).unwrap_or_default();
            buf.drain(..5 + len);
            if flags & 0x02 != 0 {
                anyhow::ensure!(v.get("error").is_none(), "stream failed: {v}");
                return Ok(());
            }
            if v["event"]["data"]["stdout"].is_string() {
                return Ok(());
            }
        }
    }
    anyhow::bail!("stream closed before stdout")
}

/// `POST /execute` of `code` on the default context; waits for `end_of_execution` and returns
/// the main result's text.
pub async fn run_code(ip: std::net::Ipv4Addr, token: &str, code: &str) -> anyhow::Result<String> {
    let body = json!({"code": code, "context_id": null, "language": null, "env_vars": null});
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let req = http::Request::post(format!("http://{ip}:49999/execute"))
        .header("content-type", "application/json")
        .header("x-access-token", token)
        .body(Full::new(Bytes::from(serde_json::to_vec(&body)?)))?;
    let resp = client.request(req).await?;
    anyhow::ensure!(resp.status().is_success(), "/execute answered {}", resp.status());
    let mut body = resp.into_body();
    let (mut buf, mut text) = (Vec::new(), None);
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            buf.extend_from_slice(&data);
        }
        while let Some(nl) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=nl).collect();
            let v: serde_json::Value = serde_json::from_slice(&line)?;
            match v["type"].as_str() {
                Some("result") if v["is_main_result"] == true => text = v["text"].as_str().map(str::to_owned),
                Some("error") => anyhow::bail!("cell failed: {v}"),
                Some("end_of_execution") => return text.ok_or_else(|| anyhow::anyhow!("no main result")),
                _ => {}
            }
        }
    }
    anyhow::bail!("stream closed before end_of_execution")
}
