//! The template build spec: what a build runs in its live sandbox before the checkpoint.
//! JSON on the wire and on disk (camelCase; steps tagged by `type`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Longest a ready check may wait, in seconds.
pub const MAX_READY_TIMEOUT_SECS: u32 = 600;
/// Default ready-check wait.
pub const DEFAULT_READY_TIMEOUT_SECS: u32 = 60;
/// Longest one `run` step may take, in seconds.
pub const MAX_STEP_TIMEOUT_SECS: u32 = 3600;
const MAX_STEPS: usize = 256;
const MAX_COPY_BYTES: usize = 64 << 20;

/// Who a step runs as inside the sandbox.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepUser {
    #[default]
    User,
    Root,
}

impl StepUser {
    pub fn name(self) -> &'static str {
        match self {
            StepUser::User => "user",
            StepUser::Root => "root",
        }
    }
}

/// One setup step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Step {
    /// Runs `cmd` with `bash -lc`; a non-zero exit fails the build.
    Run {
        cmd: String,
        #[serde(default)]
        user: StepUser,
        #[serde(default, rename = "timeoutSecs", skip_serializing_if = "Option::is_none")]
        timeout_secs: Option<u32>,
    },
    /// Writes a file (base64 content) at an absolute path, owned by `user`.
    Copy {
        dest: String,
        #[serde(rename = "contentBase64")]
        content_base64: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mode: Option<u32>,
        #[serde(default)]
        user: StepUser,
    },
    /// Sets env vars for later steps, the start command and every sandbox of the template.
    Env { vars: BTreeMap<String, String> },
    /// Sets (and creates) the working directory for later steps and the sandboxes.
    Workdir { path: String },
}

/// A command left running in the checkpoint (a server the template serves).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StartCommand {
    pub cmd: String,
    #[serde(default)]
    pub user: StepUser,
}

/// What "ready" means before the checkpoint is taken.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ReadyCheck {
    /// A TCP connect to 127.0.0.1:`port` inside the sandbox succeeds.
    Port { port: u16 },
    /// `GET http://127.0.0.1:{port}{path}` inside the sandbox answers 2xx.
    Http { port: u16, path: String },
    /// `cmd` exits 0 (run as root with `bash -c`).
    Command { cmd: String },
}

impl ReadyCheck {
    /// The shell command that succeeds once ready (run inside the sandbox).
    pub fn shell(&self) -> String {
        match self {
            ReadyCheck::Port { port } => format!("exec 3<>/dev/tcp/127.0.0.1/{port}"),
            ReadyCheck::Http { port, path } => {
                format!("curl -fsS -o /dev/null --max-time 2 'http://127.0.0.1:{port}{path}'")
            }
            ReadyCheck::Command { cmd } => cmd.clone(),
        }
    }
}

/// Disk sizes a template may ask for, in MiB (256 MiB to 1 TiB).
pub const DISK_SIZE_MB: std::ops::RangeInclusive<u32> = 256..=1 << 20;

/// A template build request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TemplateSpec {
    /// The template id sandboxes are created with.
    pub name: String,
    /// The base: `base` (Debian bookworm, python3, git, curl) or `code-interpreter`.
    #[serde(default = "default_from")]
    pub from: String,
    #[serde(default)]
    pub steps: Vec<Step>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<StartCommand>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready: Option<ReadyCheck>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_timeout_secs: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_count: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<u32>,
    /// Disk size of its sandboxes in MiB (the server's default, 10 GiB, when absent).
    #[serde(default, rename = "diskSizeMB", alias = "diskSizeMb", skip_serializing_if = "Option::is_none")]
    pub disk_size_mb: Option<u32>,
}

fn default_from() -> String {
    "base".to_owned()
}

/// Why a spec is rejected before anything runs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateSpecError {
    #[error("template name {0:?} is invalid: use 1-64 of [a-z0-9._-], starting with a letter or digit")]
    Name(String),
    #[error("template name '{0}' is reserved for a built-in template")]
    Reserved(String),
    #[error("step {index}: {detail}")]
    Step { index: usize, detail: String },
    #[error("{0}")]
    Invalid(String),
}

