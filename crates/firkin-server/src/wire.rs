//! E2B control-plane JSON shapes (requests accepted, responses rendered). Parsing and
//! rendering only; meaning lives in the core.

use std::collections::BTreeMap;

use firkin_core::record::SandboxRecord;
use firkin_core::timefmt::rfc3339;
use firkin_wire::agent::ENVD_VERSION;
use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use crate::network::{NetworkBody, NetworkInfo};

/// `NewSandbox` / `NewSandboxV2`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NewSandbox {
    #[serde(rename = "templateID")]
    pub template_id: String,
    #[serde(default)]
    pub metadata: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub env_vars: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub timeout: Option<i64>,
    #[serde(default)]
    pub auto_pause: Option<bool>,
    #[serde(default)]
    pub auto_resume: Option<AutoResume>,
    #[serde(default, rename = "allow_internet_access")]
    pub allow_internet_access: Option<bool>,
    /// firkin extension: vCPUs for this sandbox.
    #[serde(default)]
    pub cpu_count: Option<u32>,
    /// firkin extension: memory limit in MiB.
    #[serde(default, rename = "memoryMB")]
    pub memory_mb: Option<u32>,
    #[serde(default)]
    pub secure: Option<bool>,
    /// `false`: a timeout auto-pause keeps the filesystem only (not supported yet).
    #[serde(default)]
    pub auto_pause_memory: Option<bool>,
    /// Egress policy and private traffic.
    #[serde(default)]
    pub network: Option<NetworkBody>,
    #[serde(default)]
    pub mcp: Option<serde_json::Value>,
    #[serde(default)]
    pub iam: Option<serde_json::Value>,
    #[serde(default)]
    pub volume_mounts: Option<Vec<serde_json::Value>>,
}

impl NewSandbox {
    /// The first option of this request firkin does not implement, named for the caller: it
    /// is refused (501), never silently ignored.
    pub fn unsupported(&self) -> Option<&'static str> {
        if self.auto_pause_memory == Some(false) {
            return Some("filesystem-only auto-pause (autoPauseMemory=false, lifecycle mode \"filesystem\")");
        }
        if let Some(field) = self.network.as_ref().and_then(NetworkBody::unsupported) {
            return Some(field);
        }
        if self.mcp.as_ref().is_some_and(|v| !v.is_null()) {
            return Some("MCP servers (mcp)");
        }
        if self.iam.as_ref().is_some_and(|v| !v.is_null()) {
            return Some("cloud IAM credentials (iam)");
        }
        if self.volume_mounts.as_ref().is_some_and(|v| !v.is_empty()) {
            return Some("volume mounts (volumeMounts)");
        }
        None
    }
}

#[derive(Debug, Deserialize)]
pub struct AutoResume {
    #[serde(default)]
    pub enabled: bool,
}

/// `POST /sandboxes/{id}/pause` body.
#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct PauseBody {
    /// `false`: a filesystem-only pause (not supported yet).
    #[serde(default)]
    pub memory: Option<bool>,
    /// Refuse the pause when the agent does not answer. firkin always does: the checkpoint is
    /// proven by restoring it and asking its agent, and a pause that fails keeps the sandbox
    /// running.
    #[serde(default)]
    pub require_healthy_guest: Option<bool>,
}

impl PauseBody {
    pub fn unsupported(&self) -> Option<&'static str> {
        (self.memory == Some(false)).then_some("filesystem-only pause (memory=false, mode=\"filesystem\")")
    }
}

/// `POST /sandboxes/{id}/connect` (and `/resume`) body.
#[derive(Debug, Deserialize, Default)]
pub struct ConnectBody {
    #[serde(default)]
    pub timeout: Option<i64>,
    /// `false`: resume by rebooting from the filesystem (not supported yet).
    #[serde(default)]
    pub memory: Option<bool>,
}

