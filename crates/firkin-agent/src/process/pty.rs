//! Pseudo-terminals: allocation with an initial size, and window resizes (`TIOCSWINSZ`).

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use nix::fcntl::{fcntl, FcntlArg, FdFlag};
use nix::pty::{openpty, Winsize};

/// A freshly opened pty pair; both ends are close-on-exec in the agent.
pub struct PtyPair {
    pub master: OwnedFd,
    pub slave: OwnedFd,
}

fn winsize(cols: u32, rows: u32) -> Winsize {
    Winsize {
        ws_row: u16::try_from(rows).unwrap_or(u16::MAX),
        ws_col: u16::try_from(cols).unwrap_or(u16::MAX),
        ws_xpixel: 0,
        ws_ypixel: 0,
    }
}

/// Opens a pty of `cols` x `rows`.
pub fn open(cols: u32, rows: u32) -> io::Result<PtyPair> {
    let ws = winsize(cols, rows);
    let pair = openpty(Some(&ws), None).map_err(io::Error::from)?;
    for fd in [&pair.master, &pair.slave] {
        fcntl(fd.as_raw_fd(), FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).map_err(io::Error::from)?;
    }
    Ok(PtyPair { master: pair.master, slave: pair.slave })
}

/// Resizes the terminal behind `master`.
pub fn resize(master: RawFd, cols: u32, rows: u32) -> io::Result<()> {
    let ws = winsize(cols, rows);
    // SAFETY: TIOCSWINSZ reads one `winsize` struct from the pointer, which is valid for the call.
    let rc = unsafe { libc::ioctl(master, libc::TIOCSWINSZ, &ws as *const Winsize) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// In the forked child: make the pty on fd 0 the controlling terminal (after `setsid`).
/// Async-signal-safe.
pub fn make_controlling_terminal() -> io::Result<()> {
    // SAFETY: TIOCSCTTY takes an integer argument; fd 0 is the pty slave set up by spawn.
    let rc = unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}
