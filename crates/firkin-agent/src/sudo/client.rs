//! The `sudo` command: what the agent binary does when it is invoked as `sudo` (through the
//! `/usr/bin/sudo` link, see `super::link`). A small blocking client without tokio: it parses
//! the command line, connects to the agent's sudo socket, sends the request with its own stdin,
//! stdout and stderr attached, relays the signals sudo relays while the command runs, and exits
//! with the command's status (128 + the signal number when the command was killed by one).

use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use nix::fcntl::{fcntl, FcntlArg};
use nix::sys::signal::SigSet;

use super::options::{self, Invocation, USAGE};
use super::wire::{self, ClientMessage, Reply, Request, WireError, FORWARDED_SIGNALS, PROTOCOL};

/// Why the client could not get an answer from the agent.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the firkin agent's sudo socket {path}: {source}")]
    Connect {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("reading the working directory: {0}")]
    Cwd(#[source] io::Error),
    #[error("opening /dev/null for a closed standard descriptor: {0}")]
    DevNull(#[source] io::Error),
    #[error("blocking the signals to forward: {0}")]
    Signals(#[source] nix::Error),
    #[error(transparent)]
    Wire(#[from] WireError),
    #[error("the firkin agent closed the sudo socket without an exit status")]
    NoReply,
}

/// The names this binary answers to as sudo (`sudoedit` is Debian's link to `sudo`).
const NAMES: &[&str] = &["sudo", "sudoedit"];

/// Whether `argv0` names sudo (the agent runs as the sudo client then).
pub fn invoked_as_sudo(argv0: &OsString) -> bool {
    Path::new(argv0).file_name().and_then(|n| n.to_str()).is_some_and(|n| NAMES.contains(&n))
}

/// Runs the sudo client; returns the exit status.
pub fn main(mut argv: Vec<OsString>) -> i32 {
    let argv0 = if argv.is_empty() { OsString::from("sudo") } else { argv.remove(0) };
    let mut args: Vec<String> = argv.iter().map(|a| a.to_string_lossy().into_owned()).collect();
    if Path::new(&argv0).file_name().is_some_and(|n| n == "sudoedit") {
        args.insert(0, "-e".into());
    }
    let invocation = match options::parse(&args) {
        Ok(invocation) => invocation,
        Err(e) => {
            eprintln!("sudo: {e}");
            return 1;
        }
    };
    match invocation {
        Invocation::Help => {
            print!("{USAGE}");
            0
        }
        Invocation::Version => {
            println!(
                "firkin sudo {}: runs commands through the firkin agent (gVisor has no setuid)",
                env!("CARGO_PKG_VERSION")
            );
            0
        }
        Invocation::ResetTimestamp => 0,
        other => match request(other) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("sudo: {e}");
                1
            }
        },
    }
}

/// The agent's sudo socket (`FIRKIN_AGENT_SUDO_SOCKET` overrides it, for tests on a host).
fn socket_path() -> PathBuf {
    std::env::var_os(super::SOCKET_ENV).map_or_else(|| PathBuf::from(super::SOCKET_PATH), PathBuf::from)
}

/// Sends `invocation` to the agent and waits for its reply.
fn request(invocation: Invocation) -> Result<i32, ClientError> {
    // Blocked before anything else, so none is lost: they stay pending until the relay thread
    // takes them.
    let mut signals = SigSet::empty();
    FORWARDED_SIGNALS.iter().for_each(|s| signals.add(*s));
    signals.thread_block().map_err(ClientError::Signals)?;
    // Before any descriptor is opened: a closed 0, 1 or 2 must not be taken by the socket.
    let (stdio, _substitutes) = standard_descriptors()?;
    let path = socket_path();
    let sock = UnixStream::connect(&path).map_err(|source| ClientError::Connect { path, source })?;
    let cwd = std::env::current_dir().map_err(ClientError::Cwd)?;
    let request = Request {
        protocol: PROTOCOL,
        invocation,
        cwd: cwd.to_string_lossy().into_owned(),
        env: std::env::vars_os()
            .map(|(k, v)| (k.to_string_lossy().into_owned(), v.to_string_lossy().into_owned()))
            .collect(),
    };
    wire::send_request(&sock, &request, stdio)?;
    if let Ok(relay) = sock.try_clone() {
        let _ = std::thread::Builder::new().name("sudo-signals".into()).spawn(move || loop {
            let Ok(signal) = signals.wait() else { return };
            if wire::write_frame(&relay, &ClientMessage::Signal(signal as i32)).is_err() {
                return;
            }
        });
    }
    match wire::read_frame::<Reply>(&sock)?.ok_or(ClientError::NoReply)? {
        Reply::Exited(code) => Ok(code),
        Reply::Signaled(signo) => Ok(128 + signo),
        Reply::Done { stdout, code } => {
            let mut out = io::stdout().lock();
            let _ = out.write_all(stdout.as_bytes()).and_then(|()| out.flush());
            Ok(code)
        }
        Reply::Failed(message) => {
            eprintln!("sudo: {message}");
            Ok(1)
        }
    }
}

/// Descriptors 0, 1 and 2, with `/dev/null` standing in for any that is closed (the returned
/// files keep those open until the request is sent).
fn standard_descriptors() -> Result<([RawFd; 3], Vec<File>), ClientError> {
    let mut fds = [0, 1, 2];
    let mut substitutes = Vec::new();
    for fd in &mut fds {
        if fcntl(*fd, FcntlArg::F_GETFD).is_err() {
            let null =
                File::options().read(true).write(true).open("/dev/null").map_err(ClientError::DevNull)?;
            *fd = null.as_raw_fd();
            substitutes.push(null);
        }
    }
    Ok((fds, substitutes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_to_sudo_by_any_path() {
        assert!(invoked_as_sudo(&"sudo".into()));
        assert!(invoked_as_sudo(&"/usr/bin/sudo".into()));
        assert!(invoked_as_sudo(&"sudoedit".into()));
        assert!(!invoked_as_sudo(&"/opt/firkin/firkin-agent".into()));
        assert!(!invoked_as_sudo(&"sudo.setuid".into()));
    }

    #[test]
    fn informational_forms_need_no_agent() {
        assert_eq!(main(vec!["sudo".into(), "-k".into()]), 0);
        assert_eq!(main(vec!["sudo".into(), "-K".into()]), 0);
        assert_eq!(main(vec!["sudo".into(), "-V".into()]), 0);
        assert_eq!(main(vec!["sudo".into(), "--bogus".into()]), 1);
        assert_eq!(main(vec!["sudoedit".into(), "/etc/hosts".into()]), 1);
    }
}
