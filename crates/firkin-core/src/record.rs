//! The persisted description of one sandbox. Written atomically on every state change.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::admission::ledger::ReservationId;
use crate::ids::SandboxId;
use crate::lifecycle::SandboxState;

/// Version of the on-disk record format.
pub const RECORD_FORMAT: u32 = 1;

/// Everything firkin knows about a sandbox.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SandboxRecord {
    pub format: u32,
    pub id: SandboxId,
    pub template_id: String,
    pub state: SandboxState,
    pub metadata: BTreeMap<String, String>,
    pub env_vars: BTreeMap<String, String>,
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub end_at: OffsetDateTime,
    pub cpu_count: u32,
    pub memory_mb: u32,
    pub disk_size_mb: u32,
    pub access_token: String,
    /// What happens at `end_at`.
    pub on_timeout: OnTimeout,
    /// Network slot held by this sandbox (none while paused).
    pub net_slot: Option<u32>,
    /// Address at which the agent answers (inside the sandbox's namespace).
    pub agent_ip: std::net::Ipv4Addr,
    /// The cached rootfs (`cache/rootfs/<name>`) under the sandbox's memory overlay; a restore
    /// of its checkpoint needs the same one. Records written before this field used `base-v1`.
    #[serde(default = "crate::template::default_rootfs")]
    pub rootfs: String,
    /// Default working directory of commands (a template's `workdir`); `None` = the user's home.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workdir: Option<String>,
    /// A paused sandbox resumes on its next sandbox request (E2B `autoResume`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub auto_resume: bool,
    /// Sandboxes the server runs for itself (template builds): never listed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub internal: bool,
    /// The template's start command had already ended when this sandbox came up (a one-shot
    /// start command, or a follow-up of an exited sandbox): that end is not this sandbox exiting.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub start_ended: bool,
    /// E2B `allowPublicTraffic=false`: requests to the sandbox's own ports (not envd's) must
    /// carry this as `e2b-traffic-access-token`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic_access_token: Option<String>,
    /// Egress policy (E2B `allow_internet_access` / `network.allowOut` / `denyOut`); applied
    /// whenever the sandbox runs, kept while it is paused. Absent = open.
    #[serde(default, skip_serializing_if = "crate::network::EgressPolicy::is_open")]
    pub egress: crate::network::EgressPolicy,
    /// Capacity reservation held in this server's ledger (not meaningful across restarts).
    #[serde(skip)]
    pub reservation: Option<ReservationId>,
}

/// The action taken when a sandbox reaches `end_at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnTimeout {
    Kill,
    Pause,
}
