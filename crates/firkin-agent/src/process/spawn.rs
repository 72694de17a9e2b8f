//! Building and forking a child: clean environment composition, working directory, user
//! switch (uid, gid, supplementary groups), own process group or pty session, and stdio (new
//! pipes, a new pty, or descriptors handed over by a caller, as `crate::sudo` does).

use std::collections::BTreeMap;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use nix::unistd::{Gid, Uid};

use super::pty;
use crate::reaper::{ExitReceiver, Reaper};
use crate::user::SandboxUser;

/// `PATH` every process starts with.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Composes a process environment: base variables of `user`, then the sandbox-wide variables,
/// then the request's; later entries win.
pub fn compose_env(
    user: &SandboxUser,
    sandbox: &BTreeMap<String, String>,
    request: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    env.insert("PATH".to_string(), DEFAULT_PATH.to_string());
    env.insert("HOME".to_string(), user.home.display().to_string());
    env.insert("USER".to_string(), user.name.clone());
    env.insert("LOGNAME".to_string(), user.name.clone());
    env.insert("SHELL".to_string(), "/bin/bash".to_string());
    env.extend(sandbox.iter().map(|(k, v)| (k.clone(), v.clone())));
    env.extend(request.iter().map(|(k, v)| (k.clone(), v.clone())));
    env
}

/// Where a child's stdin, stdout and stderr come from.
pub enum ChildStdio {
    /// New pipes for stdout and stderr, and for stdin when `stdin` (else `/dev/null`); the child
    /// leads its own process group.
    Pipes { stdin: bool },
    /// A new pty of `cols` x `rows` on all three; the child leads its own session.
    Pty { cols: u32, rows: u32 },
    /// These descriptors as stdin, stdout and stderr (duplicated for the child; the caller's
    /// copies stay the caller's); the child leads its own process group.
    Given([OwnedFd; 3]),
}

/// Everything needed to fork one process.
pub struct SpawnSpec<'a> {
    pub cmd: &'a str,
    /// `argv[0]` when it differs from `cmd` (a login shell's `-bash`).
    pub arg0: Option<&'a str>,
    pub args: &'a [String],
    pub env: BTreeMap<String, String>,
    pub cwd: PathBuf,
    pub user: &'a SandboxUser,
    pub stdio: ChildStdio,
}

/// The parent's ends of a freshly spawned child.
pub struct Spawned {
    pub pid: u32,
    pub stdin: Option<OwnedFd>,
    pub stdout: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
    pub pty_master: Option<OwnedFd>,
    pub exit: ExitReceiver,
}

/// The descriptors the parent keeps of a child: its pipes, or the master side of its pty.
#[derive(Default)]
struct ParentEnds {
    stdin: Option<OwnedFd>,
    stdout: Option<OwnedFd>,
    stderr: Option<OwnedFd>,
    pty_master: Option<OwnedFd>,
}

/// Identity the child switches to, prepared in the parent.
#[derive(Clone)]
struct Credentials {
    uid: Uid,
    gid: Gid,
    groups: Vec<Gid>,
}

impl Credentials {
    /// Only root can switch users; when the agent is not root (host tests), keep ours.
    fn for_user(user: &SandboxUser) -> Option<Self> {
        if !nix::unistd::geteuid().is_root() {
            return None;
        }
        Some(Credentials { uid: user.uid, gid: user.gid, groups: user.groups() })
    }

    /// Makes the fork count against the target user's process limit for as long as the guard
    /// lives (see [`ChargeToUser`]); nothing to do for root.
    fn charge_fork(&self) -> io::Result<Option<ChargeToUser>> {
        if self.uid.is_root() {
            return Ok(None);
        }
        ChargeToUser::set(self.uid).map(Some)
    }

