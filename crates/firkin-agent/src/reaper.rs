//! Child reaping for an agent that runs as PID 1.
//!
//! # Design
//!
//! As PID 1 the agent inherits every orphan in the sandbox and must reap them, yet it also needs
//! the exit status of the processes it spawned itself. Mixing a `waitpid(-1)` reaper with
//! per-child waits (tokio's or std's) is racy: the reaper can steal a status the per-child wait
//! is about to collect. So there is exactly **one** waiter in the whole process — this module:
//!
//! * nothing else calls `wait*` (children are spawned with `std::process::Command`, whose
//!   `Child` is never waited on; tokio's process driver is not used);
//! * on every `SIGCHLD` (and on a 1 s safety tick, since signals coalesce) the reaper loops over
//!   `waitpid(-1, WNOHANG)` until nothing is left, handing each status to whoever registered that
//!   pid, and silently discarding orphans' statuses;
//! * spawning happens under the same lock the reaper holds while reaping. This closes two races:
//!   a child that exits before its pid is registered still finds its waiter, and std's `spawn`
//!   (which `waitpid`s its own child when `exec` fails) never has that status stolen.
//!
//! When the agent is not PID 1 (tests on a host), it marks itself a child subreaper so orphans of
//! its children still come back to it.

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::oneshot;

/// How a child finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitOutcome {
    /// Exited normally with this code.
    Exited(i32),
    /// Terminated by signal `signo`.
    Signaled { signo: i32, core_dumped: bool },
}

impl ExitOutcome {
    fn from_wait_status(status: libc::c_int) -> Option<Self> {
        if libc::WIFEXITED(status) {
            Some(ExitOutcome::Exited(libc::WEXITSTATUS(status)))
        } else if libc::WIFSIGNALED(status) {
            Some(ExitOutcome::Signaled {
                signo: libc::WTERMSIG(status),
                core_dumped: libc::WCOREDUMP(status),
            })
        } else {
            None
        }
    }
}

/// Receives the exit outcome of one spawned child.
pub type ExitReceiver = oneshot::Receiver<ExitOutcome>;

#[derive(Default)]
struct Waiters {
    by_pid: HashMap<i32, oneshot::Sender<ExitOutcome>>,
}

/// The single owner of `waitpid` in the agent.
#[derive(Default)]
pub struct Reaper {
    waiters: Mutex<Waiters>,
}

impl Reaper {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn lock(&self) -> MutexGuard<'_, Waiters> {
        match self.waiters.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Runs `spawn` (which must fork exactly one child and return its pid together with any
    /// extra value) with reaping paused, and registers the child for its exit status.
    pub fn spawn<T>(
        &self,
        spawn: impl FnOnce() -> io::Result<(u32, T)>,
    ) -> io::Result<(u32, T, ExitReceiver)> {
        let mut waiters = self.lock();
        let (pid, extra) = spawn()?;
        let (tx, rx) = oneshot::channel();
        let key = i32::try_from(pid).map_err(|_| io::Error::other("pid out of range"))?;
        waiters.by_pid.insert(key, tx);
        Ok((pid, extra, rx))
    }

    /// Reaps every child that has exited so far.
    pub fn reap_all(&self) {
        let mut waiters = self.lock();
        loop {
            let mut status: libc::c_int = 0;
            // SAFETY: `status` is a valid, writable c_int; waitpid has no other memory effects.
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if pid == 0 {
                break;
            }
            if pid < 0 {
                if io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                    continue;
                }
                break; // ECHILD: no children at all.
            }
            let Some(outcome) = ExitOutcome::from_wait_status(status) else {
                continue;
            };
            match waiters.by_pid.remove(&pid) {
                Some(tx) => {
                    let _ = tx.send(outcome);
                }
                None => tracing::trace!(pid, ?outcome, "reaped orphan"),
            }
        }
    }

    /// Drives reaping forever: on SIGCHLD and on a periodic safety tick.
    pub async fn run(self: Arc<Self>) {
        become_subreaper();
        let mut sigchld = match signal(SignalKind::child()) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::error!("cannot listen for SIGCHLD, falling back to polling: {e}");
                None
            }
        };
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            match sigchld.as_mut() {
                Some(s) => {
                    tokio::select! {
                        _ = s.recv() => {}
                        _ = tick.tick() => {}
                    }
                }
                None => {
                    tick.tick().await;
                }
            }
            self.reap_all();
        }
    }
}

fn become_subreaper() {
    if std::process::id() == 1 {
        return;
    }
    if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
        tracing::warn!("PR_SET_CHILD_SUBREAPER failed: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    #[test]
    fn decodes_wait_statuses() {
        let exited = std::process::ExitStatus::from_raw(3 << 8).into_raw();
        assert_eq!(ExitOutcome::from_wait_status(exited), Some(ExitOutcome::Exited(3)));
        assert_eq!(
            ExitOutcome::from_wait_status(9),
            Some(ExitOutcome::Signaled { signo: 9, core_dumped: false })
        );
    }
}
