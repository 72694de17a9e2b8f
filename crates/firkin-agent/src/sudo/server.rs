//! The agent's side of sudo: serves the sudo socket on blocking threads (never tokio's epoll,
//! see `crate::listener`), decides who may use it, and runs each command as its target user
//! through the agent's own spawn and reaper machinery (`crate::process::spawn`,
//! `crate::reaper`: the reaper stays the only `waitpid` caller).
//!
//! Per connection (one thread, plus one while the command runs):
//! 1. the caller is who the kernel-checked `SCM_CREDENTIALS` of the request say (see
//!    `super::wire` for why not `SO_PEERCRED`); allowed are root, the agent's own uid, the
//!    sandbox's default user (E2B's `user`, to whom E2B's sudoers grant `NOPASSWD: ALL`) and
//!    members of group `sudo` (Debian's `%sudo` rule); everyone else is refused as sudo would;
//! 2. the request is planned: target user (`-u`, default root), program resolved in
//!    [`SECURE_PATH`] (or the caller's cwd for a path), shell for `-s`/`-i`, working directory
//!    (the caller's; the target's home for `-i`), environment (`super::env`);
//! 3. the command is spawned with the caller's stdin, stdout and stderr, leading its own process
//!    group; signals the client forwards go to that group, and if the client goes away before
//!    the command ends (killed, e.g. by an E2B `commands.kill`), the group is killed with
//!    SIGKILL: a command never outlives its sudo;
//! 4. the exit status (or signal) is sent back and the connection closed.
//!
//! The listening socket and the threads blocked in `accept`/`read` are saved by a checkpoint
//! and carry on after a restore, so every sandbox restored from a template serves sudo.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::io;
use std::net::Shutdown;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::{Gid, Group, Pid, Uid, User};

use super::env::{self, Caller, EnvPlan, Target, SECURE_PATH};
use super::options::{Invocation, RunOptions, ShellMode};
use super::wire::{self, ClientMessage, Reply, WireError, FORWARDED_SIGNALS, PROTOCOL};
use crate::context::ConfigCell;
use crate::process::spawn::{self, ChildStdio, SpawnSpec};
use crate::reaper::{ExitOutcome, Reaper};
use crate::user::SandboxUser;

/// How long a client may take to send its request after connecting.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The group whose members may use sudo (Debian's `%sudo ALL=(ALL:ALL) ALL`).
const SUDO_GROUP: &str = "sudo";

/// Why the sudo socket could not be served.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("preparing the sudo socket directory {dir}: {source}")]
    Dir {
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} exists and is not a socket; not replacing it")]
    NotASocket { path: PathBuf },
    #[error("binding the sudo socket {path}: {source}")]
    Bind {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("starting the sudo accept thread: {0}")]
    Thread(#[source] io::Error),
}

/// Why a request got no command run; the message is what the client prints after `sudo: `.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error(transparent)]
    Wire(#[from] WireError),
    #[error("this sudo speaks protocol {0}, the agent {PROTOCOL}")]
    Protocol(u32),
    #[error("you do not exist in the passwd database (uid {0})")]
    UnknownCaller(u32),
    #[error(
        "{0} is not allowed to run sudo in this sandbox (allowed: root, the sandbox's default user \
         and members of group sudo)"
    )]
    NotAllowed(String),
    #[error("unknown user {0}")]
    UnknownUser(String),
    #[error("{0}: command not found")]
    CommandNotFound(String),
    #[error("unable to change directory to {0}")]
    NoDirectory(String),
    #[error("unable to execute {program}: {source}")]
    Spawn {
        program: String,
        #[source]
        source: io::Error,
    },
}

/// Binds `path` (mode 0666, in a root-owned 0755 directory) and serves it on a thread.
pub fn start(path: &Path, reaper: Arc<Reaper>, config: Arc<ConfigCell>) -> Result<(), ServeError> {
    let listener = bind(path)?;
    let spawned = std::thread::Builder::new().name("sudo-accept".into()).spawn(move || loop {
        match listener.accept() {
            Ok((conn, _)) => {
                let (reaper, config) = (reaper.clone(), config.clone());
                let serve = move || serve_connection(&conn, &reaper, &config);
                if let Err(e) = std::thread::Builder::new().name("sudo-conn".into()).spawn(serve) {
                    tracing::warn!(error = %e, "cannot serve a sudo connection");
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "sudo socket accept failed");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    });
    spawned.map(drop).map_err(ServeError::Thread)
}

fn bind(path: &Path) -> Result<UnixListener, ServeError> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    let dir_err = |source| ServeError::Dir { dir: dir.to_path_buf(), source };
    std::fs::create_dir_all(dir).map_err(dir_err)?;
    if nix::unistd::geteuid().is_root() {
        std::os::unix::fs::chown(dir, Some(0), Some(0)).map_err(dir_err)?;
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).map_err(dir_err)?;
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            std::fs::remove_file(path).map_err(dir_err)?;
        }
        Ok(_) => return Err(ServeError::NotASocket { path: path.to_path_buf() }),
        Err(_) => {}
    }
    let bind_err = |source| ServeError::Bind { path: path.to_path_buf(), source };
    let listener = UnixListener::bind(path).map_err(bind_err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666)).map_err(bind_err)?;
    Ok(listener)
}