impl ConnectBody {
    pub fn unsupported(&self) -> Option<&'static str> {
        (self.memory == Some(false))
            .then_some("resume by reboot from the filesystem (memory=false, on_resume=\"reboot\")")
    }
}

/// `{"timeout": N}` bodies (set_timeout).
#[derive(Debug, Deserialize, Default)]
pub struct TimeoutBody {
    #[serde(default)]
    pub timeout: Option<i64>,
}

/// Parses a JSON body into `T`, answering E2B-shaped 400s.
pub fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| ApiError::bad_request(format!("invalid request body: {e}")))
}

/// Like [`parse_json`] but an empty body is `T::default()`.
pub fn parse_json_or_default<T: serde::de::DeserializeOwned + Default>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    parse_json(bytes)
}

/// Seconds from the wire to a `Duration`, rejecting negatives.
pub fn seconds(field: &str, v: i64) -> Result<std::time::Duration, ApiError> {
    u64::try_from(v).map(std::time::Duration::from_secs).map_err(|_| {
        ApiError::bad_request(format!("{field} must be a non-negative integer number of seconds, got {v}"))
    })
}

/// `Sandbox` (create / connect response).
#[derive(Debug, Serialize)]
pub struct SandboxResponse {
    #[serde(rename = "templateID")]
    pub template_id: String,
    #[serde(rename = "sandboxID")]
    pub sandbox_id: String,
    #[serde(rename = "clientID")]
    pub client_id: &'static str,
    #[serde(rename = "envdVersion")]
    pub envd_version: &'static str,
    #[serde(rename = "envdAccessToken")]
    pub envd_access_token: String,
    #[serde(rename = "trafficAccessToken")]
    pub traffic_access_token: Option<String>,
    pub domain: Option<String>,
}

impl SandboxResponse {
    pub fn from_record(r: &SandboxRecord, domain: Option<String>) -> SandboxResponse {
        SandboxResponse {
            template_id: r.template_id.clone(),
            sandbox_id: r.id.to_string(),
            client_id: CLIENT_ID,
            envd_version: ENVD_VERSION,
            envd_access_token: r.access_token.clone(),
            traffic_access_token: r.traffic_access_token.clone(),
            domain,
        }
    }
}

/// The deprecated, required `clientID`.
pub const CLIENT_ID: &str = "firkin";

/// `ListedSandbox` and `SandboxDetail` (the detail adds the token and domain).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SandboxListing {
    #[serde(rename = "templateID")]
    pub template_id: String,
    #[serde(rename = "sandboxID")]
    pub sandbox_id: String,
    #[serde(rename = "clientID")]
    pub client_id: &'static str,
    pub started_at: String,
    pub end_at: String,
    pub cpu_count: u32,
    #[serde(rename = "memoryMB")]
    pub memory_mb: u32,
    #[serde(rename = "diskSizeMB")]
    pub disk_size_mb: u32,
    pub state: &'static str,
    pub envd_version: &'static str,
    pub metadata: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub envd_access_token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// Detail only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_internet_access: Option<bool>,
    /// Detail only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network: Option<NetworkInfo>,
}

impl SandboxListing {
    /// A `ListedSandbox` (list routes): no token, no domain.
    pub fn listed(r: &SandboxRecord) -> SandboxListing {
        SandboxListing::from_record(r)
    }

    /// A `SandboxDetail` (`GET /sandboxes/{id}`): with the envd token and the domain.
    pub fn detail(r: &SandboxRecord, domain: Option<String>) -> SandboxListing {
        SandboxListing {
            envd_access_token: Some(r.access_token.clone()),
            domain,
            allow_internet_access: Some(!r.egress.no_internet),
            network: Some(NetworkInfo::of(r)),
            ..SandboxListing::from_record(r)
        }
    }

