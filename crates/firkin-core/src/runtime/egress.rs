//! Egress policy operations: E2B's `PUT /sandboxes/{id}/network`, applying a policy to a
//! running sandbox, and bringing the host side of the network up and down with the server.
//!
//! The policy lives in the sandbox's record; every start of its engine (create, resume,
//! probe) attaches the network with the record's policy in force. An update writes the record
//! first, so any start after it uses the new policy, then waits out a start already under way
//! and applies the policy to the running sandbox. Connections already open stay open.

use super::error::Operation;
use super::{Runtime, RuntimeError};
use crate::ids::SandboxId;
use crate::lifecycle::SandboxState;
use crate::network::EgressPolicy;

impl Runtime {
    /// Replaces a sandbox's egress policy (running or paused). Returns once it is in force.
    pub async fn update_network(&self, id: &str, policy: EgressPolicy) -> Result<(), RuntimeError> {
        let rec = self.get_visible(id)?;
        self.update(&rec.id, |r| r.egress = policy.clone());
        self.persist(&rec.id)?;
        let now = self.settled(&rec.id, "network update").await?;
        match (now.state, now.net_slot) {
            // The record may have changed again meanwhile: apply what it says now.
            (SandboxState::Running, Some(slot)) => {
                self.apply_egress(&rec.id, slot, now.egress, Operation::UpdateNetwork).await
            }
            _ => Ok(()),
        }
    }

    /// Puts `policy` in force for the sandbox attached in `slot`.
    pub(super) async fn apply_egress(
        &self,
        id: &SandboxId,
        slot: u32,
        policy: EgressPolicy,
        op: Operation,
    ) -> Result<(), RuntimeError> {
        let network = std::sync::Arc::clone(&self.inner.network);
        let sid = id.clone();
        tokio::task::spawn_blocking(move || network.set_policy(&sid, slot, &policy))
            .await
            .map_err(|e| RuntimeError::Internal(format!("{op} of sandbox {id}: policy task: {e}")))?
            .map_err(|source| RuntimeError::Network { op, id: id.to_string(), source })
    }

    /// Brings the host side of the network up (firewall, DNS forwarder), with the policies of
    /// the sandboxes re-adopted so far. Call once, after [`Runtime::reconcile`], before serving.
    pub async fn start_network(&self) -> Result<(), RuntimeError> {
        let running: Vec<_> = self
            .table()
            .values()
            .filter(|r| r.state == SandboxState::Running)
            .filter_map(|r| Some((r.id.clone(), r.net_slot?, r.egress.clone())))
            .collect();
        for (id, slot, policy) in running {
            self.inner.network.set_policy(&id, slot, &policy).map_err(|source| RuntimeError::Network {
                op: Operation::Start,
                id: id.to_string(),
                source,
            })?;
        }
        self.inner.network.start().map_err(RuntimeError::HostNetwork)
    }

    /// Bytes through each running sandbox's interface (server-internal ones excluded).
    pub fn network_traffic(&self) -> Vec<(SandboxId, crate::network::Traffic)> {
        let running: Vec<SandboxId> = self
            .table()
            .values()
            .filter(|r| r.state == SandboxState::Running && !r.internal)
            .map(|r| r.id.clone())
            .collect();
        running.into_iter().filter_map(|id| Some((id.clone(), self.inner.network.traffic(&id)?))).collect()
    }

    /// Takes the host side of the network down (after the sandboxes are gone).
    pub fn stop_network(&self) {
        if let Err(e) = self.inner.network.stop() {
            tracing::warn!(error = %e, "removing the host network side failed");
        }
    }
}
