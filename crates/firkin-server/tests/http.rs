//! The HTTP edge end to end over the fake engine/network and a loopback fake agent:
//! statuses, E2B error JSON, auth, pagination and sandbox-gone answers.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use firkin_core::config::{Layout, RuntimeConfig};
use firkin_core::engine::fake::FakeEngine;
use firkin_core::fake_agent::fake_agent;
use firkin_core::network::fake::FakeNetwork;
use firkin_core::runtime::Runtime;
use firkin_server::AppState;
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

const KEY: &str = "test-key";

async fn app(tag: u8) -> (Router, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("firkin-http-test-{}-{tag}", std::process::id()));
    let layout = Layout { state_dir: dir.join("state"), cache_dir: dir.join("cache") };
    std::fs::create_dir_all(layout.rootfs_dir(firkin_core::template::BASE_ROOTFS).join("bin")).unwrap();
    let mut cfg = RuntimeConfig::new(layout, "/nonexistent/agent");
    cfg.disk_floors = firkin_core::runtime::disk::DiskFloors { restore_mb: 0, snapshot_mb: 0, warm_mb: 0 };
    cfg.ready_timeout = Duration::from_millis(500);
    let base = Ipv4Addr::new(127, 202, tag, 0);
    for slot in 0..10u32 {
        let (_, ip) = firkin_core::network::slots::slot_addrs(base, slot);
        fake_agent(ip).await;
    }
    let rt = Runtime::new(cfg, Arc::new(FakeEngine::default()), Arc::new(FakeNetwork::at(base)));
    (firkin_server::app(AppState::new(rt, KEY.into())), dir)
}

async fn call(
    app: &Router,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (StatusCode, axum::http::HeaderMap, Value) {
    let mut b = Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let resp = app.clone().oneshot(b.body(Body::from(body.to_owned())).unwrap()).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let json = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into()))
    };
    (status, headers, json)
}

fn assert_e2b_error(v: &Value, code: u16) {
    assert_eq!(v["code"].as_u64(), Some(u64::from(code)), "{v}");
    assert!(v["message"].is_string(), "{v}");
}

const AUTH: (&str, &str) = ("x-api-key", KEY);

