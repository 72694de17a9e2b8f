//! Agent-mediated `sudo`. gVisor does not implement set-user-ID bits (every process behaves as
//! if `PR_SET_NO_NEW_PRIVS` were set), so Debian's setuid `sudo` can never become root inside a
//! sandbox. The agent already runs as root there, and the E2B API already lets any caller run
//! commands as root, so `sudo` asks the agent instead (`docs/security.md` has the reasoning and
//! its limits):
//!
//! - `link`: at start, `/usr/bin/sudo` becomes a symlink to the agent binary;
//! - `client`: the agent binary invoked as `sudo` parses the command line (`options`), passes its
//!   stdin, stdout and stderr, arguments, working directory and environment over the sudo
//!   socket (`wire`), relays signals and exits with the command's status;
//! - `server`: the agent serves that socket on blocking threads, checks the caller (kernel-checked
//!   `SCM_CREDENTIALS`), builds the command's environment as sudo's `env_reset` does (`env`) and
//!   runs it as the target user with the caller's descriptors through the agent's spawn and
//!   reaper machinery.

pub mod client;
mod env;
mod link;
mod options;
mod server;
mod wire;

use std::path::Path;
use std::sync::Arc;

use crate::context::ConfigCell;
use crate::reaper::Reaper;

pub use link::SUDO_PATH;

/// The socket the agent serves sudo on (in a root-owned directory; the socket is mode 0666).
pub const SOCKET_PATH: &str = "/run/firkin/sudo.sock";

/// Overrides [`SOCKET_PATH`] for both the agent and the client (tests on a host).
pub const SOCKET_ENV: &str = "FIRKIN_AGENT_SUDO_SOCKET";

/// Sets sudo up at agent start: makes `link` (when given) point at this binary, then serves
/// `socket`. Failures are logged and leave envd serving without sudo.
pub fn start(socket: &Path, link: Option<&Path>, reaper: Arc<Reaper>, config: Arc<ConfigCell>) {
    if let Some(link) = link {
        let installed = std::env::current_exe()
            .map_err(|e| format!("locating the agent binary: {e}"))
            .and_then(|agent| link::install(link, &agent).map_err(|e| e.to_string()));
        match installed {
            Ok(true) => tracing::info!(link = %link.display(), "sudo now runs through the agent"),
            Ok(false) => tracing::debug!(link = %link.display(), "sudo link already in place"),
            Err(e) => tracing::warn!(error = %e, "sudo will not run through the agent"),
        }
    }
    match server::start(socket, reaper, config) {
        Ok(()) => tracing::debug!(socket = %socket.display(), "serving sudo"),
        Err(e) => tracing::error!(error = %e, "sudo socket not served"),
    }
}