impl TemplateSpec {
    /// A spec with no steps, start command or ready check.
    pub fn new(name: impl Into<String>, from: impl Into<String>) -> TemplateSpec {
        TemplateSpec {
            name: name.into(),
            from: from.into(),
            steps: Vec::new(),
            start: None,
            ready: None,
            ready_timeout_secs: None,
            cpu_count: None,
            memory_mb: None,
            disk_size_mb: None,
        }
    }

    /// Checks everything that can be checked without a sandbox.
    pub fn validate(&self) -> Result<(), TemplateSpecError> {
        let n = &self.name;
        let ok_name = !n.is_empty()
            && n.len() <= 64
            && n.as_bytes()[0].is_ascii_alphanumeric()
            && n.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
        if !ok_name {
            return Err(TemplateSpecError::Name(n.clone()));
        }
        if self.steps.len() > MAX_STEPS {
            return Err(TemplateSpecError::Invalid(format!(
                "at most {MAX_STEPS} steps, got {}",
                self.steps.len()
            )));
        }
        let mut copied = 0usize;
        for (index, step) in self.steps.iter().enumerate() {
            copied += step.validate().map_err(|detail| TemplateSpecError::Step { index, detail })?;
        }
        if copied > MAX_COPY_BYTES {
            return Err(TemplateSpecError::Invalid(format!(
                "copied files total {copied} bytes; the limit is {MAX_COPY_BYTES}"
            )));
        }
        self.validate_start_and_ready()
    }

    /// Checks the start command and the ready check (and the disk size).
    fn validate_start_and_ready(&self) -> Result<(), TemplateSpecError> {
        if self.disk_size_mb.is_some_and(|d| !DISK_SIZE_MB.contains(&d)) {
            return Err(TemplateSpecError::Invalid(format!(
                "diskSizeMB must be {}..={}",
                DISK_SIZE_MB.start(),
                DISK_SIZE_MB.end()
            )));
        }
        if self.start.as_ref().is_some_and(|s| s.cmd.trim().is_empty()) {
            return Err(TemplateSpecError::Invalid("start: empty cmd".into()));
        }
        if self.ready_timeout_secs.is_some_and(|t| t == 0 || t > MAX_READY_TIMEOUT_SECS) {
            return Err(TemplateSpecError::Invalid(format!(
                "readyTimeoutSecs must be 1..={MAX_READY_TIMEOUT_SECS}"
            )));
        }
        match &self.ready {
            Some(ReadyCheck::Port { port: 0 } | ReadyCheck::Http { port: 0, .. }) => {
                return Err(TemplateSpecError::Invalid("ready: port must not be 0".into()))
            }
            Some(ReadyCheck::Http { path, .. }) if !path.starts_with('/') || path.contains('\'') => {
                return Err(TemplateSpecError::Invalid(format!(
                    "ready: http path {path:?} must start with /"
                )))
            }
            Some(ReadyCheck::Command { cmd }) if cmd.trim().is_empty() => {
                return Err(TemplateSpecError::Invalid("ready: empty cmd".into()))
            }
            _ => {}
        }
        Ok(())
    }

