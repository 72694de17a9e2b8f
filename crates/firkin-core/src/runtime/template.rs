//! Template builds and the template store: boot a sandbox from a base rootfs, run the spec's
//! steps in it, start its server and wait for its ready check, then checkpoint it (proven
//! restorable) into the template store with a versioned manifest and integrity record. A failed
//! step fails the build with its output, and nothing is published. Creates restore the newest
//! artifact of a template; built-in templates are (re)built on first need whenever their spec,
//! rootfs or agent changed.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;

use super::create::Source;
use super::error::{BuildError, Operation};
use super::{CreateSandbox, Runtime, RuntimeError};
use crate::agent_client::Command;
use crate::record::SandboxRecord;
use crate::samples::SampleName;
use crate::snapshot::{SnapshotManifest, SnapshotStore};
use crate::template::{builtin, Rootfs, Step, StepUser, TemplateError, TemplateInfo, TemplateSpec};

/// Default limit of one `run` step.
const DEFAULT_STEP_TIMEOUT: Duration = Duration::from_secs(600);
/// How long a build sandbox may live.
const BUILD_SANDBOX_TIMEOUT: Duration = Duration::from_secs(3 * 3600);

/// One line of build progress.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BuildProgress {
    /// 1-based phase number and the number of phases.
    pub phase: usize,
    pub phases: usize,
    pub message: String,
}

/// Receives build progress (a CLI progress bar, an HTTP stream, a log).
pub type ProgressFn = Arc<dyn Fn(BuildProgress) + Send + Sync>;

/// What the steps so far set for the ones after them.
#[derive(Default)]
struct StepContext {
    env: BTreeMap<String, String>,
    workdir: Option<String>,
}

/// How one build step failed (the build names the template and the step).
enum StepFailure {
    /// Its command exited non-zero.
    Exit { exit_code: i32, output: String },
    /// It could not be carried out.
    Detail(String),
}

impl StepFailure {
    fn into_error(self, spec: &TemplateSpec, step: usize, what: String) -> RuntimeError {
        let name = spec.name.clone();
        match self {
            StepFailure::Exit { exit_code, output } => {
                BuildError::StepFailed { name, step, what, exit_code, output }.into()
            }
            StepFailure::Detail(detail) => BuildError::Step { name, step, what, detail }.into(),
        }
    }
}

fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn describe(step: &Step) -> String {
    let mut d = match step {
        Step::Run { cmd, user, .. } => format!("run as {}: {cmd}", user.name()),
        Step::Copy { dest, .. } => format!("copy {dest}"),
        Step::Env { vars } => format!("env {}", vars.keys().cloned().collect::<Vec<_>>().join(" ")),
        Step::Workdir { path } => format!("workdir {path}"),
    };
    if d.len() > 120 {
        let mut cut = 117;
        while !d.is_char_boundary(cut) {
            cut -= 1;
        }
        d.truncate(cut);
        d.push_str("...");
    }
    d
}

impl Runtime {
    fn build_lock(&self, name: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.inner.build_locks.lock().unwrap_or_else(|e| e.into_inner());
        Arc::clone(locks.entry(name.to_owned()).or_default())
    }

    /// Builds (or rebuilds) a user template. Built-in names are reserved.
    pub async fn build_template(
        &self,
        spec: TemplateSpec,
        progress: ProgressFn,
    ) -> Result<SnapshotManifest, RuntimeError> {
        if builtin::is_builtin(&spec.name) {
            return Err(crate::template::TemplateSpecError::Reserved(spec.name).into());
        }
        spec.validate()?;
        let lock = self.build_lock(&spec.name);
        let _guard = lock.lock().await;
        self.build_locked(spec, progress).await
    }

    /// Templates, newest artifact per name, built-ins first.
    pub fn list_templates(&self) -> Vec<SnapshotManifest> {
        let mut seen = std::collections::HashSet::new();
        let mut out: Vec<SnapshotManifest> = self
            .inner
            .template_store
            .list()
            .into_iter()
            .filter(|m| m.template.as_ref().is_some_and(|t| seen.insert(t.name.clone())))
            .collect();
        out.sort_by_key(|m| m.template.as_ref().map(|t| (!t.builtin, t.name.clone())));
        out
    }