    /// Async-signal-safe: only raw syscalls, no allocation.
    fn apply(&self) -> io::Result<()> {
        nix::unistd::setgroups(&self.groups).map_err(io::Error::from)?;
        nix::unistd::setgid(self.gid).map_err(io::Error::from)?;
        nix::unistd::setuid(self.uid).map_err(io::Error::from)?;
        Ok(())
    }
}

/// While alive, the calling thread's real uid is the child's user (effective and saved uid stay
/// root, so its capabilities are untouched).
///
/// Why: the kernel charges a new process to the *real* uid of the thread that forks it, and
/// refuses the fork with EAGAIN when that user is at RLIMIT_NPROC. Forked by root, a user's
/// command was charged to root and setuid moved nothing (gVisor's setuid does not check the
/// limit, and Linux only fails the later execve), so a spawn for a user at its limit succeeded
/// and the command's own shell then retried its forks for 15 s each: commands hung instead of
/// failing. Charged to the user, the spawn fails at once, as envd's does, and the count is
/// right for the child's life.
///
/// Only this thread changes (the raw syscall, not libc's `setresuid`, which changes every
/// thread of the process); the spawn runs synchronously on it between `set` and `drop`.
struct ChargeToUser;

impl ChargeToUser {
    fn set(uid: Uid) -> io::Result<Self> {
        set_thread_real_uid(uid.as_raw())?;
        Ok(ChargeToUser)
    }
}

impl Drop for ChargeToUser {
    fn drop(&mut self) {
        // Cannot fail: the effective uid is still root, with CAP_SETUID.
        if let Err(e) = set_thread_real_uid(0) {
            tracing::error!("restoring the spawning thread's real uid: {e}");
        }
    }
}