    /// SHA-256 (hex) of the canonical JSON form: equal specs build equal templates.
    pub fn sha256(&self) -> String {
        let bytes = serde_json::to_vec(self).unwrap_or_default();
        Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The env vars the steps set, in order (later wins).
    pub fn env(&self) -> BTreeMap<String, String> {
        let mut env = BTreeMap::new();
        for step in &self.steps {
            if let Step::Env { vars } = step {
                env.extend(vars.clone());
            }
        }
        env
    }

    /// The last working directory set by a step.
    pub fn workdir(&self) -> Option<String> {
        self.steps.iter().rev().find_map(|s| match s {
            Step::Workdir { path } => Some(path.clone()),
            _ => None,
        })
    }
}

fn check_abs_path(p: &str) -> Result<(), String> {
    if !p.starts_with('/') {
        return Err(format!("{p:?} must be absolute"));
    }
    if p.contains('\0') || p.split('/').any(|c| c == "..") {
        return Err(format!("{p:?} must not contain NUL or '..'"));
    }
    Ok(())
}

impl Step {
    /// Checks one step; returns how many bytes it copies into the sandbox.
    fn validate(&self) -> Result<usize, String> {
        match self {
            Step::Run { cmd, timeout_secs, .. } => {
                if cmd.trim().is_empty() {
                    return Err("run: empty cmd".into());
                }
                if timeout_secs.is_some_and(|t| t == 0 || t > MAX_STEP_TIMEOUT_SECS) {
                    return Err(format!("run: timeoutSecs must be 1..={MAX_STEP_TIMEOUT_SECS}"));
                }
            }
            Step::Copy { dest, content_base64, mode, .. } => {
                check_abs_path(dest).map_err(|d| format!("copy: dest {d}"))?;
                use base64::Engine as _;
                let len = base64::engine::general_purpose::STANDARD
                    .decode(content_base64)
                    .map_err(|e| format!("copy to {dest}: contentBase64 is not base64: {e}"))?
                    .len();
                if mode.is_some_and(|m| m > 0o7777) {
                    return Err(format!("copy to {dest}: mode {mode:?} is not a file mode"));
                }
                return Ok(len);
            }
            Step::Env { vars } => {
                for key in vars.keys() {
                    let ok = !key.is_empty()
                        && !key.as_bytes()[0].is_ascii_digit()
                        && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
                    if !ok {
                        return Err(format!("env: invalid variable name {key:?}"));
                    }
                }
            }
            Step::Workdir { path } => check_abs_path(path).map_err(|d| format!("workdir {d}"))?,
        }
        Ok(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> TemplateSpec {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn parses_steps_and_derives_env_and_workdir() {
        let s = parse(
            r#"{"name":"web-app","steps":[
                {"type":"env","vars":{"A":"1"}},
                {"type":"run","cmd":"echo hi","user":"root"},
                {"type":"copy","dest":"/app/x.txt","contentBase64":"aGk="},
                {"type":"workdir","path":"/app"},
                {"type":"env","vars":{"A":"2","B":"3"}}],
              "start":{"cmd":"python3 -m http.server 8000"},
              "ready":{"type":"port","port":8000}}"#,
        );
        s.validate().unwrap();
        assert_eq!(s.from, "base");
        assert_eq!(s.env().get("A").map(String::as_str), Some("2"));
        assert_eq!(s.workdir().as_deref(), Some("/app"));
        assert_eq!(s.sha256(), s.clone().sha256());
        assert_eq!(s.ready.unwrap().shell(), "exec 3<>/dev/tcp/127.0.0.1/8000");
    }

    #[test]
    fn rejects_bad_specs_with_the_reason() {
        let bad = [
            (r#"{"name":"Bad Name"}"#, "invalid"),
            (r#"{"name":"x","steps":[{"type":"copy","dest":"rel","contentBase64":""}]}"#, "absolute"),
            (r#"{"name":"x","steps":[{"type":"copy","dest":"/a/../b","contentBase64":""}]}"#, ".."),
            (r#"{"name":"x","steps":[{"type":"copy","dest":"/a","contentBase64":"!!"}]}"#, "base64"),
            (r#"{"name":"x","steps":[{"type":"env","vars":{"1A":"x"}}]}"#, "variable name"),
            (r#"{"name":"x","steps":[{"type":"run","cmd":"  "}]}"#, "empty cmd"),
            (r#"{"name":"x","ready":{"type":"port","port":0}}"#, "port"),
            (r#"{"name":"x","readyTimeoutSecs":100000}"#, "readyTimeoutSecs"),
        ];
        for (json, want) in bad {
            let err = parse(json).validate().unwrap_err().to_string();
            assert!(err.contains(want), "{json}: {err}");
        }
        assert!(serde_json::from_str::<TemplateSpec>(r#"{"name":"x","bogus":1}"#).is_err());
        assert!(serde_json::from_str::<TemplateSpec>(r#"{"name":"x","steps":[{"type":"nope"}]}"#).is_err());
    }
}
