//! The runtime: the one typed operation seam every front end uses. It owns the sandbox table,
//! applies lifecycle transitions, persists records, and drives the engine and network seams.

mod boot;
mod claim;
pub mod continuation;
mod create;
pub mod disk;
mod egress;
mod error;
mod expiry;
pub mod freshness;
mod heartbeat;
pub mod list;
pub mod metrics;
mod ops;
mod pause;
mod reconcile;
mod snapshot;
mod template;
#[cfg(test)]
mod tests;
mod warm;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex, MutexGuard};

pub use create::CreateSandbox;
pub use error::{BuildError, CleanupError, Operation, RuntimeError};
pub use list::{ListQuery, Page};
pub use ops::{ConnectOutcome, SandboxRoute};
pub use template::{BuildProgress, ProgressFn};
pub use warm::WarmStats;

use crate::admission::queue::Admission;
use crate::agent_client::AgentClient;
use crate::config::RuntimeConfig;
use crate::engine::Engine;
use crate::ids::SandboxId;
use crate::network::slots::SlotAllocator;
use crate::network::Network;
use crate::record::SandboxRecord;
use crate::samples::Samples;
use crate::template::TemplateCatalog;

/// Number of /30 network slots (a /16 range).
pub const NET_SLOTS: u32 = 16384;

/// How far [`Runtime::cut_traffic`] goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cut {
    /// End the streams in flight; the sandbox gets traffic again later (pause, snapshot).
    Streams,
    /// End them and drop the sandbox's traffic epoch: it is gone (kill).
    AndForget,
}

/// The sandbox runtime. Cheap to clone.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<Inner>,
}

