//! Turning a child's exit outcome into the `end` event, with the strings Go's
//! `os.ProcessState` produces (envd reports exactly those).

use super::messages::EndEvent;
use crate::reaper::ExitOutcome;

/// Go's description of a Linux signal (`syscall.Signal.String()`).
pub fn go_signal_name(signo: i32) -> String {
    let name = match signo {
        libc::SIGHUP => "hangup",
        libc::SIGINT => "interrupt",
        libc::SIGQUIT => "quit",
        libc::SIGILL => "illegal instruction",
        libc::SIGTRAP => "trace/breakpoint trap",
        libc::SIGABRT => "aborted",
        libc::SIGBUS => "bus error",
        libc::SIGFPE => "floating point exception",
        libc::SIGKILL => "killed",
        libc::SIGUSR1 => "user defined signal 1",
        libc::SIGSEGV => "segmentation fault",
        libc::SIGUSR2 => "user defined signal 2",
        libc::SIGPIPE => "broken pipe",
        libc::SIGALRM => "alarm clock",
        libc::SIGTERM => "terminated",
        libc::SIGSTKFLT => "stack fault",
        libc::SIGCHLD => "child exited",
        libc::SIGCONT => "continued",
        libc::SIGSTOP => "stopped (signal)",
        libc::SIGTSTP => "stopped",
        libc::SIGTTIN => "stopped (tty input)",
        libc::SIGTTOU => "stopped (tty output)",
        libc::SIGURG => "urgent I/O condition",
        libc::SIGXCPU => "CPU time limit exceeded",
        libc::SIGXFSZ => "file size limit exceeded",
        libc::SIGVTALRM => "virtual timer expired",
        libc::SIGPROF => "profiling timer expired",
        libc::SIGWINCH => "window changed",
        libc::SIGIO => "I/O possible",
        libc::SIGPWR => "power failure",
        libc::SIGSYS => "bad system call",
        other => return format!("signal {other}"),
    };
    name.to_string()
}

/// The `end` event for `outcome`: exit code (-1 when signalled, like Go's `ExitCode()`),
/// `exited`, `ProcessState.String()` as status, and the same text as `error` unless the process
/// exited with 0 (Go's `cmd.Wait()` returns nil then).
pub fn end_event_for(outcome: ExitOutcome) -> EndEvent {
    match outcome {
        ExitOutcome::Exited(code) => {
            let status = format!("exit status {code}");
            EndEvent { exit_code: code, exited: true, error: (code != 0).then(|| status.clone()), status }
        }
        ExitOutcome::Signaled { signo, core_dumped } => {
            let mut status = format!("signal: {}", go_signal_name(signo));
            if core_dumped {
                status.push_str(" (core dumped)");
            }
            EndEvent { exit_code: -1, exited: false, error: Some(status.clone()), status }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirrors_go_process_state() {
        let ok = end_event_for(ExitOutcome::Exited(0));
        assert_eq!((ok.exit_code, ok.exited, ok.status.as_str()), (0, true, "exit status 0"));
        assert_eq!(ok.error, None);
        let three = end_event_for(ExitOutcome::Exited(3));
        assert_eq!(three.error.as_deref(), Some("exit status 3"));
        let killed = end_event_for(ExitOutcome::Signaled { signo: 9, core_dumped: false });
        assert_eq!(killed.exit_code, -1);
        assert!(!killed.exited);
        assert_eq!(killed.status, "signal: killed");
        assert_eq!(killed.error.as_deref(), Some("signal: killed"));
        let term = end_event_for(ExitOutcome::Signaled { signo: 15, core_dumped: false });
        assert_eq!(term.status, "signal: terminated");
        let segv = end_event_for(ExitOutcome::Signaled { signo: 11, core_dumped: true });
        assert_eq!(segv.status, "signal: segmentation fault (core dumped)");
        assert_eq!(go_signal_name(40), "signal 40");
    }
}
