//! Egress policies: what reaches the network seam on create, update, pause/resume, snapshot
//! and fork.

use std::sync::Arc;
use std::time::Duration;

use super::{agents, req, runtime_and_network};
use crate::engine::fake::FakeEngine;
use crate::network::EgressPolicy;
use crate::runtime::{CreateSandbox, RuntimeError};

const TAG: u8 = 21;

fn closed_but(allow: &str) -> EgressPolicy {
    EgressPolicy::from_e2b(Some(false), &[allow.to_owned()], &[]).unwrap()
}

#[tokio::test]
async fn policies_follow_the_sandbox_through_its_life() {
    let (rt, net, dir) = runtime_and_network(TAG, Arc::new(FakeEngine::default()));
    agents(TAG, 12).await;
    let policy = closed_but("web.example.test");
    let rec = rt.create(CreateSandbox { egress: Some(policy.clone()), ..req() }).await.unwrap();
    let id = rec.id.to_string();
    assert_eq!(net.policy(&id), Some(policy.clone()), "in force from the attach on");
    assert_eq!(rt.get_visible(&id).unwrap().egress, policy);

    // An update replaces the whole policy, on the network and in the record.
    let open = EgressPolicy::default();
    rt.update_network(&id, open.clone()).await.unwrap();
    assert_eq!(net.policy(&id), Some(open));
    let denied = EgressPolicy::from_e2b(None, &[], &["198.18.0.11".into()]).unwrap();
    rt.update_network(&id, denied.clone()).await.unwrap();

    // Paused: the update is kept and in force again after the resume.
    rt.pause(&id).await.unwrap();
    rt.drain_teardowns().await;
    assert_eq!(net.policy(&id), None, "detached while paused");
    rt.update_network(&id, policy.clone()).await.unwrap();
    rt.connect(&id, Some(Duration::from_secs(30))).await.unwrap();
    assert_eq!(net.policy(&id), Some(policy.clone()));

    // Snapshots carry it; a child inherits unless its create sets one.
    rt.create_snapshot(&id, Some("golden-egress".into()), None).await.unwrap();
    let child = rt.create(CreateSandbox { template_id: "golden-egress".into(), ..req() }).await.unwrap();
    assert_eq!(net.policy(child.id.as_str()), Some(policy.clone()));
    let own = CreateSandbox { template_id: "golden-egress".into(), egress: Some(denied.clone()), ..req() };
    let other = rt.create(own).await.unwrap();
    assert_eq!(net.policy(other.id.as_str()), Some(denied));
    let kids = rt.fork(&id, 1, None).await.unwrap();
    let kid = kids[0].as_ref().unwrap();
    assert_eq!(net.policy(kid.id.as_str()), Some(policy));

    assert!(matches!(
        rt.update_network("nosuchsandbox", EgressPolicy::default()).await,
        Err(RuntimeError::SandboxNotFound(_))
    ));
    rt.kill_all().await;
    rt.drain_teardowns().await;
    assert_eq!(net.policy(&id), None, "a killed sandbox's rules are gone");
    let _ = std::fs::remove_dir_all(dir);
}