    /// Deletes every artifact of a user template; false when there is none.
    pub fn delete_template(&self, name: &str) -> Result<bool, RuntimeError> {
        if builtin::is_builtin(name) {
            return Err(RuntimeError::InvalidRequest(format!("'{name}' is a built-in template")));
        }
        Ok(self.remove_template_artifacts(name, None) > 0)
    }

    /// Removes artifacts of `name` other than `keep`; returns how many.
    fn remove_template_artifacts(&self, name: &str, keep: Option<&str>) -> usize {
        let store = &self.inner.template_store;
        store
            .list()
            .into_iter()
            .filter(|m| m.template.as_ref().is_some_and(|t| t.name == name))
            .filter(|m| Some(m.snapshot_id.as_str()) != keep)
            .filter(|m| store.delete(&m.snapshot_id))
            .count()
    }

    /// The artifact to restore for template `id`: `None` when no template has that name. A
    /// built-in is built first if missing or stale (one build at a time; concurrent creates
    /// wait for it). A user template must match this server's agent and rootfs.
    pub(super) async fn template_artifact(&self, id: &str) -> Result<Option<SnapshotManifest>, RuntimeError> {
        if let Some(spec) = builtin::spec(id) {
            let m = self.usable_template(id, Some(&spec.sha256()));
            if let Ok(Some(m)) = m {
                return Ok(Some(m));
            }
            let lock = self.build_lock(id);
            let _guard = lock.lock().await;
            if let Ok(Some(m)) = self.usable_template(id, Some(&spec.sha256())) {
                return Ok(Some(m));
            }
            let quiet: ProgressFn =
                Arc::new(|p: BuildProgress| tracing::debug!(message = %p.message, "build"));
            return self.build_locked(spec, quiet).await.map(Some);
        }
        self.usable_template(id, None)
    }

    /// The newest artifact of `name` if it can be restored by this server: same agent build,
    /// same rootfs build, (for built-ins) same spec, intact files (a mismatch quarantines it).
    fn usable_template(
        &self,
        name: &str,
        spec_sha256: Option<&str>,
    ) -> Result<Option<SnapshotManifest>, RuntimeError> {
        let store = &self.inner.template_store;
        let Some(m) = store.list().into_iter().find(|m| m.template.as_ref().is_some_and(|t| t.name == name))
        else {
            return Ok(None);
        };
        let stale = |what| Err(TemplateError::Stale { name: name.to_owned(), what }.into());
        if m.agent_sha256 != self.inner.agent_sha256 {
            return stale("firkin-agent build");
        }
        let rootfs = self.inner.templates.rootfs(&m.rootfs)?;
        if rootfs.id != m.rootfs_id {
            return stale("rootfs build");
        }
        if spec_sha256.is_some_and(|s| m.template.as_ref().is_none_or(|t| t.spec_sha256 != s)) {
            return stale("spec");
        }
        store.verify(&m, &self.inner.agent_sha256).map_err(|source| RuntimeError::Snapshot { source })?;
        Ok(Some(m))
    }

    /// Builds the built-in templates that are missing or stale, one after the other. Failures
    /// are logged (a create of that template retries the build and reports the error).
    pub async fn prepare_builtin_templates(&self) {
        self.prepare_templates(builtin::BUILTIN_IDS).await;
    }

    /// Builds the named built-in templates that are missing or stale (others build on first
    /// need).
    pub async fn prepare_templates(&self, ids: &[&str]) {
        for id in ids.iter().filter(|id| builtin::is_builtin(id)) {
            match self.template_artifact(id).await {
                Ok(Some(m)) => tracing::info!(template = id, artifact = %m.snapshot_id, "template ready"),
                Ok(None) => {}
                Err(e) => tracing::warn!(template = id, error = %e, "built-in template not available"),
            }
        }
    }