/// Answers one connection and closes it.
fn serve_connection(conn: &UnixStream, reaper: &Reaper, config: &ConfigCell) {
    let reply = match answer(conn, reaper, config) {
        Ok(Some(reply)) => reply,
        Ok(None) => return,
        Err(e) => {
            tracing::info!(error = %e, "sudo request not run");
            Reply::Failed(e.to_string())
        }
    };
    if let Err(e) = wire::write_frame(conn, &reply) {
        tracing::debug!(error = %e, "sudo client left before its reply");
    }
    let _ = conn.shutdown(Shutdown::Both);
}

fn answer(conn: &UnixStream, reaper: &Reaper, config: &ConfigCell) -> Result<Option<Reply>, RequestError> {
    let _ = conn.set_read_timeout(Some(REQUEST_TIMEOUT));
    let Some(wire::Received { request, stdio, caller }) = wire::recv_request(conn)? else {
        return Ok(None);
    };
    let _ = conn.set_read_timeout(None);
    if request.protocol != PROTOCOL {
        return Err(RequestError::Protocol(request.protocol));
    }
    let default_user = config
        .get()
        .map_or_else(|| crate::init::FALLBACK_DEFAULT_USER.to_string(), |c| c.default_user.clone());
    let caller = check_caller(caller.uid(), caller.gid(), &default_user)?;
    let cwd = PathBuf::from(&request.cwd);
    match request.invocation {
        Invocation::Run(options) => {
            let plan = plan_run(&options, &cwd, &request.env, &caller)?;
            run(reaper, plan, stdio, conn).map(Some)
        }
        Invocation::List(options) => list(&caller, &options, &cwd).map(Some),
        Invocation::Validate | Invocation::ResetTimestamp | Invocation::Help | Invocation::Version => {
            Ok(Some(Reply::Done { stdout: String::new(), code: 0 }))
        }
    }
}

/// Who the peer is, if it may use sudo.
fn check_caller(uid: u32, gid: u32, default_user: &str) -> Result<Caller, RequestError> {
    let own = nix::unistd::geteuid().as_raw();
    let name = match User::from_uid(Uid::from_raw(uid)) {
        Ok(Some(user)) => user.name,
        _ if uid == 0 || uid == own => uid.to_string(),
        _ => return Err(RequestError::UnknownCaller(uid)),
    };
    let allowed = uid == 0 || uid == own || name == default_user || in_sudo_group(&name, gid);
    if !allowed {
        return Err(RequestError::NotAllowed(name));
    }
    Ok(Caller { name, uid, gid })
}

fn in_sudo_group(name: &str, gid: u32) -> bool {
    let Ok(Some(group)) = Group::from_name(SUDO_GROUP) else {
        return false;
    };
    let Ok(cname) = CString::new(name) else {
        return false;
    };
    nix::unistd::getgrouplist(&cname, Gid::from_raw(gid)).is_ok_and(|groups| groups.contains(&group.gid))
}

/// The user `-u` names (a name or `#UID`; root when absent) and their login shell.
fn target_user(spec: Option<&str>) -> Result<(SandboxUser, String), RequestError> {
    let spec = spec.unwrap_or("root");
    let found = match spec.strip_prefix('#').and_then(|n| n.parse::<u32>().ok()) {
        Some(uid) => User::from_uid(Uid::from_raw(uid)),
        None => User::from_name(spec),
    };
    match found {
        Ok(Some(u)) => {
            let shell = u.shell.to_string_lossy().into_owned();
            Ok((SandboxUser { name: u.name, uid: u.uid, gid: u.gid, home: u.dir }, shell))
        }
        _ => Err(RequestError::UnknownUser(spec.to_string())),
    }
}

