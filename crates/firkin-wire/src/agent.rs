//! The host -> agent control messages (`POST /init`) and the well-known ports.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Port on which the agent serves envd (Connect RPC + `/files`).
pub const ENVD_PORT: u16 = 49983;
/// Port on which the agent serves the code-interpreter protocol.
pub const CODE_INTERPRETER_PORT: u16 = 49999;
/// The envd version the agent claims to implement; the E2B SDK gates features on it.
pub const ENVD_VERSION: &str = "0.6.13";
/// Version of the host <-> agent control surface (`/init`, `/health` headers). Bump on any
/// incompatible change; the host must keep speaking every version still found in snapshots.
pub const AGENT_PROTOCOL_VERSION: u32 = 1;
/// Response header on `/health` and `/init` carrying [`AGENT_PROTOCOL_VERSION`].
pub const AGENT_PROTOCOL_HEADER: &str = "x-firkin-agent-protocol";
/// Process tag of a template's start command (its main workload).
pub const START_TAG: &str = "firkin.start";
/// `/health` response header carrying the start command's exit code once it has exited
/// (`-1` when killed by a signal). Additive within protocol 1: older agents never send it.
pub const START_EXIT_HEADER: &str = "x-firkin-start-exit";
/// Path of the internal init route. The host proxy never forwards it from clients.
pub const INIT_PATH: &str = "/init";

/// Body of `POST /init`, sent by the host after the agent first answers (fresh boot or restore).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InitRequest {
    /// Control-surface version the host speaks.
    pub protocol: u32,
    /// Sandbox id (for logs and `/metrics`).
    pub sandbox_id: String,
    /// Token every envd request must carry as `X-Access-Token`; also the file-URL signing key.
    pub access_token: String,
    /// Sandbox-wide environment variables, visible to every later process.
    #[serde(default)]
    pub env_vars: BTreeMap<String, String>,
    /// Default user for processes and file operations (normally `user`).
    #[serde(default)]
    pub default_user: Option<String>,
    /// Default working directory (normally the default user's home).
    #[serde(default)]
    pub default_workdir: Option<String>,
    /// Host wall-clock time in Unix milliseconds, so the guest clock can be checked after restore.
    #[serde(default)]
    pub timestamp_ms: u64,
}

/// Response of `POST /init`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InitResponse {
    pub protocol: u32,
    pub agent_version: String,
    pub envd_version: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_request_is_camel_case_and_tolerates_missing_optionals() {
        let req: InitRequest =
            serde_json::from_str(r#"{"protocol":1,"sandboxId":"abc","accessToken":"t"}"#).unwrap();
        assert_eq!(req.sandbox_id, "abc");
        assert!(req.env_vars.is_empty());
        let out = serde_json::to_string(&req).unwrap();
        assert!(out.contains("\"accessToken\":\"t\""));
    }
}