    /// Runs a build; the caller holds the template's build lock.
    async fn build_locked(
        &self,
        spec: TemplateSpec,
        progress: ProgressFn,
    ) -> Result<SnapshotManifest, RuntimeError> {
        let started = Instant::now();
        let rootfs = self.inner.templates.base(&spec.from)?;
        let phases = spec.steps.len() + 3;
        progress(BuildProgress {
            phase: 1,
            phases,
            message: format!("booting a sandbox from '{}'", spec.from),
        });
        let req = CreateSandbox {
            template_id: spec.name.clone(),
            timeout: Some(BUILD_SANDBOX_TIMEOUT),
            cpu_count: spec.cpu_count,
            memory_mb: spec.memory_mb,
            ..Default::default()
        };
        let source = Source {
            template_id: spec.name.clone(),
            rootfs_name: rootfs.name.clone(),
            image: None,
            restored_token: None,
            base_env: BTreeMap::new(),
            base_metadata: BTreeMap::new(),
            workdir: None,
            // Build steps (package installs) reach the internet as the server allows.
            egress: crate::network::EgressPolicy::default(),
            cpu_count: None,
            memory_mb: None,
            disk_mb: spec.disk_size_mb,
            internal: true,
        };
        let rec = self.launch(req, source).await?;
        let built = self.build_in(&rec, &spec, &rootfs, &progress, started).await;
        if let Err(e) = self.kill(rec.id.as_str()).await {
            tracing::warn!(sandbox = %rec.id, error = %e, "removing the build sandbox failed");
        }
        let m = built?;
        self.remove_template_artifacts(&spec.name, Some(&m.snapshot_id));
        self.inner.samples.record(SampleName::ColdTemplateBuild, started.elapsed());
        tracing::info!(template = %spec.name, artifact = %m.snapshot_id, took = ?started.elapsed(), "template built");
        Ok(m)
    }

    /// Runs the spec's steps, start command and ready check in the build sandbox `rec`, then
    /// checkpoints it into the template store.
    async fn build_in(
        &self,
        rec: &SandboxRecord,
        spec: &TemplateSpec,
        rootfs: &Rootfs,
        progress: &ProgressFn,
        started: Instant,
    ) -> Result<SnapshotManifest, RuntimeError> {
        let (ip, token) = (rec.agent_ip, rec.access_token.as_str());
        let agent = &self.inner.agent;
        let phases = spec.steps.len() + 3;
        let mut ctx = StepContext::default();
        for (i, step) in spec.steps.iter().enumerate() {
            let what = describe(step);
            progress(BuildProgress { phase: i + 2, phases, message: what.clone() });
            self.run_step(rec, step, &mut ctx)
                .await
                .map_err(|failure| failure.into_error(spec, i + 1, what))?;
        }
        let StepContext { env, workdir } = ctx;
        let phase = spec.steps.len() + 2;
        if let Some(start) = &spec.start {
            progress(BuildProgress { phase, phases, message: format!("starting `{}`", start.cmd) });
            let c = Command { user: start.user.name(), cmd: &start.cmd, env: &env, cwd: workdir.as_deref() };
            agent.spawn_start(ip, token, &c).await.map_err(|e| BuildError::Step {
                name: spec.name.clone(),
                step: phase,
                what: "start".into(),
                detail: e.to_string(),
            })?;
        }
        if let Some(ready) = &spec.ready {
            progress(BuildProgress { phase, phases, message: format!("waiting for `{}`", ready.shell()) });
            self.wait_build_ready(rec, spec, &env).await?;
        }
        progress(BuildProgress { phase: phases, phases, message: "checkpointing".into() });
        let info = TemplateInfo {
            name: spec.name.clone(),
            // Built-in names are reserved, so the name says which kind this is.
            builtin: builtin::is_builtin(&spec.name),
            spec_sha256: spec.sha256(),
            steps: spec.steps.len(),
            start_cmd: spec.start.as_ref().map(|s| s.cmd.clone()),
            build_ms: 0,
        };
        let store = Arc::clone(&self.inner.template_store);
        let (name, rootfs_id) = (spec.name.clone(), rootfs.id.clone());
        self.capture(rec, &store, SnapshotStore::new_id("tpl"), Operation::TemplateBuild, move |m| {
            m.names = vec![name.clone()];
            m.template_id = name;
            m.env_vars = env;
            m.metadata = BTreeMap::new();
            m.workdir = workdir;
            m.rootfs_id = rootfs_id;
            m.template = Some(TemplateInfo { build_ms: started.elapsed().as_millis() as u64, ..info });
        })
        .await
    }

