//! `firkin template build|list|rm`: a client of a running server's template routes (the server
//! owns the store, the network slots and the build sandboxes; the CLI only talks to it).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use base64::Engine as _;
use bytes::Bytes;
use clap::{Args, Subcommand};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

#[derive(Args, Debug)]
pub struct TemplateArgs {
    /// The firkin server.
    #[arg(long, env = "E2B_API_URL", default_value = "http://127.0.0.1:3000", global = true)]
    pub url: String,
    /// API key of the server.
    #[arg(long, env = "E2B_API_KEY", global = true)]
    pub api_key: Option<String>,
    #[command(subcommand)]
    pub command: TemplateCommand,
}

#[derive(Subcommand, Debug)]
pub enum TemplateCommand {
    /// Build (or rebuild) a template from a JSON spec file. `copy` steps may name a local file
    /// with `"src"` (relative to the spec file) instead of `"contentBase64"`.
    Build { spec: PathBuf },
    /// List templates.
    List,
    /// Remove a template.
    Rm { name: String },
}

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

pub async fn run(args: TemplateArgs) -> anyhow::Result<()> {
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let key = args.api_key.clone().unwrap_or_default();
    let base = args.url.trim_end_matches('/').to_owned();
    let request = |method: &str, path: &str| {
        http::Request::builder().method(method).uri(format!("{base}{path}")).header("x-api-key", key.clone())
    };
    match args.command {
        TemplateCommand::Build { spec } => {
            let body = load_spec(&spec)?;
            let req = request("POST", "/firkin/v1/templates")
                .header("content-type", "application/json")
                .header("accept", "application/x-ndjson")
                .body(Full::new(Bytes::from(body)))?;
            build(&client, req).await
        }
        TemplateCommand::List => {
            let v = call(&client, request("GET", "/templates").body(Full::new(Bytes::new()))?).await?;
            println!(
                "{:<28} {:<22} {:>5} {:>7} {:>10} {:>8}  CREATED",
                "TEMPLATE", "BUILD", "CPU", "MEM MB", "SIZE MB", "BUILT S"
            );
            for t in v.as_array().into_iter().flatten() {
                println!(
                    "{:<28} {:<22} {:>5} {:>7} {:>10.1} {:>8.1}  {}",
                    t["templateID"].as_str().unwrap_or(""),
                    t["buildID"].as_str().unwrap_or(""),
                    t["cpuCount"].as_u64().unwrap_or(0),
                    t["memoryMB"].as_u64().unwrap_or(0),
                    t["artifactBytes"].as_f64().unwrap_or(0.0) / 1e6,
                    t["buildMs"].as_f64().unwrap_or(0.0) / 1e3,
                    t["createdAt"].as_str().unwrap_or(""),
                );
            }
            Ok(())
        }
        TemplateCommand::Rm { name } => {
            let path = format!("/templates/{}", urlencoding::encode(&name));
            call(&client, request("DELETE", &path).body(Full::new(Bytes::new()))?).await?;
            println!("removed {name}");
            Ok(())
        }
    }
}

/// Reads a spec file and inlines `copy` steps' `src` files.
fn load_spec(path: &Path) -> anyhow::Result<Vec<u8>> {
    let text = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let mut spec: Value =
        serde_json::from_slice(&text).with_context(|| format!("parsing {}", path.display()))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    if let Some(steps) = spec.get_mut("steps").and_then(Value::as_array_mut) {
        for (i, step) in steps.iter_mut().enumerate() {
            let Some(obj) = step.as_object_mut() else { continue };
            let Some(src) = obj.remove("src") else { continue };
            let src = src.as_str().with_context(|| format!("step {}: src must be a string", i + 1))?;
            let file = dir.join(src);
            if file.is_dir() {
                bail!("step {}: src {} is a directory; copy files one by one", i + 1, file.display());
            }
            let bytes = std::fs::read(&file)
                .with_context(|| format!("step {}: reading {}", i + 1, file.display()))?;
            obj.insert(
                "contentBase64".into(),
                base64::engine::general_purpose::STANDARD.encode(bytes).into(),
            );
        }
    }
    Ok(serde_json::to_vec(&spec)?)
}

/// Sends a request and returns its JSON body, failing with the server's message.
async fn call(client: &HttpClient, req: http::Request<Full<Bytes>>) -> anyhow::Result<Value> {
    let resp = client.request(req).await.context("connecting to the firkin server")?;
    let status = resp.status();
    let bytes = resp.into_body().collect().await?.to_bytes();
    let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    if !status.is_success() {
        bail!(
            "{status}: {}",
            v["message"]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned())
        );
    }
    Ok(v)
}

/// Streams a build, showing its phases on a spinner.
async fn build(client: &HttpClient, req: http::Request<Full<Bytes>>) -> anyhow::Result<()> {
    let resp = client.request(req).await.context("connecting to the firkin server")?;
    let status = resp.status();
    let mut body = resp.into_body();
    if !status.is_success() {
        let bytes = body.collect().await?.to_bytes();
        let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        bail!("{status}: {}", v["message"].as_str().unwrap_or(&String::from_utf8_lossy(&bytes)));
    }
    let bar = indicatif::ProgressBar::new_spinner();
    bar.enable_steady_tick(Duration::from_millis(120));
    let mut buf = Vec::new();
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame?.into_data() else { continue };
        buf.extend_from_slice(&data);
        while let Some(nl) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=nl).collect();
            let v: Value = serde_json::from_slice(&line).context("bad progress line from the server")?;
            match v["type"].as_str() {
                Some("progress") => {
                    bar.set_message(format!(
                        "[{}/{}] {}",
                        v["phase"],
                        v["phases"],
                        v["message"].as_str().unwrap_or("")
                    ));
                }
                Some("done") => {
                    let t = &v["template"];
                    bar.finish_and_clear();
                    println!(
                        "built template {} (build {}, {:.1} MB, {:.1} s)",
                        t["templateID"].as_str().unwrap_or(""),
                        t["buildID"].as_str().unwrap_or(""),
                        t["artifactBytes"].as_f64().unwrap_or(0.0) / 1e6,
                        t["buildMs"].as_f64().unwrap_or(0.0) / 1e3
                    );
                    return Ok(());
                }
                Some("error") => {
                    bar.finish_and_clear();
                    bail!("build failed ({}): {}", v["code"], v["message"].as_str().unwrap_or(""));
                }
                _ => {}
            }
        }
    }
    bar.finish_and_clear();
    bail!("the server closed the build stream without a result")
}
