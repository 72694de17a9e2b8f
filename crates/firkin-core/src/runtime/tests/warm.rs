//! The warm pool over the fakes: checkout is a promotion and the pool refills, a lower target
//! drains it, and active work evicts warm entries when the host is full.

use super::*;
use crate::admission::Resources;
use crate::samples::SampleName;

/// Waits (bounded) until `cond` holds; the supervisor refills on its own schedule.
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while !cond() {
        assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn ready(rt: &Runtime) -> usize {
    rt.warm_stats().ready.get("base").copied().unwrap_or(0)
}

#[tokio::test]
async fn checkout_promotes_a_warm_entry_and_the_pool_refills() {
    let engine = Arc::new(FakeEngine::default());
    let (rt, dir) = runtime(12, engine.clone());
    agents(12, 16).await;
    rt.set_warm_target("base", 1);
    rt.start_warm_pool();
    eventually("one warm entry", || ready(&rt) == 1).await;
    assert_eq!(rt.admission_stats().warm, 1);
    let warm = rt.warm_ids();

    let rec = rt.create(req()).await.unwrap();
    assert_eq!(warm, vec![rec.id.to_string()], "the create got the warm sandbox");
    assert_eq!(rt.samples().snapshot().get(&SampleName::WarmPoolCheckout).map(|s| s.count), Some(1));
    assert!(rt.route(rec.id.as_str()).is_some());
    eventually("the pool refilled", || ready(&rt) == 1 && rt.warm_ids() != warm).await;
    let stats = rt.admission_stats();
    assert_eq!((stats.active, stats.warm), (1, 1));

    rt.set_warm_target("base", 0);
    rt.drain_teardowns().await;
    assert_eq!(ready(&rt), 0, "a target of 0 drains the pool");
    assert_eq!(rt.admission_stats().warm, 0);
    assert_eq!(engine.list().unwrap(), vec![rec.id.to_string()], "only the active sandbox is left");

    rt.stop_warm_pool().await;
    rt.kill_all().await;
    assert_eq!(rt.admission_stats().used, Resources::default());
    assert_eq!(rt.slots().in_use(), 0);
    assert!(engine.list().unwrap().is_empty());
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn active_work_evicts_warm_entries_when_the_host_is_full() {
    let engine = Arc::new(FakeEngine::default());
    let (base, dir) = runtime(13, engine.clone());
    let mut cfg = base.config().clone();
    // Room for exactly two sandboxes of the default size (2 vCPU, 512 MiB, 1 GiB disk).
    cfg.capacity = Resources::new(4, 1024, 2048);
    let net = Arc::new(FakeNetwork { base: Ipv4Addr::new(127, 201, 13, 0) });
    let rt = Runtime::new(cfg, engine.clone(), net);
    agents(13, 16).await;
    rt.set_warm_target("base", 2);
    rt.start_warm_pool();
    eventually("two warm entries", || ready(&rt) == 2).await;
    assert_eq!(rt.admission_stats().used, rt.admission_stats().capacity, "warm entries fill the host");

    let first = rt.create(req()).await.unwrap(); // a checkout: active 1, warm 1
    let snap = rt.create_snapshot(first.id.as_str(), None, None).await.unwrap();
    // Not a template with a pool: this create needs capacity, and only a warm entry has it.
    let second = rt.create(CreateSandbox { template_id: snap.snapshot_id.clone(), ..req() }).await.unwrap();
    rt.drain_teardowns().await;
    let stats = rt.admission_stats();
    assert_eq!((stats.active, stats.warm), (2, 0), "the warm entry was evicted for active work");
    assert_eq!(ready(&rt), 0);
    let mut running = engine.list().unwrap();
    running.sort();
    let mut expected = vec![first.id.to_string(), second.id.to_string()];
    expected.sort();
    assert_eq!(running, expected, "the evicted sandbox is torn down");

    rt.stop_warm_pool().await;
    rt.kill_all().await;
    assert_eq!(rt.admission_stats().used, Resources::default());
    assert_eq!(rt.slots().in_use(), 0);
    assert!(engine.list().unwrap().is_empty());
    drop(base);
    let _ = std::fs::remove_dir_all(dir);
}