    /// Runs one build step; `ctx` carries what `env` and `workdir` steps set for later ones.
    async fn run_step(
        &self,
        rec: &SandboxRecord,
        step: &Step,
        ctx: &mut StepContext,
    ) -> Result<(), StepFailure> {
        let (ip, token) = (rec.agent_ip, rec.access_token.as_str());
        let agent = &self.inner.agent;
        match step {
            Step::Run { cmd, user, timeout_secs } => {
                let timeout =
                    timeout_secs.map(|t| Duration::from_secs(t.into())).unwrap_or(DEFAULT_STEP_TIMEOUT);
                let c = Command { user: user.name(), cmd, env: &ctx.env, cwd: ctx.workdir.as_deref() };
                let out = agent
                    .exec(ip, token, &c, timeout)
                    .await
                    .map_err(|e| StepFailure::Detail(e.to_string()))?;
                if out.exit_code != 0 {
                    return Err(StepFailure::Exit { exit_code: out.exit_code, output: out.tail(40) });
                }
            }
            Step::Copy { dest, content_base64, mode, user } => {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(content_base64)
                    .map_err(|e| StepFailure::Detail(e.to_string()))?;
                agent
                    .upload(ip, token, user.name(), dest, Bytes::from(bytes))
                    .await
                    .map_err(|e| StepFailure::Detail(e.to_string()))?;
                if let Some(mode) = mode {
                    let cmd = format!("chmod {mode:o} {}", sh_quote(dest));
                    self.run_checked(rec, &cmd, StepUser::Root, &ctx.env)
                        .await
                        .map_err(StepFailure::Detail)?;
                }
            }
            Step::Env { vars } => ctx.env.extend(vars.clone()),
            Step::Workdir { path } => {
                let cmd = format!("install -d -o user -g user {}", sh_quote(path));
                self.run_checked(rec, &cmd, StepUser::Root, &ctx.env).await.map_err(StepFailure::Detail)?;
                ctx.workdir = Some(path.clone());
            }
        }
        Ok(())
    }

    /// Runs a helper command of the build and fails on a non-zero exit.
    async fn run_checked(
        &self,
        rec: &SandboxRecord,
        cmd: &str,
        user: StepUser,
        env: &BTreeMap<String, String>,
    ) -> Result<(), String> {
        let c = Command { user: user.name(), cmd, env, cwd: None };
        let out = self
            .inner
            .agent
            .exec(rec.agent_ip, &rec.access_token, &c, Duration::from_secs(60))
            .await
            .map_err(|e| e.to_string())?;
        if out.exit_code != 0 {
            return Err(format!("`{cmd}` exited with {}: {}", out.exit_code, out.tail(10)));
        }
        Ok(())
    }

    /// Polls the spec's ready check inside the build sandbox until it passes or times out.
    async fn wait_build_ready(
        &self,
        rec: &SandboxRecord,
        spec: &TemplateSpec,
        env: &BTreeMap<String, String>,
    ) -> Result<(), RuntimeError> {
        let Some(ready) = &spec.ready else { return Ok(()) };
        let secs = spec.ready_timeout_secs.unwrap_or(crate::template::spec::DEFAULT_READY_TIMEOUT_SECS);
        let deadline = Instant::now() + Duration::from_secs(secs.into());
        let check = ready.shell();
        let mut last = String::new();
        while Instant::now() < deadline {
            let c = Command { user: "root", cmd: &check, env, cwd: None };
            match self.inner.agent.exec(rec.agent_ip, &rec.access_token, &c, Duration::from_secs(10)).await {
                Ok(out) if out.exit_code == 0 => return Ok(()),
                Ok(out) => last = out.tail(10),
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        Err(BuildError::NotReady { name: spec.name.clone(), check, secs, output: last }.into())
    }
}
