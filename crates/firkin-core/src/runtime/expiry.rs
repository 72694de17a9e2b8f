//! Timeout supervision: sandboxes past `endAt` are killed.

use std::time::Duration;

use time::OffsetDateTime;

use super::Runtime;
use crate::lifecycle::SandboxState;

const TICK: Duration = Duration::from_millis(250);

impl Runtime {
    pub(super) async fn expiry_loop(&self) {
        loop {
            tokio::time::sleep(TICK).await;
            for id in self.expired(OffsetDateTime::now_utc()) {
                tracing::info!(sandbox = %id, "timeout reached; killing");
                if let Err(e) = self.kill(&id).await {
                    tracing::warn!(sandbox = %id, error = %e, "expiry kill failed");
                }
            }
        }
    }

    /// Running sandboxes whose end time has passed.
    pub fn expired(&self, now: OffsetDateTime) -> Vec<String> {
        self.table()
            .values()
            .filter(|r| r.state == SandboxState::Running && r.end_at <= now)
            .map(|r| r.id.to_string())
            .collect()
    }

    /// Kills every sandbox (server shutdown). Returns how many were killed.
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
