//! Runtime logic over the fake engine and network, with a minimal fake agent on loopback. The
//! helpers here are shared by `warm` (the warm pool) and `faults` (engine failures).

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::config::{Layout, RuntimeConfig};
use crate::engine::fake::FakeEngine;
use crate::fake_agent::fake_agent;
use crate::network::fake::FakeNetwork;

mod egress;
mod faults;
mod warm;

fn runtime(tag: u8, engine: Arc<FakeEngine>) -> (Runtime, std::path::PathBuf) {
    let (rt, _, dir) = runtime_and_network(tag, engine);
    (rt, dir)
}

/// Like [`runtime`], also handing out the fake network (to see what it was told).
fn runtime_and_network(tag: u8, engine: Arc<FakeEngine>) -> (Runtime, Arc<FakeNetwork>, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("firkin-rt-test-{}-{tag}", std::process::id()));
    let layout = Layout { state_dir: dir.join("state"), cache_dir: dir.join("cache") };
    std::fs::create_dir_all(layout.rootfs_dir(crate::template::BASE_ROOTFS).join("bin")).unwrap();
    let mut cfg = RuntimeConfig::new(layout, "/nonexistent/agent");
    cfg.disk_floors = crate::config::DiskFloors { restore_mb: 0, snapshot_mb: 0, warm_mb: 0 };
    cfg.ready_timeout = Duration::from_millis(300);
    let net = Arc::new(FakeNetwork::at(Ipv4Addr::new(127, 201, tag, 0)));
    (Runtime::new(cfg, engine, net.clone()), net, dir)
}

/// A new runtime (a restarted server) over the state `layout` an earlier one left.
fn restarted(layout: Layout, engine: Arc<FakeEngine>, tag: u8) -> Runtime {
    let mut cfg = RuntimeConfig::new(layout, "/nonexistent/agent");
    cfg.disk_floors = crate::config::DiskFloors { restore_mb: 0, snapshot_mb: 0, warm_mb: 0 };
    cfg.ready_timeout = Duration::from_millis(300);
    let net = Arc::new(FakeNetwork::at(Ipv4Addr::new(127, 201, tag, 0)));
    Runtime::new(cfg, engine, net)
}

/// Fake agents answering at the first `n` network slots of test network `tag`.
async fn agents(tag: u8, n: u32) {
    for slot in 0..n {
        fake_agent(crate::network::slots::slot_addrs(Ipv4Addr::new(127, 201, tag, 0), slot).1).await;
    }
}

fn req() -> CreateSandbox {
    CreateSandbox { template_id: "base".into(), timeout: Some(Duration::from_secs(60)), ..Default::default() }
}

