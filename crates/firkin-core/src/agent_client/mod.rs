//! Host -> agent calls: readiness probe (`GET /health`), `POST /init`, metrics, and (in
//! [`exec`]) commands and file writes for template builds.

mod exec;

pub use exec::{Command, ExecOutput};

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use firkin_wire::agent::{
    InitRequest, InitResponse, AGENT_PROTOCOL_HEADER, AGENT_PROTOCOL_VERSION, ENVD_PORT, INIT_PATH,
    START_EXIT_HEADER,
};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// Agent call failures, naming the address.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("agent at {addr} did not answer /health within {waited:?}: {last}")]
    NotReady { addr: Ipv4Addr, waited: Duration, last: String },
    #[error("agent at {addr} speaks protocol {found}, host supports {supported}")]
    Protocol { addr: Ipv4Addr, found: String, supported: u32 },
    #[error("agent at {addr}: init failed: {detail}")]
    Init { addr: Ipv4Addr, detail: String },
    #[error("agent at {addr}: {route} failed: {detail}")]
    Call { addr: Ipv4Addr, route: &'static str, detail: String },
}

/// The agent's `/metrics` answer (envd's shape).
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct AgentMetrics {
    #[serde(default)]
    pub ts: i64,
    #[serde(default)]
    pub cpu_count: u32,
    #[serde(default)]
    pub cpu_used_pct: f64,
    #[serde(default)]
    pub mem_total: u64,
    #[serde(default)]
    pub mem_used: u64,
    #[serde(default)]
    pub mem_cache: u64,
    #[serde(default)]
    pub disk_used: u64,
    #[serde(default)]
    pub disk_total: u64,
}

/// A small HTTP/1.1 client for the agent's control routes.
#[derive(Clone)]
pub struct AgentClient {
    client: Client<HttpConnector, Full<Bytes>>,
}

/// What `/health` reports besides "alive".
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AgentHealth {
    /// The template start command's exit code, once it has ended.
    pub start_exit: Option<i32>,
}

impl Default for AgentClient {
    fn default() -> Self {
        Self::new()
    }
}

impl AgentClient {
    pub fn new() -> AgentClient {
        let mut conn = HttpConnector::new();
        conn.set_connect_timeout(Some(Duration::from_millis(500)));
        conn.set_nodelay(true);
        AgentClient { client: Client::builder(TokioExecutor::new()).pool_max_idle_per_host(0).build(conn) }
    }

    /// Polls `/health` until it answers 2xx, checking the agent's protocol version.
    pub async fn wait_ready(&self, addr: Ipv4Addr, timeout: Duration) -> Result<AgentHealth, AgentError> {
        let start = Instant::now();
        let uri: http::Uri =
            format!("http://{addr}:{ENVD_PORT}/health").parse().map_err(|e: http::uri::InvalidUri| {
                AgentError::NotReady { addr, waited: Duration::ZERO, last: e.to_string() }
            })?;
        let mut delay = Duration::from_millis(2);
        loop {
            let last = match tokio::time::timeout(Duration::from_secs(1), self.client.get(uri.clone())).await
            {
                Ok(Ok(resp)) if resp.status().is_success() => {
                    let found = resp
                        .headers()
                        .get(AGENT_PROTOCOL_HEADER)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_owned();
                    if found != AGENT_PROTOCOL_VERSION.to_string() {
                        return Err(AgentError::Protocol { addr, found, supported: AGENT_PROTOCOL_VERSION });
                    }
                    let start_exit = resp
                        .headers()
                        .get(START_EXIT_HEADER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse().ok());
                    return Ok(AgentHealth { start_exit });
                }
                Ok(Ok(resp)) => format!("status {}", resp.status()),
                Ok(Err(e)) => e.to_string(),
                Err(_) => "request timed out".to_owned(),
            };
            if start.elapsed() >= timeout {
                return Err(AgentError::NotReady { addr, waited: start.elapsed(), last });
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_millis(25));
        }
    }

    /// Reads the agent's resource usage.
    pub async fn metrics(&self, addr: Ipv4Addr, token: &str) -> Result<AgentMetrics, AgentError> {
        let request = http::Request::get(format!("http://{addr}:{ENVD_PORT}/metrics"))
            .header("x-access-token", token)
            .body(Full::new(Bytes::new()));
        self.call_json(addr, request, Duration::from_secs(5)).await.map_err(|detail| AgentError::Call {
            addr,
            route: "GET /metrics",
            detail,
        })
    }

    /// Sends `/init`. `current_token` is required by the agent when it already has a token.
    pub async fn init(
        &self,
        addr: Ipv4Addr,
        req: &InitRequest,
        current_token: Option<&str>,
    ) -> Result<InitResponse, AgentError> {
        let body = serde_json::to_vec(req).map_err(|e| AgentError::Init { addr, detail: e.to_string() })?;
        let mut builder = http::Request::post(format!("http://{addr}:{ENVD_PORT}{INIT_PATH}"))
            .header("content-type", "application/json");
        if let Some(t) = current_token {
            builder = builder.header("x-access-token", t);
        }
        self.call_json(addr, builder.body(Full::new(Bytes::from(body))), Duration::from_secs(10))
            .await
            .map_err(|detail| AgentError::Init { addr, detail })
    }

    /// Sends a request and decodes a 2xx JSON answer; errors are described as text.
    pub(crate) async fn call_json<T: serde::de::DeserializeOwned>(
        &self,
        addr: Ipv4Addr,
        request: Result<http::Request<Full<Bytes>>, http::Error>,
        timeout: Duration,
    ) -> Result<T, String> {
        let request = request.map_err(|e| e.to_string())?;
        let resp = tokio::time::timeout(timeout, self.client.request(request))
            .await
            .map_err(|_| format!("no answer from {addr} within {timeout:?}"))?
            .map_err(|e| e.to_string())?;
        let status = resp.status();
        let bytes = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
        if !status.is_success() {
            return Err(format!("status {status}: {}", String::from_utf8_lossy(&bytes)));
        }
        serde_json::from_slice(&bytes).map_err(|e| format!("bad response: {e}"))
    }
}