#[tokio::test]
async fn auth_is_required_and_errors_are_e2b_json() {
    let (app, dir) = app(1).await;
    let (s, _, v) = call(&app, "GET", "/v2/sandboxes", &[], "").await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_e2b_error(&v, 401);
    let (s, _, v) = call(&app, "GET", "/v2/sandboxes", &[("x-api-key", "wrong")], "").await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_e2b_error(&v, 401);
    let (s, _, v) = call(&app, "POST", "/v2/sandboxes", &[AUTH], "{not json").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_e2b_error(&v, 400);
    let (s, _, v) =
        call(&app, "POST", "/v2/sandboxes", &[AUTH], r#"{"templateID":"nope","metadata":{},"envVars":{}}"#)
            .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_e2b_error(&v, 404);
    let (s, _, v) =
        call(&app, "POST", "/v2/sandboxes", &[AUTH], r#"{"templateID":"base","timeout":-5}"#).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_e2b_error(&v, 400);
    let (_, _, v) = call(&app, "GET", "/v2/sandboxes", &[AUTH], "").await;
    assert_eq!(v.as_array().map(Vec::len), Some(0), "failed creates must leave nothing: {v}");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn lifecycle_statuses_match_the_sdk_contract() {
    let (app, dir) = app(2).await;
    let body = r#"{"templateID":"base","timeout":120,"metadata":{"k":"v"},"envVars":{"A":"1"}}"#;
    let (s, _, v) = call(&app, "POST", "/v2/sandboxes", &[AUTH], body).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let id = v["sandboxID"].as_str().unwrap().to_owned();
    assert_eq!(v["envdVersion"], "0.6.13");
    assert!(v["envdAccessToken"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(v["clientID"].is_string());

    let (s, _, v) = call(&app, "GET", &format!("/sandboxes/{id}"), &[AUTH], "").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["state"], "running");
    assert_eq!(v["metadata"]["k"], "v");
    for key in ["startedAt", "endAt", "cpuCount", "memoryMB", "diskSizeMB", "templateID", "clientID"] {
        assert!(!v[key].is_null(), "missing {key}: {v}");
    }

    let (s, _, _) = call(&app, "GET", "/health", &[("e2b-sandbox-id", &id)], "").await;
    assert_eq!(s, StatusCode::NO_CONTENT, "proxied to the agent");
    let (s, _, _) = call(&app, "POST", "/init", &[("e2b-sandbox-id", &id)], "{}").await;
    assert_eq!(s, StatusCode::NOT_FOUND, "/init is never proxied from clients");

    let (s, _, _) =
        call(&app, "POST", &format!("/sandboxes/{id}/timeout"), &[AUTH], r#"{"timeout":30}"#).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _, v) =
        call(&app, "POST", &format!("/v2/sandboxes/{id}/connect"), &[AUTH], r#"{"timeout":10}"#).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["sandboxID"], id.as_str());
    let (s, _, _) = call(&app, "POST", &format!("/sandboxes/{id}/pause"), &[AUTH], "{}").await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _, v) = call(&app, "POST", &format!("/sandboxes/{id}/pause"), &[AUTH], "{}").await;
    assert_eq!(s, StatusCode::CONFLICT, "already paused: the SDK returns False");
    assert_e2b_error(&v, 409);
    let (_, _, v) = call(&app, "GET", &format!("/sandboxes/{id}"), &[AUTH], "").await;
    assert_eq!(v["state"], "paused");
    let (s, _, _) = call(&app, "GET", "/health", &[("e2b-sandbox-id", &id)], "").await;
    assert_eq!(s, StatusCode::BAD_GATEWAY, "no traffic while paused");
    let (s, _, v) = call(&app, "POST", &format!("/v2/sandboxes/{id}/connect"), &[AUTH], "{}").await;
    assert_eq!(s, StatusCode::CREATED, "resumed: {v}");
    let (s, _, _) = call(&app, "GET", "/health", &[("e2b-sandbox-id", &id)], "").await;
    assert_eq!(s, StatusCode::NO_CONTENT, "traffic flows again after resume");

    let (s, _, _) = call(&app, "DELETE", &format!("/sandboxes/{id}"), &[AUTH], "").await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _, v) = call(&app, "DELETE", &format!("/sandboxes/{id}"), &[AUTH], "").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_e2b_error(&v, 404);
    let (s, _, v) = call(&app, "GET", &format!("/sandboxes/{id}"), &[AUTH], "").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_e2b_error(&v, 404);
    let (s, _, v) = call(&app, "POST", &format!("/v2/sandboxes/{id}/connect"), &[AUTH], "{}").await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
    for port in ["49983", "49999", "8080"] {
        let (s, _, v) =
            call(&app, "GET", "/health", &[("e2b-sandbox-id", &id), ("e2b-sandbox-port", port)], "").await;
        assert_eq!(s, StatusCode::BAD_GATEWAY);
        assert_eq!(v["message"], "The sandbox was not found");
        assert_eq!(v["sandboxId"], id.as_str());
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn list_filters_and_paginates() {
    let (app, dir) = app(3).await;
    let mut ids = Vec::new();
    for i in 0..3 {
        let body = format!(r#"{{"templateID":"base","metadata":{{"group":"g","i":"{i}"}},"envVars":{{}}}}"#);
        let (s, _, v) = call(&app, "POST", "/v2/sandboxes", &[AUTH], &body).await;
        assert_eq!(s, StatusCode::CREATED);
        ids.push(v["sandboxID"].as_str().unwrap().to_owned());
    }
    let (_, h, v) = call(&app, "GET", "/v2/sandboxes?limit=2", &[AUTH], "").await;
    assert_eq!(v.as_array().unwrap().len(), 2);
    let token = h.get("x-next-token").unwrap().to_str().unwrap().to_owned();
    let (_, h, v2) =
        call(&app, "GET", &format!("/v2/sandboxes?limit=2&nextToken={token}"), &[AUTH], "").await;
    assert_eq!(v2.as_array().unwrap().len(), 1);
    assert!(h.get("x-next-token").is_none());
    let mut seen: Vec<String> = v
        .as_array()
        .unwrap()
        .iter()
        .chain(v2.as_array().unwrap())
        .map(|s| s["sandboxID"].as_str().unwrap().to_owned())
        .collect();
    seen.sort();
    ids.sort();
    assert_eq!(seen, ids);

    let (_, _, v) = call(&app, "GET", "/v2/sandboxes?metadata=i%3D1", &[AUTH], "").await;
    assert_eq!(v.as_array().unwrap().len(), 1);
    assert_eq!(v[0]["metadata"]["i"], "1");
    let (_, _, v) = call(&app, "GET", "/v2/sandboxes?state=paused", &[AUTH], "").await;
    assert_eq!(v.as_array().unwrap().len(), 0);
    let (s, _, v) = call(&app, "GET", "/v2/sandboxes?state=zombie", &[AUTH], "").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_e2b_error(&v, 400);
    let _ = std::fs::remove_dir_all(dir);
}