    fn from_record(r: &SandboxRecord) -> SandboxListing {
        SandboxListing {
            template_id: r.template_id.clone(),
            sandbox_id: r.id.to_string(),
            client_id: CLIENT_ID,
            started_at: rfc3339(r.started_at),
            end_at: rfc3339(r.end_at),
            cpu_count: r.cpu_count,
            memory_mb: r.memory_mb,
            disk_size_mb: r.disk_size_mb,
            state: r.state.e2b_name().unwrap_or("running"),
            envd_version: ENVD_VERSION,
            metadata: r.metadata.clone(),
            envd_access_token: None,
            domain: None,
            allow_internet_access: None,
            network: None,
        }
    }
}

/// `SandboxMetric`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SandboxMetric {
    pub timestamp: String,
    pub timestamp_unix: i64,
    pub cpu_count: u32,
    pub cpu_used_pct: f64,
    pub mem_used: u64,
    pub mem_total: u64,
    pub mem_cache: u64,
    pub disk_used: u64,
    pub disk_total: u64,
}

impl SandboxMetric {
    pub fn from_sample(s: &firkin_core::runtime::metrics::MetricSample) -> SandboxMetric {
        let m = &s.metrics;
        SandboxMetric {
            timestamp: rfc3339(s.at),
            timestamp_unix: s.at.unix_timestamp(),
            cpu_count: m.cpu_count,
            cpu_used_pct: m.cpu_used_pct,
            mem_used: m.mem_used,
            mem_total: m.mem_total,
            mem_cache: m.mem_cache,
            disk_used: m.disk_used,
            disk_total: m.disk_total,
        }
    }
}

/// `POST /sandboxes/{id}/snapshots` body.
#[derive(Debug, Deserialize, Default)]
pub struct SnapshotBody {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub memory: Option<bool>,
}

/// `POST /sandboxes/{id}/fork` body.
#[derive(Debug, Deserialize, Default)]
pub struct ForkBody {
    #[serde(default)]
    pub count: Option<i64>,
    #[serde(default)]
    pub timeout: Option<i64>,
}

/// A snapshot as the API lists it.
#[derive(Debug, Serialize)]
pub struct SnapshotListing {
    #[serde(rename = "snapshotID")]
    pub snapshot_id: String,
    pub names: Vec<String>,
}

impl SnapshotListing {
    pub fn from_manifest(m: &firkin_core::snapshot::SnapshotManifest) -> SnapshotListing {
        SnapshotListing { snapshot_id: m.snapshot_id.clone(), names: m.names.clone() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_sandbox(extra: serde_json::Value) -> NewSandbox {
        let mut body = serde_json::json!({"templateID": "base"});
        body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        serde_json::from_value(body).unwrap()
    }

    #[test]
    fn options_firkin_does_not_implement_are_named() {
        let named = |extra| new_sandbox(extra).unsupported();
        assert_eq!(named(serde_json::json!({})), None);
        assert_eq!(named(serde_json::json!({"network": {}, "mcp": null, "volumeMounts": []})), None);
        assert_eq!(named(serde_json::json!({"network": {"allowPublicTraffic": true, "allowOut": []}})), None);
        assert!(named(serde_json::json!({"autoPauseMemory": false})).unwrap().contains("autoPauseMemory"));
        // Egress rules and private traffic are implemented.
        let implemented = serde_json::json!({"network": {"allowOut": ["198.18.0.10"], "denyOut": ["0.0.0.0/0"],
            "allowPublicTraffic": false}});
        assert_eq!(named(implemented), None);
        assert!(named(serde_json::json!({"network": {"egressProxy": {"address": "p:1080"}}}))
            .unwrap()
            .contains("egressProxy"));
        assert!(named(serde_json::json!({"network": {"maskRequestHost": "x"}})).unwrap().contains("mask"));
        assert!(named(serde_json::json!({"mcp": {"x": {}}})).unwrap().contains("mcp"));
        assert!(named(serde_json::json!({"volumeMounts": [{"name": "v"}]}))
            .unwrap()
            .contains("volumeMounts"));
    }
}