#[tokio::test]
async fn create_persists_and_kill_releases_everything() {
    let engine = Arc::new(FakeEngine::default());
    let (rt, dir) = runtime(1, engine.clone());
    agents(1, 8).await;
    let rec = rt.create(req()).await.unwrap();
    assert_eq!(rec.state, crate::lifecycle::SandboxState::Running);
    assert!(rt.config().layout.sandbox_record(rec.id.as_str()).exists());
    assert!(rt.route(rec.id.as_str()).is_some());
    assert_eq!(engine.list().unwrap().len(), 1);

    rt.kill_and_wait(rec.id.as_str()).await.unwrap();
    // The template build's own sandbox and probe are torn down in the background.
    rt.drain_teardowns().await;
    assert!(rt.route(rec.id.as_str()).is_none());
    assert!(matches!(rt.kill(rec.id.as_str()).await, Err(RuntimeError::SandboxNotFound(_))));
    assert!(!rt.config().layout.sandbox_record(rec.id.as_str()).exists());
    assert!(engine.list().unwrap().is_empty());
    assert_eq!(rt.slots().in_use(), 0);
    assert_eq!(rt.admission_stats().used, crate::admission::Resources::default(), "ledger back to zero");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn failed_boot_leaves_nothing_behind() {
    let engine = Arc::new(FakeEngine::default());
    *engine.fail_next_boot.lock().unwrap() = true;
    let (rt, dir) = runtime(2, engine.clone());
    let err = rt.create(req()).await.unwrap_err();
    assert!(matches!(err, RuntimeError::Engine { .. }), "{err}");
    assert_eq!(rt.sandbox_count(), 0);
    assert_eq!(rt.slots().in_use(), 0);
    assert!(engine.list().unwrap().is_empty());
    assert_eq!(rt.admission_stats().used, crate::admission::Resources::default(), "reservation released");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn unready_agent_fails_create_and_cleans_up() {
    let engine = Arc::new(FakeEngine::default());
    let (rt, dir) = runtime(3, engine.clone()); // no fake agent listening
    let err = rt.create(req()).await.unwrap_err();
    assert!(matches!(err, RuntimeError::NotReady { .. }), "{err}");
    assert_eq!(rt.sandbox_count(), 0);
    assert_eq!(rt.admission_stats().used, crate::admission::Resources::default());
    assert!(engine.list().unwrap().is_empty());
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn validation_errors_are_typed() {
    let (rt, dir) = runtime(4, Arc::new(FakeEngine::default()));
    let bad_template = rt.create(CreateSandbox { template_id: "nope".into(), ..req() }).await.unwrap_err();
    assert!(matches!(bad_template, RuntimeError::Template(_)));
    let too_long = rt
        .create(CreateSandbox { timeout: Some(Duration::from_secs(10 * 86400)), ..req() })
        .await
        .unwrap_err();
    assert!(matches!(too_long, RuntimeError::InvalidRequest(_)));
    let resume = rt.create(CreateSandbox { auto_resume: true, ..req() }).await.unwrap_err();
    assert!(matches!(resume, RuntimeError::InvalidRequest(_)), "autoResume needs autoPause: {resume}");
    assert_eq!(rt.sandbox_count(), 0);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn timeouts_extend_and_expire() {
    let (rt, dir) = runtime(5, Arc::new(FakeEngine::default()));
    agents(5, 8).await;
    let rec = rt.create(req()).await.unwrap();
    let id = rec.id.to_string();
    let shorter = rt.set_timeout(&id, Duration::from_secs(1)).unwrap();
    assert!(shorter.end_at < rec.end_at);
    // connect never shortens
    let c = rt.connect(&id, Some(Duration::from_secs(0))).await.unwrap();
    assert_eq!(c.record.end_at, shorter.end_at);
    assert!(!c.resumed);
    let later = time::OffsetDateTime::now_utc() + Duration::from_secs(2);
    assert_eq!(rt.expired(later), vec![(id.clone(), crate::record::OnTimeout::Kill)]);
    assert!(rt.expired(time::OffsetDateTime::now_utc()).is_empty());
    rt.kill_all().await;
    assert_eq!(rt.sandbox_count(), 0);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn oversized_create_is_rejected_by_admission() {
    let dir = std::env::temp_dir().join(format!("firkin-rt-test-{}-small", std::process::id()));
    let layout = Layout { state_dir: dir.join("state"), cache_dir: dir.join("cache") };
    std::fs::create_dir_all(layout.rootfs_dir(crate::template::BASE_ROOTFS).join("bin")).unwrap();
    let mut cfg = RuntimeConfig::new(layout, "/nonexistent/agent");
    cfg.disk_floors = crate::config::DiskFloors { restore_mb: 0, snapshot_mb: 0, warm_mb: 0 };
    cfg.capacity = crate::admission::Resources::new(1, 256, 10_000);
    let net = Arc::new(FakeNetwork::at(Ipv4Addr::new(127, 201, 7, 0)));
    let rt = Runtime::new(cfg, Arc::new(FakeEngine::default()), net);
    let err =
        rt.create(CreateSandbox { memory_mb: Some(512), cpu_count: Some(1), ..req() }).await.unwrap_err();
    assert!(
        matches!(err, RuntimeError::Admission(crate::admission::queue::AdmissionError::TooLarge { .. })),
        "{err}"
    );
    assert_eq!(rt.sandbox_count(), 0);
    assert_eq!(rt.admission_stats().used, crate::admission::Resources::default());
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn pause_frees_the_slot_and_connect_resumes() {
    let engine = Arc::new(FakeEngine::default());
    let (rt, dir) = runtime(8, engine.clone());
    agents(8, 8).await;
    let rec = rt.create(req()).await.unwrap();
    let id = rec.id.to_string();
    rt.pause(&id).await.unwrap();
    let paused = rt.get_visible(&id).unwrap();
    assert_eq!(paused.state, crate::lifecycle::SandboxState::Paused);
    assert_eq!(paused.net_slot, None);
    assert!(rt.route(&id).is_none(), "no traffic to a paused sandbox");
    rt.drain_teardowns().await;
    assert!(engine.list().unwrap().is_empty(), "the engine sandbox and the verification probe are stopped");
    assert!(rt.config().layout.pause_image(&id).join("checkpoint.img").exists());
    let used = rt.admission_stats().used;
    assert_eq!((used.milli_cpu, used.memory_mb), (0, 0), "a paused sandbox holds disk only");
    assert!(matches!(rt.pause(&id).await, Err(RuntimeError::AlreadyPaused(_))));

    let out = rt.connect(&id, Some(std::time::Duration::from_secs(30))).await.unwrap();
    assert!(out.resumed);
    assert_eq!(out.record.state, crate::lifecycle::SandboxState::Running);
    assert!(out.record.net_slot.is_some());
    assert!(rt.route(&id).is_some());
    assert!(!rt.config().layout.pause_image(&id).exists(), "the image is consumed by resume");
    rt.kill_and_wait(&id).await.unwrap();
    assert_eq!(rt.admission_stats().used, crate::admission::Resources::default());
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn restart_readopts_paused_and_running_and_cleans_the_rest() {
    let engine = Arc::new(FakeEngine::default());
    let (rt, dir) = runtime(9, engine.clone());
    agents(9, 8).await;
    let paused = rt.create(req()).await.unwrap();
    let running = rt.create(req()).await.unwrap();
    let dead = rt.create(req()).await.unwrap();
    rt.pause(paused.id.as_str()).await.unwrap();
    rt.drain_teardowns().await;
    // `dead`'s engine sandbox vanished while the server was down.
    engine.destroy(&dead.id).unwrap();
    let layout = rt.config().layout.clone();
    drop(rt); // the server dies without shutting down

    let rt2 = restarted(layout.clone(), engine.clone(), 9);
    let report = rt2.reconcile().await;
    assert_eq!(report.adopted_paused, 1);
    assert_eq!(report.adopted_running, 1);
    assert_eq!(report.records_removed, 1, "the one whose engine sandbox is gone");
    assert_eq!(engine.list().unwrap(), vec![running.id.to_string()], "only the adopted one is left");
    assert!(rt2.get_visible(dead.id.as_str()).is_err());
    let r = rt2.get_visible(running.id.as_str()).unwrap();
    assert_eq!(r.state, crate::lifecycle::SandboxState::Running);
    assert!(rt2.route(running.id.as_str()).is_some(), "traffic flows to the adopted sandbox");
    assert_eq!(rt2.admission_stats().active, 1);
    let p = rt2.get_visible(paused.id.as_str()).unwrap();
    assert_eq!(p.state, crate::lifecycle::SandboxState::Paused);
    assert_eq!(rt2.admission_stats().paused, 1);
    let out = rt2.connect(paused.id.as_str(), None).await.unwrap();
    assert!(out.resumed);
    assert_ne!(out.record.net_slot, r.net_slot, "the adopted sandbox's slot is not handed out again");
    rt2.kill_all().await;
    assert_eq!(rt2.admission_stats().used, crate::admission::Resources::default());
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_connect_during_a_pause_waits_for_it_then_resumes() {
    let engine = Arc::new(FakeEngine::default());
    let (rt, dir) = runtime(22, engine.clone());
    agents(22, 8).await;
    let id = rt.create(req()).await.unwrap().id.to_string();
    *engine.checkpoint_delay.lock().unwrap() = Duration::from_millis(400);
    let pausing = tokio::spawn({
        let (rt, id) = (rt.clone(), id.clone());
        async move { rt.pause(&id).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(rt.get_visible(&id).unwrap().state, crate::lifecycle::SandboxState::Pausing);
    let out = rt.connect(&id, Some(Duration::from_secs(30))).await.unwrap();
    assert!(out.resumed, "it was paused first, then resumed");
    assert_eq!(out.record.state, crate::lifecycle::SandboxState::Running);
    pausing.await.unwrap().unwrap();
    rt.kill_all().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn snapshot_create_from_it_and_fork() {
    let engine = Arc::new(FakeEngine::default());
    let (rt, dir) = runtime(10, engine.clone());
    agents(10, 8).await;
    let mut r = req();
    r.env_vars.insert("FROM".into(), "source".into());
    let src = rt.create(r).await.unwrap();
    let snap = rt.create_snapshot(src.id.as_str(), Some("golden".into()), None).await.unwrap();
    assert_eq!(rt.get_visible(src.id.as_str()).unwrap().state, crate::lifecycle::SandboxState::Running);
    assert_eq!(rt.list_snapshots(Some(src.id.as_str()), None).len(), 1);
    assert!(!snap.files.is_empty() && snap.files.iter().all(|f| f.sha256.len() == 64));

    let mut from = req();
    from.template_id = "golden".into();
    from.env_vars.insert("EXTRA".into(), "1".into());
    let child = rt.create(from).await.unwrap();
    assert_eq!(child.template_id, snap.snapshot_id);
    assert_ne!(child.access_token, src.access_token, "a restored copy gets its own token");
    assert_eq!(child.env_vars.get("FROM").map(String::as_str), Some("source"));
    assert_eq!(child.env_vars.get("EXTRA").map(String::as_str), Some("1"));

    let kids = rt.fork(src.id.as_str(), 2, None).await.unwrap();
    assert_eq!(kids.len(), 2);
    assert!(kids.iter().all(|k| k.as_ref().is_ok_and(|r| r.template_id == "base")));
    assert_eq!(rt.list_snapshots(None, None).len(), 1, "fork's own snapshot is removed");

    assert!(matches!(
        rt.create_snapshot(src.id.as_str(), None, Some(false)).await,
        Err(RuntimeError::Unsupported { .. })
    ));
    rt.delete_snapshot("golden").unwrap();
    assert!(matches!(rt.delete_snapshot("golden"), Err(RuntimeError::SnapshotNotFound(_))));
    rt.kill_all().await;
    assert_eq!(rt.admission_stats().used, crate::admission::Resources::default());
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn disk_floor_refuses_restores_before_reserving() {
    let engine = Arc::new(FakeEngine::default());
    let (rt, dir) = runtime(11, engine.clone());
    agents(11, 8).await;
    rt.create(req()).await.unwrap(); // builds the base template, restores it
    let mut cfg = rt.config().clone();
    cfg.disk_floors.restore_mb = u64::MAX;
    let net = Arc::new(FakeNetwork::at(Ipv4Addr::new(127, 201, 11, 0)));
    let tight = Runtime::new(cfg, engine.clone(), net);
    let err = tight.create(req()).await.unwrap_err();
    assert!(matches!(err, RuntimeError::DiskFloor { .. }), "{err}");
    assert!(err.to_string().contains("restore refused"), "{err}");
    assert_eq!(tight.admission_stats().used, crate::admission::Resources::default());
    rt.kill_all().await;
    let _ = std::fs::remove_dir_all(dir);
}