/// Where `command` is: a path (taken against `cwd`) or a name looked up in [`SECURE_PATH`];
/// only executable regular files count, as for sudo.
pub fn resolve_command(command: &str, cwd: &Path) -> Option<PathBuf> {
    let executable =
        |p: &Path| std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
    if command.is_empty() {
        return None;
    }
    if command.contains('/') {
        let path = cwd.join(command);
        return executable(&path).then_some(path);
    }
    SECURE_PATH.split(':').map(|dir| Path::new(dir).join(command)).find(|p| executable(p))
}

/// What to spawn for a request.
struct Plan {
    program: PathBuf,
    arg0: String,
    args: Vec<String>,
    cwd: PathBuf,
    env: BTreeMap<String, String>,
    target: SandboxUser,
}

fn plan_run(
    options: &RunOptions,
    cwd: &Path,
    caller_env: &[(String, String)],
    caller: &Caller,
) -> Result<Plan, RequestError> {
    let (target, target_shell) = target_user(options.user.as_deref())?;
    let shell_args = || match options.command.is_empty() {
        true => Vec::new(),
        false => vec!["-c".to_string(), env::shell_command(&options.command)],
    };
    let (program, arg0, args, cwd) = match options.shell {
        ShellMode::Direct => {
            // The client never sends an empty command; a hand-made request is refused the same.
            let (word, rest) =
                options.command.split_first().ok_or(RequestError::CommandNotFound(String::new()))?;
            let program =
                resolve_command(word, cwd).ok_or_else(|| RequestError::CommandNotFound(word.clone()))?;
            (program, word.clone(), rest.to_vec(), cwd.to_path_buf())
        }
        ShellMode::Shell => {
            let shell = caller_shell(caller_env, caller.uid);
            (PathBuf::from(&shell), shell, shell_args(), cwd.to_path_buf())
        }
        ShellMode::Login => {
            let shell = if target_shell.is_empty() { "/bin/sh".to_string() } else { target_shell.clone() };
            let base = Path::new(&shell).file_name().map(|n| n.to_string_lossy().into_owned());
            let arg0 = format!("-{}", base.unwrap_or_default());
            (PathBuf::from(&shell), arg0, shell_args(), target.home.clone())
        }
    };
    if !spawn::is_dir(&cwd) {
        return Err(RequestError::NoDirectory(cwd.display().to_string()));
    }
    let home = target.home.display().to_string();
    let command_line = env::command_line(&program.display().to_string(), &args);
    let env = env::build(&EnvPlan {
        caller_env,
        caller,
        target: Target { name: &target.name, home: &home, shell: &target_shell },
        preserve: &options.preserve_env,
        set_home: options.set_home,
        login: options.shell == ShellMode::Login,
        command_line: &command_line,
        assignments: &options.assignments,
    });
    Ok(Plan { program, arg0, args, cwd, env, target })
}

/// The shell `-s` runs: the caller's `SHELL`, else their passwd shell, else `/bin/sh`.
fn caller_shell(caller_env: &[(String, String)], uid: u32) -> String {
    let from_env = caller_env.iter().find(|(k, v)| k == "SHELL" && !v.is_empty()).map(|(_, v)| v.clone());
    from_env
        .or_else(|| {
            let user = User::from_uid(Uid::from_raw(uid)).ok().flatten()?;
            Some(user.shell.to_string_lossy().into_owned()).filter(|s| !s.is_empty())
        })
        .unwrap_or_else(|| "/bin/sh".to_string())
}

/// `-l`: what the caller may run, or where `command` is.
fn list(caller: &Caller, options: &RunOptions, cwd: &Path) -> Result<Reply, RequestError> {
    let Some(word) = options.command.first() else {
        let host = nix::unistd::gethostname().map(|h| h.to_string_lossy().into_owned()).unwrap_or_default();
        let stdout = format!(
            "User {} may run the following commands on {host}:\n    (ALL : ALL) NOPASSWD: ALL\n",
            caller.name
        );
        return Ok(Reply::Done { stdout, code: 0 });
    };
    let program = resolve_command(word, cwd).ok_or_else(|| RequestError::CommandNotFound(word.clone()))?;
    let line = env::command_line(&program.display().to_string(), &options.command[1..]);
    Ok(Reply::Done { stdout: format!("{line}\n"), code: 0 })
}

