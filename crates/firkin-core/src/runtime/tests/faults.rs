//! Engine failures over the fakes: a failed checkpoint keeps the sandbox running and holds
//! nothing new; a failed destroy is reported beside the error it cleaned up after, and never
//! keeps capacity or a network slot (the leftover engine sandbox is reconciliation's).

use super::*;
use crate::admission::Resources;
use crate::lifecycle::SandboxState;

#[tokio::test]
async fn failed_checkpoint_keeps_the_sandbox_running_and_holds_nothing_new() {
    let engine = Arc::new(FakeEngine::default());
    let (rt, dir) = runtime(14, engine.clone());
    agents(14, 8).await;
    let rec = rt.create(req()).await.unwrap();
    let id = rec.id.to_string();
    rt.drain_teardowns().await; // the template build's sandbox and probe
    let (used, slots) = (rt.admission_stats().used, rt.slots().in_use());

    *engine.fail_next_checkpoint.lock().unwrap() = true;
    let err = rt.pause(&id).await.unwrap_err();
    assert!(matches!(err, RuntimeError::Engine { op: Operation::Pause, .. }), "{err}");
    assert!(err.to_string().starts_with("pause of sandbox"), "{err}");
    *engine.fail_next_checkpoint.lock().unwrap() = true;
    let err = rt.create_snapshot(&id, None, None).await.unwrap_err();
    assert!(matches!(err, RuntimeError::Engine { op: Operation::Snapshot, .. }), "{err}");

    rt.drain_teardowns().await;
    assert_eq!(rt.get_visible(&id).unwrap().state, SandboxState::Running);
    assert!(rt.route(&id).is_some(), "traffic flows again");
    assert_eq!((rt.admission_stats().used, rt.slots().in_use()), (used, slots));
    assert!(!rt.config().layout.pause_image(&id).exists(), "no image is published");
    assert!(rt.list_snapshots(Some(&id), None).is_empty());
    assert_eq!(engine.list().unwrap(), vec![id.clone()]);

    rt.kill_and_wait(&id).await.unwrap();
    assert_eq!(rt.admission_stats().used, Resources::default());
    assert_eq!(rt.slots().in_use(), 0);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn failed_destroy_is_kept_beside_the_error_and_leaks_no_capacity() {
    let engine = Arc::new(FakeEngine::default());
    let (rt, dir) = runtime(15, engine.clone()); // no agent answers: every start fails
    *engine.fail_destroy.lock().unwrap() = true;
    let err = rt.create(req()).await.unwrap_err();
    assert!(matches!(err, RuntimeError::WithCleanup { .. }), "{err}");
    assert!(matches!(err.primary(), RuntimeError::NotReady { .. }), "{err}");
    assert!(err.to_string().contains("engine destroy"), "{err}");
    assert_eq!(rt.sandbox_count(), 0);
    assert_eq!(rt.slots().in_use(), 0);
    assert_eq!(rt.admission_stats().used, Resources::default());
    assert_eq!(engine.list().unwrap().len(), 1, "the engine sandbox is left for reconciliation");

    *engine.fail_destroy.lock().unwrap() = false;
    let layout = rt.config().layout.clone();
    drop(rt);
    let report = restarted(layout, engine.clone(), 15).reconcile().await;
    assert_eq!(report.engine_sandboxes, 1);
    assert!(engine.list().unwrap().is_empty());
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn kill_releases_capacity_and_slot_even_when_destroy_fails() {
    let engine = Arc::new(FakeEngine::default());
    let (rt, dir) = runtime(16, engine.clone());
    agents(16, 8).await;
    let rec = rt.create(req()).await.unwrap();
    rt.drain_teardowns().await; // the template build's sandbox and probe, before destroy fails
    *engine.fail_destroy.lock().unwrap() = true;
    rt.kill_and_wait(rec.id.as_str()).await.unwrap();
    assert!(rt.route(rec.id.as_str()).is_none());
    assert_eq!(rt.admission_stats().used, Resources::default());
    assert_eq!(rt.slots().in_use(), 0);
    assert_eq!(engine.list().unwrap(), vec![rec.id.to_string()], "left for reconciliation");
    let _ = std::fs::remove_dir_all(dir);
}
