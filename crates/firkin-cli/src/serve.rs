//! `firkin serve`.

use std::net::SocketAddr;

use anyhow::Context;
use clap::Args;
use firkin_server::AppState;

use crate::setup::HostArgs;

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:3000")]
    pub listen: SocketAddr,
    /// API key clients must send as X-API-KEY (generated and printed if absent).
    #[arg(long, env = "FIRKIN_API_KEY")]
    pub api_key: Option<String>,
    /// Sandbox domain in create/connect responses (the SDK's `get_host(port)` gives
    /// `{port}-{sandboxId}.{domain}`, which this server routes). Default `localhost:<port>`:
    /// browsers and curl on this host resolve `*.localhost` to loopback.
    #[arg(long, env = "FIRKIN_DOMAIN")]
    pub domain: Option<String>,
    /// Built-in templates to build at start (the rest are built on first need).
    #[arg(long, env = "FIRKIN_PREPARE_TEMPLATES", default_value = "base,code-interpreter-v1")]
    pub prepare_templates: String,
    #[command(flatten)]
    pub host: HostArgs,
}

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let addr = listener.local_addr()?;
    let domain = args.domain.clone().unwrap_or_else(|| format!("localhost:{}", addr.port()));
    let runtime = args.host.runtime(Some(domain).filter(|d| !d.is_empty()))?;
    let api_key =
        args.api_key.clone().unwrap_or_else(|| format!("firkin_{}", firkin_core::ids::generate_secret()));
    let report = runtime.reconcile().await;
    runtime.start_network().await.context("starting the sandbox network (firewall, DNS forwarder)")?;
    tracing::info!(?report, engine = %runtime.engine_description(), egress = args.host.egress, "runtime ready");
    runtime.start_background();
    // Built-in templates are built (or rebuilt, after an upgrade) in the background; a create
    // of one that is not ready yet waits for its build.
    // The warm pool fills once its template is ready.
    let prep = runtime.clone();
    let prepare = args.prepare_templates.clone();
    tokio::spawn(async move {
        let ids: Vec<&str> = prepare.split(',').map(str::trim).filter(|s| !s.is_empty()).collect();
        prep.prepare_templates(&ids).await;
        prep.start_warm_pool();
    });

    println!("firkin is serving the E2B API on http://{addr}");
    println!("export E2B_API_URL=http://{addr}");
    println!("export E2B_SANDBOX_URL=http://{addr}");
    println!("export E2B_API_KEY={api_key}");

    let app = firkin_server::app(AppState::new(runtime.clone(), api_key));
    // Responses are streamed in small writes (Connect frames, proxied chunks): without
    // TCP_NODELAY each one after the first waits for the client's delayed ACK (~40 ms).
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY on an accepted connection");
        }
    });
    axum::serve(listener, app).with_graceful_shutdown(shutdown_signal()).await?;
    runtime.stop_warm_pool().await;
    let n = runtime.shutdown().await;
    tracing::info!(killed = n, "server stopped; running sandboxes removed, paused ones kept");
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutdown requested");
}