fn lock(m: &Mutex<bool>) -> MutexGuard<'_, bool> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// Spawns the plan with the caller's stdio, forwards signals while it runs, and returns how it
/// ended.
fn run(reaper: &Reaper, plan: Plan, stdio: [OwnedFd; 3], conn: &UnixStream) -> Result<Reply, RequestError> {
    let program = plan.program.display().to_string();
    // The program only: arguments may carry secrets.
    tracing::info!(user = %plan.target.name, %program, "sudo");
    let spec = SpawnSpec {
        cmd: &program,
        arg0: Some(&plan.arg0),
        args: &plan.args,
        env: plan.env,
        cwd: plan.cwd,
        user: &plan.target,
        stdio: ChildStdio::Given(stdio),
    };
    let spawned = spawn::spawn(reaper, &spec)
        .map_err(|source| RequestError::Spawn { program: program.clone(), source })?;
    // Our copies of the caller's descriptors: closed now, or a reader of the caller's stdout
    // would wait for them after the command has exited.
    drop(spec);
    let group = Pid::from_raw(i32::try_from(spawned.pid).unwrap_or(i32::MAX));
    let ended = Arc::new(Mutex::new(false));
    match conn.try_clone() {
        Ok(reader) => {
            let ended = ended.clone();
            let forward = move || forward_signals(&reader, group, &ended);
            if let Err(e) = std::thread::Builder::new().name("sudo-signals".into()).spawn(forward) {
                tracing::warn!(error = %e, "sudo: signals will not be forwarded");
            }
        }
        Err(e) => tracing::warn!(error = %e, "sudo: signals will not be forwarded"),
    }
    let outcome = spawned.exit.blocking_recv().unwrap_or(ExitOutcome::Exited(1));
    *lock(&ended) = true;
    Ok(match outcome {
        ExitOutcome::Exited(code) => Reply::Exited(code),
        ExitOutcome::Signaled { signo, .. } => Reply::Signaled(signo),
    })
}

/// Relays the client's signals to the command's process group until the connection ends; kills
/// the group if the client went away while the command still ran.
fn forward_signals(conn: &UnixStream, group: Pid, ended: &Mutex<bool>) {
    loop {
        let message = wire::read_frame::<ClientMessage>(conn);
        let ended = lock(ended);
        if *ended {
            return;
        }
        match message {
            Ok(Some(ClientMessage::Signal(signo))) => {
                match Signal::try_from(signo).ok().filter(|s| FORWARDED_SIGNALS.contains(s)) {
                    Some(signal) => {
                        let _ = killpg(group, signal);
                    }
                    None => tracing::debug!(signo, "sudo client asked to forward a signal it may not"),
                }
            }
            Ok(None) | Err(_) => {
                tracing::info!(group = group.as_raw(), "sudo client went away; killing its command");
                let _ = killpg(group, Signal::SIGKILL);
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_resolve_in_the_secure_path_or_against_the_cwd() {
        let root = Path::new("/");
        assert_eq!(resolve_command("sh", root).map(|p| p.is_absolute()), Some(true));
        assert_eq!(resolve_command("/bin/sh", root), Some(PathBuf::from("/bin/sh")));
        assert_eq!(resolve_command("bin/sh", root), Some(PathBuf::from("/bin/sh")));
        assert_eq!(resolve_command("no-such-command-firkin", root), None);
        assert_eq!(resolve_command("/etc/passwd", root), None, "not executable");
        assert_eq!(resolve_command("/", root), None, "a directory");
        assert_eq!(resolve_command("", root), None);
    }

    #[test]
    fn root_and_the_agents_own_uid_may_always_use_sudo() {
        let own = nix::unistd::geteuid().as_raw();
        assert!(check_caller(0, 0, "nobody-here").is_ok());
        let me = check_caller(own, nix::unistd::getegid().as_raw(), "nobody-here").unwrap();
        assert_eq!(me.uid, own);
    }

    #[test]
    fn the_default_user_may_and_others_may_not() {
        // `nobody` exists on Debian hosts and in sandboxes; skip where it does not.
        let Ok(Some(nobody)) = User::from_name("nobody") else { return };
        let (uid, gid) = (nobody.uid.as_raw(), nobody.gid.as_raw());
        if uid == nix::unistd::geteuid().as_raw() {
            return;
        }
        assert!(check_caller(uid, gid, "nobody").is_ok());
        match check_caller(uid, gid, "user") {
            Err(RequestError::NotAllowed(name)) => assert_eq!(name, "nobody"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(check_caller(0x7fff_fff0, 0, "user"), Err(RequestError::UnknownCaller(_))));
    }
}
