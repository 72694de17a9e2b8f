//! `firkin-agent`: runs as PID 1 inside every firkin sandbox and serves envd (Connect RPC
//! `process.Process` / `filesystem.Filesystem`, `/files`, `/health`, `/envs`, `/metrics`)
//! plus the host-only `/init`.
//!
//! Layout: `app` (route table, handler state), `context` (what the handlers share: sandbox
//! config, request user, RPC call context), `auth` (token gate), `init` (`/init`, `/health`,
//! `/envs`), `rpc` (method dispatch), `process/*` (spawn, pty, registry, exit mapping, sink),
//! `filesystem/*` (EntryInfo, xattrs, watchers), `files` (`/files`), `metrics`, `connect`
//! (Connect framing and error codes), `json` (proto3 JSON value rules), `http_error` (plain-HTTP
//! error body), `listener` (accept and connection threads; nothing in epoll), `portforward`
//! (loopback-only servers reachable from outside), `reaper` (the single `waitpid` owner, see its
//! docs for the PID-1 design), `oom/*` (the sandbox's OOM killer: the memory watchdog thread,
//! `/proc` parsing, victim selection), `sudo/*` (agent-mediated sudo: the `/usr/bin/sudo` link, the
//! client this binary becomes when invoked as `sudo`, the sudo socket's server, option parsing,
//! environment, wire format), `identity` (a boot id per sandbox), `resolv` (resolv.conf → the
//! sandbox's gateway), `user`, `paths`.
//!
//! Run on a host for testing (as root, so user switching works):
//! `firkin-agent --listen 127.0.0.1:53983`, then `POST /init` with an `InitRequest`. Localhost
//! port forwarding stays off there unless `--forward-localhost` asks for it.

mod app;
mod auth;
mod connect;
mod context;
mod files;
mod filesystem;
mod http_error;
mod identity;
mod init;
mod json;
mod listener;
mod metrics;
mod oom;
mod paths;
mod portforward;
mod process;
mod reaper;
mod resolv;
mod rpc;
mod sudo;
mod user;

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use tracing_subscriber::EnvFilter;

/// Command line of the agent.
#[derive(Debug, Parser)]
#[command(name = "firkin-agent", version, about)]
struct Args {
    /// Address to serve envd on.
    #[arg(long, env = "FIRKIN_AGENT_LISTEN", default_value_t = SocketAddr::from(([0, 0, 0, 0], firkin_wire::agent::ENVD_PORT)))]
    listen: SocketAddr,

    /// Unix socket the `sudo` client talks to.
    #[arg(long, env = sudo::SOCKET_ENV, default_value = sudo::SOCKET_PATH)]
    sudo_socket: PathBuf,

    /// Path to make a symlink to this binary, so that `sudo` runs through the agent. Default:
    /// /usr/bin/sudo when the agent is PID 1 (inside a sandbox); none otherwise, so a test run
    /// on a host never touches the host's sudo.
    #[arg(long, env = "FIRKIN_AGENT_SUDO_LINK")]
    sudo_link: Option<PathBuf>,

    /// Forward loopback-only ports to the external address (`portforward`) even when not PID 1.
    /// Inside a sandbox (PID 1) it always does; on a host it would publish the host's
    /// loopback-only services on the host's addresses, so there it does only when asked.
    #[arg(long, env = "FIRKIN_AGENT_FORWARD_LOCALHOST")]
    forward_localhost: bool,

    /// The sandbox's memory in MiB (set by the host's OCI spec). As PID 1 of a sandbox, the
    /// agent then kills the largest process when the sandbox runs out of it (`oom`).
    #[arg(long, env = oom::MEMORY_ENV)]
    memory_mb: Option<u32>,
}

fn main() -> anyhow::Result<()> {
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if argv.first().is_some_and(sudo::client::invoked_as_sudo) {
        std::process::exit(sudo::client::main(argv));
    }
    let args = Args::parse_from(argv);
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("FIRKIN_AGENT_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    // Before the runtime starts any thread: capabilities are per thread.
    if std::process::id() == 1 {
        identity::confine_mount_capability();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(serve(args))
}

async fn serve(args: Args) -> anyhow::Result<()> {
    let reaper = reaper::Reaper::new();
    tokio::spawn(reaper.clone().run());
    let state = app::AppState::new(reaper.clone());
    let config = state.config.clone();
    let processes = state.processes.clone();
    let app = app::router(state);
    // First, so that a second agent started by mistake fails here before touching sudo.
    let listener = listener::BlockingAcceptListener::bind(args.listen)?;
    let sudo_link = args.sudo_link.or_else(|| (std::process::id() == 1).then(|| sudo::SUDO_PATH.into()));
    sudo::start(&args.sudo_socket, sudo_link.as_deref(), reaper, config);
    portforward::start(args.forward_localhost);
    oom::start(args.memory_mb, move || processes.start_pid());
    tracing::info!(addr = %args.listen, pid = std::process::id(), "firkin-agent listening");
    axum::serve(listener, app).await?;
    Ok(())
}