/// `setresuid(uid, -1, -1)` for the calling thread only.
fn set_thread_real_uid(uid: libc::uid_t) -> io::Result<()> {
    // -1: leave the effective and saved uids as they are.
    let keep = libc::uid_t::MAX;
    // SAFETY: setresuid takes three integers and touches no memory of ours.
    let rc = unsafe { libc::syscall(libc::SYS_setresuid, uid, keep, keep) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn build_command(spec: &SpawnSpec<'_>) -> Command {
    let mut command = Command::new(spec.cmd);
    if let Some(arg0) = spec.arg0 {
        command.arg0(arg0);
    }
    command.args(spec.args).env_clear().envs(&spec.env).current_dir(&spec.cwd);
    command
}

/// Forks the process described by `spec`, registering it with `reaper`.
pub fn spawn(reaper: &Reaper, spec: &SpawnSpec<'_>) -> io::Result<Spawned> {
    let creds = Credentials::for_user(spec.user);
    let mut command = build_command(spec);
    let (pid, ends, exit) = reaper.spawn(|| {
        let _charge = creds.as_ref().map(Credentials::charge_fork).transpose()?.flatten();
        match &spec.stdio {
            ChildStdio::Pty { cols, rows } => fork_in_pty(&mut command, creds, *cols, *rows),
            ChildStdio::Pipes { stdin } => {
                command
                    .stdin(if *stdin { Stdio::piped() } else { Stdio::null() })
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped());
                fork_in_group(&mut command, creds)
            }
            ChildStdio::Given([stdin, stdout, stderr]) => {
                command
                    .stdin(Stdio::from(stdin.try_clone()?))
                    .stdout(Stdio::from(stdout.try_clone()?))
                    .stderr(Stdio::from(stderr.try_clone()?));
                fork_in_group(&mut command, creds)
            }
        }
    })?;
    let ParentEnds { stdin, stdout, stderr, pty_master } = ends;
    Ok(Spawned { pid, stdin, stdout, stderr, pty_master, exit })
}

/// Forks `command` on a new pty, as the leader of a new session whose controlling terminal it
/// is. Runs under the reaper's spawn lock, so no concurrent fork inherits the slave.
fn fork_in_pty(
    command: &mut Command,
    creds: Option<Credentials>,
    cols: u32,
    rows: u32,
) -> io::Result<(u32, ParentEnds)> {
    let pair = pty::open(cols, rows)?;
    command
        .stdin(Stdio::from(pair.slave.try_clone()?))
        .stdout(Stdio::from(pair.slave.try_clone()?))
        .stderr(Stdio::from(pair.slave));
    // SAFETY: the closure runs between fork and exec and only makes async-signal-safe
    // syscalls (setsid, ioctl, setgroups, setgid, setuid) without allocating.
    unsafe {
        command.pre_exec(move || {
            nix::unistd::setsid().map_err(io::Error::from)?;
            pty::make_controlling_terminal()?;
            if let Some(c) = &creds {
                c.apply()?;
            }
            Ok(())
        });
    }
    let child = command.spawn()?;
    Ok((child.id(), ParentEnds { pty_master: Some(pair.master), ..ParentEnds::default() }))
}

/// Forks `command` (stdio already chosen) as the leader of its own process group, and hands
/// back the parent's ends of any pipes std created for it.
fn fork_in_group(command: &mut Command, creds: Option<Credentials>) -> io::Result<(u32, ParentEnds)> {
    command.process_group(0);
    // SAFETY: the closure runs between fork and exec and only makes async-signal-safe
    // syscalls (setgroups, setgid, setuid) without allocating.
    unsafe {
        command.pre_exec(move || match &creds {
            Some(c) => c.apply(),
            None => Ok(()),
        });
    }
    let mut child = command.spawn()?;
    let ends = ParentEnds {
        stdin: child.stdin.take().map(OwnedFd::from),
        stdout: child.stdout.take().map(OwnedFd::from),
        stderr: child.stderr.take().map(OwnedFd::from),
        pty_master: None,
    };
    Ok((child.id(), ends))
}

/// Whether `path` is an existing directory.
pub fn is_dir(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_dir())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_charge_changes_only_this_threads_real_uid_and_is_undone() {
        if !nix::unistd::geteuid().is_root() {
            return; // only root may change its real uid
        }
        let real_uid = || nix::unistd::getresuid().map(|ids| ids.real.as_raw()).unwrap();
        let (ask, asked) = std::sync::mpsc::channel::<()>();
        let (tell, told) = std::sync::mpsc::channel();
        // Started before the charge, so it does not inherit the changed credentials.
        let other = std::thread::spawn(move || {
            while asked.recv().is_ok() {
                tell.send(real_uid()).unwrap();
            }
        });
        std::thread::spawn(move || {
            let charge = ChargeToUser::set(Uid::from_raw(1000)).unwrap();
            let ids = nix::unistd::getresuid().unwrap();
            assert_eq!((ids.real.as_raw(), ids.effective.as_raw(), ids.saved.as_raw()), (1000, 0, 0));
            ask.send(()).unwrap();
            assert_eq!(told.recv().unwrap(), 0, "another thread of the process is untouched");
            drop(charge);
            assert_eq!(real_uid(), 0);
        })
        .join()
        .unwrap();
        other.join().unwrap();
    }

    #[test]
    fn env_layers_later_wins() {
        let user = SandboxUser {
            name: "user".into(),
            uid: Uid::from_raw(1000),
            gid: Gid::from_raw(1000),
            home: PathBuf::from("/home/user"),
        };
        let sandbox = BTreeMap::from([
            ("A".to_string(), "sandbox".to_string()),
            ("HOME".to_string(), "/override".to_string()),
        ]);
        let request = BTreeMap::from([("A".to_string(), "request".to_string())]);
        let env = compose_env(&user, &sandbox, &request);
        assert_eq!(env["PATH"], DEFAULT_PATH);
        assert_eq!(env["USER"], "user");
        assert_eq!(env["LOGNAME"], "user");
        assert_eq!(env["SHELL"], "/bin/bash");
        assert_eq!(env["HOME"], "/override");
        assert_eq!(env["A"], "request");
    }
}