struct Inner {
    config: RuntimeConfig,
    engine: Arc<dyn Engine>,
    network: Arc<dyn Network>,
    templates: TemplateCatalog,
    samples: Samples,
    agent: AgentClient,
    admission: Admission,
    snapshots: Arc<crate::snapshot::SnapshotStore>,
    /// Built template artifacts.
    template_store: Arc<crate::snapshot::SnapshotStore>,
    /// One build per template name at a time (a create of a built-in waits for its build).
    build_locks: Mutex<BTreeMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Pre-restored sandboxes per template, and the supervisor's wake-up.
    warm: Mutex<warm::WarmPools>,
    warm_wake: tokio::sync::Notify,
    /// Freshness syncs running or failed, per sandbox.
    syncs: Mutex<BTreeMap<SandboxId, freshness::SyncState>>,
    /// SHA-256 of the agent binary: images taken with another build cannot be restored.
    agent_sha256: String,
    table: Mutex<BTreeMap<SandboxId, SandboxRecord>>,
    slots: Mutex<SlotAllocator>,
    /// Per-sandbox traffic epochs: bumping one ends every proxied stream to that sandbox.
    cuts: Mutex<BTreeMap<SandboxId, tokio::sync::watch::Sender<u64>>>,
    /// Per-sandbox engine/network locks: a background teardown holds one, so a resume or kill
    /// of the same sandbox waits for it before reusing the sandbox's namespace name.
    engine_locks: Mutex<BTreeMap<SandboxId, Arc<tokio::sync::Mutex<()>>>>,
    /// Recent metric samples per sandbox.
    metrics: Mutex<metrics::MetricHistory>,
    /// Teardowns still running in the background (awaited at shutdown).
    teardowns: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl Runtime {
    pub fn new(config: RuntimeConfig, engine: Arc<dyn Engine>, network: Arc<dyn Network>) -> Runtime {
        let templates = TemplateCatalog::new(config.layout.clone());
        let admission = Admission::new(config.capacity, config.max_queue);
        let snapshots = Arc::new(crate::snapshot::SnapshotStore::snapshots(&config.layout));
        let template_store = Arc::new(crate::snapshot::SnapshotStore::templates(&config.layout));
        let agent_sha256 = crate::digest::sha256_file(&config.agent_path).map(|(_, d)| d).unwrap_or_default();
        Runtime {
            inner: Arc::new(Inner {
                config,
                engine,
                network,
                templates,
                samples: Samples::default(),
                agent: AgentClient::new(),
                admission,
                snapshots,
                template_store,
                build_locks: Mutex::new(BTreeMap::new()),
                warm: Mutex::new(warm::WarmPools::default()),
                warm_wake: tokio::sync::Notify::new(),
                syncs: Mutex::new(BTreeMap::new()),
                agent_sha256,
                table: Mutex::new(BTreeMap::new()),
                slots: Mutex::new(SlotAllocator::new(NET_SLOTS)),
                cuts: Mutex::new(BTreeMap::new()),
                engine_locks: Mutex::new(BTreeMap::new()),
                metrics: Mutex::new(metrics::MetricHistory::default()),
                teardowns: Mutex::new(Vec::new()),
            }),
        }
    }

    pub fn config(&self) -> &RuntimeConfig {
        &self.inner.config
    }

    pub fn samples(&self) -> &Samples {
        &self.inner.samples
    }

    /// Capacity ledger view for gauges.
    pub fn admission_stats(&self) -> crate::admission::queue::AdmissionStats {
        self.inner.admission.stats()
    }

    pub fn engine_description(&self) -> String {
        self.inner.engine.describe()
    }

    /// Starts background supervision (timeout expiry). Call once from within a tokio runtime.
    pub fn start_background(&self) -> tokio::task::JoinHandle<()> {
        let rt = self.clone();
        let hb = self.clone();
        let sampler = self.clone();
        tokio::spawn(async move { hb.heartbeat_loop().await });
        tokio::spawn(async move { sampler.metrics_loop().await });
        tokio::spawn(async move { rt.expiry_loop().await })
    }

    fn table(&self) -> MutexGuard<'_, BTreeMap<SandboxId, SandboxRecord>> {
        self.inner.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn slots(&self) -> MutexGuard<'_, SlotAllocator> {
        self.inner.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A receiver that changes when traffic to `id` must stop (pause, kill).
    pub(crate) fn traffic_watch(&self, id: &SandboxId) -> tokio::sync::watch::Receiver<u64> {
        let mut cuts = self.inner.cuts.lock().unwrap_or_else(|e| e.into_inner());
        cuts.entry(id.clone()).or_insert_with(|| tokio::sync::watch::channel(0).0).subscribe()
    }

    /// Ends every proxied stream to `id`, so no client connection is open inside the sandbox.
    pub(crate) fn cut_traffic(&self, id: &SandboxId, cut: Cut) {
        let mut cuts = self.inner.cuts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(tx) = cuts.get(id) {
            tx.send_modify(|epoch| *epoch += 1);
        }
        if cut == Cut::AndForget {
            cuts.remove(id);
        }
    }

    /// The engine/network lock of one sandbox.
    pub(crate) fn engine_lock(&self, id: &SandboxId) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.inner.engine_locks.lock().unwrap_or_else(|e| e.into_inner());
        Arc::clone(locks.entry(id.clone()).or_default())
    }

    /// Tracks a background teardown so shutdown can wait for it.
    pub(crate) fn track_teardown(&self, handle: tokio::task::JoinHandle<()>) {
        let mut pending = self.inner.teardowns.lock().unwrap_or_else(|e| e.into_inner());
        pending.retain(|h| !h.is_finished());
        pending.push(handle);
    }

    /// Waits for every background teardown to finish.
    pub async fn drain_teardowns(&self) {
        loop {
            let handles: Vec<_> =
                std::mem::take(&mut *self.inner.teardowns.lock().unwrap_or_else(|e| e.into_inner()));
            if handles.is_empty() {
                return;
            }
            for h in handles {
                let _ = h.await;
            }
        }
    }

    /// Number of sandboxes currently in the table (any state but killed).
    pub fn sandbox_count(&self) -> usize {
        self.table().len()
    }

    /// What a sandbox of `size` holds in the capacity ledger (its disk: the reserve, not the
    /// limit).
    fn footprint(&self, size: boot::SandboxSize) -> crate::admission::Resources {
        crate::admission::Resources::new(size.cpu_count, size.memory_mb, self.inner.config.disk_reserve_mb)
    }

    fn agent_ip(&self, id: &SandboxId) -> Option<Ipv4Addr> {
        self.table().get(id).map(|r| r.agent_ip)
    }
}
