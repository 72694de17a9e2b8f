//! Freshness sync: a sandbox restored from a (possibly old) template checkpoint brings a git
//! checkout up to date before it is written to. Create metadata names it:
//! `firkin.sync.checkout` (the checkout's path, required), `firkin.sync.branch` (checked out),
//! `firkin.sync.target` (what to reset to; default `origin/<branch>`, else the upstream). Right
//! after the create returns, `git fetch`, `git checkout`, `git reset --hard` run in the sandbox
//! as `user`; reads are served at once, files-API writes are refused until the sync is done
//! (or with its error if it failed). Progress is visible in the sandbox's metadata
//! (`firkin.sync.status` = `running` | `done` | `failed`, `firkin.sync.error`).

use std::time::{Duration, Instant};

use super::Runtime;
use crate::agent_client::Command;
use crate::ids::SandboxId;
use crate::samples::SampleName;

pub const CHECKOUT_KEY: &str = "firkin.sync.checkout";
pub const BRANCH_KEY: &str = "firkin.sync.branch";
pub const TARGET_KEY: &str = "firkin.sync.target";
pub const STATUS_KEY: &str = "firkin.sync.status";
pub const ERROR_KEY: &str = "firkin.sync.error";
const SYNC_TIMEOUT: Duration = Duration::from_secs(600);

/// Where a sandbox's freshness sync stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncState {
    Running { checkout: String },
    Failed { checkout: String, error: String },
}

fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The shell command of a sync.
pub fn sync_command(checkout: &str, branch: Option<&str>, target: Option<&str>) -> String {
    let mut cmd = format!("set -e; cd {}; git fetch --prune --quiet origin", sh_quote(checkout));
    if let Some(b) = branch {
        cmd.push_str(&format!("; git checkout --quiet {}", sh_quote(b)));
    }
    let target = match (target, branch) {
        (Some(t), _) => t.to_owned(),
        (None, Some(b)) => format!("origin/{b}"),
        (None, None) => "@{upstream}".to_owned(),
    };
    cmd.push_str(&format!("; git reset --quiet --hard {}", sh_quote(&target)));
    cmd
}

impl Runtime {
    /// The sync state of a sandbox that is syncing or whose sync failed (`None`: writes allowed).
    pub fn sync_state(&self, id: &str) -> Option<SyncState> {
        let id = SandboxId::parse(id).ok()?;
        self.inner.syncs.lock().unwrap_or_else(|e| e.into_inner()).get(&id).cloned()
    }

    fn set_sync(&self, id: &SandboxId, state: Option<SyncState>) {
        let mut syncs = self.inner.syncs.lock().unwrap_or_else(|e| e.into_inner());
        match state {
            Some(s) => syncs.insert(id.clone(), s),
            None => syncs.remove(id),
        };
    }

    /// Starts the sync a just-created sandbox asked for, if any (in the background).
    pub(super) fn start_freshness_sync(&self, id: &SandboxId) {
        let Ok(rec) = self.get(id) else { return };
        let Some(checkout) = rec.metadata.get(CHECKOUT_KEY).cloned() else { return };
        let branch = rec.metadata.get(BRANCH_KEY).cloned();
        let target = rec.metadata.get(TARGET_KEY).cloned();
        self.set_sync(id, Some(SyncState::Running { checkout: checkout.clone() }));
        self.update(id, |r| {
            r.metadata.insert(STATUS_KEY.into(), "running".into());
        });
        let rt = self.clone();
        let id = id.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let cmd = sync_command(&checkout, branch.as_deref(), target.as_deref());
            let env = rec.env_vars.clone();
            let c = Command { user: "user", cmd: &cmd, env: &env, cwd: None };
            let result = rt.inner.agent.exec(rec.agent_ip, &rec.access_token, &c, SYNC_TIMEOUT).await;
            let error = match result {
                Ok(out) if out.exit_code == 0 => None,
                Ok(out) => Some(format!("exit {}: {}", out.exit_code, out.tail(5))),
                Err(e) => Some(e.to_string()),
            };
            match &error {
                None => {
                    rt.inner.samples.record(SampleName::FreshnessSync, started.elapsed());
                    rt.set_sync(&id, None);
                    tracing::info!(sandbox = %id, %checkout, took = ?started.elapsed(), "freshness sync done");
                }
                Some(e) => {
                    tracing::warn!(sandbox = %id, %checkout, error = %e, "freshness sync failed");
                    rt.set_sync(&id, Some(SyncState::Failed { checkout, error: e.clone() }));
                }
            }
            rt.update(&id, |r| {
                r.metadata.insert(STATUS_KEY.into(), if error.is_some() { "failed" } else { "done" }.into());
                if let Some(e) = &error {
                    r.metadata.insert(ERROR_KEY.into(), e.clone());
                }
            });
            if let Err(e) = rt.persist(&id) {
                tracing::warn!(sandbox = %id, error = %e, "persisting the freshness sync status failed");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sync_commands() {
        assert_eq!(
            sync_command("/home/user/repo", Some("main"), None),
            "set -e; cd '/home/user/repo'; git fetch --prune --quiet origin; git checkout --quiet 'main'; \
             git reset --quiet --hard 'origin/main'"
        );
        assert!(sync_command("/r", None, None).ends_with("git reset --quiet --hard '@{upstream}'"));
        assert!(sync_command("/it's", None, Some("v1")).contains(r"cd '/it'\''s'"));
    }
}
