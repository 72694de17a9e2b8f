//! Timeout supervision: sandboxes past `endAt` are killed.

use std::time::Duration;

use time::OffsetDateTime;

use super::Runtime;
use crate::lifecycle::SandboxState;
use crate::record::OnTimeout;

const TICK: Duration = Duration::from_millis(250);

impl Runtime {
    pub(super) async fn expiry_loop(&self) {
        loop {
            tokio::time::sleep(TICK).await;
            for (id, on_timeout) in self.expired(OffsetDateTime::now_utc()) {
                let result = match on_timeout {
                    OnTimeout::Kill => {
                        tracing::info!(sandbox = %id, "timeout reached; killing");
                        self.capture_continuation(&id, super::continuation::StopReason::Idle).await;
                        self.kill(&id).await
                    }
                    OnTimeout::Pause => {
                        tracing::info!(sandbox = %id, "timeout reached; pausing (autoPause)");
                        match self.pause(&id).await {
                            Ok(()) => Ok(()),
                            // A sandbox that cannot be saved must not run past its end: kill it.
                            Err(e) => {
                                tracing::warn!(sandbox = %id, error = %e, "autoPause failed; killing");
                                self.kill(&id).await
                            }
                        }
                    }
                };
                if let Err(e) = result {
                    tracing::warn!(sandbox = %id, error = %e, "expiry action failed");
                }
            }
        }
    }

    /// Running sandboxes whose end time has passed.
    pub fn expired(&self, now: OffsetDateTime) -> Vec<(String, OnTimeout)> {
        self.table()
            .values()
            .filter(|r| r.state == SandboxState::Running && r.end_at <= now)
            .map(|r| (r.id.to_string(), r.on_timeout))
            .collect()
    }

    /// Server shutdown: kills every running sandbox; paused ones stay on disk and are re-adopted
    /// at the next start. Then removes any engine sandbox still under this server's runsc root
    /// (orphans: e.g. a restore an earlier server started just before it died). Returns how many
    /// were killed.
    pub async fn shutdown(&self) -> usize {
        let ids: Vec<String> = self
            .table()
            .values()
            .filter(|r| r.state != SandboxState::Paused)
            .map(|r| r.id.to_string())
            .collect();
        let mut n = 0;
        for id in ids {
            if self.kill(&id).await.is_ok() {
                n += 1;
            }
        }
        self.drain_teardowns().await;
        let orphans = self.destroy_orphans(self.unaccounted_engine_sandboxes().await).await;
        if orphans > 0 {
            tracing::warn!(orphans, "removed engine sandboxes no record accounted for");
        }
        self.stop_network();
        n
    }

    /// Engine sandboxes under this server's runsc root that neither the table nor the warm pool
    /// accounts for.
    pub(super) async fn unaccounted_engine_sandboxes(&self) -> Vec<String> {
        let engine = std::sync::Arc::clone(&self.inner.engine);
        let names =
            tokio::task::spawn_blocking(move || engine.list().unwrap_or_default()).await.unwrap_or_default();
        let known: std::collections::HashSet<String> =
            self.table().keys().map(|k| k.to_string()).chain(self.warm_ids()).collect();
        names.into_iter().filter(|n| !known.contains(n)).collect()
    }

    /// Destroys the named engine sandboxes and their namespaces. Returns how many.
    pub(super) async fn destroy_orphans(&self, orphans: Vec<String>) -> usize {
        let n = orphans.len();
        if n == 0 {
            return 0;
        }
        let engine = std::sync::Arc::clone(&self.inner.engine);
        let network = std::sync::Arc::clone(&self.inner.network);
        let swept = tokio::task::spawn_blocking(move || {
            let namespaces = network.list_namespaces();
            for name in orphans {
                if let Ok(id) = crate::ids::SandboxId::parse(&name) {
                    tracing::warn!(sandbox = %id, "removing an orphaned engine sandbox");
                    if let Err(e) = engine.destroy(&id) {
                        tracing::warn!(sandbox = %id, error = %e, "removing an orphaned engine sandbox failed");
                    }
                    for ns in namespaces.iter().filter(|ns| ns.ends_with(&name)) {
                        if let Err(e) = network.remove_namespace(ns) {
                            tracing::warn!(sandbox = %id, error = %e, "removing an orphaned namespace failed");
                        }
                    }
                }
            }
        })
        .await;
        if let Err(e) = swept {
            tracing::warn!(error = %e, "orphan sweep task failed");
        }
        n
    }

    /// Kills every sandbox, paused ones included. Returns how many were killed.
    pub async fn kill_all(&self) -> usize {
        let ids: Vec<String> = self.table().keys().map(|k| k.to_string()).collect();
        let mut n = 0;
        for id in ids {
            if self.kill(&id).await.is_ok() {
                n += 1;
            }
        }
        self.drain_teardowns().await;
        n
    }
}
