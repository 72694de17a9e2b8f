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
    let net = Arc::new(FakeNetwork::at(Ipv4Addr::new(127, 201, 13, 0)));
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

/// One `/init` a [`recording_agent`] received: the token it was shown and the request.
#[derive(Debug, Clone)]
struct SeenInit {
    presented: Option<String>,
    req: firkin_wire::agent::InitRequest,
}

/// Like `fake_agent` at `ip`, but records every `/init` in `seen`.
async fn recording_agent(ip: Ipv4Addr, seen: Arc<std::sync::Mutex<Vec<SeenInit>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = std::net::SocketAddr::from((ip, firkin_wire::agent::ENVD_PORT));
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                // Headers, then as much body as content-length says.
                let (head, body) = loop {
                    let n = sock.read(&mut chunk).await.unwrap_or(0);
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).to_string();
                    if let Some((head, body)) = text.split_once("\r\n\r\n") {
                        let want = head
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().to_owned())
                            })
                            .and_then(|v| v.parse::<usize>().ok())
                            .unwrap_or(0);
                        if body.len() >= want || n == 0 {
                            break (head.to_owned(), body.to_owned());
                        }
                    } else if n == 0 {
                        return;
                    }
                };
                let resp = if head.starts_with("GET /health") {
                    "HTTP/1.1 204 No Content\r\nx-firkin-agent-protocol: 1\r\nconnection: close\r\n\r\n"
                        .to_owned()
                } else {
                    let presented = head.lines().find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("x-access-token").then(|| v.trim().to_owned())
                    });
                    let req = serde_json::from_str(&body).unwrap();
                    seen.lock().unwrap().push(SeenInit { presented, req });
                    let body = r#"{"protocol":1,"agentVersion":"fake","envdVersion":"0.6.13"}"#;
                    format!("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len())
                };
                let _ = sock.write_all(resp.as_bytes()).await;
            });
        }
    });
}

#[tokio::test]
async fn warm_entries_are_rekeyed_and_checkout_presents_the_new_token() {
    let engine = Arc::new(FakeEngine::default());
    let (rt, dir) = runtime(20, engine.clone());
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    for slot in 0..16 {
        let ip = crate::network::slots::slot_addrs(Ipv4Addr::new(127, 201, 20, 0), slot).1;
        recording_agent(ip, seen.clone()).await;
    }
    rt.set_warm_target("base", 1);
    rt.start_warm_pool();
    eventually("one warm entry", || ready(&rt) == 1).await;
    let warm = rt.warm_ids().remove(0);
    let template_token = rt.template_artifact("base").await.unwrap().unwrap().access_token;
    let inits_of = |id: &str| -> Vec<SeenInit> {
        seen.lock().unwrap().iter().filter(|i| i.req.sandbox_id == id).cloned().collect()
    };

    let rekey = inits_of(&warm);
    assert_eq!(rekey.len(), 1, "a warm entry is re-keyed right after its restore: {rekey:?}");
    assert_eq!(rekey[0].presented.as_deref(), Some(template_token.as_str()), "shown the template's token");
    let fresh = rekey[0].req.access_token.clone();
    assert!(fresh.len() >= 32 && fresh != template_token, "a fresh token, not the template's");

    let rec = rt.create(req()).await.unwrap();
    assert_eq!(rec.id.as_str(), warm, "the create got the warm sandbox");
    let inits = inits_of(&warm);
    assert_eq!(inits.len(), 2);
    assert_eq!(inits[1].presented.as_deref(), Some(fresh.as_str()), "checkout presents the re-keyed token");
    assert_eq!(inits[1].req.access_token, rec.access_token, "and gives the sandbox its own");
    assert_ne!(rec.access_token, fresh);

    rt.stop_warm_pool().await;
    rt.kill_all().await;
    assert!(engine.list().unwrap().is_empty());
    let _ = std::fs::remove_dir_all(dir);
}
